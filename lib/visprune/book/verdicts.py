"""Verdicts and the sentences that state them (DESIGN.md section 7, "Honesty rules"): how the
book reads a paired difference (its interval against 0), judges a paper's claim (with the
magnitude the claim needs), and words it. The chapters call these; none defines its own.

Every verdict starts from :func:`side`: where the interval of a difference a - b lies.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["side", "direction", "verdict", "claim_verdict", "claim_sentence", "count_sides", "agreement",
           "budget_verdict", "describe_difference", "format_difference", "listing", "row", "profile_sentence",
           "skill_sentence"]


def side(difference: Mapping[str, Any]) -> str:
    """Where a paired interval (``low``, ``high``) lies: ``"above"`` 0, ``"below"`` 0, or
    ``"includes 0"``. Every verdict of the book is built on this one reading."""
    low, high = float(difference["low"]), float(difference["high"])
    if low > 0:
        return "above"
    if high < 0:
        return "below"
    return "includes 0"


def direction(difference: Mapping[str, Any]) -> str:
    """``"lower"``, ``"higher"`` or ``"indistinguishable"``: where the interval of a
    :func:`paired_difference` lies relative to 0 (run_a compared with run_b)."""
    return {"below": "lower", "above": "higher"}.get(side(difference), "indistinguishable")


def _higher_is_better(metric: str | None, higher_is_better: bool | None) -> bool:
    if higher_is_better is not None:
        return bool(higher_is_better)
    from visprune.metrics.specs import METRIC_SPECS, SCORE_SPECS

    spec = METRIC_SPECS.get(metric) or SCORE_SPECS.get(metric)
    if spec is None or spec.direction is None:
        raise ValueError(f"metric: {metric!r} has no better direction; pass higher_is_better=True or False")
    return spec.direction == "higher"


def verdict(difference: Mapping[str, Any], metric: str | None = None, *, higher_is_better: bool | None = None) -> str:
    """``"better"``, ``"worse"`` or ``"no clear difference"`` for a against b in a paired
    difference (a - b): a is better when the whole interval lies on the metric's good side of 0
    (its spec's direction: above for accuracy or recall, below for ECE or CHAIR)."""
    good = "above" if _higher_is_better(metric, higher_is_better) else "below"
    where = side(difference)
    if where == "includes 0":
        return "no clear difference"
    return "better" if where == good else "worse"


def claim_verdict(difference: Mapping[str, Any], claimed: str, magnitude: float = 0.0) -> str:
    """A paper's claim that a - b is ``claimed`` ("lower" or "higher") by at least ``magnitude``
    (0: any amount; e.g. 0.05 for "degrades badly" read as at least 5 points), judged on the
    paired interval: ``"supported"`` when the whole interval lies beyond ``magnitude`` on the
    claimed side, ``"contradicted"`` when it lies wholly on the other side of 0 or, for a claim
    of a magnitude, wholly short of it, ``"inconclusive"`` otherwise."""
    if claimed not in ("lower", "higher"):
        raise ValueError(f"claimed: expected 'lower' or 'higher', got {claimed!r}")
    if not (isinstance(magnitude, (int, float)) and magnitude >= 0):
        raise ValueError(f"magnitude: expected a non-negative number, got {magnitude!r}")
    sign = -1.0 if claimed == "lower" else 1.0
    low, high = sorted((sign * float(difference["low"]), sign * float(difference["high"])))  # claimed side > 0
    if low > magnitude:
        return "supported"
    if high < 0 or (magnitude > 0 and high < magnitude):
        return "contradicted"
    return "inconclusive"


def count_sides(table: pd.DataFrame) -> dict[str, int]:
    """How many paired intervals lie above 0, below 0, or include it: ``{"above", "below", "unclear"}``."""
    if not isinstance(table, pd.DataFrame) or not {"low", "high"} <= set(table.columns):
        raise ValueError("table: expected a table of paired differences with 'low' and 'high' columns")
    sides = [side(row) for _, row in table.iterrows()]
    return {"above": sides.count("above"), "below": sides.count("below"), "unclear": sides.count("includes 0")}


def describe_difference(difference: Mapping[str, Any], digits: int = 3) -> str:
    """A paired difference as text: ``"+0.050 [+0.010, +0.090], clearly above 0"``."""
    diff, low, high = float(difference["diff"]), float(difference["low"]), float(difference["high"])
    words = {"above": "clearly above 0", "below": "clearly below 0"}.get(side(difference), "the interval includes 0")
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], {words}"


