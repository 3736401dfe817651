"""The chapter "Every method at one glance": every pruning family on POPE, ScienceQA-IMG and CHAIR
at the same budgets, with accuracy, calibration, hallucination, loyalty and cost (ALGORITHMS.md,
"Conventions for the methods below", "Metrics", "Prefill FLOPs").

- :func:`grid_configs`: the chapter's runs; a configuration the model cannot run (PyramidDrop at a
  budget below what its first stage allows) is listed as skipped, with the method's own reason;
- :func:`glance_table`: one row per (data set, run): the quality metrics with intervals, the flip
  rate against the unpruned answers, the cost columns and the method's budget convention;
- :func:`matched_flops`: each method's metric interpolated at the FLOPs a pre-LLM method spends at
  each budget (the comparison at matched FLOPs beside the one at matched K);
- :func:`controls`: each method against random pruning and plain downsampling at the same K;
- :func:`glance_findings`: the chapter's conclusions, computed from those tables.

The figures are in :mod:`visprune.book.glance_plots`; the primitives (flip rates, cost table, Pareto front, paired comparisons with controls) are in
:mod:`visprune.book.overview`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from visprune.book import diversity, overview
from visprune.book.analysis import format_interval, method_label, param_columns, summary_table
from visprune.book.verdicts import listing, profile_sentence
from visprune.engine import RunConfig, model_shape, validate_config
from visprune.metrics.specs import LOWER_IS_BETTER
from visprune.pruning import METHODS, spec as method_spec

__all__ = ["PRIMARY", "grid_configs", "glance_table", "format_glance", "matched_flops", "controls",
           "glance_findings", "glance_methods", "method_table", "matched_view", "lower_is_better", "budget_text"]

#: The headline quality metric of each kind of data set: F1 on POPE (as its paper reports),
#: accuracy on ScienceQA-IMG, CHAIR_I on captions (lower is better).
PRIMARY = {"pope": "f1", "scienceqa": "accuracy", "chair": "chair_i"}
#: The metrics the table shows for each kind of data set (the primary first).
SHOWN = {"pope": ("f1", "accuracy", "ece", "aurc"), "scienceqa": ("accuracy", "ece", "aurc"),
         "chair": ("chair_i", "chair_s", "recall")}
NAMES = {"f1": "F1", "accuracy": "accuracy", "ece": "ECE", "aurc": "AURC", "chair_i": "CHAIR_I",
         "chair_s": "CHAIR_S", "recall": "object recall", "flip_rate": "flip rate"}
_CONTROLS = ("random", "downsample")


def kind(dataset: str) -> str:
    """``"pope"`` for every POPE split, otherwise the data set's name."""
    return "pope" if str(dataset).startswith("pope") else str(dataset)


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER or metric.startswith("chair")


def glance_methods() -> tuple[str, ...]:
    """Every registered method a chapter can run without run-specific inputs: all but ``none``
    (always run, as the reference) and ``adaptive`` (its ``erank_ref`` is measured in its own chapter)."""
    return tuple(m for m in METHODS if m not in ("none", "adaptive"))


def method_table(methods: Sequence[str]) -> pd.DataFrame:
    """The methods the chapter runs: name, stage, what the budget K means, where the released code is."""
    rows = [{"method": m, "name": method_spec(m).label, "stage": method_spec(m).stage,
             "what K means": method_spec(m).convention or "all N tokens",
             "released code": method_spec(m).source} for m in ("none", *methods)]
    return pd.DataFrame(rows)


def _params(method: str, seed: int, fastv_layer: int) -> dict:
    if method == "random":
        return {"seed": seed}
    if method == "fastv":
        return {"layer": fastv_layer}
    return {}


