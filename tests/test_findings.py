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
    rows = []
    for b, (cov_ece, cov_acc, sal_ece, fastv_acc) in {16: ("lower", "indistinguishable", "higher", "lower"),
                                                      32: ("lower", "lower", "indistinguishable", "lower")}.items():
        rows += [_diff(f"SCOPE α=0 − unpruned @ {b}", "ece", cov_ece), _diff(f"SCOPE α=0 − unpruned @ {b}", "accuracy", cov_acc),
                 _diff(f"saliency-only − unpruned @ {b}", "ece", sal_ece),
                 _diff(f"FastV − unpruned @ {b}", "accuracy", fastv_acc)]
    text = findings.pope_calibration_findings(_grid(), _base(0.7), pd.DataFrame(rows), unpruned="none",
                                              coverage="SCOPE α=0", budgets=[16, 32], profile=TOY)
    assert text.startswith("These are **toy-world** results (model `toy-llava`)")
    assert "against 0.500 by guessing." in text
    assert "lowers ECE at similar accuracy* (ECE interval below 0, accuracy interval including 0): holds at 1 of 2" in text
    assert "worsens calibration* (ECE interval above 0): holds at 1 of 2 budgets" in text
    assert "*FastV degrades badly* (accuracy interval below 0): holds at every budget" in text


def test_scienceqa_findings_name_the_configurations():
    names = ["a @ 16", "b @ 16", "c @ 16"]
    rows = [_diff("a @ 16", "ece", "lower"), _diff("a @ 16", "accuracy", "indistinguishable"),
            _diff("b @ 16", "ece", "lower"), _diff("b @ 16", "accuracy", "lower"),
            _diff("c @ 16", "ece", "higher"), _diff("c @ 16", "accuracy", "indistinguishable")]
    text = findings.scienceqa_calibration_findings(_grid(), _base(0.4), pd.DataFrame(rows), unpruned="none",
                                                   names=names, profile=TOY)
    assert "is not above chance in this run" in text  # accuracy_low 0.4 < 0.5
    assert "(interval below 0): 2 of 3 (a @ 16, b @ 16)." in text
    assert "accuracy not lower (interval not below 0): 1 (a @ 16)." in text
    assert "ECE higher than unpruned: 1 (c @ 16); accuracy lower than unpruned: 1 (b @ 16)." in text
    assert text.endswith("is supported for some pruned configurations in this run, not for all.")
