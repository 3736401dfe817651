"""Bad input to ``python -m visprune`` and to the engine's Python API: one line, exit status 2.

Every case asserts the exit status, that the message is one line naming the thing that was
wrong, that no traceback reaches the user, and that nothing already in the run cache changed.
(The data, toy-model and book commands have their own tables: ``test_bad_input_data.py`` and
``test_bad_input_book.py``.)
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from visprune import engine as evaluation
from visprune.engine import cache as runcache
from visprune.__main__ import main
from visprune.engine import Evaluator, RunConfig
from visprune.engine.profiles import resolve_profile

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A toy world, a tiny model, a results folder holding one finished run, and bad things."""
    from safetensors.torch import save_file
    from tiny_llava import engine_assets

    tmp = engine_assets(tmp_path_factory.mktemp("bad"), n_images=40, seed=5)
    corrupt = tmp / "corrupt-model"
    corrupt.mkdir()
    for p in (tmp / "model").iterdir():
        (corrupt / p.name).write_bytes(p.read_bytes())
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    no_config = tmp / "no-config"
    no_config.mkdir()
    save_file({"x": torch.zeros(2)}, str(no_config / "model.safetensors"))
    (tmp / "a-file").write_text("not a folder")
    profile = resolve_profile("toy", model=tmp / "model", world=tmp / "world", results=tmp / "results")
    Evaluator(profile, progress=False).run(RunConfig("pope-random", "saliency", 4, n_samples=12, chunk_size=6))
    (tmp / "real").mkdir()
    return tmp


def _snapshot(results: Path) -> dict:
    """Every cached file's bytes, except the digest memo and lock files (not results)."""
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.rglob("*"))
            if p.is_file() and p.name != runcache.DIGEST_CACHE and ".locks" not in p.parts}


def _toy(env, *extra, results=None):
    return ["--model", str(env / "model"), "--world", str(env / "world"), "--results",
            str(results or env / "results"), "--no-progress", *extra]


RUN = ["--dataset", "pope-random", "--n-samples", "12", "--chunk-size", "6"]

