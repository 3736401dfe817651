"""Tests for visprune.book.analysis (summary tables, paired differences) and visprune.book.plots.

Checks against independent references: numbers worked out by hand, the metric functions of
visprune.metrics called directly, and metrics.bootstrap_ci / bootstrap_diff_ci (the reference
implementation of the intervals that reporting computes for all resamples at once).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from visprune import metrics
from visprune.book import plots, verdicts, analysis as reporting  # noqa: E402

HAND_PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
HAND_LABELS = np.array([0, 1, 1, 1])


def records(run, probs, labels, *, dataset="pope-random", method="scope", k=16, params=None, status=None,
            answers=None, ids=None):
    """A records table shaped like Evaluator.run's (only the columns reporting reads, plus a few)."""
    probs = [list(map(float, p)) for p in probs]
    n = len(probs)
    if answers is None:
        answers = [["yes", "no"]] * n
    table = pd.DataFrame({
        "dataset": dataset, "method": method, "k": k, "run": run,
        "sample_id": ids if ids is not None else [f"s{i}" for i in range(n)],
        "status": status if status is not None else ["ok"] * n,
        "label": list(map(int, labels)), "answers": answers, "probs": probs,
    })
    table["confidence"] = [max(p) for p in probs]
    table["prediction"] = [int(np.argmax(p)) for p in probs]
    table["correct"] = table["prediction"] == table["label"]
    for name, value in (params or {}).items():
        table[name] = value
    return table


def random_probs(rng, n, c, decimals=None):
    p = rng.dirichlet(np.ones(c) * 0.7, size=n)
    if decimals is not None:  # rounding makes tied confidences, which AURC must handle
        p = np.round(p, decimals)
        p[:, -1] = 1.0 - p[:, :-1].sum(axis=1)
        p = np.clip(p, 0, 1)
        p /= p.sum(axis=1, keepdims=True)
    return p


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------ summary_table


