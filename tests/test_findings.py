"""The Study A chapters' findings: sentences computed from constructed tables (hand-checked counts)."""

from __future__ import annotations

from types import SimpleNamespace
from pathlib import Path

import pandas as pd

from visprune.book import findings

TOY = SimpleNamespace(name="toy", model=Path("toy-llava"))


def _grid():
    return pd.DataFrame({"run": ["none"] * 4, "status": "ok", "answers": [["yes", "no"]] * 4})


def _base(low):
    return pd.DataFrame([{"run": "none", "accuracy": 0.8, "accuracy_low": low, "accuracy_high": 0.9, "n": 4}])


def _diff(comparison, metric, direction, a=0.1, b=0.2):
    low, high = {"lower": (-0.2, -0.1), "higher": (0.1, 0.2), "indistinguishable": (-0.1, 0.1)}[direction]
    return {"comparison": comparison, "metric": metric, "direction": direction, "a": a, "b": b,
            "diff": (low + high) / 2, "low": low, "high": high}


def test_pope_findings_count_the_budgets_where_each_claim_holds():
    """Each calibration claim is judged on binned ECE and on SmoothECE; where they disagree it says so."""
    rows = []
    for b, (cov_ece, cov_sm, cov_acc, sal_ece, sal_sm, fastv_acc) in {
            16: ("lower", "lower", "indistinguishable", "higher", "indistinguishable", "lower"),
            32: ("lower", "indistinguishable", "lower", "indistinguishable", "indistinguishable", "lower")}.items():
        rows += [_diff(f"SCOPE α=0 − unpruned @ {b}", "ece", cov_ece), _diff(f"SCOPE α=0 − unpruned @ {b}", "smece", cov_sm),
                 _diff(f"SCOPE α=0 − unpruned @ {b}", "accuracy", cov_acc),
                 _diff(f"saliency-only − unpruned @ {b}", "ece", sal_ece),
                 _diff(f"saliency-only − unpruned @ {b}", "smece", sal_sm),
                 _diff(f"FastV − unpruned @ {b}", "accuracy", fastv_acc)]
    floors = pd.DataFrame({"run": ["none", "x"], "ece_above": [False, True], "smece_above": [False, False]})
    text = findings.pope_calibration_findings(_grid(), _base(0.7), pd.DataFrame(rows), unpruned="none",
                                              coverage="SCOPE α=0", budgets=[16, 32], profile=TOY, floors=floors)
    assert text.startswith("These are **toy-world** results (model `toy-llava`)")
    assert "against 0.500 by guessing." in text
    assert ("lowers ECE at similar accuracy* (calibration interval below 0, accuracy interval including 0): "
            "binned ECE holds at 1 of 2 budgets; SmoothECE holds at 1 of 2 budgets") in text
    assert "worsens calibration* (calibration interval above 0): binned ECE holds at 1 of 2 budgets; SmoothECE holds at no budget" in text
    assert "*FastV degrades badly* (accuracy interval below 0): holds at every budget" in text
    assert ("disagree on saliency-only at 16 tokens (binned ECE: higher than unpruned; SmoothECE: interval includes 0); "
            "SCOPE α=0 at 32 tokens (binned ECE: lower than unpruned; SmoothECE: interval includes 0).") in text
    assert "binned ECE is above its noise floor's 95th percentile for 1 of 2 runs; SmoothECE is above" in text


