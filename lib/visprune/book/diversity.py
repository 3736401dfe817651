"""Study B analysis: kept-token diversity, image complexity and hallucination (DESIGN.md section 1).

Helpers for the chapters on Baek et al. (ICLR 2026, "AgilePruner"). They work on the tidy
per-sample records of :meth:`visprune.engine.Evaluator.grid` (columns ``dataset``,
``method``, ``k``, ``run``, ``sample_id``, ``image_id``, ``erank_kept``, ``erank_image``,
``attn_entropy``, ``tau``, ``caption``, ``correct``, ``n_objects``, ...) and never run a model.

- Run grids: :func:`run_configs` (a method x budget grid on one data set, unpruned first, so
  chapters that share runs build them identically) and :func:`paper_budgets` (model K back to
  the papers' budgets of 576).
- One row per image: :func:`image_table` (erank of all N tokens, CLS-attention entropy,
  object count; ALGORITHMS.md "Image statistics").
- Simple versus complex images: :func:`complexity_groups` splits images by their erank or by
  their number of annotated objects at a threshold (default: the median over the images).
- Diversity kept by each method: :func:`erank_table` (mean erank of the kept tokens per
  method and budget, with a bootstrap interval over images).
- Hallucination: :func:`caption_scores` turns captions into per-caption CHAIR counts once;
  :func:`chair_table` aggregates them per method and budget with bootstrap intervals, and
  :func:`paired_comparison` gives paired bootstrap intervals of a difference between two
  methods on the same images (optionally within complexity groups). CHAIR is defined in
  ALGORITHMS.md ("Metrics"); the counts come from :func:`visprune.metrics.chair`.
- The adaptive rule: :func:`tau_table` (how tau moved with image complexity) and
  :func:`spearman` / :func:`correlation_table` (rank correlations with bootstrap intervals).
- Figures and text: :func:`plot_by_budget`, :func:`plot_paired`, :func:`describe_diff`,
  :func:`verdict` (the colours of :data:`METHOD_COLORS`).

Intervals are percentile bootstraps over samples from :func:`visprune.metrics.bootstrap_ci` and
:func:`visprune.metrics.bootstrap_diff_ci` (ALGORITHMS.md, "Uncertainty"); a CHAIR_I resample
recomputes the ratio of summed counts, exactly as CHAIR_I is defined, not a mean of ratios.

Length: over 400 lines: Study B's per-image tables, its paired comparisons and its two
figures belong to one chapter's analysis; its figures move to plots.py when that module has room.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from visprune import metrics
from visprune.metrics.specs import SCORE_SPECS
from visprune.book import plots
from visprune.pruning import METHODS as METHOD_SPECS
from visprune.pruning import spec as method_spec
from visprune.pruning import ADAPTIVE_DEFAULT_TAU_MAX

__all__ = [
    "IMAGE_COLUMNS",
    "METHOD_COLORS",
    "run_configs",
    "paper_budgets",
    "SCORE_METRICS",
    "image_table",
    "complexity_groups",
    "add_complexity",
    "erank_table",
    "caption_scores",
    "metric_value",
    "chair_table",
    "paired_comparison",
    "tau_table",
    "spearman",
    "correlation_table",
    "plot_by_budget",
    "plot_paired",
]

#: Per-image columns carried by every record (the same for every question about an image).
IMAGE_COLUMNS = ("erank_image", "attn_entropy", "n_objects", "n_categories", "scene")
COMPLEXITY_BY = ("erank", "objects", "entropy")
_COMPLEXITY_COLUMN = {"erank": "erank_image", "objects": "n_objects", "entropy": "attn_entropy"}


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str = "records") -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame of per-sample records, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; pass the records of Evaluator.grid (or run)")


def _ok(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["status"] == "ok"] if "status" in records.columns else records


# ------------------------------------------------------------------------------ run grids

#: One colour per method, the same in every figure of the Study B chapters.
class _RegisteredColours(Mapping):
    """method name -> its registered colour (``visprune.pruning.spec(name).color``), read live."""

    def __getitem__(self, name: str) -> str:
        return method_spec(name).color

    def __iter__(self):
        return iter(METHOD_SPECS)

    def __len__(self) -> int:
        return len(METHOD_SPECS)


METHOD_COLORS = _RegisteredColours()


def run_configs(dataset: str, methods: Sequence[str], ks: Sequence[int], n_samples: int | None, *,
                seed: int = 0, max_new_tokens: int = 64, params: dict | None = None,
                include_unpruned: bool = True) -> list:
    """The run configurations of a method x budget grid on one data set (unpruned first).

    One :class:`visprune.engine.RunConfig` per method and model budget ``k`` (plus
    ``"none"`` when ``include_unpruned``). ``params`` maps a method to its parameters (e.g.
    ``{"adaptive": {"erank_ref": ..., "c": 0.1}}``); ``"random"`` gets ``{"seed": seed}``.
    For ``"chair"`` the images are drawn with ``sample_seed=seed`` and captions are limited to
    ``max_new_tokens``. Chapters that build their grids with this function and the same
    arguments share the engine's cached runs.
    """
    from visprune.engine import RunConfig

    params = dict(params or {})
    extra = {"max_new_tokens": max_new_tokens, "sample_seed": seed} if dataset == "chair" else {}
    configs = [RunConfig(dataset, "none", None, {}, n_samples=n_samples, **extra)] if include_unpruned else []
    for method in methods:
        method_params = dict(params.get(method, {}))
        if method == "random":
            method_params.setdefault("seed", seed)
        for k in ks:
            configs.append(RunConfig(dataset, method, int(k), method_params, n_samples=n_samples, **extra))
    return configs


def paper_budgets(records: pd.DataFrame, k_of: dict[int, int], n_tokens: int, paper_tokens: int = 576) -> pd.Series:
    """Each record's budget in the papers' terms (of 576): ``k_of`` inverted; unpruned -> 576.

    ``k_of`` is :func:`visprune.book.chapters.budgets_for`'s {paper K: model K}; ``n_tokens`` the
    model's N (an unpruned run keeps all N).
    """
    _require_columns(records, ["k"])
    back = {int(v): int(b) for b, v in k_of.items()}
    back.setdefault(int(n_tokens), int(paper_tokens))
    unknown = set(records["k"].astype(int)) - set(back)
    if unknown:
        raise ValueError(f"k_of: no paper budget maps to model budget(s) {sorted(unknown)}")
    return records["k"].astype(int).map(back).rename("budget")


# ------------------------------------------------------------------------------ images


def image_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per image: ``image_id`` plus the per-image columns present in ``records``.

    The image statistics do not depend on the method, so the first record of each image is
    taken (records of any run or runs), in order of first appearance.
    """
    _require_columns(records, ["image_id", "erank_image"])
    ok = _ok(records)
    columns = ["image_id"] + [c for c in IMAGE_COLUMNS if c in ok.columns]
    return ok[columns].drop_duplicates("image_id").reset_index(drop=True)


