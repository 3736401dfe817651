"""The chapter "Every method at one glance" (visprune.book.glance): its runs, its table, the
matched-FLOPs reading, the control comparisons and the findings, on grids built by hand."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from visprune.book import diversity, glance, glance_plots

MODEL = Path(__file__).resolve().parents[1] / "lib" / "visprune" / "assets" / "toy-llava"
K_OF = {64: 16, 192: 48}  # the toy model's K for the papers' budgets (144 of 576)


def _records(n: int = 40) -> pd.DataFrame:
    """POPE-shaped records: unpruned right on every question; a 'good' method right on all; random
    wrong on the first quarter; downsampling wrong on half; costs by hand."""
    rows = []
    plan = [("unpruned", "none", None, 0, 100.0, 144), ("no visual tokens", "no_image", None, n, 20.0, 0)]
    for k, flops in ((16, 30.0), (48, 50.0)):
        plan += [(f"random-k{k}", "random", k, n // 4, flops, k), (f"downsample-k{k}", "downsample", k, n // 2, flops, k),
                 (f"visionzip-k{k}", "visionzip", k, 0, flops, k), (f"fastv-k{k}", "fastv", k, 0, flops + 40, 144)]
    for run, method, k, wrong, flops, lm_visual in plan:
        for i in range(n):
            label = i % 2
            right = i >= wrong
            pred = label if right else 1 - label
            conf = 0.9 if right else 0.6
            probs = [conf, 1 - conf] if pred == 0 else [1 - conf, conf]
            rows.append({"dataset": "pope-adversarial", "run": run, "method": method, "k": k, "sample_id": str(i),
                         "status": "ok", "label": label, "answers": ["yes", "no"], "probs": probs,
                         "prediction": pred, "correct": right, "caption": None, "lm_tokens": 30 + lm_visual,
                         "visual_tokens": lm_visual, "visual_per_layer": float(lm_visual), "prefill_flops": flops,
                         "selector_flops": 0.0, "seed": 0 if method == "random" else np.nan})
    return pd.DataFrame(rows)


def test_runs_share_the_other_chapters_configurations_and_skip_what_the_model_cannot_run():
    ev = SimpleNamespace(profile=SimpleNamespace(model=MODEL))
    sizes = {"pope-adversarial": 300, "chair": 80}
    configs, skipped = glance.grid_configs(ev, sizes, ["random", "saliency", "no_image", "pdrop"], [16, 48], seed=3,
                                           max_new_tokens=48)
    keys = {(c.dataset, c.method, c.k) for c in configs}
    assert ("pope-adversarial", "no_image", None) in keys and ("chair", "no_image", None) in keys
    assert ("pope-adversarial", "pdrop", 48) in keys and ("pope-adversarial", "pdrop", 16) not in keys
    assert skipped[["method", "k"]].values.tolist() == [["pdrop", 16]]
    assert "PyramidDrop cannot average 16 visual tokens" in skipped["reason"].iloc[0]
    # the configurations Study B's chapters build for the same methods: the same cache entries
    shared = diversity.run_configs("chair", ["random", "saliency"], [16, 48], 80, seed=3, max_new_tokens=48)
    assert all(c in configs for c in shared)
    assert [c.method for c in configs[:1]] == ["none"]


def test_table_has_every_run_with_its_budget_quality_loyalty_and_cost():
    table = glance.glance_table(_records(), None, K_OF, n_bootstrap=50).set_index("run")
    assert table.loc["unpruned", "budget"] == 576 and table.loc["no visual tokens", "budget"] == 0
    assert table.loc["random-k16", "budget"] == 64 and table.loc["visionzip-k48", "budget"] == 192
    assert table.loc["random-k16", "accuracy"] == pytest.approx(0.75)
    assert table.loc["downsample-k48", "accuracy"] == pytest.approx(0.5)
    assert table.loc["random-k16", "flip_rate"] == pytest.approx(0.25)  # the unpruned run is right everywhere
    assert math.isnan(table.loc["unpruned", "flip_rate"])
    assert table.loc["fastv-k16", "relative_flops"] == pytest.approx(0.7)
    assert table.loc["visionzip-k16", "convention"].startswith("K tokens enter the language model")
    view = glance.format_glance(table.reset_index(), "pope-adversarial")
    assert view.loc[0, "flip rate"] == "(reference)" and view.loc[0, "budget (of 576)"] == "all"
    with pytest.raises(ValueError, match="^dataset: 'chair' is not in the table"):
        glance.format_glance(table.reset_index(), "chair")


def test_matched_flops_interpolates_inside_a_methods_range_only():
    table = glance.glance_table(_records(), None, K_OF, n_bootstrap=0)
    matched = glance.matched_flops(table, ["accuracy"])
    at = matched.set_index(["method", "budget"])["value"]
    assert at["visionzip", 64] == pytest.approx(1.0) and at["random", 192] == pytest.approx(0.75)
    assert math.isnan(at["fastv", 64])  # FastV spends 0.7 and 0.9: it never reaches 0.3 or 0.5
    # a method between two FLOPs levels: linear in (FLOPs, metric), checked by hand
    frame = table.copy()
    frame.loc[frame["run"] == "downsample-k16", "relative_flops"] = 0.2
    frame.loc[frame["run"] == "downsample-k48", "relative_flops"] = 0.6
    frame.loc[frame["run"] == "downsample-k48", "accuracy"] = 0.9
    value = glance.matched_flops(frame, ["accuracy"]).set_index(["method", "budget"])["value"]
    assert value["downsample", 64] == pytest.approx(0.5 + (0.9 - 0.5) * (0.3 - 0.2) / 0.4)
    assert glance.matched_view(matched).loc[("pope-adversarial", "accuracy", "FastV")].tolist() == ["—", "—"]


def test_controls_say_better_worse_or_cannot_tell_on_the_same_samples():
    ctl = glance.controls(_records(), None, K_OF, n_bootstrap=200)
    acc = ctl[ctl["metric"] == "f1"].set_index(["control", "method", "k"])
    # VisionZip is right where random is wrong on a quarter of the questions: better, interval away from 0
    assert bool(acc.loc[("random", "visionzip", 16), "better"]) and not bool(acc.loc[("random", "visionzip", 16), "worse"])
    assert bool(acc.loc[("downsample", "random", 16), "better"])  # random beats downsampling here
    assert not ctl[["method"]].isin(["none", "no_image"]).any().any()
    ece = ctl[ctl["metric"] == "ece"].set_index(["control", "method", "k"])
    row = ece.loc[("random", "visionzip", 16)]
    assert row["diff"] < 0 and bool(row["better"]) == bool(row["high"] < 0)  # lower ECE is better
    same = glance.controls(_records().assign(), None, K_OF, n_bootstrap=200)
    assert same.equals(ctl)  # seeded: the same intervals twice


def test_findings_are_computed_from_the_tables():
    records = _records()
    table = glance.glance_table(records, None, K_OF, n_bootstrap=50)
    ctl = glance.controls(records, None, K_OF, n_bootstrap=50)
    skipped = pd.DataFrame([{"method": "pdrop", "label": "PyramidDrop", "k": 16, "reason": "k: too small"}])
    text = glance.glance_findings(table, ctl, skipped, budgets=[64, 192], profile=SimpleNamespace(name="toy", model=MODEL))
    assert "**Not run:** PyramidDrop at K = 16 (k: too small)" in text
    assert "the pre-LLM methods spend 0.30 of the unpruned prefill FLOPs, the in-LLM ones FastV 0.70" in text
    assert "With no visual tokens at all: 0.000" in text  # wrong on every question
    # changing a result changes the sentence: the best at 64 becomes downsampling
    records.loc[records["run"] == "downsample-k16", ["prediction", "probs"]] = records.loc[
        records["run"] == "unpruned", ["prediction", "probs"]].to_numpy()
    records.loc[records["run"] == "visionzip-k16", "prediction"] = 1 - records.loc[records["run"] == "visionzip-k16", "label"]
    records.loc[records["run"] == "visionzip-k16", "probs"] = pd.Series(
        [[0.4, 0.6] if lab == 0 else [0.6, 0.4] for lab in records.loc[records["run"] == "visionzip-k16", "label"]],
        index=records.index[records["run"] == "visionzip-k16"])
    table = glance.glance_table(records, None, K_OF, n_bootstrap=50)
    assert glance.glance_findings(table, ctl, skipped.iloc[:0], budgets=[64], profile=SimpleNamespace(name="toy", model=MODEL))\
        .count("Best at each budget: 64: downsampling 1.000") == 1


def test_figures_draw_every_panel():
    import matplotlib

    matplotlib.use("Agg")
    records = _records()
    table = glance.glance_table(records, None, K_OF, n_bootstrap=20)
    fig = glance_plots.pareto_figure(table, [("pope-adversarial", "f1"), ("pope-adversarial", "ece")])
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    fig = glance_plots.control_figure(glance.controls(records, None, K_OF, n_bootstrap=20))
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="^panels: no runs with 'chair_i'"):
        glance_plots.pareto_figure(table, [("pope-adversarial", "chair_i")])