def grid_configs(evaluator: Any, sizes: Mapping[str, int | None], methods: Sequence[str], ks: Sequence[int], *,
                 seed: int = 0, max_new_tokens: int | None = 48,
                 fastv_layer: int = 2) -> tuple[list[RunConfig], pd.DataFrame]:
    """The runs of the chapter and the ones the model cannot run.

    ``sizes``: {data set: samples} (for ``"chair"`` the captioned images, drawn with
    ``sample_seed=seed`` and limited to ``max_new_tokens``, as :func:`diversity.run_configs` does,
    so the runs are shared with the other Study B chapters). Every data set gets the unpruned run
    first; a method without a budget (``no_image``) runs once; ``random`` takes ``seed`` and
    ``fastv`` its ``fastv_layer``. Each configuration is checked with
    :func:`visprune.engine.validate_config` against the model's N and depth; the ones refused are
    returned as a table ``method, k, reason`` (one row per method and K) instead of running.
    """
    n_tokens, n_layers = model_shape(evaluator.profile.model)
    configs: list[RunConfig] = []
    skipped: dict[tuple[str, int | None], str] = {}
    for dataset, n in sizes.items():
        extra = {"max_new_tokens": max_new_tokens, "sample_seed": seed} if dataset == "chair" else {}
        configs.append(RunConfig(dataset, "none", None, {}, n_samples=n, **extra))
        for method in methods:
            for k in (ks if method_spec(method).budget else [None]):
                config = RunConfig(dataset, method, None if k is None else int(k), _params(method, seed, fastv_layer),
                                   n_samples=n, **extra)
                try:
                    validate_config(config, n_tokens, n_layers)
                except ValueError as error:
                    skipped.setdefault((method, k), str(error))
                    continue
                configs.append(config)
    table = pd.DataFrame([{"method": m, "label": method_spec(m).label, "k": k, "reason": r}
                          for (m, k), r in skipped.items()], columns=["method", "label", "k", "reason"])
    return configs, table


def _paper_of(k_of: Mapping[int, int]) -> dict[int, int]:
    """{model K: paper budget}, the inverse of ``chapters.budgets_for``'s mapping."""
    return {int(k): int(b) for b, k in k_of.items()}


def _run_meta(records: pd.DataFrame, k_of: Mapping[int, int]) -> pd.DataFrame:
    """Per (dataset, run): method, k, label, stage, paper budget (576 unpruned, 0 without tokens)."""
    params = [c for c in param_columns() if c in records]
    first = records.groupby(["dataset", "run"], sort=False)[["method", "k", *params]].first().reset_index()
    paper_of = _paper_of(k_of)
    rows = []
    for r in first.to_dict("records"):
        spec = method_spec(r["method"])
        used = {p: r[p] for p in spec.parameters if p in r and p != "feature_space"}
        if r["method"] == "none":
            budget = 576.0
        elif not spec.budget:
            budget = 0.0
        else:
            budget = float(paper_of.get(int(r["k"]), math.nan)) if pd.notna(r["k"]) else math.nan
        rows.append({"dataset": r["dataset"], "run": r["run"], "method": r["method"], "k": r["k"],
                     "label": method_label(r["method"], used), "stage": spec.stage, "budget": budget})
    return pd.DataFrame(rows)