def claim_sentence(claim: str, difference: Mapping[str, Any], claimed: str, magnitude: float = 0.0,
                   digits: int = 3) -> str:
    """One sentence stating a paper's claim as the paper's and this run's computed difference:
    ``"The paper reports that <claim>. In this run the difference is <describe_difference>: the
    claim is <claim_verdict>."``"""
    outcome = claim_verdict(difference, claimed, magnitude)
    size = f" by at least {magnitude:g}" if magnitude else ""
    return (f"The paper reports that {claim}. In this run the difference is {describe_difference(difference, digits)} "
            f"(claimed: {claimed}{size}): the claim is {outcome}.")


def format_difference(difference: Mapping[str, Any], digits: int = 3) -> str:
    """``"-0.021 (95% CI -0.040 to -0.003)"`` for a :func:`paired_difference` result (signed).

    >>> format_difference({"diff": -0.02, "low": -0.04, "high": 0.01})
    '-0.020 (95% CI -0.040 to +0.010)'
    """
    return f"{difference['diff']:+.{digits}f} (95% CI {difference['low']:+.{digits}f} to {difference['high']:+.{digits}f})"


def agreement(sides: Mapping[str, int], expected: str) -> str:
    """How counts of paired intervals (:func:`count_sides`) compare with the side a paper implies
    (``expected``: "above" or "below"), as a phrase: "agrees with the paper at every budget", ..."""
    if expected not in ("above", "below"):
        raise ValueError(f"expected: 'above' or 'below', got {expected!r}")
    n = sum(sides.values())
    against = "below" if expected == "above" else "above"
    if n and sides[expected] == n:
        return "agrees with the paper at every budget"
    if sides[against] > 0 and sides[expected] == 0:
        return f"points the other way at {sides[against]} of {n} budgets (and is unclear at the rest)"
    if sides[expected] > 0 and sides[against] == 0:
        return f"agrees at {sides[expected]} of {n} budgets and is unclear at the rest"
    if sides["unclear"] == n:
        return "cannot tell at this sample size (every interval includes 0)"
    return f"is mixed: {sides[expected]} budgets agree, {sides[against]} point the other way"


def budget_verdict(count: int, n_budgets: int) -> str:
    """"holds at every budget", "holds at no budget" or "holds at 2 of 3 budgets"."""
    if count == n_budgets:
        return "holds at every budget"
    if count == 0:
        return "holds at no budget"
    return f"holds at {count} of {n_budgets} budgets"


def listing(items: Sequence[str]) -> str:
    """``"a, b"``, or ``"none"`` for no items."""
    return ", ".join(items) if items else "none"


def row(table: pd.DataFrame, **where: Any) -> pd.Series:
    """The first row of ``table`` whose columns equal ``where`` (ValueError naming them if none)."""
    mask = np.logical_and.reduce([table[c] == v for c, v in where.items()]) if where else np.ones(len(table), bool)
    found = table[mask]
    if found.empty:
        raise ValueError(f"where: no row with {where}")
    return found.iloc[0]


def profile_sentence(profile: Any) -> str:
    """What the results are: toy-world results (never LLaVA-1.5-7B's), or the profile's model."""
    if profile.name == "toy":
        return f"These are **toy-world** results (model `{profile.model.name}`), not LLaVA-1.5-7B's."
    return f"Results on profile `{profile.name}` (`{profile.model}`)."


def skill_sentence(accuracy: str, n: int, what: str, low: float, chance: float) -> str:
    """The unpruned model's accuracy against guessing, and what it means when it is not above it."""
    text = f"The unpruned model's accuracy is {accuracy} over the {n} {what}, against {chance:.3f} by guessing"
    if low > chance:
        return text + "."
    return (text + "; its accuracy is not above chance in this run, so its confidence carries little information "
            "about the image, and the comparisons below say little about what pruning does to a working model.")
