"""Adding a method is one registration: the engine, the command line, the run keys, the tables and
the plots pick it up from its spec (DESIGN.md section 8; issue "One registry").

Two methods are registered here, in the test only: a pre-LLM selector (the K tokens of largest
feature norm, raised to a power) and an in-LLM method (at layer L, the K visual tokens of
largest hidden-state norm). Each then runs end to end on a small toy world with a tiny LLaVA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from visprune.engine import Evaluator, RunConfig, method_parameters
from visprune.engine.profiles import resolve_profile
from visprune import pruning as methods
from visprune.pruning import register, spec, unregister

PRE_COLOR, IN_COLOR = "#8c564b", "#17becf"


def norm_select(features, saliency, k, *, power: float = 1.0):
    """The K tokens with the largest ||x||^power (a stand-in method; ties to the lower index)."""
    score = features.norm(dim=-1) ** power
    return torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :k]


def norm_params(*, layer: int = 1, n_layers: int | None = None) -> dict:
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (n_layers is not None and layer >= n_layers):
        raise ValueError(f"layer: expected an int in 0..{'L-1' if n_layers is None else n_layers - 1}, got {layer!r}")
    return {"layer": layer}


class NormPruner:
    """Before layer L, keep the K visual tokens whose hidden states have the largest norm."""

    calls: list[tuple[int, int]] = []

    def __init__(self, params: dict, k: int) -> None:
        self.layer, self.k = params["layer"], k

    def before_layer(self, i, layer, state):
        if i != self.layer:
            return None
        hidden, start, n = state["hidden"], state["image_start"], state["num_visual"]
        columns = start[:, None] + torch.arange(n, device=hidden.device)
        norms = hidden.gather(1, columns[..., None].expand(-1, -1, hidden.shape[-1])).norm(dim=-1)  # (P, N)
        NormPruner.calls.append((i, n))
        return torch.sort(torch.sort(norms, dim=-1, descending=True, stable=True).indices[:, : self.k]).values


@pytest.fixture(scope="module")
def registered():
    register("norm_test", label="Norm (test)", color=PRE_COLOR)(norm_select)
    register("norm_llm_test", stage="in-llm", label="Norm in LLM (test)", color=IN_COLOR, inputs=("n_layers",),
             pruner=NormPruner, describe=lambda p: f"Norm in LLM (test) L={p['layer']}")(norm_params)
    yield
    unregister("norm_test")
    unregister("norm_llm_test")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from tiny_llava import engine_assets

    return engine_assets(tmp_path_factory.mktemp("registry"), n_images=24, seed=5)


def _profile(assets: Path, results: Path):
    return resolve_profile("toy", model=assets / "model", world=assets / "world", results=results)


def test_the_spec_declares_the_method(registered):
    pre, inside = spec("norm_test"), spec("norm_llm_test")
    assert pre.stage == "pre-llm" and inside.stage == "in-llm"
    assert method_parameters("norm_test") == {"power": 1.0, "feature_space": "vision"}  # from the signature
    assert method_parameters("norm_llm_test") == {"layer": 1}  # n_layers is the engine's to fill
    assert "norm_test" in methods.pre_llm_methods() and "norm_llm_test" in methods.available_methods()
    assert inside.display({"layer": 2}) == "Norm in LLM (test) L=2" and pre.display() == "Norm (test)"
    with pytest.raises(ValueError, match="^name: .*already registered"):
        register("norm_test", label="x", color="k")(norm_select)
    with pytest.raises(ValueError, match="pruner"):
        register("no_pruner", stage="in-llm", label="x", color="k")(norm_params)


def test_engine_runs_both_methods_and_keys_their_parameters(registered, assets, tmp_path):
    ev = Evaluator(_profile(assets, tmp_path), progress=False, batch_size=4)
    pre = ev.run(RunConfig("pope-random", "norm_test", 5, {"power": 2}, n_samples=12, chunk_size=6))
    assert (pre["status"] == "ok").all() and (pre["tokens_kept"] == 5).all() and (pre["power"] == 2.0).all()
    assert pre["run"].iloc[0] == "norm_test-k5-power2"
    NormPruner.calls.clear()
    inside = ev.run(RunConfig("pope-random", "norm_llm_test", 3, {"layer": 1}, n_samples=12, chunk_size=6))
    assert (inside["status"] == "ok").all() and (inside["tokens_kept"] == 3).all() and (inside["layer"] == 1).all()
    n = ev.llava.num_visual_tokens
    assert NormPruner.calls and all(call == (1, n) for call in NormPruner.calls)  # consulted at layer 1, all N in
    # different parameters are different runs (the key holds the completed parameters)
    assert ev.run_key(RunConfig("pope-random", "norm_test", 5, {"power": 2}, n_samples=12), [])[0] != \
        ev.run_key(RunConfig("pope-random", "norm_test", 5, {}, n_samples=12), [])[0]
    with pytest.raises(ValueError, match="^layer: "):
        ev.validate(RunConfig("pope-random", "norm_llm_test", 3, {"layer": 99}, n_samples=12))
    with pytest.raises(ValueError, match="^alpha: not a parameter of method 'norm_test'"):
        ev.validate(RunConfig("pope-random", "norm_test", 3, {"alpha": 1.0}, n_samples=12))


def test_in_llm_method_keeping_every_token_changes_nothing(registered, assets, tmp_path):
    """The decoder loop with a method that keeps all N tokens equals the unpruned model."""
    ev = Evaluator(_profile(assets, tmp_path), progress=False, batch_size=4)
    n = ev.llava.num_visual_tokens
    pruned = ev.run(RunConfig("pope-random", "norm_llm_test", n, {"layer": 1}, n_samples=6))
    full = ev.run(RunConfig("pope-random", "none", None, {}, n_samples=6))
    np.testing.assert_allclose(np.stack(pruned["probs"]), np.stack(full["probs"]), atol=1e-6)


def test_command_line_summary_table_and_plot(registered, assets, tmp_path, capsys):
    from visprune.book import plots, analysis as reporting
    from visprune.engine.cli import main

    code = main(["grid", "--model", str(assets / "model"), "--world", str(assets / "world"), "--results",
                 str(tmp_path), "--no-progress", "--datasets", "pope-random", "--methods", "norm_test",
                 "norm_llm_test", "--budgets", "3", "5", "--n-samples", "6", "-P", "power=3"])
    out = capsys.readouterr().out
    assert code == 0 and "norm_test-k3-power3" in out and "norm_llm_test-k5" in out
    assert main(["run", "--model", str(assets / "model"), "--world", str(assets / "world"), "--results",
                 str(tmp_path), "--no-progress", "--dataset", "pope-random", "--method", "norm_test",
                 "--k", "3", "-P", "layer=1"]) == 2  # a parameter of the other method
    assert "layer: not a parameter of method 'norm_test'" in capsys.readouterr().err

    ev = Evaluator(_profile(assets, tmp_path), progress=False)
    grid = ev.grid([RunConfig("pope-random", m, k, p, n_samples=6)
                    for m, p in (("norm_test", {"power": 3}), ("norm_llm_test", {})) for k in (3, 5)])
    summary = reporting.summary_table(grid, ("accuracy", "ece"), n_bootstrap=20)
    assert set(summary["label"]) == {"Norm (test)", "Norm in LLM (test) L=1"}
    summary["budget"] = summary["k"]
    fig = plots.metric_vs_budget(summary, ("accuracy",))
    handles, labels = fig.axes[0].get_legend_handles_labels()  # error-bar containers: [0] is the data line
    colours = {label: to_rgba((h[0] if isinstance(h, tuple) else h).get_color()) for h, label in zip(handles, labels)}
    assert colours.get("Norm (test)") == to_rgba(PRE_COLOR)
    assert colours.get("Norm in LLM (test) L=1") == to_rgba(IN_COLOR)


NEW_METHOD_FILE = '''"""A method added as one file (tests/test_method_registry.py)."""

import torch

from visprune.pruning.registry import register


@register("last_tokens", label="last tokens", color="#bcbd22")
def last_tokens(features, saliency, k, *, skip: int = 0):
    n = features.shape[1]
    return torch.arange(n - k - skip, n - skip).expand(features.shape[0], k)
'''


def test_a_new_method_is_one_new_file(assets, tmp_path):
    """Drop one module into a copy of the package: the command line runs it, nothing else edited."""
    root = Path(__file__).resolve().parents[1] / "lib" / "visprune"
    copy = tmp_path / "lib" / "visprune"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__", "toy-llava"))
    (copy / "pruning" / "last_tokens.py").write_text(NEW_METHOD_FILE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    out = subprocess.run(
        [sys.executable, "-m", "visprune", "run", "--model", str(assets / "model"), "--world", str(assets / "world"),
         "--results", str(tmp_path / "results"), "--no-progress", "--dataset", "pope-random",
         "--method", "last_tokens", "--k", "3", "-P", "skip=1", "--n-samples", "6", "--device", "cpu"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "last_tokens-k3-skip1" in out.stdout
