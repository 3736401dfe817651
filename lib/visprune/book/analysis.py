"""Summary tables of evaluation grids, with bootstrap intervals (DESIGN.md section 7).

The evaluation engine (:mod:`visprune.engine`) returns one tidy table of per-sample records
for a whole grid of runs. This module turns such a table into what a chapter shows:

- :func:`summary_table`: one row per group (by default per ``(dataset, run)``) with each metric
  and its 95% percentile-bootstrap interval (ALGORITHMS.md, "Metrics", "Uncertainty");
- :func:`paired_difference`: the difference of one metric between two runs on the same
  samples, with its paired bootstrap interval (:func:`compare_runs`: several at once);
- :func:`answer_arrays`: the ``(probs, labels)`` arrays of a set of records (what
  :mod:`visprune.metrics` and :mod:`visprune.book.plots` take);
- :func:`add_budget`, :func:`method_label`, :func:`chance_accuracy`: the papers' token budgets,
  readable method names, and the accuracy of guessing;
- :func:`format_interval`, :func:`format_difference`, :func:`direction`, :func:`format_summary`,
  :func:`markdown_table`: small formatting helpers for tables and prose.

Every metric is a function of ``(probs, labels)``: ``probs`` (n, C) holds each sample's
distribution over its answer set (answer sets of different sizes, as in ScienceQA, are padded
with zeros to the widest one; padded classes carry no probability and are never the label, so no
metric changes), ``labels`` (n,) the index of the right answer. Point estimates call the
functions of :mod:`visprune.metrics` directly.

Intervals. A summary table of a study grid needs thousands of bootstrap intervals (runs x
metrics x 1,000 resamples), which one metric call per resample would make the slowest part of a
chapter. So the resampled metrics are computed here for all resamples at once, from per-bin and
per-tie-group counts, on exactly the resamples :func:`visprune.metrics.bootstrap_ci` draws
(``numpy.random.default_rng(seed)``, one ``integers(0, n, size=n)`` draw per resample). The
intervals therefore equal ``metrics.bootstrap_ci(metric, probs, labels, n_resamples=...,
seed=...)`` and ``metrics.bootstrap_diff_ci(...)`` up to float rounding; tests/test_reporting.py
checks that they do.

Length: a little over 400 lines: the summary table and the paired difference share their
record checks and bootstrap draws, and the labels and formatting helpers they print with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from visprune.book.verdicts import direction
from visprune.metrics.specs import (BINARY_METRICS, LOWER_IS_BETTER, METRIC_SPECS, METRICS, Resampled,  # noqa: F401
                                     draw_indices, metric_value)
from visprune.pruning import METHODS as METHOD_SPECS
from visprune.pruning import spec as method_spec
from visprune.instrument.prompts import POPE_ANSWERS

__all__ = [
    "METRICS",
    "BINARY_METRICS",
    "DEFAULT_METRICS",
    "param_columns",
    "answer_arrays",
    "metric_value",
    "summary_table",
    "paired_difference",
    "compare_runs",
    "add_budget",
    "chance_accuracy",
    "method_label",
    "format_interval",
    "format_summary",
    "markdown_table",
]

#: What Study A reports for every run.
DEFAULT_METRICS = ("accuracy", "f1", "yes_ratio", "ece", "smece", "brier", "aurc")


# ------------------------------------------------------------------------------ records -> arrays


def _check_records(records: Any, name: str = "grid") -> pd.DataFrame:
    if not isinstance(records, pd.DataFrame):
        raise ValueError(f"{name}: expected the pandas DataFrame of per-sample records from Evaluator.grid or .run, "
                         f"got {type(records).__name__}")
    needed = {"status", "probs", "label", "sample_id"}
    missing = needed - set(records.columns)
    if missing:
        raise ValueError(f"{name}: the records lack the columns {sorted(missing)}; pass the table that "
                         "Evaluator.grid or Evaluator.run returned")
    return records


def answer_arrays(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (n, C) float64, labels (n,) int64)`` of the scored records (status ``"ok"``).

    Answer sets of different sizes are padded with zero probability to the widest set. Raises a
    ValueError for caption records (no answer probabilities) or when no record was scored.
    """
    records = _check_records(records, "records")
    ok = records[records["status"] == "ok"]
    if ok.empty:
        raise ValueError("records: no sample was scored (status 'ok'); nothing to summarise")
    if ok["probs"].isna().any():
        raise ValueError("records: some scored samples have no answer probabilities (caption runs?); "
                         "summaries need question-answering runs (POPE, ScienceQA)")
    rows = [np.asarray(p, dtype=np.float64) for p in ok["probs"]]
    width = max(len(r) for r in rows)
    probs = np.zeros((len(rows), width))  # (n, C)
    for i, r in enumerate(rows):
        probs[i, : len(r)] = r
    labels = ok["label"].to_numpy(dtype=np.int64)  # (n,)
    return probs, labels


