"""What each Study A chapter's run shows, in sentences computed from its tables (DESIGN.md
section 7): the papers' claims stated as theirs, this run's numbers from its results, agreeing
or not. Each chapter's "What this run shows" cell is one call here."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from visprune.book.analysis import chance_accuracy, format_interval
from visprune.book.verdicts import budget_verdict, format_difference, listing, profile_sentence, row, skill_sentence

__all__ = ["pope_calibration_findings", "scienceqa_calibration_findings"]

_SAID = {"lower": "lower than unpruned", "higher": "higher than unpruned", "indistinguishable": "interval includes 0"}
_CAUTION = ("Where a claim does not hold here, this run does not support it; with the toy model and these sample "
            "counts, an interval that includes 0 means the run cannot tell the methods apart, not that they are equal.")


def _skill(grid: pd.DataFrame, base: pd.Series, unpruned: str, what: str) -> str:
    chance = chance_accuracy(grid[grid["run"] == unpruned])
    accuracy = format_interval(base["accuracy"], base["accuracy_low"], base["accuracy_high"])
    return skill_sentence(accuracy, int(base["n"]), what, base["accuracy_low"], chance)


def pope_calibration_findings(grid: pd.DataFrame, pooled: pd.DataFrame, diffs: pd.DataFrame, *, unpruned: str,
                              coverage: str, budgets: Sequence[int], profile: Any) -> str:
    """The POPE chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows named
    ``"<label> − unpruned @ <budget>"`` for the coverage configuration, saliency-only and FastV,
    on accuracy and ECE; ``pooled``: the summary over the three splits."""
    base = row(pooled, run=unpruned)

    def diff(name: str, budget: int, metric: str) -> pd.Series:
        return row(diffs, comparison=f"{name} − unpruned @ {budget}", metric=metric)

    lines, n_cov, n_sal, n_fastv = [], 0, 0, 0
    for b in budgets:
        e, a = diff(coverage, b, "ece"), diff(coverage, b, "accuracy")
        s, f = diff("saliency-only", b, "ece"), diff("FastV", b, "accuracy")
        lines.append(f"- **{b} tokens.** {coverage}: ECE {e['a']:.3f} against the unpruned {e['b']:.3f}, difference "
                     f"{format_difference(e)}, {_SAID[e['direction']]}; accuracy difference "
                     f"{format_difference(a)}, {_SAID[a['direction']]}. Saliency-only: ECE difference "
                     f"{format_difference(s)}, {_SAID[s['direction']]}. FastV: accuracy difference "
                     f"{format_difference(f)}, {_SAID[f['direction']]}.")
        n_cov += e["direction"] == "lower" and a["direction"] == "indistinguishable"
        n_sal += s["direction"] == "higher"
        n_fastv += f["direction"] == "lower"
    n = len(budgets)
    return "\n".join([
        profile_sentence(profile) + " " + _skill(grid, base, unpruned, "pooled answers"), "",
        *lines, "",
        f"- *Pure coverage lowers ECE at similar accuracy* (ECE interval below 0, accuracy interval including 0): "
        f"{budget_verdict(n_cov, n)} in this run.",
        f"- *Saliency-only pruning worsens calibration* (ECE interval above 0): {budget_verdict(n_sal, n)} in this run.",
        f"- *FastV degrades badly* (accuracy interval below 0): {budget_verdict(n_fastv, n)} in this run.",
        "", _CAUTION,
    ])


def scienceqa_calibration_findings(grid: pd.DataFrame, summary: pd.DataFrame, diffs: pd.DataFrame, *,
                                   unpruned: str, names: Sequence[str], profile: Any) -> str:
    """The ScienceQA chapter's findings (markdown). ``diffs``: ``analysis.compare_runs`` rows of
    every pruned configuration (``names``, its comparison names) against the unpruned model, on
    accuracy and ECE."""
    base = row(summary, run=unpruned)
    ece_dir = diffs[diffs["metric"] == "ece"].set_index("comparison")["direction"]
    acc_dir = diffs[diffs["metric"] == "accuracy"].set_index("comparison")["direction"]
    lower_ece = [n for n in names if ece_dir[n] == "lower"]
    both = [n for n in lower_ece if acc_dir[n] != "lower"]
    higher_ece = [n for n in names if ece_dir[n] == "higher"]
    lower_acc = [n for n in names if acc_dir[n] == "lower"]
    if names and len(both) == len(names):
        claim = "is supported for every pruned configuration in this run."
    elif both:
        claim = "is supported for some pruned configurations in this run, not for all."
    else:
        claim = ("is not supported by this run: no pruned configuration has an ECE interval below the unpruned "
                 "model's with accuracy held.")
    return "\n".join([
        profile_sentence(profile) + " " + _skill(grid, base, unpruned, "problems"), "",
        f"- Pruned configurations whose ECE is lower than the unpruned model's (interval below 0): "
        f"{len(lower_ece)} of {len(names)} ({listing(lower_ece)}).",
        f"- Of those, accuracy not lower (interval not below 0): {len(both)} ({listing(both)}).",
        f"- ECE higher than unpruned: {len(higher_ece)} ({listing(higher_ece)}); accuracy lower than unpruned: "
        f"{len(lower_acc)} ({listing(lower_acc)}).", "",
        "The paper's claim (pruning lowers ECE with stable accuracy) " + claim,
    ])
