"""Does pruning's effect on calibration survive recalibration? Temperature scaling fitted on a
fitting split, applied to the evaluated runs' stored logits (ALGORITHMS.md, "Metrics":
temperature scaling; DESIGN.md section 4: the records keep the answer logits).

- :func:`fit_temperatures`: one temperature per run (method configuration), fitted by NLL on the
  run's records of the fitting split (``DatasetSpec.validation``), never on the evaluated ones.
- :func:`recalibrate`: the evaluated records with their probabilities, confidences, predictions
  and correctness recomputed at the run's temperature, so every table, paired difference and
  plot of :mod:`visprune.book.analysis` works on them unchanged.
- :func:`held_out`: the evaluated records whose image the fitting split does not hold (on a
  real profile the POPE fitting split is a fifth of the test images; on the toy world the
  splits share no image and nothing is dropped).
- the noise floors after recalibration come from :func:`visprune.book.estimators.floor_table`.
- :func:`survival`: for each pruned configuration, the paired difference against the unpruned
  model before and after recalibration, and whether an effect seen before is still there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from visprune.book.analysis import _check_records, add_budget, compare_runs, format_interval, summary_table
from visprune.book.verdicts import format_difference
from visprune.book.estimators import floor_table
from visprune.metrics.temperature import AnswerLogits, fit_temperature, temperature_nll, temperature_probs

__all__ = ["fit_temperatures", "recalibrate", "held_out", "survival", "survival_counts", "Study", "run_study",
           "before_after", "survival_view", "plot_temperatures"]


def _scored(records: pd.DataFrame, name: str) -> pd.DataFrame:
    records = _check_records(records, name)
    ok = records[records["status"] == "ok"]
    if "answer_logits" not in ok or ok["answer_logits"].isna().any():
        raise ValueError(f"{name}: the records have no answer_logits (written before engine version 5, or caption "
                         "runs); run them again")
    return ok


def fit_temperatures(fit_grid: pd.DataFrame, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """One temperature per run of ``fit_grid`` (the fitting split's records, any data sets pooled).

    Columns: ``run, temperature, n_fit, nll_before`` (the fitting split's NLL at T = 1) and
    ``nll_after`` (at the fitted T, never higher). ``runs`` limits and orders the runs.
    """
    ok = _scored(fit_grid, "fit_grid")
    wanted = list(dict.fromkeys(ok["run"])) if runs is None else list(runs)
    rows = []
    for run in wanted:
        part = ok[ok["run"] == run]
        if part.empty:
            raise ValueError(f"runs: no fitting records of run {run!r}; its runs are {sorted(set(ok['run']))}")
        logits = AnswerLogits.of(list(part["answer_logits"]))
        labels = part["label"].to_numpy(dtype=np.int64)
        t = fit_temperature(logits, labels)
        rows.append({"run": run, "temperature": t, "n_fit": len(part),
                     "nll_before": temperature_nll(logits, labels, 1.0), "nll_after": temperature_nll(logits, labels, t)})
    return pd.DataFrame(rows)


def recalibrate(grid: pd.DataFrame, temperatures: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``grid`` whose scored records are recomputed at their run's fitted temperature.

    ``probs`` become ``p(T)`` from ``answer_logits``; ``confidence``, ``prediction``,
    ``pred_answer`` and ``correct`` follow; a ``temperature`` column records T. Every run of the
    grid needs a temperature.
    """
    grid = _scored(grid, "grid").copy()
    t_of = dict(zip(temperatures["run"], temperatures["temperature"]))
    missing = sorted(set(grid["run"]) - set(t_of))
    if missing:
        raise ValueError(f"temperatures: no fitted temperature for the runs {missing}")
    grid["temperature"] = grid["run"].map(t_of).astype(float)
    new_probs: list[Any] = [None] * len(grid)
    for run, rows in grid.groupby("run", sort=False).indices.items():
        part = grid.iloc[rows]
        p = temperature_probs(list(part["answer_logits"]), t_of[run])  # (m, width)
        for j, i in enumerate(rows):
            new_probs[i] = p[j, : len(part["answers"].iloc[j])].tolist()
    grid["probs"] = new_probs
    pred = [int(np.argmax(p)) for p in new_probs]
    grid["prediction"] = pred
    grid["confidence"] = [float(p[k]) for p, k in zip(new_probs, pred)]
    grid["pred_answer"] = [a[k] for a, k in zip(grid["answers"], pred)]
    grid["correct"] = [bool(k == y) for k, y in zip(pred, grid["label"])]
    return grid


def held_out(grid: pd.DataFrame, fit_grid: pd.DataFrame) -> pd.DataFrame:
    """The records of ``grid`` whose image no record of ``fit_grid`` shows."""
    fitted = set(fit_grid["image_id"])
    return grid[~grid["image_id"].isin(fitted)]


def survival(before: pd.DataFrame, after: pd.DataFrame, comparisons: Sequence[tuple[str, str, str]],
             metrics: Sequence[str] = ("ece", "smece"), **stats: Any) -> pd.DataFrame:
    """Paired differences of each comparison ``(name, run_a, run_b)`` before and after
    recalibration (:func:`visprune.book.analysis.compare_runs` on both grids).

    One row per comparison and metric: ``comparison, metric, before, before_low, before_high,
    before_direction, after, after_low, after_high, after_direction`` and ``survives``: True
    when the interval excluded 0 before and still excludes it on the same side after; False
    when it excluded 0 before and no longer does (or flips); None when there was no effect to
    survive (the interval included 0 before).
    """
    a = compare_runs(before, comparisons, metrics, **stats)
    b = compare_runs(after, comparisons, metrics, **stats)
    out = a[["comparison", "metric"]].copy()
    for tag, frame in (("before", a), ("after", b)):
        out[tag] = frame["diff"].to_numpy()
        out[f"{tag}_low"] = frame["low"].to_numpy()
        out[f"{tag}_high"] = frame["high"].to_numpy()
        out[f"{tag}_direction"] = frame["direction"].to_numpy()
    out["survives"] = [None if d0 == "indistinguishable" else bool(d0 == d1)
                       for d0, d1 in zip(out["before_direction"], out["after_direction"])]
    return out


def survival_counts(table: pd.DataFrame, metric: str) -> dict[str, int]:
    """How many comparisons of ``metric`` had an effect before (``effects``), kept it after
    (``survived``), lost it (``lost``), and showed one only after recalibration (``new``)."""
    part = table[table["metric"] == metric]
    effects = part["before_direction"] != "indistinguishable"
    return {"comparisons": int(len(part)), "effects": int(effects.sum()),
            "survived": int((part["survives"] == True).sum()),  # noqa: E712 (object column)
            "lost": int((part["survives"] == False).sum()),  # noqa: E712
            "new": int(((~effects) & (part["after_direction"] != "indistinguishable")).sum())}


# ------------------------------------------------------------------------------ one study


@dataclass
class Study:
    """One task's recalibration study (see :func:`run_study`)."""

    name: str
    test: pd.DataFrame  # evaluated records, before recalibration (held out from the fitting images)
    fit: pd.DataFrame  # the fitting split's records
    temperatures: pd.DataFrame  # fit_temperatures, with label and budget
    before: pd.DataFrame  # summary_table of test
    after: pd.DataFrame  # summary_table of the recalibrated test
    recalibrated: pd.DataFrame
    floors: pd.DataFrame  # floor_table after recalibration
    survival: pd.DataFrame
    unpruned: str
    comparisons: list

    def aurc_change(self) -> float:
        """The largest |AURC after - AURC before| over the runs."""
        merged = self.before.merge(self.after, on="run", suffixes=("_before", "_after"))
        return float((merged["aurc_after"] - merged["aurc_before"]).abs().max())


STUDY_METRICS = ("accuracy", "ece", "smece", "brier", "aurc")


def run_study(name: str, evaluator: Any, test_configs: Sequence[Any], fit_configs: Sequence[Any], k_of: Any, *,
              n_bins: int = 15, n_bootstrap: int = 1000, seed: Any = 0, n_draws: int = 1000) -> Study:
    """Run (or load) the evaluated and fitting runs, fit one temperature per run on the fitting
    records, recalibrate the evaluated records, and tabulate before and after.

    ``test_configs`` and ``fit_configs`` list the same method configurations on the evaluated
    data sets and on their fitting splits (``DatasetSpec.validation``); several data sets of one
    configuration are pooled (the three POPE splits). Comparisons: every pruned run against the
    unpruned one, named ``"<label> @ <budget>"``.
    """
    stats = dict(n_bins=n_bins, n_bootstrap=n_bootstrap, seed=seed)
    fit = evaluator.grid(list(fit_configs))
    test = held_out(evaluator.grid(list(test_configs)), fit)
    temperatures = fit_temperatures(fit, runs=list(dict.fromkeys(test["run"])))
    recalibrated = recalibrate(test, temperatures)
    before = add_budget(summary_table(test, STUDY_METRICS, by=("run",), **stats), k_of)
    after = add_budget(summary_table(recalibrated, STUDY_METRICS, by=("run",), **stats), k_of)
    temperatures = temperatures.merge(before[["run", "label", "budget"]], on="run")
    unpruned = before.loc[before["method"] == "none", "run"].item()
    comparisons = [(f"{r.label} @ {r.budget:g}", r.run, unpruned) for r in before.itertuples() if r.method != "none"]
    table = survival(test, recalibrated, comparisons, ("ece", "smece"), **stats)
    floors = floor_table(recalibrated, list(before["run"]), n_bins=n_bins, n_draws=n_draws, seed=seed)
    return Study(name, test, fit, temperatures, before, after, recalibrated, floors, table, unpruned, comparisons)


def before_after(study: Study, metrics: Sequence[str] = ("ece", "smece", "aurc")) -> pd.DataFrame:
    """One row per run: the fitted T and each metric before and after, with intervals, as text."""
    rows = []
    t_of = study.temperatures.set_index("run")["temperature"]
    after = study.after.set_index("run")
    for r in study.before.itertuples():
        row = {"method": r.label, "budget": r.budget, "T": round(float(t_of[r.run]), 3)}
        for m in metrics:
            a = after.loc[r.run]
            row[f"{m} before"] = format_interval(getattr(r, m), getattr(r, f"{m}_low"), getattr(r, f"{m}_high"))
            row[f"{m} after"] = format_interval(a[m], a[f"{m}_low"], a[f"{m}_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def survival_view(study: Study) -> pd.DataFrame:
    """The survival table as text: each difference against the unpruned model, before and after."""
    out = study.survival[["comparison", "metric"]].copy()
    for tag in ("before", "after"):
        out[f"{tag} [95% CI]"] = [format_difference({"diff": d, "low": lo, "high": hi}) for d, lo, hi in
                                  zip(study.survival[tag], study.survival[f"{tag}_low"], study.survival[f"{tag}_high"])]
        out[f"{tag}"] = study.survival[f"{tag}_direction"]
    out["survives"] = study.survival["survives"].map({True: "yes", False: "no", None: "no effect"})
    return out


def plot_temperatures(studies: Sequence[Study]):
    """The fitted temperature against the budget, one panel per study, one line per method."""
    import matplotlib.pyplot as plt

    from visprune.book.plots import color_for

    fig, axes = plt.subplots(1, len(studies), figsize=(5.2 * len(studies), 3.8), squeeze=False)
    for ax, study in zip(axes[0], studies):
        t = study.temperatures
        base = float(t.loc[t["run"] == study.unpruned, "temperature"].item())
        for label, part in t[t["run"] != study.unpruned].groupby("label", sort=False):
            part = part.sort_values("budget")
            ax.plot(part["budget"], part["temperature"], marker="o", label=label, color=color_for(label))
        ax.axhline(base, color="black", linestyle="--", label="unpruned")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("visual tokens kept (of 576)")
        ax.set_ylabel("fitted temperature T")
        ax.set_title(study.name)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