# (case id, argv builder, expected status, words the one-line message must contain)
CLI_CASES = [
    ("k-zero", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "0")], 2, ["k"]),
    ("k-too-large", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "999")], 2, ["k", "999"]),
    ("k-not-int", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "x")], 2, ["--k", "'x'"]),
    ("alpha-negative", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "4", "-P", "alpha=-2")], 2,
     ["alpha"]),
    ("alpha-bool", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "4", "-P", "alpha=True")], 2,
     ["alpha", "boolean"]),
    ("gap-power-zero", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "4", "-P", "gap_power=0")], 2,
     ["gap_power"]),
    ("unknown-param-run", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "4", "-P", "alpah=0.5")],
     2, ["alpah", "scope"]),
    ("unknown-param-grid", lambda e: ["grid", *_toy(e, "--datasets", "pope-random", "--methods", "scope",
                                                   "saliency", "--budgets", "4", "-P", "alpah=0.5")], 2, ["alpah"]),
    ("param-of-other-method", lambda e: ["run", *_toy(e, *RUN, "--method", "saliency", "--k", "4",
                                                      "-P", "alpha=1")], 2, ["alpha", "saliency"]),
    ("param-without-equals", lambda e: ["run", *_toy(e, *RUN, "--method", "scope", "--k", "4", "-P", "alpha")], 2,
     ["-P", "name=value"]),
    ("fastv-layer-range", lambda e: ["run", *_toy(e, *RUN, "--method", "fastv", "--k", "4", "-P", "layer=50")], 2,
     ["layer"]),
    ("fastv-layer-bool", lambda e: ["run", *_toy(e, *RUN, "--method", "fastv", "--k", "4", "-P", "layer=True")],
     2, ["layer"]),
    ("random-seed-negative", lambda e: ["run", *_toy(e, *RUN, "--method", "random", "--k", "4", "-P", "seed=-1")],
     2, ["seed"]),
    ("random-seed-fraction", lambda e: ["run", *_toy(e, *RUN, "--method", "random", "--k", "4",
                                                     "-P", "seed=1.5")], 2, ["seed"]),
    ("feature-space", lambda e: ["run", *_toy(e, *RUN, "--method", "divprune", "--k", "4",
                                              "-P", "feature_space=pixels")], 2, ["feature_space"]),
    ("none-with-k", lambda e: ["run", *_toy(e, *RUN, "--method", "none", "--k", "4")], 2, ["k"]),
    ("unknown-dataset", lambda e: ["run", *_toy(e, "--dataset", "coco")], 2, ["--dataset", "coco"]),
    ("unknown-method", lambda e: ["run", *_toy(e, *RUN, "--method", "fastvv")], 2, ["--method", "fastvv"]),
    ("chunk-size-zero", lambda e: ["run", *_toy(e, "--dataset", "pope-random", "--chunk-size", "0")], 2,
     ["chunk_size"]),
    ("n-samples-negative", lambda e: ["run", *_toy(e, "--dataset", "pope-random", "--n-samples", "-5")], 2,
     ["n_samples", "-5"]),
    ("batch-size-zero", lambda e: ["run", *_toy(e, *RUN, "--batch-size", "0")], 2, ["batch_size"]),
    ("max-new-tokens-zero", lambda e: ["run", *_toy(e, "--dataset", "chair", "--max-new-tokens", "0")], 2,
     ["max_new_tokens"]),
    ("sample-seed-negative", lambda e: ["run", *_toy(e, "--dataset", "chair", "--sample-seed", "-1")], 2,
     ["sample_seed"]),
    ("preprocess", lambda e: ["run", *_toy(e, *RUN, "--preprocess", "stretch")], 2, ["--preprocess", "stretch"]),
    ("device-unknown", lambda e: ["run", *_toy(e, *RUN, "--device", "tpu")], 2, ["device", "tpu"]),
    pytest.param("device-cuda-absent", lambda e: ["run", *_toy(e, *RUN, "--device", "cuda")], 2,
                 ["device", "cuda", "no CUDA"], marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
    ("dtype", lambda e: ["run", *_toy(e, *RUN, "--dtype", "int8")], 2, ["dtype", "int8"]),
    ("results-is-a-file", lambda e: ["run", *_toy(e, *RUN, results=e / "a-file")], 2, [str("a-file"), "is a file"]),
    ("results-not-writable", lambda e: ["run", *_toy(e, *RUN, results="/proc/visprune-results")], 2,
     ["/proc/visprune-results"]),
    ("model-missing", lambda e: ["run", "--model", str(e / "nowhere"), "--world", str(e / "world"), "--results",
                                 str(e / "results"), *RUN], 2, [str("nowhere")]),
    ("model-no-config", lambda e: ["run", "--model", str(e / "no-config"), "--world", str(e / "world"),
                                   "--results", str(e / "results"), *RUN], 2, ["config.json"]),
    ("model-corrupt-weights", lambda e: ["run", "--model", str(e / "corrupt-model"), "--world", str(e / "world"),
                                         "--results", str(e / "results"), *RUN], 2,
     ["model.safetensors", "corrupt"]),
    ("real-profile-no-model", lambda e: ["run", "--profile", "llava-1.5-7b", "--dataset", "pope-random"], 2,
     ["--model", "VISPRUNE_MODEL"]),
    ("real-profile-pope-path-missing", lambda e: ["run", "--profile", "llava-1.5-7b", "--model", str(e / "model"),
                                                  "--coco-images", str(e / "real"), "--results", str(e / "results"),
                                                  "--dataset", "pope-random"], 2, ["--pope", "VISPRUNE_POPE"]),
    ("real-profile-pope-file-missing", lambda e: ["run", "--profile", "llava-1.5-7b", "--model", str(e / "model"),
                                                  "--pope", str(e / "real"), "--coco-images", str(e / "real"),
                                                  "--results", str(e / "results"), "--dataset", "pope-random"], 2,
     ["coco_pope_random.json"]),
    ("real-profile-scienceqa-missing", lambda e: ["run", "--profile", "llava-1.5-7b", "--model", str(e / "model"),
                                                  "--results", str(e / "results"), "--dataset", "scienceqa"], 2,
     ["--scienceqa"]),
    ("world-with-profile", lambda e: ["run", "--profile", "llava-1.5-7b", "--model", str(e / "model"), "--world",
                                      str(e / "world"), "--dataset", "pope-random"], 2, ["world"]),
    ("no-command", lambda e: [], 2, ["command"]),
]


@pytest.mark.parametrize("case, argv, status, words", CLI_CASES, ids=[c.values[0] if hasattr(c, "marks") else c[0]
                                                                      for c in CLI_CASES])