def test_scienceqa_findings_name_the_configurations():
    names = ["a @ 16", "b @ 16", "c @ 16"]
    rows = [_diff("a @ 16", "ece", "lower"), _diff("a @ 16", "smece", "lower"), _diff("a @ 16", "accuracy", "indistinguishable"),
            _diff("b @ 16", "ece", "lower"), _diff("b @ 16", "smece", "indistinguishable"), _diff("b @ 16", "accuracy", "lower"),
            _diff("c @ 16", "ece", "higher"), _diff("c @ 16", "smece", "higher"), _diff("c @ 16", "accuracy", "indistinguishable")]
    text = findings.scienceqa_calibration_findings(_grid(), _base(0.4), pd.DataFrame(rows), unpruned="none",
                                                   names=names, profile=TOY)
    assert "is not above chance in this run" in text  # accuracy_low 0.4 < 0.5
    assert ("- binned ECE: lower than the unpruned model's (interval below 0) for 2 of 3 pruned configurations "
            "(a @ 16, b @ 16); of those, accuracy not lower: 1 (a @ 16); higher than unpruned: 1 (c @ 16).") in text
    assert "- SmoothECE: lower than the unpruned model's (interval below 0) for 1 of 3 pruned configurations (a @ 16)" in text
    assert "- Accuracy lower than unpruned: 1 (b @ 16)." in text
    assert ("is, in this run, supported for some pruned configurations, not for all by binned ECE; supported for some "
            "pruned configurations, not for all by SmoothECE.") in text
    assert text.endswith("disagree on b @ 16 (binned ECE: lower than unpruned; SmoothECE: interval includes 0).")


def _pooled(low=0.7):
    return pd.DataFrame([{"run": "none", "method": "none", "accuracy": 0.8, "accuracy_low": low, "accuracy_high": 0.9,
                          "n": 4}])


def test_alpha_sweep_findings_count_lower_and_monotone_budgets():
    diffs = pd.DataFrame([_diff("SCOPE α=0 − SCOPE α=1 @ 16", "ece", "lower"),
                          _diff("SCOPE α=0 − SCOPE α=1 @ 16", "smece", "lower"),
                          _diff("SCOPE α=0 − SCOPE α=1 @ 16", "accuracy", "indistinguishable"),
                          _diff("SCOPE α=0 − SCOPE α=1 @ 32", "ece", "indistinguishable"),
                          _diff("SCOPE α=0 − SCOPE α=1 @ 32", "smece", "lower"),
                          _diff("SCOPE α=0 − SCOPE α=1 @ 32", "accuracy", "indistinguishable")])
    scope = pd.DataFrame({"budget": [16, 16, 16, 32, 32, 32], "alpha": [0, 0.5, 1] * 2,
                          "ece": [0.01, 0.02, 0.03, 0.02, 0.01, 0.03],  # rises at 16, not at 32
                          "smece": [0.01, 0.02, 0.03, 0.01, 0.02, 0.03]})  # rises at both
    text = findings.alpha_sweep_findings(_grid(), _pooled(), diffs, scope, budgets=[16, 32], alphas=[0, 0.5, 1],
                                         profile=TOY)
    assert ("binned ECE: interval below 0 at 1 of 2 budgets, point estimates rising steadily with α at 1 of 2; "
            "SmoothECE: interval below 0 at 2 of 2 budgets, point estimates rising steadily with α at 2 of 2") in text
    assert ("by binned ECE, this run does not support it at every budget (it does at 1 of 2); by SmoothECE, this run "
            "supports the paper's claim at every budget.") in text
    assert text.endswith("disagree on 32 tokens (binned ECE: interval includes 0; SmoothECE: lower than unpruned).")


def test_gap_power_findings_count_the_cells_the_default_wins():
    best = pd.DataFrame([
        {"alpha": 0.5, "budget": 16, "best p (ECE)": 1, "ECE at best p": 0.02, "ECE at p = 1": 0.02,
         "ECE difference [95% CI]": "", "ECE direction": "default best",
         "best p (SmoothECE)": 1, "SmoothECE at best p": 0.02, "SmoothECE at p = 1": 0.02,
         "SmoothECE difference [95% CI]": "", "SmoothECE direction": "default best"},
        {"alpha": 0.5, "budget": 32, "best p (ECE)": 2, "ECE at best p": 0.01, "ECE at p = 1": 0.03,
         "ECE difference [95% CI]": "-0.020 (95% CI -0.030 to -0.010)", "ECE direction": "lower",
         "best p (SmoothECE)": 4, "SmoothECE at best p": 0.02, "SmoothECE at p = 1": 0.025,
         "SmoothECE difference [95% CI]": "-0.005 (95% CI -0.010 to 0.001)", "SmoothECE direction": "indistinguishable"}])
    text = findings.gap_power_findings(_grid(), _pooled(), best, profile=TOY)
    assert "- α = 0.5, 32 tokens: ECE lowest at p = 2, 0.010 against 0.030 at p = 1" in text
    assert "SmoothECE lowest at p = 4, 0.020 against 0.025 at p = 1" in text
    assert ("By binned ECE, the default p = 1 is lowest in 1 of 2 (α, budget) cells and another p is lower with an "
            "interval below 0 in 1 of 2.") in text
    assert ("So in this run by binned ECE the default is not always the best exponent, as the paper reports; by "
            "SmoothECE the default is not beaten beyond noise.") in text
    assert text.endswith("disagree on whether the default is beaten in: α = 0.5, 32 tokens.")