def glance_table(records: pd.DataFrame, scores: pd.DataFrame | None, k_of: Mapping[int, int], *, n_bins: int = 15,
                 n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (data set, run) of every method.

    ``records``: the grid's records (QA and caption runs); ``scores``: the caption runs' CHAIR
    counts (:func:`diversity.caption_scores`), or None without captions; ``k_of``: {paper budget:
    model K}. Columns: ``dataset, kind, run, method, label, stage, k, budget`` (of 576), the
    metrics of :data:`SHOWN` for the data set's kind with ``_low``/``_high`` (percentile bootstrap
    over samples, ``n_bootstrap`` resamples), ``flip_rate`` with its Wilson interval (against the
    unpruned run; for captions, any change of wording counts), the cost columns of
    :func:`overview.cost_table` and ``convention``.
    """
    meta = _run_meta(records, k_of)
    parts = []
    qa = records[records["dataset"] != "chair"]
    if not qa.empty:
        metrics_ = list(dict.fromkeys(m for d in qa["dataset"].unique() for m in SHOWN[kind(d)]))
        table = summary_table(qa, metrics_, by=("dataset", "run"), n_bins=n_bins, n_bootstrap=n_bootstrap, seed=seed)
        parts.append(table.drop(columns=[c for c in ("method", "k", "label", *param_columns()) if c in table]))
    if scores is not None and not scores.empty:
        parts.append(diversity.chair_table(scores, SHOWN["chair"], by=("dataset", "run"), n_bootstrap=n_bootstrap,
                                           seed=seed))
    quality = pd.concat(parts, ignore_index=True)
    out = meta.merge(quality, on=["dataset", "run"], how="left")
    loyal = overview.loyalty_table(records)
    out = out.merge(loyal, on=["dataset", "run"], how="left")
    cost = overview.cost_table(records).drop(columns=["method", "k"])
    out = out.merge(cost, on=["dataset", "run"], how="left")
    out.insert(1, "kind", [kind(d) for d in out["dataset"]])
    datasets = list(dict.fromkeys(records["dataset"]))
    methods = list(METHODS)
    key = [(datasets.index(d), methods.index(m) if m in methods else len(methods), -1.0 if pd.isna(b) else b)
           for d, m, b in zip(out["dataset"], out["method"], out["budget"])]
    return out.iloc[sorted(range(len(out)), key=key.__getitem__)].reset_index(drop=True)  # data sets as run, methods as registered


def format_glance(table: pd.DataFrame, dataset: str, digits: int = 3) -> pd.DataFrame:
    """The rows of one data set for reading: each metric as ``value [low, high]``, the flip rate
    likewise, LM tokens, visual tokens per layer, prefill FLOPs relative to unpruned, the
    selector's own FLOPs and the budget convention."""
    rows = table[table["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"dataset: {dataset!r} is not in the table; it has {sorted(table['dataset'].unique())}")
    out = pd.DataFrame({"method": rows["label"], "budget (of 576)": rows["budget"].map(budget_text)})
    for m in SHOWN[kind(dataset)]:
        out[NAMES[m]] = [format_interval(v, lo, hi, digits) for v, lo, hi in
                         zip(rows[m], rows[f"{m}_low"], rows[f"{m}_high"])]
    out["flip rate"] = [format_interval(v, lo, hi, digits) if pd.notna(v) else "(reference)" for v, lo, hi in
                        zip(rows["flip_rate"], rows["flip_rate_low"], rows["flip_rate_high"])]
    out["LM visual tokens"] = rows["visual_tokens"].round(1)
    out["visual tokens per layer"] = rows["visual_per_layer"].round(1)
    out["prefill FLOPs (× unpruned)"] = rows["relative_flops"].round(3)
    out["selector GFLOPs"] = [f"{v / 1e9:.4f}" if pd.notna(v) else "not declared" for v in rows["selector_flops"]]
    out["budget convention"] = rows["convention"]
    return out.reset_index(drop=True)


def budget_text(budget: float) -> str:
    return "all" if budget == 576 else "0" if budget == 0 else "?" if pd.isna(budget) else str(int(budget))


def matched_flops(table: pd.DataFrame, metrics_: Sequence[str] | None = None, reference: str = "random") -> pd.DataFrame:
    """Each method's metric at the prefill FLOPs that ``reference`` (a pre-LLM method, K tokens into
    the language model) spends at each budget, linearly interpolated between the method's own
    budgets in (relative FLOPs, metric); NaN where that FLOPs level is outside the method's range
    (nothing is extrapolated). ``metrics_`` None takes each data set's :data:`PRIMARY` and ECE where
    the data set has it. Columns: ``dataset, metric, budget`` (the reference's),
    ``relative_flops, method, label, value``.
    """
    rows = []
    for dataset, frame in table.groupby("dataset", sort=False):
        names = metrics_ or [m for m in (PRIMARY[kind(dataset)], "ece") if m in frame and frame[m].notna().any()]
        ref = frame[frame["method"] == reference].sort_values("budget")
        for m in names:
            budgeted = [m for m in frame["method"].unique() if m != "none" and method_spec(m).budget]
            for method, runs in frame[frame["method"].isin(budgeted)].groupby("method", sort=False):
                label = runs["label"].iloc[0]
                runs = runs.dropna(subset=["relative_flops", m]).sort_values("relative_flops")
                x, y = runs["relative_flops"].to_numpy(float), runs[m].to_numpy(float)
                for budget, target in zip(ref["budget"], ref["relative_flops"]):
                    inside = len(x) > 0 and x.min() - 1e-12 <= target <= x.max() + 1e-12
                    value = float(np.interp(target, x, y)) if inside else math.nan
                    rows.append({"dataset": dataset, "metric": m, "budget": budget, "relative_flops": target,
                                 "method": method, "label": label, "value": value})
    return pd.DataFrame(rows, columns=["dataset", "metric", "budget", "relative_flops", "method", "label", "value"])


def matched_view(matched: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`matched_flops` for reading: one row per (data set, metric, method), one column per
    budget (the FLOPs a pre-LLM method spends there); blank where the method does not reach it."""
    keys = ["dataset", "metric", "label"]
    order = list(dict.fromkeys(zip(*(matched[k] for k in keys))))
    view = matched.set_index([*keys, "budget"])["value"].unstack("budget").reindex(pd.MultiIndex.from_tuples(order, names=keys))
    view.columns = [f"at the FLOPs of {int(b)} of 576" for b in view.columns]
    return view.round(digits).astype(object).where(view.notna(), "—")


def controls(records: pd.DataFrame, scores: pd.DataFrame | None, k_of: Mapping[int, int], *, n_bins: int = 15,
             n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every method against random pruning and plain downsampling at the same model K, on the same
    samples: the primary metric and ECE on QA data sets (:func:`overview.control_comparisons`),
    CHAIR_I on captions (:func:`diversity.paired_comparison`). Columns: ``dataset, control,
    method, label, k, budget, metric, diff`` (method minus control), ``low, high,
    indistinguishable`` (the paired interval includes 0), ``better`` (the method is better than
    the control with the interval away from 0), ``worse``."""
    parts = []
    for dataset, frame in records[records["dataset"] != "chair"].groupby("dataset", sort=False):
        table = overview.control_comparisons(frame, _CONTROLS, (PRIMARY[kind(dataset)], "ece"), n_bins=n_bins,
                                             n_bootstrap=n_bootstrap, seed=seed)
        parts.append(table[["dataset", "control", "method", "k", "metric", "diff", "low", "high"]])
    if scores is not None and not scores.empty:
        rows = []
        for control in _CONTROLS:
            for method in scores["method"].unique():
                if method in (control, "none", "no_image") or control not in set(scores["method"]):
                    continue
                paired = diversity.paired_comparison(scores, method, control, "chair_i", by=("k",),
                                                     n_bootstrap=n_bootstrap, seed=seed)
                for r in paired.to_dict("records"):
                    rows.append({"dataset": "chair", "control": control, "method": method, "k": r["k"],
                                 "metric": "chair_i", "diff": r["diff"], "low": r["low"], "high": r["high"]})
        parts.append(pd.DataFrame(rows, columns=["dataset", "control", "method", "k", "metric", "diff", "low", "high"]))
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=["dataset", "control", "method", "label", "k", "budget", "metric", "diff", "low",
                                     "high", "indistinguishable", "better", "worse"])
    out = pd.concat(parts, ignore_index=True)
    paper_of = _paper_of(k_of)
    out["budget"] = [paper_of.get(int(k), math.nan) for k in out["k"]]
    out["label"] = [method_spec(m).label for m in out["method"]]
    out["indistinguishable"] = (out["low"] <= 0) & (out["high"] >= 0)
    lower = np.array([lower_is_better(m) for m in out["metric"]])
    out["better"] = np.where(lower, out["high"] < 0, out["low"] > 0)
    out["worse"] = np.where(lower, out["low"] > 0, out["high"] < 0)
    cols = ["dataset", "control", "method", "label", "k", "budget", "metric", "diff", "low", "high",
            "indistinguishable", "better", "worse"]
    return out[cols]


# ------------------------------------------------------------------------------ findings


def _value(r: Mapping[str, Any], metric: str) -> str:
    return format_interval(r[metric], r[f"{metric}_low"], r[f"{metric}_high"])


def _at(r: Mapping[str, Any]) -> str:
    return f"{r['label']} at {budget_text(r['budget'])}"


def _cost_sentence(table: pd.DataFrame, budgets: Sequence[int]) -> str:
    parts = []
    for b in budgets:
        at = table[table["budget"] == b].groupby("method", sort=False)["relative_flops"].mean().dropna()
        pre = at[[m for m in at.index if method_spec(m).stage == "pre-llm"]]
        inside = at.drop(pre.index)
        if pre.empty and inside.empty:
            continue
        text = f"at {b} of 576"
        if not pre.empty:
            spread = f"{pre.min():.2f}" if round(pre.min(), 2) == round(pre.max(), 2) else f"{pre.min():.2f}–{pre.max():.2f}"
            text += f", the pre-LLM methods spend {spread} of the unpruned prefill FLOPs"
        if not inside.empty:
            text += ", the in-LLM ones " + ", ".join(f"{method_spec(m).label} {v:.2f}" for m, v in inside.items())
        parts.append(text)
    if not parts:
        return ""
    return ("**Cost at the same nominal budget.** Averaged over the data sets, " + "; ".join(parts) + ". "
            "An in-LLM method at the same K costs more, because every token passes the layers before it prunes; "
            "the Pareto plots compare at matched FLOPs instead.")


def _front_sentence(frame: pd.DataFrame, metric: str) -> str:
    front = overview.pareto_front(frame["relative_flops"], frame[metric], not lower_is_better(metric))
    runs = frame[front].sort_values("relative_flops")
    return listing([_at(r) for r in runs.to_dict("records")])


def _by_method(rows: pd.DataFrame) -> str:
    """``"saliency-only (64, 128), SCOPE (192)"``: the rows' methods with their budgets."""
    grouped: dict[str, list[str]] = {}
    for r in rows.to_dict("records"):
        grouped.setdefault(r["label"], []).append(budget_text(r["budget"]))
    return listing([f"{label} ({', '.join(b)})" for label, b in grouped.items()])


def _control_sentence(ctl: pd.DataFrame, dataset: str, control: str, metrics_: Sequence[str]) -> str:
    said = []
    for metric in metrics_:
        rows = ctl[(ctl["dataset"] == dataset) & (ctl["metric"] == metric) & (ctl["control"] == control)]
        if rows.empty:
            continue
        text = f"on {NAMES[metric]}, {int(rows['indistinguishable'].sum())} of {len(rows)} (method, budget) pairs " \
               "cannot be told apart from it"
        if rows["better"].any():
            text += f"; better: {_by_method(rows[rows['better']])}"
        if rows["worse"].any():
            text += f"; worse: {_by_method(rows[rows['worse']])}"
        said.append(text)
    if not said:
        return ""
    name = {"random": "random pruning", "downsample": "plain downsampling"}[control]
    return f"Against {name} (paired 95% intervals): " + "; ".join(said) + "."


def glance_findings(table: pd.DataFrame, ctl: pd.DataFrame, skipped: pd.DataFrame, *, budgets: Sequence[int],
                    profile: Any) -> str:
    """The chapter's conclusions (markdown), each computed from ``table`` (:func:`glance_table`),
    ``ctl`` (:func:`controls`) and ``skipped`` (:func:`grid_configs`)."""
    lines = [profile_sentence(profile)]
    cost = _cost_sentence(table, budgets)
    if cost:
        lines.append(cost)
    for dataset, frame in table.groupby("dataset", sort=False):
        primary = PRIMARY[kind(dataset)]
        lower = lower_is_better(primary)
        base = frame[frame["method"] == "none"].iloc[0]
        text = [f"**{dataset}, {NAMES[primary]}** (unpruned {_value(base, primary)})."]
        best = []
        for b in budgets:
            at = frame[frame["budget"] == b].dropna(subset=[primary])
            if at.empty:
                continue
            r = at.loc[at[primary].idxmin() if lower else at[primary].idxmax()]
            best.append(f"{b}: {r['label']} {_value(r, primary)}")
        if best:
            text.append("Best at each budget: " + "; ".join(best) + ".")
        blind = frame[frame["method"] == "no_image"]
        if len(blind):
            text.append(f"With no visual tokens at all: {_value(blind.iloc[0], primary)}.")
        text.append(f"On the Pareto front of {NAMES[primary]} against FLOPs: {_front_sentence(frame, primary)}.")
        if "ece" in frame and frame["ece"].notna().any():
            text.append(f"On the front of ECE against FLOPs: {_front_sentence(frame.dropna(subset=['ece']), 'ece')}.")
        text += [s for control in _CONTROLS if (s := _control_sentence(ctl, dataset, control, (primary, "ece")))]
        flips = frame.dropna(subset=["flip_rate"])
        flips = flips[flips["method"] != "no_image"]
        if len(flips) and kind(dataset) != "chair":
            low = flips.loc[flips["flip_rate"].idxmin()]
            high = flips.loc[flips["flip_rate"].idxmax()]
            text.append(f"Flip rate against the unpruned answers: lowest {_at(low)} "
                        f"({_value(low, 'flip_rate')}), highest {_at(high)} ({_value(high, 'flip_rate')}).")
        lines.append(" ".join(text))
    if len(skipped):
        lines.append("**Not run:** " + "; ".join(f"{r['label']} at K = {r['k']} ({r['reason']})"
                                                 for r in skipped.to_dict("records")) + ".")
    lines.append("With the toy model and these sample counts, an interval that includes 0 means the run cannot "
                 "tell the two apart, not that they are equal.")
    return "\n\n".join(lines)
