"""Teaching what the calibration estimators mean: the second half of the calibration primer.

The primer chapter (``chapters/calibration_primer.ipynb``) uses these helpers on the simulated
binary classifier of :func:`visprune.book.primer.simulate_classifier`, whose true calibration
error is known: 0 for the classifier that reports ``softmax(z)``, and
:func:`true_calibration_error` for the one that reports ``softmax(s z)``.

- Estimators as n grows: :func:`estimator_study` (binned, equal-mass, smooth and debiased ECE
  on many draws at each sample size), :func:`study_table`, :func:`format_study`,
  :func:`study_figure`.
- The noise floor (:func:`visprune.metrics.noise_floor`): :func:`measured_values`,
  :func:`noise_floors`, :func:`floor_table`, :func:`floor_figure`.
- The bootstrap of an estimator: :func:`bootstrap_values`, :func:`bootstrap_case`,
  :func:`bootstrap_table`, :func:`bootstrap_figure`.
- The Brier decomposition (:func:`visprune.metrics.brier_decomposition`):
  :func:`decomposition_table`.

Every estimator is computed by :mod:`visprune.metrics`; this module only draws data, collects
numbers and draws figures.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from visprune import metrics
from visprune.book.primer import softmax
from visprune.metrics.decomposition import DECOMPOSITION_PARTS
from visprune.metrics.noise_floor import FLOOR_METRICS
from visprune.metrics.specs import METRIC_SPECS, Resampled, draw_indices, metric_value

__all__ = [
    "ESTIMATORS",
    "confidence_pair",
    "true_calibration_error",
    "estimator_study",
    "study_table",
    "format_study",
    "study_figure",
    "measured_values",
    "noise_floors",
    "floor_table",
    "floor_figure",
    "bootstrap_values",
    "bootstrap_case",
    "bootstrap_table",
    "bootstrap_figure",
    "decomposition_table",
]

#: The estimators compared, in the order of the figures and tables (names of METRIC_SPECS).
ESTIMATORS = ("ece", "ece_em", "smece", "debiased_ece")
#: Which population quantity each estimator estimates: the mean gap (L1) or its root mean square (L2).
_NORM = {"ece": "l1", "ece_em": "l1", "smece": "l1", "debiased_ece": "l2"}
_COLORS = {"ece": "tab:blue", "ece_em": "tab:orange", "smece": "tab:green", "debiased_ece": "tab:purple"}


def _label(metric: str) -> str:
    return METRIC_SPECS[metric].label


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------ the simulated predictors


def confidence_pair(n: int, sharpness: float, spread: float = 2.0, seed: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidences ``(calibrated (n,), sharpened (n,))`` of n binary samples.

    As :func:`visprune.book.primer.simulate_classifier`: true logits ``z ~ N(0, spread^2 I_2)``;
    the calibrated predictor reports ``softmax(z)``, the other ``softmax(sharpness * z)``. Both
    predict the same class, and that prediction is right with probability exactly the
    calibrated confidence, so one draw ``hit ~ Bernoulli(calibrated)`` serves both.
    """
    n = _positive_int(n, "n")
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) or not sharpness > 0:
        raise ValueError(f"sharpness: expected a positive number, got {sharpness!r}")
    z = np.random.default_rng(seed).normal(0.0, float(spread), size=(n, 2))  # (n, 2)
    return softmax(z).max(axis=1), softmax(float(sharpness) * z).max(axis=1)


def true_calibration_error(sharpness: float, spread: float = 2.0, n_grid: int = 200_001) -> dict[str, float]:
    """The sharpened predictor's population calibration error, by numerical integration.

    With ``d = z_1 - z_0 ~ N(0, 2 spread^2)``, the calibrated confidence is ``c_1 = sigmoid(|d|)``
    and the sharpened one ``c_s = sigmoid(sharpness |d|)``; ``c_s`` is right with probability
    ``c_1`` and ``c_s >= c_1`` when ``sharpness >= 1``. So

    - ``l1 = E[c_s - c_1]``, the quantity binned, equal-mass and smooth ECE estimate (the gap
      has one sign, so no bin or kernel can cancel part of it);
    - ``l2 = sqrt(E[(c_s - c_1)^2])``, the quantity the debiased (L2) estimator estimates.

    The expectations over the half-normal ``|d|`` are trapezoid sums on ``n_grid`` points up to
    12 standard deviations (error far below 1e-6). Both are 0 for ``sharpness = 1``.
    """
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) or not sharpness > 0:
        raise ValueError(f"sharpness: expected a positive number, got {sharpness!r}")
    scale = float(spread) * np.sqrt(2.0)  # standard deviation of d
    x = np.linspace(0.0, 12.0 * scale, _positive_int(n_grid, "n_grid", 3))  # |d|
    density = 2.0 * np.exp(-0.5 * (x / scale) ** 2) / (scale * np.sqrt(2.0 * np.pi))  # half-normal
    gap = 1.0 / (1.0 + np.exp(-float(sharpness) * x)) - 1.0 / (1.0 + np.exp(-x))
    weights = np.full_like(x, x[1] - x[0])
    weights[[0, -1]] /= 2.0
    l1 = float(np.sum(weights * density * np.abs(gap)))
    l2 = float(np.sqrt(np.sum(weights * density * gap**2)))
    return {"l1": l1, "l2": l2}


