"""Every method at one glance: loyalty, cost, matched-FLOPs fronts and controls (the chapter
"Every method at one glance"; ALGORITHMS.md, "Conventions for the methods below", "Metrics").

- :func:`loyalty_table`: per run, the fraction of answers (or captions) that differ from the
  unpruned run's on the same sample, with its Wilson interval (``metrics.flip_rate``);
- :func:`cost_table`: per run, the tokens entering the language model, the visual tokens averaged
  over its layers, the analytic prefill FLOPs (also as a fraction of the unpruned run's) and the
  selector's own FLOPs, with each method's budget convention;
- :func:`pareto_front`: which runs no other run beats on both cost and a metric;
- :func:`control_comparisons`: each method against random pruning and plain downsampling at the
  same budget (paired bootstrap differences, :func:`visprune.book.analysis.compare_runs`), and
  whether the interval includes 0 (the method cannot be told from the control on these samples).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from visprune.book.analysis import _check_columns, _check_records, compare_runs, method_label
from visprune.metrics.loyalty import flip_rate
from visprune.metrics.specs import LOWER_IS_BETTER
from visprune.pruning import spec as method_spec

__all__ = ["loyalty_table", "cost_table", "pareto_front", "control_comparisons"]

COST_COLUMNS = ("lm_tokens", "visual_tokens", "visual_per_layer", "prefill_flops", "selector_flops")


def _answer(records: pd.DataFrame) -> pd.Series:
    """What a run said for each sample: the caption (CHAIR) or the chosen answer."""
    if "caption" in records and records["caption"].notna().any():
        return records["caption"].fillna("")
    return records["prediction"]


def loyalty_table(grid: pd.DataFrame, reference: str = "none", level: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, run) but the reference: ``flip_rate, flip_low, flip_high, n``.

    Samples are matched on ``(dataset, sample_id)`` with the ``reference`` method's run on the
    same data set (one such run per data set); only samples scored in both count.
    """
    grid = _check_records(grid)
    _check_columns(grid, ["dataset", "run", "method", "sample_id"], "grid")
    ok = grid[grid["status"] == "ok"]
    rows = []
    for dataset, frame in ok.groupby("dataset", sort=False):
        refs = frame[frame["method"] == reference]["run"].unique()
        if len(refs) != 1:
            raise ValueError(f"reference: data set {dataset!r} needs exactly one {reference!r} run, found {len(refs)}")
        ref = frame[frame["run"] == refs[0]].set_index("sample_id")
        ref_answer = _answer(ref)
        for run, group in frame[frame["run"] != refs[0]].groupby("run", sort=False):
            group = group[group["sample_id"].isin(ref.index)].set_index("sample_id")
            if group.empty:
                continue
            rate, low, high = flip_rate(list(_answer(group)), list(ref_answer.loc[group.index]), level)
            rows.append({"dataset": dataset, "run": run, "flip_rate": rate, "flip_rate_low": low,
                         "flip_rate_high": high, "n_flip": int(len(group))})
    return pd.DataFrame(rows)


def cost_table(grid: pd.DataFrame, by: Sequence[str] = ("dataset", "run")) -> pd.DataFrame:
    """Per group, the mean of each cost column, ``relative_flops`` (prefill FLOPs over the
    unpruned run's on the same data set) and the method's budget ``convention``."""
    grid = _check_records(grid)
    by = _check_columns(grid, list(by), "by")
    _check_columns(grid, ["method", *COST_COLUMNS[:4]], "grid")
    ok = grid[grid["status"] == "ok"]
    table = ok.groupby(by, sort=False)[[c for c in COST_COLUMNS if c in ok]].mean().reset_index()
    meta = ok.groupby(by, sort=False)[["method", "k"]].first().reset_index()
    table = meta.merge(table, on=by)
    base = ok[ok["method"] == "none"].groupby("dataset")["prefill_flops"].mean() if "dataset" in by else None
    if base is not None and len(base):
        table["relative_flops"] = table["prefill_flops"] / table["dataset"].map(base)
    table["convention"] = [method_spec(m).convention or "all tokens" for m in table["method"]]
    return table


def pareto_front(cost: Any, value: Any, higher_is_better: bool = True) -> np.ndarray:
    """A boolean mask: the points that no other point dominates (cost no higher and value no
    worse, one of them strictly). NaN values are never on the front."""
    cost = np.asarray(cost, dtype=float)
    value = np.asarray(value, dtype=float)
    if cost.shape != value.shape or cost.ndim != 1:
        raise ValueError(f"cost, value: expected two equal-length 1-D arrays, got {cost.shape} and {value.shape}")
    v = value if higher_is_better else -value
    front = np.zeros(len(cost), dtype=bool)
    for i in range(len(cost)):
        if np.isnan(cost[i]) or np.isnan(v[i]):
            continue
        others = ~np.isnan(cost) & ~np.isnan(v)
        dominated = others & (cost <= cost[i]) & (v >= v[i]) & ((cost < cost[i]) | (v > v[i]))
        front[i] = not dominated.any()
    return front


def control_comparisons(grid: pd.DataFrame, controls: Sequence[str] = ("random", "downsample"),
                        metrics: Sequence[str] = ("accuracy", "ece"), **stats: Any) -> pd.DataFrame:
    """Each pruned run against each control run with the same method budget ``k`` on the same data
    set: one row per (run, control, metric) with the paired difference, its interval and
    ``indistinguishable`` (the interval includes 0)."""
    grid = _check_records(grid)
    rows = []
    for dataset, frame in grid[grid["status"] == "ok"].groupby("dataset", sort=False):
        runs = frame.groupby("run", sort=False)[["method", "k"]].first()
        for control in controls:
            for run, (method, k) in runs.iterrows():
                if method in (control, "none", "no_image"):
                    continue
                same = runs[(runs["method"] == control) & (runs["k"] == k)]
                if len(same) != 1:
                    continue
                table = compare_runs(frame, [(f"{run} vs {control}", run, same.index[0])], metrics, **stats)
                table.insert(0, "dataset", dataset)
                table.insert(1, "control", control)
                table.insert(2, "method", method)
                table.insert(3, "k", k)
                rows.append(table)
    if not rows:
        return pd.DataFrame(columns=["dataset", "control", "method", "k", "metric", "diff", "low", "high"])
    out = pd.concat(rows, ignore_index=True)
    out["indistinguishable"] = (out["low"] <= 0) & (out["high"] >= 0)
    out["label"] = [method_label(m, None) for m in out["method"]]
    out["better_is"] = ["lower" if m in LOWER_IS_BETTER else "higher" for m in out["metric"]]
    return out