def test_cli_bad_input(env, monkeypatch, capsys, case, argv, status, words):
    for name in ("MODEL", "COCO_IMAGES", "COCO_ANNOTATIONS", "POPE", "SCIENCEQA", "RESULTS"):
        monkeypatch.delenv(f"VISPRUNE_{name}", raising=False)
    before = _snapshot(env / "results")
    try:
        code = main(argv(env))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert _snapshot(env / "results") == before


def test_interrupt_is_one_line_and_130(env, monkeypatch, capsys):
    def interrupted(self, config):
        raise KeyboardInterrupt

    before = _snapshot(env / "results")
    monkeypatch.setattr(Evaluator, "run", interrupted)
    code = main(["run", *_toy(env, *RUN, "--method", "random", "--k", "4")])
    err = capsys.readouterr().err
    assert code == 130 and err == "interrupted; rerun the same command to resume\n"
    assert _snapshot(env / "results") == before


def test_full_disk_names_the_path_and_leaves_nothing_partial(env, monkeypatch, capsys, tmp_path):
    results = tmp_path / "results"
    real_fsync = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".chunk-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(runcache.os, "fsync", full)
    code = main(["run", *_toy(env, *RUN, "--method", "random", "--k", "4", results=results)])
    # the model loads before the first chunk is written: transformers' loading bar may precede the error
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n")]
    err = [line for line in err if line and not line.startswith("Loading weights")]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    err = err[0]
    assert "No space left" in err and "chunk-00000.jsonl" in err
    assert str(results) in err
    assert not list(results.rglob("*.tmp")) and not list(results.rglob("chunk-*.jsonl"))


def test_the_installed_command_prints_no_traceback(env):
    """The real entry point (a new process), for two kinds of failure: a value and a corrupt file."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    for argv, word in ((["run", *_toy(env, *RUN, "--method", "scope", "--k", "4", "-P", "alpha=-1")], "alpha"),
                       (["run", "--model", str(env / "corrupt-model"), "--world", str(env / "world"), "--results",
                         str(env / "results"), *RUN], "model.safetensors")):
        done = subprocess.run([sys.executable, "-m", "visprune", *argv], env=environ, capture_output=True, text=True)
        assert done.returncode == 2 and word in done.stderr and "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1


# ------------------------------------------------------------------------------ the Python API

API_CASES = [
    ("chunk-size-bool", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", chunk_size=True)),
     "chunk_size"),
    ("k-bool", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", "scope", True)), "k"),
    ("n-samples-bool", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", n_samples=True)),
     "n_samples"),
    ("batch-size-bool", lambda p: Evaluator(p, batch_size=True), "batch_size"),
    ("preprocess", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", preprocess="stretch")),
     "preprocess"),
    ("params-not-dict", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", "scope", 4, [1])),
     "params"),
    ("layer-float", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", "fastv", 4, {"layer": 1.5})),
     "layer"),
    ("adaptive-without-reference", lambda p: Evaluator(p, progress=False).run(RunConfig("pope-random", "adaptive", 4)),
     "erank_ref"),
    ("complete-params-unknown", lambda p: evaluation.complete_params("random", {"sed": 1}), "sed"),
    ("grid-bad-member", lambda p: Evaluator(p, progress=False).grid([RunConfig("pope-random", n_samples=6),
                                                                    RunConfig("pope-random", "scope", 0)]), "k"),
    pytest.param("device-cuda-absent", lambda p: Evaluator(p, device="cuda"), "device",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
    ("dtype-int", lambda p: Evaluator(p, device="cpu", dtype="int64"), "dtype"),
    ("select-k-bool", lambda p: __import__("visprune.pruning", fromlist=["select"]).select(
        "scope", torch.randn(1, 8, 4), torch.rand(1, 8), True), "k"),
]


@pytest.mark.parametrize("case, call, word", API_CASES, ids=[c.values[0] if hasattr(c, "marks") else c[0]
                                                             for c in API_CASES])
def test_api_bad_input(env, case, call, word):
    profile = resolve_profile("toy", model=env / "model", world=env / "world", results=env / "results")
    before = _snapshot(env / "results")
    with pytest.raises(ValueError) as info:
        call(profile)
    message = str(info.value)
    assert word in message and "\n" not in message
    assert _snapshot(env / "results") == before