# ------------------------------------------------------------------------------ estimators as n grows


def estimator_study(sample_sizes: Sequence[int], sharpness: float, n_repeats: int = 50, n_bins: int = 15,
                    spread: float = 2.0, seed: int = 0, block: int = 25,
                    estimators: Sequence[str] = ESTIMATORS) -> pd.DataFrame:
    """Each estimator on ``n_repeats`` draws of n samples, for each n, of both predictors.

    Repetitions come in blocks of ``block``: a block draws n logits (:func:`confidence_pair`,
    seeded by ``(seed, n, block index)``) and then ``block`` independent rows of outcomes
    ``hit ~ Bernoulli(c_1)``, shared by the calibrated and the sharpened predictor. So the spread
    holds both the noise of the confidences and that of the outcomes, and each estimator runs
    once per block on all its rows (the estimator's batched form, the one the noise floor uses).

    Returns a long table: ``n``, ``repeat``, ``predictor`` (``"calibrated"`` or
    ``"over-confident"``), ``estimator`` (a name of :data:`ESTIMATORS`), ``value``.
    """
    sizes = [_positive_int(n, "sample_sizes", 2) for n in sample_sizes]
    if not sizes:
        raise ValueError("sample_sizes: give at least one sample size")
    n_repeats, block = _positive_int(n_repeats, "n_repeats"), _positive_int(block, "block")
    unknown = [m for m in estimators if m not in FLOOR_METRICS]
    if unknown:
        raise ValueError(f"estimators: {unknown} have no batched form on fixed confidences; choose from {FLOOR_METRICS}")
    frames = []
    for n in sizes:
        for b, start in enumerate(range(0, n_repeats, block)):
            rows = min(block, n_repeats - start)
            rng = np.random.default_rng([int(seed), n, b])
            calibrated, sharpened = confidence_pair(n, sharpness, spread, rng)
            hits = (rng.random((rows, n)) < calibrated[None, :]).astype(np.float64)  # (rows, n)
            for predictor, conf in (("calibrated", calibrated), ("over-confident", sharpened)):
                for m in estimators:
                    values = METRIC_SPECS[m].floor(conf, hits, n_bins)  # (rows,)
                    frames.append(pd.DataFrame({"n": n, "repeat": np.arange(start, start + rows),
                                                "predictor": predictor, "estimator": m, "value": values}))
    return pd.concat(frames, ignore_index=True)


def study_table(study: pd.DataFrame, truth: Mapping[str, float]) -> pd.DataFrame:
    """Per predictor, estimator and n: ``mean``, ``sd``, ``q05``, ``q95`` of the values, ``truth``
    (0 for the calibrated predictor; ``truth["l1"]`` or ``truth["l2"]`` by the estimator's norm
    for the other) and ``bias = mean - truth``."""
    grouped = study.groupby(["predictor", "estimator", "n"], sort=False)["value"]
    table = grouped.agg(mean="mean", sd="std", q05=lambda x: x.quantile(0.05),
                        q95=lambda x: x.quantile(0.95)).reset_index()
    table["truth"] = [0.0 if p == "calibrated" else float(truth[_NORM[m]])
                      for p, m in zip(table["predictor"], table["estimator"])]
    table["bias"] = table["mean"] - table["truth"]
    return table


