"""The figures of the chapter "Every method at one glance" (its tables: :mod:`visprune.book.glance`).

- :func:`pareto_figure`: a metric against the language model's prefill FLOPs, every run, with the
  Pareto front (:func:`visprune.book.overview.pareto_front`);
- :func:`control_figure`: every method against random pruning and plain downsampling at the same
  K: better, worse, or not told apart by the paired interval.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from visprune.book import overview
from visprune.book.glance import _CONTROLS, NAMES, budget_text, lower_is_better
from visprune.pruning import METHODS, spec as method_spec

__all__ = ["pareto_figure", "control_figure"]


def pareto_figure(table: pd.DataFrame, panels: Sequence[tuple[str, str]], *, ncols: int = 2):
    """Metric against prefill FLOPs (relative to unpruned), one panel per ``(dataset, metric)``.

    Each method is one colour, its budgets joined by a line (error bars: the bootstrap interval);
    the unpruned model is a black star, no visual tokens a grey cross. Circled points and the
    dashed step line are the Pareto front: no other run has FLOPs no higher and the metric no
    worse (:func:`overview.pareto_front`).
    """
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("panels: give at least one (dataset, metric) pair")
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.0 * nrows), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (dataset, metric) in zip(axes.flat, panels):
        frame = table[table["dataset"] == dataset]
        frame = frame.dropna(subset=["relative_flops", metric]) if metric in frame else frame.iloc[:0]
        if frame.empty:
            raise ValueError(f"panels: no runs with {metric!r} on data set {dataset!r}")
        for method, runs in frame.groupby("method", sort=False):
            runs = runs.sort_values("relative_flops")
            x, y = runs["relative_flops"], runs[metric]
            err = np.vstack([y - runs[f"{metric}_low"], runs[f"{metric}_high"] - y]).clip(min=0)
            if method == "none":
                h = ax.errorbar(x, y, yerr=err, fmt="*", color="black", ms=12, label="unpruned")
            elif method == "no_image":
                h = ax.errorbar(x, y, yerr=err, fmt="X", color="0.45", ms=9, label="no visual tokens")
            else:
                spec = method_spec(method)
                h = ax.errorbar(x, y, yerr=err, fmt="-o" if spec.stage == "pre-llm" else "--s", color=spec.color,
                                ms=5, lw=1.2, capsize=2, label=spec.label)
            handles.setdefault(h.get_label(), h)
        front = overview.pareto_front(frame["relative_flops"], frame[metric], not lower_is_better(metric))
        best = frame[front].sort_values("relative_flops")
        ax.plot(best["relative_flops"], best[metric], ls=":", color="black", lw=1, drawstyle="steps-post", zorder=0)
        ax.scatter(best["relative_flops"], best[metric], s=150, facecolors="none", edgecolors="black", lw=1, zorder=5)
        better = "lower" if lower_is_better(metric) else "higher"
        ax.set_title(f"{dataset}: {NAMES.get(metric, metric)} ({better} is better)", fontsize=10)
        ax.set_xlabel("prefill FLOPs of the language model (× unpruned)")
        ax.set_ylabel(NAMES.get(metric, metric))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(handles) / 6)))
    fig.tight_layout()
    return fig


def control_figure(ctl: pd.DataFrame):
    """Against each control (one panel each): one row per method, one column per (data set, metric,
    budget); green where the method is better than the control with the paired interval away from
    0, red where worse, grey where the interval includes 0; the number is the difference."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if ctl.empty:
        raise ValueError("ctl: no comparisons with a control (run random and downsample at the same budgets)")
    present = [c for c in _CONTROLS if c in set(ctl["control"])]
    columns = list(dict.fromkeys(zip(ctl["dataset"], ctl["metric"], ctl["budget"])))
    order = {m: i for i, m in enumerate(METHODS)}
    fig, axes = plt.subplots(len(present), 1, figsize=(0.55 * len(columns) + 3, 5.0 * len(present)), squeeze=False)
    cmap = ListedColormap(["#d6604d", "#d9d9d9", "#4dac26"])
    for ax, control in zip(axes[:, 0], present):
        rows = ctl[ctl["control"] == control]
        methods = sorted(rows["method"].unique(), key=lambda m: order.get(m, len(order)))
        grid = np.full((len(methods), len(columns)), np.nan)
        for r in rows.to_dict("records"):
            i, j = methods.index(r["method"]), columns.index((r["dataset"], r["metric"], r["budget"]))
            grid[i, j] = 2 if r["better"] else 0 if r["worse"] else 1
            ax.text(j, i, f"{r['diff']:+.2f}", ha="center", va="center", fontsize=6)
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=2, aspect="auto")
        ax.set_yticks(range(len(methods)), [method_spec(m).label for m in methods], fontsize=8)
        ax.set_xticks(range(len(columns)), [f"{d} {NAMES.get(m, m)} @{budget_text(b)}" for d, m, b in columns],
                      rotation=70, ha="right", fontsize=7)
        name = {"random": "random pruning", "downsample": "plain downsampling"}[control]
        ax.set_title(f"against {name}: green better, red worse, grey cannot tell", fontsize=9)
    fig.tight_layout()
    return fig