def test_summary_of_a_hand_case():
    # predictions 0,0,1,0 -> correct 1,0,1,0; yes = index 0
    grid = records("a", HAND_PROBS, HAND_LABELS)
    row = reporting.summary_table(grid, reporting.METRICS, n_bins=5, n_bootstrap=0).iloc[0]
    assert row["accuracy"] == pytest.approx(0.5)
    assert row["yes_ratio"] == pytest.approx(0.75)
    assert row["precision"] == pytest.approx(1 / 3) and row["recall"] == pytest.approx(1.0)
    assert row["f1"] == pytest.approx(0.5)
    # Brier: (0.01+0.01) + (0.64+0.64) + (0.09+0.09) + (0.36+0.36) = 2.2, / 4
    assert row["brier"] == pytest.approx(0.55)
    # 5 bins: {0.6, 0.7} in bin 3 (1 hit, conf 1.3), {0.8, 0.9} in bin 4 (1 hit, conf 1.7)
    assert row["ece"] == pytest.approx((0.3 + 0.7) / 4)
    assert row["mce"] == pytest.approx(0.35)
    # sorted by confidence: right, wrong, right, wrong -> risks 0, 1/2, 1/3, 1/2
    assert row["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert row["n"] == 4 and row["n_failed"] == 0
    assert np.isnan(row["ece_low"]) and np.isnan(row["ece_high"])


def test_summary_equals_metrics_called_directly_per_group():
    rng = np.random.default_rng(3)
    pa, pb = random_probs(rng, 40, 2), random_probs(rng, 40, 2)
    ya = rng.integers(0, 2, 40)
    status = ["ok"] * 38 + ["failed"] * 2
    grid = pd.concat([records("a", pa, ya, status=status, params={"alpha": 0.0}),
                      records("b", pb, ya, method="saliency", dataset="pope-popular")], ignore_index=True)
    table = reporting.summary_table(grid, ("accuracy", "f1", "ece", "brier", "aurc"), n_bins=10, n_bootstrap=0)
    assert list(table["run"]) == ["a", "b"] and list(table["dataset"]) == ["pope-random", "pope-popular"]
    a = table.iloc[0]
    assert a["n"] == 38 and a["n_failed"] == 2 and a["label"] == "SCOPE α=0" and a["alpha"] == 0.0
    p, y = pa[:38], ya[:38]
    assert a["accuracy"] == pytest.approx(metrics.accuracy(p, y))
    assert a["f1"] == pytest.approx(metrics.f1(p, y))
    assert a["ece"] == pytest.approx(metrics.ece(p, y, n_bins=10))
    assert a["brier"] == pytest.approx(metrics.brier(p, y))
    correct = p.argmax(1) == y
    assert a["aurc"] == pytest.approx(metrics.aurc(p.max(1), correct))
    assert table.iloc[1]["ece"] == pytest.approx(metrics.ece(pb, ya, n_bins=10))
    assert table.iloc[1]["label"] == "saliency-only"


def test_ragged_answer_sets_are_padded_and_binary_metrics_left_out():
    # ScienceQA-like: 2 to 4 options per problem
    probs = [[0.7, 0.3], [0.2, 0.5, 0.3], [0.1, 0.1, 0.1, 0.7], [0.4, 0.6]]
    labels = [0, 2, 3, 0]
    answers = [["A", "B"], ["A", "B", "C"], ["A", "B", "C", "D"], ["A", "B"]]
    grid = records("r", probs, labels, dataset="scienceqa", answers=answers)
    row = reporting.summary_table(grid, ("accuracy", "f1", "ece", "brier"), n_bins=5, n_bootstrap=0).iloc[0]
    assert row["accuracy"] == pytest.approx(0.5)
    # Brier: 0.09+0.09 | 0.04+0.25+0.49 | 0.01*3+0.09 | 0.36+0.36
    assert row["brier"] == pytest.approx((0.18 + 0.78 + 0.12 + 0.72) / 4)
    assert np.isnan(row["f1"])
    padded, y = reporting.answer_arrays(grid)
    assert padded.shape == (4, 4) and padded[0].tolist() == [0.7, 0.3, 0.0, 0.0]
    assert row["ece"] == pytest.approx(metrics.ece(padded, y, n_bins=5))


@pytest.mark.parametrize("c, decimals", [(2, None), (2, 1), (4, 2)])
def test_intervals_equal_metrics_bootstrap_ci(c, decimals):
    rng = np.random.default_rng(c)
    probs = random_probs(rng, 60, c, decimals)
    labels = rng.integers(0, c, 60)
    answers = [["yes", "no"]] * 60 if c == 2 else [list("ABCD")] * 60
    grid = records("x", probs, labels, answers=answers, dataset="pope-random" if c == 2 else "scienceqa")
    names = reporting.METRICS if c == 2 else [m for m in reporting.METRICS if m not in reporting.BINARY_METRICS]
    row = reporting.summary_table(grid, names, n_bins=7, n_bootstrap=150, seed=11).iloc[0]
    for m in names:
        ref = metrics.bootstrap_ci(lambda p, y: reporting.metric_value(m, p, y, n_bins=7), probs, labels,
                                   n_resamples=150, seed=11)
        assert (row[f"{m}_low"], row[f"{m}_high"]) == pytest.approx(ref, abs=1e-12), m
        assert row[f"{m}_low"] <= row[m] + 1e-12 or m in ("ece", "mce", "eaurc"), m  # (biased metrics may sit outside)


def test_interval_contains_the_point_estimate_for_unbiased_metrics():
    rng = np.random.default_rng(8)
    probs = random_probs(rng, 200, 2)
    labels = (rng.random(200) < probs[:, 1]).astype(int)
    row = reporting.summary_table(records("x", probs, labels), ("accuracy", "brier", "yes_ratio"),
                                  n_bootstrap=300, seed=0).iloc[0]
    for m in ("accuracy", "brier", "yes_ratio"):
        assert row[f"{m}_low"] < row[m] < row[f"{m}_high"]


def test_pooling_by_run_equals_concatenated_samples():
    rng = np.random.default_rng(9)
    p1, p2 = random_probs(rng, 20, 2), random_probs(rng, 20, 2)
    y1, y2 = rng.integers(0, 2, 20), rng.integers(0, 2, 20)
    grid = pd.concat([records("a", p1, y1, dataset="pope-random"), records("a", p2, y2, dataset="pope-popular")])
    row = reporting.summary_table(grid, ("ece", "accuracy"), by=("run",), n_bootstrap=0).iloc[0]
    assert "dataset" not in row.index and row["n"] == 40
    assert row["ece"] == pytest.approx(metrics.ece(np.vstack([p1, p2]), np.r_[y1, y2]))


def test_summary_rejects_bad_input():
    grid = records("a", HAND_PROBS, HAND_LABELS)
    with pytest.raises(ValueError, match="metric"):
        reporting.summary_table(grid, ("accuracy", "nope"))
    with pytest.raises(ValueError, match="by"):
        reporting.summary_table(grid, by=("nosuchcolumn",))
    with pytest.raises(ValueError, match="n_bootstrap"):
        reporting.summary_table(grid, n_bootstrap=-1)
    with pytest.raises(ValueError, match="grid"):
        reporting.summary_table(grid[["run", "label"]])
    captions = grid.assign(probs=None)
    with pytest.raises(ValueError, match="probabilities"):
        reporting.summary_table(captions)


# ------------------------------------------------------------------------------ paired_difference


def test_paired_difference_matches_bootstrap_diff_ci_and_aligns_samples():
    rng = np.random.default_rng(4)
    pa, pb = random_probs(rng, 50, 2, decimals=2), random_probs(rng, 50, 2, decimals=2)
    y = rng.integers(0, 2, 50)
    a = records("a", pa, y)
    b = records("b", pb, y).sample(frac=1.0, random_state=0)  # another row order: matched on sample_id
    grid = pd.concat([a, b], ignore_index=True)
    for m in ("ece", "accuracy", "aurc", "f1"):
        d = reporting.paired_difference(grid, "a", "b", m, n_bins=8, n_bootstrap=120, seed=3)
        fa = reporting.metric_value(m, pa, y, n_bins=8)
        fb = reporting.metric_value(m, pb, y, n_bins=8)
        assert d["diff"] == pytest.approx(fa - fb) and d["a"] == pytest.approx(fa) and d["n"] == 50
        ref = metrics.bootstrap_diff_ci(lambda p, l: reporting.metric_value(m, p, l, n_bins=8), (pa, y), (pb, y),
                                        n_resamples=120, seed=3)
        assert (d["low"], d["high"]) == pytest.approx(ref, abs=1e-12), m


def test_paired_difference_of_a_run_with_itself_is_exactly_zero():
    rng = np.random.default_rng(1)
    p, y = random_probs(rng, 30, 2), rng.integers(0, 2, 30)
    grid = pd.concat([records("a", p, y), records("b", p, y)])
    d = reporting.paired_difference(grid, "a", "b", "ece", n_bootstrap=50)
    assert (d["diff"], d["low"], d["high"]) == (0.0, 0.0, 0.0)
    assert verdicts.direction(d) == "indistinguishable"


def test_paired_difference_uses_only_samples_scored_in_both_runs():
    grid = pd.concat([records("a", HAND_PROBS, HAND_LABELS, status=["ok", "ok", "ok", "failed"]),
                      records("b", HAND_PROBS[::-1], HAND_LABELS, status=["failed", "ok", "ok", "ok"])])
    d = reporting.paired_difference(grid, "a", "b", "accuracy", n_bootstrap=20)
    assert d["n"] == 2  # s1 and s2
    with pytest.raises(ValueError, match="run_b"):
        reporting.paired_difference(grid, "a", "zzz", "ece")
    with pytest.raises(ValueError, match="n_bootstrap"):
        reporting.paired_difference(grid, "a", "b", "ece", n_bootstrap=0)


def test_compare_runs_and_direction():
    # b is always right and sure; a always wrong and unsure: accuracy a - b = -1 on every resample
    y = np.array([0, 1, 0, 1, 0, 1])
    right = np.eye(2)[y] * 0.98 + 0.01
    wrong = np.eye(2)[1 - y] * 0.2 + 0.4
    grid = pd.concat([records("a", wrong, y), records("b", right, y)])
    table = reporting.compare_runs(grid, [("a vs b", "a", "b")], ["accuracy", "ece"], n_bootstrap=50)
    acc = table[table["metric"] == "accuracy"].iloc[0]
    assert acc["diff"] == -1.0 and acc["direction"] == "lower"
    ece = table[table["metric"] == "ece"].iloc[0]  # a: conf 0.6, acc 0 -> 0.6; b: conf 0.99, acc 1 -> 0.01
    assert ece["diff"] == pytest.approx(0.59) and ece["direction"] == "higher"
    assert verdicts.format_difference({"diff": -0.02, "low": -0.04, "high": 0.01}) == "-0.020 (95% CI -0.040 to +0.010)"


# ------------------------------------------------------------------------------ small helpers


def test_add_budget_and_labels():
    summary = pd.DataFrame({"method": ["none", "scope", "random", "scope"], "k": [144, 16, 48, 20]})
    out = reporting.add_budget(summary, {64: 16, 128: 32, 192: 48})
    assert out["budget"].tolist()[:3] == [576.0, 64.0, 192.0] and np.isnan(out["budget"].iloc[3])
    assert "budget" not in summary
    with pytest.raises(ValueError, match="k_of"):
        reporting.add_budget(summary, {64: 16, 65: 16})
    assert reporting.method_label("scope", {"alpha": 0.5, "gap_power": 1.0}) == "SCOPE α=0.5"
    assert reporting.method_label("fastv", {"layer": 3}) == "FastV (layer 3)"
    assert reporting.method_label("fastv", {"layer": 2, "ranking": "previous"}) == "FastV"
    assert reporting.method_label("fastv", {"layer": 2, "ranking": "same"}) == "FastV (same-layer ranking)"
    assert reporting.format_interval(0.5, float("nan"), float("nan")) == "0.500"
    answers = [["yes", "no"], list("ABCDE"), list("ABC")]
    table = pd.DataFrame({"status": ["ok", "ok", "failed"], "answers": answers})
    assert reporting.chance_accuracy(table) == pytest.approx((1 / 2 + 1 / 5) / 2)


def test_format_summary_and_markdown_table():
    grid = records("a", HAND_PROBS, HAND_LABELS)
    table = reporting.summary_table(grid, ("accuracy",), n_bootstrap=20)
    shown = reporting.format_summary(table, ["accuracy"])
    assert shown.loc[0, "accuracy"].startswith("0.500 [") and list(shown.columns) == ["label", "accuracy", "n"]
    md = reporting.markdown_table(pd.DataFrame({"x": [1], "y": ["a"]}))
    assert md.splitlines() == ["| x | y |", "|---|---|", "| 1 | a |"]


# ------------------------------------------------------------------------------ plots


def summary_for_lines():
    rows = []
    for label, method in (("SCOPE α=0", "scope"), ("saliency-only", "saliency"), ("random", "random")):
        for budget in (64, 128, 192):
            for split in ("pope-random", "pope-popular"):
                rows.append({"dataset": split, "label": label, "method": method, "budget": float(budget),
                             "accuracy": 0.8, "accuracy_low": 0.7, "accuracy_high": 0.9,
                             "ece": 0.1, "ece_low": 0.05, "ece_high": 0.15})
    return pd.DataFrame(rows)


def test_metric_vs_budget_draws_one_line_per_method_and_the_references():
    summary = summary_for_lines()
    refs = pd.DataFrame({"dataset": ["pope-random", "pope-popular"], "label": ["unpruned"] * 2,
                         "accuracy": [0.85, 0.8], "accuracy_low": [0.8, 0.75], "accuracy_high": [0.9, 0.85],
                         "ece": [0.2, 0.2], "ece_low": [0.1, 0.1], "ece_high": [0.3, 0.3]})
    fig = plots.metric_vs_budget(summary, ["accuracy", "ece"], rows="dataset", references=refs)
    assert isinstance(fig, plt.Figure)
    axes = fig.axes
    assert len(axes) == 4  # 2 splits x 2 metrics
    for ax in axes:
        assert len(ax.containers) == 3  # one errorbar line per method
        reference = [line for line in ax.get_lines() if line.get_gid() == "reference"]
        assert len(reference) == 1  # only this split's unpruned row
    # the top-left panel (pope-random, accuracy) has the pope-random reference at 0.85
    ref_line = [line for line in axes[0].get_lines() if line.get_gid() == "reference"][0]
    assert ref_line.get_ydata()[0] == pytest.approx(0.85)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["SCOPE α=0", "saliency-only", "random", "unpruned (reference)"]


def test_metric_vs_parameter_places_panel_references():
    scope = pd.DataFrame({"alpha": [0.0, 0.5, 1.0] * 2, "budget": [64.0] * 3 + [128.0] * 3,
                          "ece": [0.1, 0.2, 0.3, 0.1, 0.15, 0.2]})
    refs = pd.DataFrame({"label": ["unpruned", "random", "random"], "budget": [np.nan, 64.0, 128.0],
                         "ece": [0.25, 0.3, 0.35]})
    fig = plots.metric_vs_parameter(scope, "alpha", "ece", panels="budget", references=refs, line_label="SCOPE")
    assert len(fig.axes) == 2
    for ax, own in zip(fig.axes, (0.3, 0.35)):
        ys = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_gid() == "reference")
        assert ys == sorted([0.25, own])
        line = ax.containers[0].lines[0]
        assert line.get_ydata().tolist() == scope[scope["budget"] == (64.0 if own == 0.3 else 128.0)]["ece"].tolist()
    with pytest.raises(ValueError, match="summary"):
        plots.metric_vs_parameter(scope, "gap_power", "ece")


