"""Binned ECE, SmoothECE and their noise floors side by side, for every calibration chapter
(ALGORITHMS.md, "Metrics": SmoothECE, noise floor).

- :func:`floor_table`: each run's estimates beside the floor of a perfectly calibrated predictor
  with the same confidences and n, and whether the estimate is above the floor's 95th percentile.
- :func:`estimator_view`: the same as text, with each estimate's bootstrap interval from a
  summary table, for display.
- :func:`floor_sentence`: what the table says, in one sentence, for a chapter's findings.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from visprune.book.analysis import _check_records, answer_arrays, format_interval, paired_difference
from visprune.book.verdicts import direction, format_difference
from visprune.metrics.noise_floor import noise_floor
from visprune.metrics.specs import metric_value

__all__ = ["ESTIMATORS", "floor_table", "estimator_view", "floor_sentence"]

#: The two estimators every calibration claim is judged on, with their names in prose.
ESTIMATORS = {"ece": "binned ECE", "smece": "SmoothECE"}


def floor_table(grid: pd.DataFrame, runs: Sequence[str], metrics: Sequence[str] = ("ece", "smece"), *,
                n_bins: int = 15, n_draws: int = 1000, seed: Any = 0) -> pd.DataFrame:
    """Each run's calibration estimates beside their noise floors (ALGORITHMS.md, "noise floor").

    One row per run: ``run, n``, and for each metric ``m``: ``m`` (measured), ``m_floor`` (the
    floor's mean), ``m_floor95`` (its 95th percentile) and ``m_above`` (measured above the 95th
    percentile: distinguishable from perfect calibration by this estimator).
    """
    ok = _check_records(grid, "grid")
    ok = ok[ok["status"] == "ok"]
    rows = []
    for run in runs:
        probs, labels = answer_arrays(ok[ok["run"] == run])
        row: dict[str, Any] = {"run": run, "n": len(labels)}
        for m in metrics:
            value = metric_value(m, probs, labels, n_bins=n_bins)
            floor = noise_floor(m, probs, n_draws=n_draws, seed=seed, n_bins=n_bins)
            row.update({m: value, f"{m}_floor": floor.mean, f"{m}_floor95": floor.upper, f"{m}_above": value > floor.upper})
        rows.append(row)
    return pd.DataFrame(rows)


def estimator_view(floors: pd.DataFrame, summary: pd.DataFrame, metrics: Sequence[str] = tuple(ESTIMATORS)) -> pd.DataFrame:
    """One row per run of ``floors``: its label and budget (from ``summary``), each estimate with
    its bootstrap interval, the floor's mean and 95th percentile, and whether it is above."""
    info = summary.set_index("run")
    rows = []
    for r in floors.to_dict("records"):
        s = info.loc[r["run"]]
        row: dict[str, Any] = {"method": s["label"]}
        if "budget" in info:
            row["budget"] = s["budget"]
        for m in metrics:
            name = ESTIMATORS.get(m, m)
            row[name] = format_interval(s[m], s[f"{m}_low"], s[f"{m}_high"]) if f"{m}_low" in info else f"{r[m]:.3f}"
            row[f"{name} floor (mean / 95%)"] = f"{r[f'{m}_floor']:.3f} / {r[f'{m}_floor95']:.3f}"
            row[f"{name} above floor"] = "yes" if r[f"{m}_above"] else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def floor_sentence(floors: pd.DataFrame, metrics: Sequence[str] = tuple(ESTIMATORS)) -> str:
    """How many runs each estimator can tell from a perfectly calibrated predictor."""
    parts = [f"{ESTIMATORS.get(m, m)} is above its noise floor's 95th percentile for {int(floors[f'{m}_above'].sum())} "
             f"of {len(floors)} runs" for m in metrics]
    return ("; ".join(parts) + ". A run at or below its floor cannot be told from a perfectly calibrated model with "
            "the same confidences by that estimator, so a difference between two such runs is within the estimator's "
            "noise.")


#: Column names of the estimators in tables.
SHORT = {"ece": "ECE", "smece": "SmoothECE"}


def best_parameter_table(grid: pd.DataFrame, summary: pd.DataFrame, parameter: str, default: float,
                         cells: Sequence[str] = ("alpha", "budget"), metrics: Sequence[str] = tuple(ESTIMATORS),
                         **stats: Any) -> pd.DataFrame:
    """For each cell of ``summary`` (grouped by ``cells``), the value of ``parameter`` with the
    lowest estimate, per estimator, against the ``default`` value, with the paired difference.

    One row per cell: the cell columns, then per estimator (``SHORT`` name ``E``): ``best p (E)``,
    ``E at best p``, ``E at p = default``, ``E difference [95% CI]``, ``E direction`` ("default
    best" when the default is the lowest) and ``accuracy difference (E) [95% CI]``.
    """
    rows = []
    for key, part in summary.groupby(list(cells)):
        row: dict[str, Any] = dict(zip(cells, key if isinstance(key, tuple) else (key,)))
        values = part[parameter].fillna(default)
        base = part[values == default].iloc[0]
        for m in metrics:
            name = SHORT.get(m, m)
            best = part.loc[part[m].idxmin()]
            row.update({f"best p ({name})": float(values[best.name]), f"{name} at best p": best[m],
                        f"{name} at p = {default:g}": base[m]})
            if best["run"] != base["run"]:
                d = paired_difference(grid, best["run"], base["run"], m, **stats)
                acc = paired_difference(grid, best["run"], base["run"], "accuracy", **stats)
                row.update({f"{name} difference [95% CI]": format_difference(d), f"{name} direction": direction(d),
                            f"accuracy difference ({name}) [95% CI]": format_difference(acc)})
            else:
                row.update({f"{name} difference [95% CI]": f"p = {default:g} is best", f"{name} direction": "default best",
                            f"accuracy difference ({name}) [95% CI]": ""})
        rows.append(row)
    return pd.DataFrame(rows)