def _is_binary_yes_no(records: pd.DataFrame) -> bool:
    ok = records[records["status"] == "ok"]
    return "answers" in ok and not ok.empty and all(tuple(a) == tuple(POPE_ANSWERS) for a in ok["answers"])


def _check_metric(name: Any) -> str:
    if name not in METRIC_SPECS:
        raise ValueError(f"metric: unknown metric {name!r}; choose from {METRICS}")
    return name


# ------------------------------------------------------------------------------ fast resampled metrics


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def _check_bootstrap(n_bootstrap: Any, level: Any, allow_zero: bool = True) -> int:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < (0 if allow_zero else 1):
        what = "an int >= 0 (0 = no intervals)" if allow_zero else "a positive int"
        raise ValueError(f"n_bootstrap: expected {what}, got {n_bootstrap!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    return int(n_bootstrap)


# ------------------------------------------------------------------------------ summary tables


def _check_columns(grid: pd.DataFrame, columns: Sequence[str], name: str) -> list[str]:
    if isinstance(columns, str):
        columns = [columns]
    columns = list(columns)
    missing = [c for c in columns if c not in grid.columns]
    if missing:
        raise ValueError(f"{name}: the grid has no column(s) {missing}; its columns are {list(grid.columns)}")
    return columns


def summary_table(
    grid: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    by: Sequence[str] = ("dataset", "run"),
    n_bins: int = 15,
    n_bootstrap: int = 1000,
    seed: Any = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per group of ``grid`` with each metric and its bootstrap interval.

    ``grid``: the per-sample records of :meth:`visprune.engine.Evaluator.grid`.
    ``by``: the grouping columns (default one row per run and data set; ``by=("run",)`` pools a
    run's samples over several data sets, e.g. the three POPE splits). Groups keep the order in
    which they first appear.

    Columns: the ``by`` columns; ``method``, ``k``, ``label`` (see :func:`method_label`) and the
    method parameters (``alpha``, ``gap_power``, ...) when they are constant in the group; ``n``
    (scored samples) and ``n_failed``; then for each metric ``m``: ``m``, ``m_low``, ``m_high``
    (the ``level`` percentile-bootstrap interval over samples from ``n_bootstrap`` resamples,
    seeded with ``seed``; NaN when ``n_bootstrap == 0``). POPE-only metrics (``f1``,
    ``yes_ratio``, ``precision``, ``recall``) are NaN for groups whose answer set is not yes/no.
    The interval of every group uses the same ``seed``, as ``metrics.bootstrap_ci`` would.

    Failed samples (status other than ``"ok"``) are counted in ``n_failed`` and not scored.
    """
    grid = _check_records(grid)
    by = _check_columns(grid, by, "by")
    if not by:
        raise ValueError("by: give at least one grouping column, e.g. ('dataset', 'run')")
    if isinstance(metrics, str):
        metrics = [metrics]
    metric_names = [_check_metric(m) for m in metrics]
    n_bootstrap = _check_bootstrap(n_bootstrap, level)
    if grid.empty:
        raise ValueError("grid: has no records; run some configurations first")

    params = param_columns()  # read from the registry once per table
    rows = []
    for key, group in grid.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        for col in ("method", "k", *params):
            if col in group and col not in row:
                values = group[col].drop_duplicates()
                if len(values) == 1:
                    row[col] = values.iloc[0]
        row["label"] = method_label(row.get("method"), {c: row[c] for c in params if c in row})
        ok = group[group["status"] == "ok"]
        row["n"], row["n_failed"] = int(len(ok)), int(len(group) - len(ok))
        if ok.empty:
            rows.append(row)
            continue
        probs, labels = answer_arrays(ok)
        binary = _is_binary_yes_no(ok)
        resampled = Resampled(probs, labels, n_bins) if n_bootstrap else None
        idx = draw_indices(len(labels), n_bootstrap, seed) if n_bootstrap else None
        for m in metric_names:
            if m in BINARY_METRICS and not binary:
                row[m], row[f"{m}_low"], row[f"{m}_high"] = math.nan, math.nan, math.nan
                continue
            row[m] = metric_value(m, probs, labels, n_bins=n_bins)
            if n_bootstrap:
                row[f"{m}_low"], row[f"{m}_high"] = _interval(resampled.values(m, idx), level)
            else:
                row[f"{m}_low"], row[f"{m}_high"] = math.nan, math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    first = [c for c in [*by, "method", "k", "label", *params] if c in table.columns]
    first = list(dict.fromkeys(first))
    metric_cols = [c for m in metric_names for c in (m, f"{m}_low", f"{m}_high") if c in table.columns]
    return table[first + ["n", "n_failed"] + metric_cols]


def paired_difference(
    grid: pd.DataFrame,
    run_a: str,
    run_b: str,
    metric: str = "ece",
    *,
    dataset: str | Sequence[str] | None = None,
    n_bins: int = 15,
    n_bootstrap: int = 1000,
    seed: Any = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """``metric(run_a) - metric(run_b)`` on the samples both runs scored, with a paired interval.

    ``run_a``, ``run_b``: values of the grid's ``run`` column (e.g. ``"scope-k16-alpha0.0"`` and
    ``"none"``). ``dataset``: one data set, a list of them (pooled), or None for every data set
    both runs were evaluated on (pooled). Samples are matched on ``(dataset, sample_id)``; only
    samples scored (status ``"ok"``) in both runs count.

    The interval is the paired percentile bootstrap of ALGORITHMS.md ("Uncertainty"): each
    resample draws one set of sample indices and applies it to both runs; it equals
    ``metrics.bootstrap_diff_ci(f, (probs_a, labels), (probs_b, labels), n_resamples=n_bootstrap,
    seed=seed, level=level)`` with ``f`` the metric.

    Returns a dict: ``metric, run_a, run_b, datasets, n, a, b, diff, low, high``.
    """
    grid = _check_records(grid)
    _check_columns(grid, ["run", "dataset"], "grid")
    metric = _check_metric(metric)
    n_bootstrap = _check_bootstrap(n_bootstrap, level, allow_zero=False)
    for name, run in (("run_a", run_a), ("run_b", run_b)):
        if run not in set(grid["run"]):
            raise ValueError(f"{name}: no run {run!r} in the grid; its runs are {sorted(set(grid['run']))}")
    if dataset is not None:
        wanted = [dataset] if isinstance(dataset, str) else list(dataset)
        unknown = set(wanted) - set(grid["dataset"])
        if unknown:
            raise ValueError(f"dataset: {sorted(unknown)} not in the grid; its data sets are {sorted(set(grid['dataset']))}")
        grid = grid[grid["dataset"].isin(wanted)]
    a = grid[(grid["run"] == run_a) & (grid["status"] == "ok")]
    b = grid[(grid["run"] == run_b) & (grid["status"] == "ok")]
    keys = ["dataset", "sample_id"]
    common = a[keys].merge(b[keys], on=keys)
    if common.empty:
        raise ValueError(f"run_a, run_b: {run_a!r} and {run_b!r} share no scored samples"
                         + ("" if dataset is None else f" in {dataset!r}"))
    a = common.merge(a, on=keys, how="left", validate="one_to_one")
    b = common.merge(b, on=keys, how="left", validate="one_to_one")
    if not (a["label"].to_numpy() == b["label"].to_numpy()).all():
        raise ValueError("grid: the two runs disagree on the labels of the same samples; were they run on the same data?")
    if metric in BINARY_METRICS and not (_is_binary_yes_no(a) and _is_binary_yes_no(b)):
        raise ValueError(f"metric: {metric!r} is defined for yes/no (POPE) answers only")
    probs_a, labels = answer_arrays(a)
    probs_b, _ = answer_arrays(b)
    value_a = metric_value(metric, probs_a, labels, n_bins=n_bins)
    value_b = metric_value(metric, probs_b, labels, n_bins=n_bins)
    idx = draw_indices(len(labels), n_bootstrap, seed)
    diffs = Resampled(probs_a, labels, n_bins).values(metric, idx) - Resampled(probs_b, labels, n_bins).values(metric, idx)
    low, high = _interval(diffs, level)
    return {
        "metric": metric, "run_a": run_a, "run_b": run_b, "datasets": sorted(set(common["dataset"])),
        "n": int(len(labels)), "a": value_a, "b": value_b, "diff": value_a - value_b, "low": low, "high": high,
    }


def compare_runs(
    grid: pd.DataFrame,
    comparisons: Sequence[tuple[str, str, str]],
    metrics: Sequence[str] = ("accuracy", "ece"),
    *,
    dataset: str | Sequence[str] | None = None,
    n_bins: int = 15,
    n_bootstrap: int = 1000,
    seed: Any = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """:func:`paired_difference` for several ``(name, run_a, run_b)`` comparisons and metrics.

    One row per comparison and metric: ``comparison, metric, run_a, run_b, n, a, b, diff, low,
    high, direction`` (``direction`` as in :func:`direction`: where the interval of
    ``a - b`` lies relative to 0).
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    rows = []
    for item in comparisons:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"comparisons: each entry must be (name, run_a, run_b), got {item!r}")
        name, run_a, run_b = item
        for metric in metrics:
            d = paired_difference(grid, run_a, run_b, metric, dataset=dataset, n_bins=n_bins,
                                  n_bootstrap=n_bootstrap, seed=seed, level=level)
            rows.append({"comparison": name, "metric": metric, "run_a": run_a, "run_b": run_b, "n": d["n"],
                         "a": d["a"], "b": d["b"], "diff": d["diff"], "low": d["low"], "high": d["high"],
                         "direction": direction(d)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ budgets and names


def add_budget(summary: pd.DataFrame, k_of: Mapping[int, int], full: int = 576) -> pd.DataFrame:
    """A copy of ``summary`` with a ``budget`` column: each run's budget in the papers' terms.

    ``k_of`` is ``chapters.budgets_for(ev, budgets)``, ``{paper budget: model k}``. Unpruned
    runs (method ``"none"``) get ``full`` (all of LLaVA-1.5's 576 tokens); a pruned run whose
    ``k`` is not in ``k_of`` gets NaN.
    """
    if not isinstance(summary, pd.DataFrame) or "k" not in summary or "method" not in summary:
        raise ValueError("summary: expected a table with 'method' and 'k' columns (from summary_table)")
    if not isinstance(k_of, Mapping) or not k_of:
        raise ValueError("k_of: expected the {paper budget: model k} mapping of chapters.budgets_for")
    paper_of = {int(k): int(paper) for paper, k in k_of.items()}
    if len(paper_of) != len(k_of):
        raise ValueError(f"k_of: two paper budgets map to the same model k ({dict(k_of)}); choose budgets further apart")
    out = summary.copy()
    out["budget"] = [float(full) if m == "none" else float(paper_of.get(int(k), math.nan)) if pd.notna(k) else math.nan
                     for m, k in zip(out["method"], out["k"])]
    return out


def chance_accuracy(records: pd.DataFrame) -> float:
    """Expected accuracy of guessing uniformly among each scored sample's answers:
    ``mean_i 1 / |answers_i|`` (0.5 on POPE; between 0.2 and 0.5 on ScienceQA).

    >>> chance_accuracy(pd.DataFrame({"status": ["ok", "ok"], "answers": [["A", "B"], ["A", "B", "C", "D"]]}))
    0.375
    """
    if not isinstance(records, pd.DataFrame) or not {"status", "answers"} <= set(records.columns):
        raise ValueError("records: expected per-sample records with 'status' and 'answers' columns")
    ok = records[records["status"] == "ok"]
    if ok.empty:
        raise ValueError("records: no sample was scored (status 'ok')")
    return float(np.mean([1.0 / len(a) for a in ok["answers"]]))


def method_label(method: str | None, params: Mapping[str, Any] | None = None) -> str:
    """A readable name for a method configuration (used in tables and legends): the method's
    registered display name (``visprune.pruning.spec(method).display(params)``).

    >>> method_label("scope", {"alpha": 0.0})
    'SCOPE α=0'
    >>> method_label("scope", {"alpha": 1.0, "gap_power": 2.0})
    'SCOPE α=1, p=2'
    >>> method_label("fastv", {"layer": 3, "ranking": "same"})
    'FastV (layer 3, same-layer ranking)'
    >>> method_label("none")
    'unpruned'
    """
    if method is None:
        return "(mixed)"
    params = {k: v for k, v in dict(params or {}).items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    try:
        return method_spec(method).display(params)
    except ValueError:  # a method this process does not know (records from elsewhere)
        return str(method)


def param_columns() -> tuple[str, ...]:
    """Every parameter name of the registered methods (the grid's per-parameter columns)."""
    names: dict[str, None] = {}
    for spec in METHOD_SPECS.values():
        names.update(dict.fromkeys(spec.parameters))
    return tuple(names)


# ------------------------------------------------------------------------------ formatting


def format_interval(value: float, low: float, high: float, digits: int = 3) -> str:
    """``"0.123 [0.100, 0.150]"``; just the value when the interval is missing (NaN).

    >>> format_interval(0.1234, 0.1, 0.15)
    '0.123 [0.100, 0.150]'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def format_summary(summary: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                   columns: Sequence[str] = ("label",), digits: int = 3) -> pd.DataFrame:
    """A display copy of a summary table: ``columns`` as they are, then one text column per
    metric, ``"value [low, high]"``; ``n`` is kept. Metrics default to every metric present."""
    if metrics is None:
        metrics = [m for m in METRICS if m in summary.columns]
    columns = _check_columns(summary, columns, "columns")
    _check_columns(summary, list(metrics), "metrics")
    out = summary[columns].copy()
    for m in metrics:
        low = summary.get(f"{m}_low", pd.Series(math.nan, index=summary.index))
        high = summary.get(f"{m}_high", pd.Series(math.nan, index=summary.index))
        out[m] = [format_interval(v, lo, hi, digits) for v, lo, hi in zip(summary[m], low, high)]
    if "n" in summary:
        out["n"] = summary["n"]
    return out.reset_index(drop=True)


def markdown_table(frame: pd.DataFrame) -> str:
    """A small DataFrame as a Markdown pipe table (cells as ``str``), for generated prose."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