def test_reliability_diagrams_draw_one_bar_per_nonempty_bin():
    fig = plots.reliability_diagrams({"a": (HAND_PROBS, HAND_LABELS), "b": (HAND_PROBS[:2], HAND_LABELS[:2])}, n_bins=5)
    top_a, top_b = fig.axes[0], fig.axes[1]
    bars_a = [p for p in top_a.patches if p.get_gid() == "accuracy"]
    assert len(bars_a) == 2  # bins 3 and 4
    heights = sorted(p.get_height() for p in bars_a)
    assert heights == pytest.approx([0.5, 0.5])  # accuracy in bin 3 (1 of 2) and bin 4 (1 of 2)
    assert len([p for p in top_b.patches if p.get_gid() == "accuracy"]) == 1
    with pytest.raises(ValueError, match="panels"):
        plots.reliability_diagrams({})


def test_risk_coverage_curves_follow_metrics_risk_coverage():
    conf, correct = np.array([0.9, 0.8, 0.8, 0.6]), np.array([1, 0, 1, 0])
    fig = plots.risk_coverage_curves({"m": (conf, correct), "n": (conf[::-1], correct)})
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    cov, risk = metrics.risk_coverage(conf, correct)
    assert lines[0].get_xdata().tolist() == cov.tolist() and lines[0].get_ydata().tolist() == risk.tolist()
    assert "AURC 0.271" in lines[0].get_label()


