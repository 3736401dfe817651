"""The book's shared figures (matplotlib), drawn from cached results only (DESIGN.md section 4).

Every function returns a :class:`matplotlib.figure.Figure` (a chapter calls ``plt.show()``
after it) and never runs a model:

- :func:`reliability_diagrams`: reliability diagrams (accuracy against confidence per bin, with
  the sample count per bin below), one panel per model, from ``metrics.reliability_table``;
- :func:`risk_coverage_curves`: selective risk against coverage, one line per model, from
  ``metrics.risk_coverage``, AURC in the legend;
- :func:`metric_vs_budget`: metrics (e.g. accuracy beside ECE) against the token budget, one
  line per method with bootstrap error bars, the unpruned model as a horizontal reference;
- :func:`metric_vs_parameter`: one metric against a method parameter (alpha, gap power), one
  panel per budget, with horizontal reference lines (unpruned, random, saliency-only);
- :func:`metric_heatmap`: one metric over two parameters (e.g. alpha x budget), values written
  in the cells.

The line plots take the tables of :func:`visprune.book.analysis.summary_table`: a metric ``m`` with
its interval ``m_low``/``m_high``. A reference table has the same columns plus ``label``; a
reference row applies to every panel unless the table has the panel column and the row's value
there is set (so random and saliency-only references can differ per budget). Colours are fixed
per method (:func:`color_for`), so a method looks the same in every figure of the book.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from visprune import metrics
from visprune.metrics.specs import METRIC_SPECS
from visprune.pruning import METHODS as METHOD_SPECS

__all__ = [
    "METRIC_NAMES",
    "PARAMETER_NAMES",
    "color_for",
    "method_color",
    "reliability_diagrams",
    "risk_coverage_curves",
    "metric_vs_budget",
    "metric_vs_parameter",
    "metric_heatmap",
]

#: Axis labels of the metrics: their specs' labels (``visprune.metrics.specs``).
METRIC_NAMES = {name: spec.label for name, spec in METRIC_SPECS.items()}

#: Axis labels of the grid parameters, and the symbols used for them in legends.
PARAMETER_NAMES = {"alpha": "saliency weight α", "gap_power": "gap power p", "budget": "visual tokens kept (of 576)",
                   "k": "visual tokens kept"}
PARAMETER_SYMBOLS = {"alpha": "α", "gap_power": "p"}

_CYCLE = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["#1f77b4"])


def method_color(name_or_label: Any) -> str | None:
    """The registered colour of a method, found by its name ("divprune") or by a display label
    ("DivPrune", "FastV (layer 3)", "SCOPE α=0.5"); None when no method matches. The palette is
    the method registry's (``visprune.pruning.spec(name).color``): one colour per method in
    every figure of the book."""
    text = str(name_or_label)
    if text in METHOD_SPECS:
        return METHOD_SPECS[text].color
    for spec in METHOD_SPECS.values():
        if text == spec.label or text == spec.display() or text.startswith((spec.label + " ", spec.label + ",")):
            return spec.color
    return None


def color_for(label: Any, position: int = 0) -> str | tuple:
    """The colour of a series: the method's registered colour (:func:`method_color`), in shades
    of SCOPE's blue by alpha for SCOPE (darker = smaller alpha), otherwise the ``position``-th
    colour of matplotlib's cycle."""
    text = str(label)
    match = re.match(r"SCOPE α=([0-9.]+)", text)
    if match:
        alpha = min(max(float(match.group(1)), 0.0), 1.0)
        return plt.cm.Blues(0.95 - 0.5 * alpha)
    colour = method_color(text)
    return colour if colour is not None else _CYCLE[position % len(_CYCLE)]


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _check_table(table: Any, name: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame (a reporting.summary_table), got {type(table).__name__}")
    missing = [c for c in columns if c is not None and c not in table.columns]
    if missing:
        raise ValueError(f"{name}: has no column(s) {missing}; its columns are {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{name}: is empty; nothing to draw")
    return table


def _as_pairs(panels: Any, name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError(f"{name}: expected a non-empty mapping {{label: (array, array)}}")
    out = []
    for label, pair in panels.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name}[{label!r}]: expected a pair of arrays, got {type(pair).__name__}")
        out.append((str(label), np.asarray(pair[0]), np.asarray(pair[1])))
    return out


# ------------------------------------------------------------------------------ calibration


def reliability_diagrams(panels: Mapping[str, tuple], n_bins: int = 15, *, title: str | None = None) -> Figure:
    """Reliability diagrams, one column per entry of ``panels`` = ``{label: (probs, labels)}``.

    Top row: per non-empty bin (``metrics.reliability_table``), a bar up to the bin's accuracy
    at the bin's position, a red hatched bar from the accuracy to the mean confidence (above the
    bar: over-confident, inside it: under-confident), and the
    diagonal of perfect calibration; the panel's ECE and sample count are written in it. Bottom
    row: the number of samples per bin (where the confidence mass sits).
    """
    entries = _as_pairs(panels, "panels")
    cols = len(entries)
    fig, axes = plt.subplots(2, cols, figsize=(3.6 * cols, 4.6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]})
    for j, (label, probs, labels) in enumerate(entries):
        table = metrics.reliability_table(probs, labels, n_bins=n_bins)
        used = table[table["count"] > 0]
        centre = (used["lower"] + used["upper"]) / 2
        width = 1.0 / n_bins
        top, bottom = axes[0, j], axes[1, j]
        top.plot([0, 1], [0, 1], ls="--", color="#555555", lw=1, label="perfect calibration")
        top.bar(centre, used["accuracy"], width=width, color=color_for(label, j), alpha=0.85,
                edgecolor="white", label="accuracy", gid="accuracy")
        top.bar(centre, used["confidence"] - used["accuracy"], bottom=used["accuracy"], width=width,
                facecolor="none", edgecolor="#d62728", lw=0.8, hatch="///", label="gap to confidence", gid="gap")
        ece = metrics.ece(probs, labels, n_bins=n_bins)
        top.text(0.03, 0.97, f"ECE = {ece:.3f}\nn = {len(labels)}", transform=top.transAxes, va="top", fontsize=9,
                 bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
        top.set(xlim=(0, 1), ylim=(0, 1), title=label)
        top.set_ylabel("accuracy" if j == 0 else "")
        bottom.bar(centre, used["count"], width=width, color="#999999", edgecolor="white", gid="count")
        bottom.set_xlabel("confidence (top answer)")
        bottom.set_ylabel("samples" if j == 0 else "")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    return fig


def risk_coverage_curves(curves: Mapping[str, tuple], *, title: str | None = None) -> Figure:
    """Risk-coverage curves, one line per entry of ``curves`` = ``{label: (confidence, correct)}``.

    At coverage k/n the selective risk is the error rate of the k most confident samples
    (``metrics.risk_coverage``, ties at their expected value); the legend gives each curve's
    AURC (lower is better: the area under the curve).
    """
    entries = _as_pairs(curves, "curves")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j, (label, confidence, correct) in enumerate(entries):
        coverage, risk = metrics.risk_coverage(confidence, correct)
        area = metrics.aurc(confidence, correct)
        ax.plot(coverage, risk, color=color_for(label, j), lw=1.6, label=f"{label} (AURC {area:.3f})")
    ax.set(xlim=(0, 1), xlabel="coverage (fraction of most confident answers kept)", ylabel="selective risk (error rate)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ metric lines


def _dodge(values: np.ndarray, n_series: int) -> float:
    distinct = np.unique(values[np.isfinite(values)])
    spacing = np.min(np.diff(distinct)) if len(distinct) > 1 else 1.0
    return 0.06 * spacing if n_series > 1 else 0.0


def _draw_series(ax, table: pd.DataFrame, x: str, metric: str, series: str | None, dodge: float,
                 line_label: str | None = None) -> list[str]:
    """One line with error bars per series value; returns the series labels drawn."""
    groups = [(None, table)] if series is None else list(table.groupby(series, sort=False))
    drawn = []
    for i, (name, rows) in enumerate(groups):
        rows = rows.sort_values(x)
        xs = rows[x].to_numpy(dtype=float) + dodge * (i - (len(groups) - 1) / 2)
        ys = rows[metric].to_numpy(dtype=float)
        low = rows.get(f"{metric}_low", pd.Series(np.nan, index=rows.index)).to_numpy(dtype=float)
        high = rows.get(f"{metric}_high", pd.Series(np.nan, index=rows.index)).to_numpy(dtype=float)
        yerr = None
        if np.isfinite(low).all() and np.isfinite(high).all():
            yerr = np.vstack([ys - low, high - ys]).clip(min=0)
        if name is None:
            label = line_label or _metric_name(metric)
        elif isinstance(name, (int, float, np.number)) and series != "label":
            label = f"{PARAMETER_SYMBOLS.get(series, series)} = {name:g}"
        else:
            label = str(name)
        ax.errorbar(xs, ys, yerr=yerr, marker="o", ms=4, lw=1.5, capsize=3, color=color_for(label, i), label=label)
        drawn.append(label)
    return drawn


def _draw_references(ax, references: pd.DataFrame | None, metric: str, panel_col: str | None, panel_value: Any) -> list[str]:
    """Horizontal lines (with a shaded interval band) for the reference rows that apply here."""
    if references is None:
        return []
    drawn = []
    for j, row in enumerate(references.itertuples(index=False)):
        row = row._asdict()
        if panel_col is not None and panel_col in row and pd.notna(row[panel_col]) and row[panel_col] != panel_value:
            continue
        value = row.get(metric)
        if value is None or not np.isfinite(float(value)):
            continue
        color = color_for(row["label"], j + 3)
        ax.axhline(float(value), ls="--", lw=1.2, color=color, label=f"{row['label']} (reference)", gid="reference")
        low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
        if low is not None and high is not None and np.isfinite([float(low), float(high)]).all():
            ax.axhspan(float(low), float(high), color=color, alpha=0.08, lw=0)
        drawn.append(row["label"])
    return drawn


def _finish(fig: Figure, axes: np.ndarray, title: str | None) -> Figure:
    """One legend for the whole figure, the title above it, the layout tightened."""
    _figure_legend(fig, axes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _figure_legend(fig: Figure, axes: np.ndarray) -> None:
    handles, labels = {}, []
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    # the plotted series first, then the references (matplotlib lists plain lines before error bars)
    labels = [lb for lb in labels if not lb.endswith("(reference)")] + [lb for lb in labels if lb.endswith("(reference)")]
    fig.legend([handles[label] for label in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)


def _check_references(references: Any, metrics_needed: Sequence[str]) -> pd.DataFrame | None:
    if references is None:
        return None
    return _check_table(references, "references", ["label", *metrics_needed[:1]])


def metric_vs_budget(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("accuracy", "ece"),
    *,
    x: str = "budget",
    series: str = "label",
    rows: str | None = None,
    references: pd.DataFrame | None = None,
    title: str | None = None,
    xlabel: str = "visual tokens kept (of LLaVA-1.5's 576)",
) -> Figure:
    """Metrics against the token budget: one column of panels per metric (e.g. accuracy beside
    ECE), one row per value of ``rows`` (e.g. the POPE split; None = one row), one line per value
    of ``series`` with the bootstrap interval as error bars, and ``references`` (e.g. the
    unpruned model) as dashed horizontal lines with a shaded interval band."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics: give at least one metric column to draw")
    summary = _check_table(summary, "summary", [x, series, rows, *metrics])
    references = _check_references(references, metrics)
    row_values = [None] if rows is None else list(dict.fromkeys(summary[rows]))
    fig, axes = plt.subplots(len(row_values), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(row_values)),
                             squeeze=False, sharex=True)
    dodge = _dodge(summary[x].to_numpy(dtype=float), summary[series].nunique())
    for i, row_value in enumerate(row_values):
        part = summary if rows is None else summary[summary[rows] == row_value]
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            _draw_series(ax, part, x, metric, series, dodge)
            _draw_references(ax, references, metric, rows, row_value)
            ax.set_xticks(sorted(summary[x].dropna().unique()))
            ax.grid(alpha=0.3)
            ax.set_ylabel(_metric_name(metric))
            ax.set_title(_metric_name(metric) if rows is None else f"{row_value}: {_metric_name(metric)}", fontsize=10)
            if i == len(row_values) - 1:
                ax.set_xlabel(xlabel)
    return _finish(fig, axes, title)


def metric_vs_parameter(
    summary: pd.DataFrame,
    x: str,
    metric: str = "ece",
    *,
    series: str | None = None,
    panels: str | None = None,
    references: pd.DataFrame | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    line_label: str | None = None,
) -> Figure:
    """One metric against a method parameter ``x`` (e.g. ``"alpha"`` or ``"gap_power"``).

    One panel per value of ``panels`` (e.g. ``"budget"``; None = one panel), one line per value
    of ``series`` (None = one line) with bootstrap error bars, and horizontal ``references``
    (rows with a ``label``; a row with a value in the ``panels`` column is drawn only in that
    panel, e.g. the random and saliency-only runs of that budget)."""
    summary = _check_table(summary, "summary", [x, metric, series, panels])
    references = _check_references(references, [metric])
    panel_values = [None] if panels is None else sorted(summary[panels].dropna().unique())
    fig, axes = plt.subplots(1, len(panel_values), figsize=(4.2 * len(panel_values), 3.6), squeeze=False, sharey=True)
    n_series = 1 if series is None else summary[series].nunique()
    dodge = _dodge(summary[x].to_numpy(dtype=float), n_series)
    for j, value in enumerate(panel_values):
        ax = axes[0, j]
        part = summary if panels is None else summary[summary[panels] == value]
        _draw_series(ax, part, x, metric, series, dodge, line_label)
        _draw_references(ax, references, metric, panels, value)
        ax.set_xticks(sorted(summary[x].dropna().unique()))
        ax.grid(alpha=0.3)
        ax.set_xlabel(xlabel or PARAMETER_NAMES.get(x, x))
        if j == 0:
            ax.set_ylabel(_metric_name(metric))
        if panels is not None:
            shown = f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)
            ax.set_title(f"{PARAMETER_NAMES.get(panels, panels)}: {shown}", fontsize=10)
    return _finish(fig, axes, title)


def metric_heatmap(
    summary: pd.DataFrame,
    metric: str = "ece",
    *,
    rows: str = "alpha",
    cols: str = "budget",
    title: str | None = None,
    digits: int = 3,
    cmap: str = "viridis",
) -> Figure:
    """``metric`` over two parameters as a heatmap (rows x cols, ascending), values in the cells.

    Each (row, col) pair must occur at most once in ``summary`` (e.g. pool the POPE splits with
    ``summary_table(..., by=("run",))`` first); missing pairs are left blank.
    """
    summary = _check_table(summary, "summary", [metric, rows, cols])
    if summary.duplicated([rows, cols]).any():
        raise ValueError(f"summary: several rows share the same ({rows}, {cols}); summarise one value per cell "
                         "(e.g. summary_table(grid, by=('run',)) to pool data sets)")
    table = summary.pivot(index=rows, columns=cols, values=metric).sort_index().sort_index(axis=1)
    values = table.to_numpy(dtype=float)  # (R, C)
    fig, ax = plt.subplots(figsize=(1.3 * values.shape[1] + 2.4, 0.7 * values.shape[0] + 1.6))
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            if math.isfinite(values[r, c]):
                ax.text(c, r, f"{values[r, c]:.{digits}f}", ha="center", va="center", fontsize=9,
                        color="white" if values[r, c] < middle else "black")
    ax.set_xticks(range(values.shape[1]), [f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v) for v in table.columns])
    ax.set_yticks(range(values.shape[0]), [f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v) for v in table.index])
    ax.set(xlabel=PARAMETER_NAMES.get(cols, cols), ylabel=PARAMETER_NAMES.get(rows, rows))
    fig.colorbar(image, ax=ax, label=_metric_name(metric))
    ax.set_title(title or f"{_metric_name(metric)} by {PARAMETER_NAMES.get(rows, rows)} and {PARAMETER_NAMES.get(cols, cols)}")
    fig.tight_layout()
    return fig