def format_study(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`study_table` as a short display table: one row per n, one column per predictor and
    estimator, each cell ``mean ± sd``."""
    cells = table.assign(cell=[f"{m:.3f} ± {s:.3f}" for m, s in zip(table["mean"], table["sd"])],
                         label=table["estimator"].map(_label))
    wide = cells.pivot(index="n", columns=["predictor", "label"], values="cell")
    order = [(p, _label(m)) for p in ("calibrated", "over-confident") for m in ESTIMATORS
             if (p, _label(m)) in wide.columns]
    return wide[order]


def study_figure(table: pd.DataFrame):
    """Two panels (calibrated, over-confident): each estimator's mean against n (log scale), its
    5-95% band over the repetitions, and the true values as grey lines; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    for ax, predictor in zip(axes, ("calibrated", "over-confident")):
        part = table[table["predictor"] == predictor]
        for m in ESTIMATORS:
            rows = part[part["estimator"] == m].sort_values("n")
            if rows.empty:
                continue
            ax.plot(rows["n"], rows["mean"], marker="o", ms=3, color=_COLORS[m], label=_label(m))
            ax.fill_between(rows["n"], rows["q05"], rows["q95"], color=_COLORS[m], alpha=0.12, lw=0)
        for norm, style in (("l1", "--"), ("l2", ":")):
            values = part.loc[part["estimator"].map(_NORM) == norm, "truth"]
            if len(values):
                ax.axhline(values.iloc[0], color="0.3", ls=style, lw=1,
                           label=f"true {'L1 (mean gap)' if norm == 'l1' else 'L2 (r.m.s. gap)'}")
        ax.set_xscale("log")
        ax.set_xlabel("number of samples n (log scale)")
        ax.set_title(f"{predictor} predictor", fontsize=10)
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("estimated calibration error")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ the noise floor


def measured_values(candidates: Mapping[str, Any], labels: Any, n_bins: int = 15,
                    estimators: Sequence[str] = ESTIMATORS) -> dict[str, dict[str, float]]:
    """Each estimator on each candidate's probabilities (name -> (n, C)) and the real ``labels``."""
    return {name: {m: metric_value(m, probs, labels, n_bins) for m in estimators} for name, probs in candidates.items()}


def noise_floors(candidates: Mapping[str, Any], n_draws: int = 1000, seed: Any = 0, n_bins: int = 15,
                 estimators: Sequence[str] = ESTIMATORS) -> dict[str, dict[str, Any]]:
    """The noise floor (:func:`visprune.metrics.noise_floor`) of each estimator for each candidate's
    own confidences: name -> metric -> NoiseFloor."""
    return {name: {m: metrics.noise_floor(m, probs, n_draws=n_draws, seed=seed, n_bins=n_bins) for m in estimators}
            for name, probs in candidates.items()}


def floor_table(floors: Mapping[str, Mapping[str, Any]], measured: Mapping[str, Mapping[str, float]],
                truth: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """One row per predictor and estimator: the ``measured`` value, the noise floor's ``mean`` and
    upper quantile (for that predictor's own confidences), ``within floor`` (measured <= upper:
    the estimator cannot tell it from perfect calibration) and, if ``truth[predictor]`` gives
    the population ``l1`` and ``l2`` errors (:func:`true_calibration_error`), the true value of
    the estimator's norm.

    ``floors`` as :func:`noise_floors` returns it; ``measured`` as :func:`measured_values`.
    """
    rows = []
    for predictor, by_metric in floors.items():
        for m, floor in by_metric.items():
            value = float(measured[predictor][m])
            row = {"predictor": predictor, "estimator": _label(m), "measured": value, "floor mean": floor.mean,
                   f"floor {100 * floor.level:g}th pct": floor.upper, "within floor": floor.covers(value)}
            if truth is not None:
                row["truth"] = float(truth[predictor][_NORM[m]])
            rows.append(row)
    return pd.DataFrame(rows).set_index(["predictor", "estimator"])


def floor_figure(floors: Mapping[str, Any], measured: Mapping[str, float] | None = None, title: str | None = None):
    """One histogram per estimator of its noise-floor draws (``floors[metric]``, a NoiseFloor),
    with the mean, the upper quantile and, if given, ``measured[metric]``; returns the Figure."""
    import matplotlib.pyplot as plt

    names = list(floors)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, m in zip(axes[0], names):
        floor = floors[m]
        ax.hist(floor.draws, bins=40, color=_COLORS.get(m, "0.5"), alpha=0.6)
        ax.axvline(floor.mean, color="0.2", ls="--", lw=1, label=f"mean {floor.mean:.3f}")
        ax.axvline(floor.upper, color="tab:red", lw=1.5, label=f"{100 * floor.level:g}th pct {floor.upper:.3f}")
        if measured is not None and m in measured:
            ax.axvline(measured[m], color="black", lw=1.5, ls=":", label=f"measured {measured[m]:.3f}")
        ax.set_title(_label(m), fontsize=10)
        ax.set_xlabel("estimate on a calibrated draw")
        ax.set_xlim(left=0)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("draws")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ the bootstrap


def bootstrap_values(probs: Any, labels: Any, metric: str, n_resamples: int = 1000, seed: Any = 0,
                     n_bins: int = 15) -> np.ndarray:
    """(n_resamples,) values of ``metric`` on bootstrap resamples of ``(probs, labels)``, drawn as
    :func:`visprune.metrics.bootstrap_ci` draws them (its interval is their 2.5% and 97.5% quantiles)."""
    p = np.asarray(probs, dtype=np.float64)
    idx = draw_indices(len(p), _positive_int(n_resamples, "n_resamples"), seed)  # (R, n)
    return Resampled(p, np.asarray(labels), n_bins).values(metric, idx)


def bootstrap_case(predictor: str, probs: Any, labels: Any, metric: str, truth: float, floor: Any,
                   n_resamples: int = 1000, seed: Any = 0, n_bins: int = 15) -> dict[str, Any]:
    """One case for :func:`bootstrap_table` and :func:`bootstrap_figure`: the point estimate of
    ``metric`` on ``(probs, labels)``, its bootstrap values (:func:`bootstrap_values`), the
    noise floor ``floor`` of the same confidences and the ``truth``."""
    return {"predictor": predictor, "metric": metric, "point": metric_value(metric, probs, labels, n_bins),
            "values": bootstrap_values(probs, labels, metric, n_resamples, seed, n_bins), "floor": floor,
            "truth": float(truth)}


def bootstrap_table(cases: Sequence[Mapping[str, Any]], level: float = 0.95) -> pd.DataFrame:
    """One row per case: point estimate, percentile interval, and where the point sits in it.

    Each case holds ``predictor``, ``metric``, ``point`` (the estimate on the data), ``values``
    (its bootstrap values), ``floor`` (a NoiseFloor for the same confidences) and ``truth``.
    Columns: ``point``, ``low``, ``high``; ``above point`` (share of resamples above the point
    estimate: 0.5 for a symmetric bootstrap); ``position`` ((point - low) / (high - low): 0 at
    the bottom of the interval, 1 at the top); the floor's upper quantile; ``truth`` and
    whether the interval covers it.
    """
    tail = (1.0 - level) / 2.0
    rows = []
    for case in cases:
        values = np.asarray(case["values"], dtype=np.float64)
        low, high = np.quantile(values, [tail, 1.0 - tail])
        point, truth = float(case["point"]), float(case["truth"])
        rows.append({"predictor": case["predictor"], "estimator": _label(case["metric"]), "point": point,
                     "low": float(low), "high": float(high), "above point": float(np.mean(values > point)),
                     "position": (point - low) / (high - low) if high > low else float("nan"),
                     "floor 95th pct": case["floor"].upper, "truth": truth,
                     "covers truth": bool(low <= truth <= high)})
    return pd.DataFrame(rows).set_index(["predictor", "estimator"])


def bootstrap_figure(cases: Sequence[Mapping[str, Any]], level: float = 0.95):
    """One histogram per case (as :func:`bootstrap_table`) of its bootstrap values, with the point
    estimate, the percentile interval, the noise floor up to its upper quantile (grey) and the
    true value; returns the Figure."""
    import matplotlib.pyplot as plt

    tail = (1.0 - level) / 2.0
    fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.6), squeeze=False)
    for ax, case in zip(axes[0], cases):
        values = np.asarray(case["values"], dtype=np.float64)
        low, high = np.quantile(values, [tail, 1.0 - tail])
        floor = case["floor"]
        ax.axvspan(0.0, floor.upper, color="0.88", zorder=0, label=f"noise floor (0 to its {100 * floor.level:g}th pct)")
        ax.hist(values, bins=40, color=_COLORS.get(case["metric"], "0.5"), alpha=0.8, zorder=1, label="bootstrap values")
        ax.axvline(case["point"], color="black", lw=1.8, zorder=2, label="point estimate")
        for edge in (low, high):
            ax.axvline(edge, color="tab:red", ls=":", lw=1.5, zorder=2)
        ax.plot([], [], color="tab:red", ls=":", label=f"{100 * level:g}% percentile interval")
        ax.axvline(case["truth"], color="tab:green", lw=2, ls="--", zorder=2, label="true value")
        ax.set_xlim(left=0)
        ax.set_title(f"{case['predictor']}: {_label(case['metric'])}\npoint {case['point']:.3f}, "
                     f"interval {low:.3f} to {high:.3f}, truth {case['truth']:.3f}", fontsize=8.5)
        ax.set_xlabel("estimate")
    axes[0][0].set_ylabel("resamples")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ------------------------------------------------------------------------------ the Brier decomposition


def decomposition_table(candidates: Mapping[str, Any], labels: Any, n_bins: int = 15) -> pd.DataFrame:
    """The Brier decomposition of each candidate's probabilities (``candidates``: name -> (n, C)).

    Columns: the five parts of :func:`visprune.metrics.brier_decomposition`, ``sum of parts``
    (``reliability - resolution + uncertainty + within_variance - within_covariance``) and the
    ``brier`` score computed directly; the two agree to float rounding.
    """
    rows = {}
    for name, probs in candidates.items():
        parts = metrics.brier_decomposition(probs, labels, n_bins=n_bins)
        total = (parts["reliability"] - parts["resolution"] + parts["uncertainty"] + parts["within_variance"]
                 - parts["within_covariance"])
        rows[name] = {**{k: parts[k] for k in DECOMPOSITION_PARTS}, "sum of parts": total, "brier": parts["brier"]}
    return pd.DataFrame(rows).T