def test_metric_heatmap_writes_each_cell():
    scope = pd.DataFrame({"alpha": [0.0, 1.0, 0.0, 1.0], "budget": [64, 64, 128, 128], "ece": [0.1, 0.2, 0.3, 0.4]})
    fig = plots.metric_heatmap(scope, "ece", rows="alpha", cols="budget")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0.100", "0.200", "0.300", "0.400"]
    image = fig.axes[0].images[0].get_array()
    assert image[0].tolist() == [0.1, 0.3]  # row alpha = 0: budgets 64, 128
    with pytest.raises(ValueError, match="same"):
        plots.metric_heatmap(pd.concat([scope, scope]), "ece", rows="alpha", cols="budget")


def test_colors_are_fixed_per_method():
    assert plots.color_for("unpruned") == "#000000"
    assert plots.color_for("FastV (layer 3)") == plots.color_for("FastV")
    assert plots.color_for("SCOPE α=0") != plots.color_for("SCOPE α=1")


# ------------------------------------------------------------------------------ verdicts (one vocabulary)


@pytest.mark.parametrize("low, high, where, ece_verdict, acc_verdict", [
    (-0.04, -0.01, "below", "better", "worse"),
    (0.01, 0.03, "above", "worse", "better"),
    (-0.01, 0.02, "includes 0", "no clear difference", "no clear difference"),
    (0.0, 0.02, "includes 0", "no clear difference", "no clear difference"),  # touching 0 is not clear
])
def test_side_and_verdict_follow_the_metric_direction(low, high, where, ece_verdict, acc_verdict):
    d = {"diff": (low + high) / 2, "low": low, "high": high}
    assert verdicts.side(d) == where
    assert verdicts.verdict(d, "ece") == ece_verdict  # lower is better (its spec)
    assert verdicts.verdict(d, "accuracy") == acc_verdict
    assert verdicts.verdict(d, "chair_i") == ece_verdict  # a caption metric: lower is better
    with pytest.raises(ValueError, match="^metric: 'yes_ratio' has no better direction"):
        verdicts.verdict(d, "yes_ratio")