def complexity_groups(images: pd.DataFrame, by: str = "erank", threshold: float | None = None) -> pd.Series:
    """Label each image ``"simple"`` or ``"complex"``: a Series indexed by ``image_id``.

    ``by``: ``"erank"`` (erank of the image's N visual tokens, column ``erank_image``),
    ``"objects"`` (annotated object instances, ``n_objects``) or ``"entropy"`` (CLS-attention
    entropy, ``attn_entropy``). An image is *simple* when its value is ``<= threshold`` and
    *complex* otherwise; ``threshold=None`` takes the median over the given images (so the
    groups have about equal size; ties at the median go to "simple").
    """
    if by not in COMPLEXITY_BY:
        raise ValueError(f"by: expected one of {COMPLEXITY_BY}, got {by!r}")
    column = _COMPLEXITY_COLUMN[by]
    _require_columns(images, ["image_id", column], "images")
    table = images.drop_duplicates("image_id")
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().any():
        raise ValueError(f"images: column {column!r} has missing values; complexity by {by!r} needs it for every image")
    if threshold is None:
        threshold = float(values.median())
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold: expected a number or None (the median), got {threshold!r}")
    labels = np.where(values.to_numpy() <= float(threshold), "simple", "complex")
    out = pd.Series(labels, index=table["image_id"].to_numpy(), name="complexity")
    out.attrs["threshold"] = float(threshold)
    out.attrs["by"] = by
    return out