def test_adaptive_findings_tally_verdicts_by_each_metric_direction():
    per_image = pd.DataFrame({"erank_image": [1.0, 2.0, 3.0], "tau": [0.1, 0.2, 0.5]})
    paired = pd.DataFrame([
        {**_diff("x", "accuracy", "higher"), "dataset": "pope-random", "versus": "saliency"},   # better
        {**_diff("x", "chair_i", "higher"), "dataset": "chair", "versus": "saliency"},          # more CHAIR: worse
        {**_diff("x", "chair_i", "lower"), "dataset": "chair", "versus": "divprune"},           # better
        {**_diff("x", "accuracy", "indistinguishable"), "dataset": "pope-random", "versus": "divprune"},
    ])
    summary = pd.DataFrame({"dataset": ["chair"] * 2, "method": ["adaptive", "saliency"], "budget": [16, 16],
                            "chair_i": [0.2, 0.1]})
    text, tally = findings.adaptive_findings(per_image, paired, summary, targets=[("chair", "chair_i", False)],
                                             budgets=[16], tau_max=0.5)
    assert int(tally["better"].sum()) == 2 and int(tally["worse"].sum()) == 1
    assert "clearly better in 2, clearly worse in 1" in text and "33% of the images" in text
    assert "chair (chair_i): saliency at 16" in text


def test_recalibration_findings_count_and_name_the_surviving_differences():
    """The headline is computed from the survival tables: constructed studies with known counts."""
    from types import SimpleNamespace

    def study(name, directions):
        rows = []
        for comparison, metric, before, after in directions:
            rows.append({"comparison": comparison, "metric": metric, "before_direction": before, "after_direction": after,
                         "survives": None if before == "indistinguishable" else before == after})
        temps = pd.DataFrame({"run": ["none", "a", "b"], "temperature": [1.2, 1.5, 1.1]})
        return SimpleNamespace(name=name, survival=pd.DataFrame(rows), temperatures=temps, unpruned="none",
                               comparisons=[("a @ 16", "a", "none"), ("b @ 16", "b", "none")], aurc_change=lambda: 0.001)

    pope = study("POPE", [("a @ 16", "ece", "higher", "higher"), ("a @ 16", "smece", "higher", "indistinguishable"),
                          ("b @ 16", "ece", "indistinguishable", "indistinguishable"),
                          ("b @ 16", "smece", "indistinguishable", "lower")])
    text = findings.recalibration_findings([pope], profile=TOY)
    assert "The unpruned model's fitted temperature is 1.20; 1 of 2 pruned configurations need a higher one" in text
    assert "- ECE: 1 of 2 differences against the unpruned model had an interval excluding 0 before recalibration; " \
           "1 still do after it, on the same side (a @ 16 (higher than unpruned)), 0 do not; 0 appear only after it." in text
    assert "- SmoothECE: 1 of 2 differences" in text and "0 still do after it, on the same side (none), 1 do not; 1 appear" in text
    assert "1 of 2 calibration differences (ECE and SmoothECE counted separately) survive recalibration" in text
    none_survive = study("POPE", [("a @ 16", "ece", "higher", "indistinguishable")])
    assert "None of the calibration differences survives recalibration" in findings.recalibration_findings(
        [none_survive], profile=TOY)