@pytest.mark.parametrize("low, high, claimed, magnitude, expected", [
    (-0.20, -0.08, "lower", 0.05, "supported"),       # "degrades badly": at least 5 points, and it is
    (-0.04, -0.01, "lower", 0.05, "contradicted"),    # lower, but surely by less than the claimed 5 points
    (-0.08, -0.02, "lower", 0.05, "inconclusive"),    # the interval straddles the claimed size
    (-0.04, -0.01, "lower", 0.0, "supported"),
    (0.01, 0.03, "lower", 0.0, "contradicted"),
    (-0.01, 0.03, "higher", 0.0, "inconclusive"),
    (0.02, 0.03, "higher", 0.01, "supported"),
])
def test_claim_verdict_with_the_magnitude_a_claim_needs(low, high, claimed, magnitude, expected):
    d = {"diff": (low + high) / 2, "low": low, "high": high}
    assert verdicts.claim_verdict(d, claimed, magnitude) == expected
    sentence = verdicts.claim_sentence("FastV degrades accuracy badly", d, claimed, magnitude, digits=2)
    assert sentence.startswith("The paper reports that FastV degrades accuracy badly.")
    assert sentence.endswith(f"the claim is {expected}.")
    assert f"[{low:+.2f}, {high:+.2f}]" in sentence


def test_claim_verdict_rejects_a_bad_claim():
    d = {"diff": 0.0, "low": -1.0, "high": 1.0}
    with pytest.raises(ValueError, match="^claimed: "):
        verdicts.claim_verdict(d, "worse")
    with pytest.raises(ValueError, match="^magnitude: "):
        verdicts.claim_verdict(d, "lower", -0.1)