def add_complexity(records: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """A copy of ``records`` with a ``complexity`` column looked up from ``groups`` by ``image_id``."""
    _require_columns(records, ["image_id"])
    missing = set(records["image_id"]) - set(groups.index)
    if missing:
        raise ValueError(f"groups: no complexity label for {len(missing)} image(s), e.g. {sorted(missing)[:3]}")
    out = records.copy()
    out["complexity"] = records["image_id"].map(groups).to_numpy()
    return out


# ------------------------------------------------------------------------------ diversity kept


def _per_image_runs(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, image): a pre-LLM selection is the same for every question on an image."""
    _require_columns(records, ["method", "k", "image_id", "erank_kept", "erank_image"])
    keys = ["run", "image_id"] if "run" in records.columns else ["method", "k", "image_id"]
    ok = _ok(records).copy()
    # FastV chooses per prompt: average its kept-token erank over the image's prompts
    ok["erank_kept"] = ok.groupby(keys, sort=False)["erank_kept"].transform("mean")
    return ok.drop_duplicates(keys)


def erank_table(records: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
                by: Sequence[str] = ("method", "k")) -> pd.DataFrame:
    """Mean erank of the kept tokens per method and budget, with a bootstrap interval over images.

    Columns: the ``by`` columns, ``n_images``, ``erank_kept`` (mean), ``erank_kept_low``,
    ``erank_kept_high`` (the ``level`` percentile interval of the mean), ``erank_image`` (mean erank of all N tokens of
    the same images) and ``kept_share`` = erank_kept / erank_image (mean of the per-image
    ratio). For FastV (chosen per prompt) the records are averaged per image first.
    """
    rows = []
    per_image = _per_image_runs(records)
    for key, group in per_image.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        values = group["erank_kept"].to_numpy(dtype=float)
        low, high = metrics.bootstrap_ci(np.mean, values, n_resamples=n_bootstrap, seed=seed, level=level)
        ratio = values / np.maximum(group["erank_image"].to_numpy(dtype=float), 1e-12)
        rows.append({**dict(zip(by, key)), "n_images": len(values), "erank_kept": float(values.mean()),
                     "erank_kept_low": low, "erank_kept_high": high, "erank_image": float(group["erank_image"].mean()),
                     "kept_share": float(ratio.mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ hallucination


def caption_scores(records: pd.DataFrame, ground_truth: dict, synonyms: Any = None) -> pd.DataFrame:
    """Per-caption CHAIR counts for every captioning record (one row per record).

    Columns: ``dataset``, ``method``, ``k``, ``run``, ``sample_id``, ``image_id``, the
    per-image columns present, and ``n_words``, ``n_mentions`` (object mentions),
    ``n_hallucinated`` (mentions of objects not in the image), ``hallucinated`` (1 if any),
    ``n_hits`` (distinct ground-truth objects mentioned), ``n_truth`` (ground-truth objects).
    Computed by :func:`visprune.metrics.chair` run by run (``ground_truth`` from
    :func:`visprune.engine.chair_truth`, ``synonyms`` the profile's synonym list).
    """
    _require_columns(records, ["run", "sample_id", "image_id", "caption"])
    ok = _ok(records)
    ok = ok[ok["caption"].notna()]
    if ok.empty:
        raise ValueError("records: hold no captions; run the 'chair' data set first")
    keep = [c for c in ("dataset", "method", "k", "run", "sample_id", "image_id", *IMAGE_COLUMNS) if c in ok.columns]
    parts = []
    for _, run in ok.groupby("run", sort=False):
        ids = run["sample_id"].astype(str).to_list()
        missing = [i for i in ids if i not in ground_truth]
        if missing:
            raise ValueError(f"ground_truth: no entry for caption id(s) {missing[:3]}; use evaluation.chair_truth(profile)")
        scores = metrics.chair(dict(zip(ids, run["caption"])), {i: ground_truth[i] for i in ids}, synonyms=synonyms)
        per = scores["per_caption"].set_index("id").loc[ids]
        part = run[keep].reset_index(drop=True).copy()
        part["n_words"] = per["n_words"].to_numpy(dtype=int)
        part["n_mentions"] = per["mentioned"].map(len).to_numpy(dtype=int)
        part["n_hallucinated"] = per["hallucinated"].map(len).to_numpy(dtype=int)
        part["hallucinated"] = (part["n_hallucinated"] > 0).astype(int)
        part["n_hits"] = [len(set(m) & set(t)) for m, t in zip(per["mentioned"], per["ground_truth"])]
        part["n_truth"] = per["ground_truth"].map(len).to_numpy(dtype=int)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


#: Metrics of per-sample score tables: name -> (columns passed to the function, function), as
#: declared in :data:`visprune.metrics.specs.SCORE_SPECS` (with their directions).
SCORE_METRICS: dict[str, tuple[tuple[str, ...], Callable[..., float]]] = {
    name: (spec.columns, spec.function) for name, spec in SCORE_SPECS.items()}


def _metric(name: str) -> tuple[tuple[str, ...], Callable[..., float]]:
    if name not in SCORE_METRICS:
        raise ValueError(f"metric: unknown metric {name!r}; choose one of {tuple(SCORE_METRICS)}")
    return SCORE_METRICS[name]


def _arrays(frame: pd.DataFrame, columns: Sequence[str]) -> list[np.ndarray]:
    return [frame[c].to_numpy(dtype=float) for c in columns]


def metric_value(scores: pd.DataFrame, metric: str) -> float:
    """One metric of :data:`SCORE_METRICS` on a table of per-sample scores."""
    columns, fn = _metric(metric)
    _require_columns(scores, columns, "scores")
    return fn(*_arrays(scores, columns))


def chair_table(scores: pd.DataFrame, metrics_: Sequence[str] = ("chair_s", "chair_i", "recall", "length"),
                by: Sequence[str] = ("method", "k"), n_bootstrap: int = 1000, seed: int = 0,
                level: float = 0.95) -> pd.DataFrame:
    """Each metric per group (default per method and budget), with a bootstrap interval.

    ``scores``: from :func:`caption_scores` (or QA records for ``"accuracy"``). Columns: the
    ``by`` columns, ``n``, and for each metric ``m``: ``m``, ``m_low``, ``m_high``.
    """
    _require_columns(scores, list(by), "scores")
    rows = []
    for key, group in scores.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {**dict(zip(by, key)), "n": len(group)}
        for name in metrics_:
            columns, fn = _metric(name)
            arrays = _arrays(group, columns)
            row[name] = fn(*arrays)
            row[f"{name}_low"], row[f"{name}_high"] = metrics.bootstrap_ci(
                fn, *arrays, n_resamples=n_bootstrap, seed=seed, level=level)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_comparison(scores: pd.DataFrame, method_a: str, method_b: str, metric: str,
                      by: Sequence[str] = ("k",), n_bootstrap: int = 1000, seed: int = 0,
                      level: float = 0.95) -> pd.DataFrame:
    """``metric(a) - metric(b)`` for two methods on the same samples, per group, paired bootstrap.

    Samples are matched on ``sample_id`` within each group of ``by`` (for example the budget
    ``k``, or ``("k", "complexity")``); only samples both methods have are used. Columns: the
    ``by`` columns, ``n``, ``a``, ``b``, ``diff`` = a - b, ``low``, ``high`` (the paired
    percentile interval of the difference, :func:`visprune.metrics.bootstrap_diff_ci`).
    A group where a method has no samples is skipped.
    """
    columns, fn = _metric(metric)
    by = list(by)
    _require_columns(scores, ["method", "sample_id", *by, *columns], "scores")
    for name, method in (("method_a", method_a), ("method_b", method_b)):
        if method not in set(scores["method"]):
            raise ValueError(f"{name}: no records of method {method!r}; the methods present are {sorted(set(scores['method']))}")

    def groups(method: str) -> dict[tuple, pd.DataFrame]:
        part = scores[scores["method"] == method]
        if not by:
            return {(): part}
        return {(key if isinstance(key, tuple) else (key,)): g for key, g in part.groupby(by, sort=True)}

    groups_a, groups_b = groups(method_a), groups(method_b)
    rows = []
    for key in sorted(groups_a):
        if key not in groups_b:
            continue
        a = groups_a[key].drop_duplicates("sample_id")
        b = groups_b[key].drop_duplicates("sample_id")
        merged = a.merge(b, on="sample_id", suffixes=("_a", "_b"))
        if merged.empty:
            continue
        arr_a = tuple(merged[f"{c}_a"].to_numpy(dtype=float) for c in columns)
        arr_b = tuple(merged[f"{c}_b"].to_numpy(dtype=float) for c in columns)
        value_a, value_b = fn(*arr_a), fn(*arr_b)
        low, high = metrics.bootstrap_diff_ci(fn, arr_a, arr_b, n_resamples=n_bootstrap, seed=seed, level=level)
        rows.append({**dict(zip(by, key)), "n": len(merged), "a": value_a, "b": value_b,
                     "diff": value_a - value_b, "low": low, "high": high})
    out = pd.DataFrame(rows)
    out.attrs.update(method_a=method_a, method_b=method_b, metric=metric)
    return out


# ------------------------------------------------------------------------------ the adaptive rule


def tau_table(records: pd.DataFrame, n_groups: int = 4) -> pd.DataFrame:
    """How the adaptive threshold tau moved with image complexity, per adaptive run and erank group.

    Images of each adaptive run (one budget and parameter setting) are cut into ``n_groups`` groups of equal size by ``erank_image``
    (quantiles over the images). Columns: ``k``, ``group`` (1 = lowest erank), ``n_images``,
    ``erank_image`` (mean), ``tau_mean``, ``tau_lowest``, ``tau_highest``, ``at_cap`` (share of images
    whose tau was clipped at the run's cap: its ``tau_max`` parameter column, else the
    library default) and ``erank_kept`` (mean).
    """
    _require_columns(records, ["method", "k", "image_id", "tau", "erank_image", "erank_kept"])
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or n_groups < 1:
        raise ValueError(f"n_groups: expected a positive int, got {n_groups!r}")
    ada = _per_image_runs(records[records["method"] == "adaptive"])
    if ada.empty:
        raise ValueError("records: hold no 'adaptive' runs; tau exists only for the adaptive method")
    rows = []
    for (k, label), run in ada.groupby(["k", "run"], sort=True):
        n_cut = min(int(n_groups), len(run))
        ranks = run["erank_image"].rank(method="first").to_numpy()
        group = np.ceil(ranks * n_cut / len(run)).astype(int)  # 1..n_cut, equal sizes up to rounding
        cap = float(run["tau_max"].iloc[0]) if "tau_max" in run.columns and run["tau_max"].notna().all() \
            else ADAPTIVE_DEFAULT_TAU_MAX
        for g in range(1, n_cut + 1):
            sel = run[group == g]
            rows.append({"run": label, "k": k, "group": g, "n_images": len(sel), "erank_image": float(sel["erank_image"].mean()),
                         "tau_mean": float(sel["tau"].mean()), "tau_lowest": float(sel["tau"].min()),
                         "tau_highest": float(sel["tau"].max()), "at_cap": float(np.isclose(sel["tau"], cap).mean()),
                         "erank_kept": float(sel["erank_kept"].mean())})
    return pd.DataFrame(rows)


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); 0.0 if either is constant."""
    a = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    b = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if len(a) != len(b):
        raise ValueError(f"y: expected as many values as x ({len(a)}), got {len(b)}")
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def correlation_table(images: pd.DataFrame, pairs: Sequence[tuple[str, str]], n_bootstrap: int = 1000,
                      seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Spearman correlation of each pair of columns over images, with a bootstrap interval.

    Columns: ``x``, ``y``, ``n``, ``spearman``, ``low``, ``high``.
    """
    rows = []
    for x, y in pairs:
        _require_columns(images, [x, y], "images")
        sub = images[[x, y]].dropna()
        xs, ys = sub[x].to_numpy(dtype=float), sub[y].to_numpy(dtype=float)
        low, high = metrics.bootstrap_ci(spearman, xs, ys, n_resamples=n_bootstrap, seed=seed, level=level)
        rows.append({"x": x, "y": y, "n": len(sub), "spearman": spearman(xs, ys), "low": low, "high": high})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ figures and text


def plot_by_budget(ax, table: pd.DataFrame, metric: str, x: str = "budget", hue: str = "method",
                   reference: float | None = None, reference_label: str = "unpruned",
                   title: str | None = None, ylabel: str | None = None, dodge: float = 0.012) -> None:
    """One line per ``hue`` value of ``metric`` against ``x``, with ``{metric}_low/_high`` as error bars.

    Series are shifted sideways by ``dodge`` times the x range each, so their error bars stay apart.
    ``reference`` draws a dashed horizontal line (for example the unpruned model's value).
    """
    _require_columns(table, [x, hue, metric], "table")
    has_ci = f"{metric}_low" in table.columns and f"{metric}_high" in table.columns
    names = list(dict.fromkeys(table[hue]))
    xs = np.sort(table[x].unique()).astype(float)
    step = dodge * (xs[-1] - xs[0] if len(xs) > 1 else 1.0)  # shift each series a little so bars do not overlap
    for name, group in table.groupby(hue, sort=False):
        group = group.sort_values(x)
        offset = (names.index(name) - (len(names) - 1) / 2) * step
        y = group[metric].to_numpy(dtype=float)
        err = None
        if has_ci:
            err = np.vstack([y - group[f"{metric}_low"].to_numpy(dtype=float),
                             group[f"{metric}_high"].to_numpy(dtype=float) - y]).clip(min=0)
        ax.errorbar(group[x].to_numpy(dtype=float) + offset, y, yerr=err, marker="o", ms=4, capsize=3, lw=1.5,
                    label=str(name), color=plots.method_color(name))
    if reference is not None:
        ax.axhline(reference, ls="--", color=METHOD_COLORS["none"], lw=1, label=reference_label)
    ax.set_xticks(sorted(table[x].unique()))
    ax.set_xlabel("visual tokens kept (of 576, the papers' terms)" if x == "budget" else x)
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title, fontsize=10)


def plot_paired(ax, table: pd.DataFrame, labels: Sequence[str], title: str | None = None,
                color_by: str | None = None) -> None:
    """Forest plot of paired differences: one row per line of ``table`` (``diff``, ``low``, ``high``).

    ``labels`` names the columns that label each row (e.g. ``["budget", "complexity"]``);
    ``color_by`` a column whose values pick the colour (methods get :data:`METHOD_COLORS`).
    A vertical line marks 0: an interval that crosses it shows no clear difference.
    """
    _require_columns(table, ["diff", "low", "high", *labels], "table")
    rows = table.reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    palette = {}
    if color_by is not None:
        values = list(dict.fromkeys(rows[color_by]))
        cycle = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
        palette = {v: plots.method_color(v) or cycle[i % len(cycle)] for i, v in enumerate(values)}
    for yi, (_, row) in zip(y, rows.iterrows()):
        color = palette.get(row[color_by], "k") if color_by is not None else "k"
        ax.plot([row["low"], row["high"]], [yi, yi], color=color, lw=2)
        ax.plot(row["diff"], yi, "o", color=color, ms=5)
    ax.axvline(0.0, color="0.4", lw=1, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([", ".join(f"{row[c]}" for c in labels) for _, row in rows.iterrows()], fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
