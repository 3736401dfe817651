"""Teaching calibration: synthetic classifiers, temperature scaling, figures and widgets.

The calibration primer chapter (``chapters/calibration_primer.ipynb``) uses these helpers to
show what the metrics of ALGORITHMS.md ("Metrics": ECE, Brier, reliability diagram,
risk-coverage and AURC) measure, first on data whose calibration is known by construction,
then on the toy model's own answers.

- Synthetic data: :func:`simulate_classifier` draws labels from a known distribution, so a
  classifier that reports that distribution is calibrated *by construction*; multiplying its
  logits by ``sharpness > 1`` makes it over-confident (``< 1``: under-confident).
- Temperature scaling (Guo et al., ICML 2017): :func:`temperature_scale` (logits) and
  :func:`rescale_probs` (probabilities, through their logarithm); :func:`fit_temperature`
  picks T by the negative log-likelihood on held-out data (:func:`nll`). They call
  :mod:`visprune.metrics.temperature`, where scaling and the fit are defined.
- What the estimators mean (noise floor, bootstrap, Brier decomposition, SmoothECE and debiased
  ECE as n grows): :mod:`visprune.book.estimators_primer`.
- Numbers: :func:`calibration_summary` (accuracy, ECE, Brier, NLL, AURC at once),
  :func:`ece_by_bins` (the same data, several bin counts).
- Figures: :func:`reliability_diagram`, :func:`temperature_grid`, :func:`bin_count_grid`,
  :func:`risk_coverage_plot`.
- Widgets: :func:`calibration_explorer` returns an ``ipywidgets`` control (temperature and
  bin-count sliders) for a live Jupyter session; it draws nothing until displayed.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from visprune import metrics

__all__ = [
    "softmax",
    "simulate_classifier",
    "temperature_scale",
    "rescale_probs",
    "nll",
    "fit_temperature",
    "calibration_summary",
    "ece_by_bins",
    "reliability_diagram",
    "temperature_grid",
    "bin_count_grid",
    "risk_coverage_plot",
    "calibration_explorer",
]


# ------------------------------------------------------------------------------ validation


def _logit_matrix(logits: Any, name: str = "logits") -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected an (n, C) array with n >= 1 and C >= 2 classes, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values; pass finite scores")
    return arr


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)):
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature: must be a finite number > 0, got {temperature!r}")
    return t


def _labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels: expected a 1-D array of {n} class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"labels: expected int class indices in 0..{n_classes - 1}")
    return y.astype(np.int64)


# ------------------------------------------------------------------------------ synthetic data


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax of an (n, C) array, computed stably (max subtracted), float64."""
    z = _logit_matrix(logits)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def simulate_classifier(
    n: int = 2000, n_classes: int = 2, sharpness: float = 1.0, spread: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A simulated classifier with known calibration: ``(logits (n, C), labels (n,))``.

    For each sample, "true" logits ``z ~ N(0, spread^2 I_C)``; the label is drawn from
    ``softmax(z)``, so ``softmax(z)`` is perfectly calibrated by construction (its ECE is 0 up to
    sampling noise and binning bias). The classifier *reports* ``sharpness * z``:

    - ``sharpness = 1``: calibrated;
    - ``sharpness > 1``: over-confident (probabilities pushed towards 0 and 1);
    - ``sharpness < 1``: under-confident.

    Temperature scaling with ``T = sharpness`` recovers the calibrated probabilities exactly.
    ``spread`` sets how separable the classes are (larger = higher accuracy).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected a positive int (number of samples), got {n!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes: expected an int >= 2, got {n_classes!r}")
    for name, value in (("sharpness", sharpness), ("spread", spread)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, float(spread), size=(int(n), int(n_classes)))  # (n, C)
    p = softmax(true_logits)
    # inverse-CDF draw of one label per row from its own distribution
    u = rng.random(int(n))[:, None]  # (n, 1)
    labels = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), n_classes - 1)  # (n,)
    return float(sharpness) * true_logits, labels.astype(np.int64)


# ------------------------------------------------------------------------------ temperature scaling
# Thin calls into visprune.metrics.temperature, which holds the definition and the fit.


def _log_probs(probs: Any, floor: float) -> np.ndarray:
    """``log p`` (zeros floored at ``floor``): logits up to a per-row constant, for probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError(f"probs: expected an (n, C) array of non-negative probabilities, got shape {p.shape}")
    return np.log(np.maximum(p, floor))


def temperature_scale(logits: Any, temperature: float) -> np.ndarray:
    """Temperature scaling (Guo et al., ICML 2017): ``softmax(logits / T)``, (n, C) float64.

    ``T > 1`` softens the probabilities (less confident), ``T < 1`` sharpens them, ``T = 1``
    is the plain softmax. The argmax, hence the prediction and accuracy, never changes.
    :func:`visprune.metrics.temperature_probs` of an (n, C) logit array.
    """
    _check_temperature(temperature)
    return metrics.temperature_probs(_logit_matrix(logits), float(temperature))


def rescale_probs(probs: Any, temperature: float, floor: float = 1e-12) -> np.ndarray:
    """Temperature scaling applied to probabilities: ``softmax(log(p) / T)``, (n, C) float64.

    ``log p`` equals the logits up to a per-row constant, which the softmax ignores, so this is
    the same as scaling the logits; use it when only probabilities were stored (the evaluation
    records keep the distribution over the answer set). Zeros are floored at ``floor`` before
    the logarithm. ``T = 1`` returns ``p`` (renormalised).
    """
    _check_temperature(temperature)
    return metrics.temperature_probs(_log_probs(probs, floor), float(temperature))


def nll(probs: Any, labels: Any, floor: float = 1e-12) -> float:
    """Negative log-likelihood ``-mean_i log p_i[y_i]`` (natural log; probabilities floored at ``floor``).

    :func:`visprune.metrics.temperature_nll` at ``T = 1`` of ``log p`` (rows renormalised, so for
    rows that sum to 1 it is exactly the mean of ``-log p_i[y_i]``).
    """
    log_p = _log_probs(probs, floor)
    return metrics.temperature_nll(log_p, _labels(labels, len(log_p), log_p.shape[1]), 1.0)


def fit_temperature(scores: Any, labels: Any, from_probs: bool = False) -> float:
    """The temperature that minimises the NLL of ``labels``: :func:`visprune.metrics.fit_temperature`.

    ``scores`` are (n, C) logits, or probabilities with ``from_probs=True`` (scaled as
    :func:`rescale_probs` scales them). Fit on held-out data, never on the samples you then
    evaluate.
    """
    logits = _log_probs(scores, 1e-12) if from_probs else _logit_matrix(scores)
    return metrics.fit_temperature(logits, _labels(labels, len(logits), logits.shape[1]))


# ------------------------------------------------------------------------------ numbers


def calibration_summary(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, ECE, MCE, Brier, NLL, AURC and E-AURC of one set of predictions (visprune.metrics)."""
    p = np.asarray(probs, dtype=np.float64)
    y = _labels(labels, len(p), p.shape[1] if p.ndim == 2 else 0)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    return {
        "accuracy": float(correct.mean()),
        "ece": metrics.ece(p, y, n_bins=n_bins),
        "mce": metrics.mce(p, y, n_bins=n_bins),
        "brier": metrics.brier(p, y),
        "nll": nll(p, y),
        "aurc": metrics.aurc(confidence, correct),
        "eaurc": metrics.eaurc(confidence, correct),
    }


def ece_by_bins(probs: Any, labels: Any, bin_counts: Sequence[int]) -> pd.DataFrame:
    """ECE of the same predictions for each bin count: columns ``n_bins``, ``ece``, ``non_empty``."""
    rows = []
    for b in bin_counts:
        table = metrics.reliability_table(probs, labels, n_bins=int(b))
        rows.append({"n_bins": int(b), "ece": metrics.ece(probs, labels, n_bins=int(b)),
                     "non_empty": int((table["count"] > 0).sum())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ figures


def reliability_diagram(ax, probs: Any, labels: Any, n_bins: int = 15, title: str | None = None,
                        show_counts: bool = True) -> None:
    """Draw a reliability diagram on ``ax``: per bin, accuracy (bar) against the diagonal.

    Bars span their bin ([b/B, (b+1)/B)); the red part between each bar top and the bin's mean
    confidence is the gap that ECE averages (weighted by the bin's share of samples, drawn as a
    grey histogram along the bottom when ``show_counts``). Empty bins draw nothing.
    """
    table = metrics.reliability_table(probs, labels, n_bins=n_bins)
    full = table[table["count"] > 0]
    width = 1.0 / n_bins
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")
    ax.bar(full["lower"], full["accuracy"], width=width, align="edge", color="tab:blue",
           edgecolor="white", alpha=0.85, label="accuracy in bin")
    ax.bar(full["lower"], full["confidence"] - full["accuracy"], bottom=full["accuracy"], width=width,
           align="edge", color="tab:red", alpha=0.35, label="gap to mean confidence")
    if show_counts:
        ax.bar(full["lower"], 0.25 * full["fraction"] / max(full["fraction"].max(), 1e-12), width=width,
               align="edge", color="0.5", alpha=0.5, label="share of samples (scaled)")
    ece = metrics.ece(probs, labels, n_bins=n_bins)
    ax.text(0.03, 0.93, f"ECE = {ece:.3f}", transform=ax.transAxes, fontsize=9,
            bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title, fontsize=10)


def temperature_grid(logits: Any, labels: Any, temperatures: Sequence[float], n_bins: int = 15,
                     from_probs: bool = False, suptitle: str | None = None):
    """One reliability diagram per temperature, side by side; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    temperatures = list(temperatures)
    if not temperatures:
        raise ValueError("temperatures: give at least one temperature")
    scale = rescale_probs if from_probs else temperature_scale
    fig, axes = plt.subplots(1, len(temperatures), figsize=(3.1 * len(temperatures), 3.3), squeeze=False,
                             sharey=True)
    for ax, t in zip(axes[0], temperatures):
        reliability_diagram(ax, scale(logits, t), labels, n_bins=n_bins, title=f"T = {t:g}",
                            show_counts=True)
        if ax is not axes[0][0]:
            ax.set_ylabel("")
    axes[0][0].legend(loc="lower right", fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def bin_count_grid(probs: Any, labels: Any, bin_counts: Sequence[int], suptitle: str | None = None):
    """The same predictions drawn with different bin counts, side by side; returns the Figure."""
    import matplotlib.pyplot as plt

    bin_counts = list(bin_counts)
    if not bin_counts:
        raise ValueError("bin_counts: give at least one bin count")
    fig, axes = plt.subplots(1, len(bin_counts), figsize=(3.1 * len(bin_counts), 3.3), squeeze=False,
                             sharey=True)
    for ax, b in zip(axes[0], bin_counts):
        reliability_diagram(ax, probs, labels, n_bins=int(b), title=f"{b} bins")
        if ax is not axes[0][0]:
            ax.set_ylabel("")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def risk_coverage_plot(ax, curves: Mapping[str, tuple[Any, Any]], title: str | None = None) -> None:
    """Risk-coverage curves on ``ax``: ``curves`` maps a label to ``(confidence, correct)``.

    The legend gives each curve's AURC (the mean height of the curve; lower is better).
    """
    styles = ["-", "--", ":", "-."]
    top = 0.0
    for i, (label, (confidence, correct)) in enumerate(curves.items()):
        coverage, risk = metrics.risk_coverage(confidence, correct)
        ax.plot(coverage, risk, lw=1.6, ls=styles[i % len(styles)],
                label=f"{label} (AURC {metrics.aurc(confidence, correct):.3f})")
        settled = risk[coverage >= 0.05]  # the first few points are single-sample noise
        top = max(top, float(settled.max()) if settled.size else float(risk.max()))
    ax.set_ylim(0, min(1.0, 1.3 * top) if top > 0 else 1.0)
    ax.set_xlabel("coverage (share of samples answered, most confident first)")
    ax.set_ylabel("selective risk (error rate)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)


# ------------------------------------------------------------------------------ widgets


def _figure_png(draw, figsize=(4.2, 4.0), dpi=90) -> bytes:
    """Render ``draw(ax)`` to PNG bytes with matplotlib's object API (no pyplot, nothing displayed)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    draw(fig.add_subplot(1, 1, 1))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def calibration_explorer(sources: Mapping[str, tuple[Any, Any]], from_probs: Mapping[str, bool] | None = None,
                         n_bins: int = 15, temperature_range: tuple[float, float] = (0.1, 10.0)):
    """An ``ipywidgets`` control: pick a data source, a temperature and a bin count.

    ``sources`` maps a name to ``(scores, labels)``: logits, or probabilities where
    ``from_probs[name]`` is True. Moving a slider redraws the reliability diagram (an ``Image``
    widget holding a PNG) and the metrics line (accuracy, ECE, Brier, NLL, AURC at that
    temperature). Returns the widget box; display it in a live Jupyter session.

    The picture is rendered to PNG bytes and stored in the widget's state instead of being
    printed into an ``Output`` widget, so executing the notebook without a browser (papermill,
    the book build) only records widget state: no output capture is involved, and nothing
    waits for input.
    """
    import ipywidgets as widgets

    if not sources:
        raise ValueError("sources: give at least one (scores, labels) pair")
    from_probs = dict(from_probs or {})
    low, high = temperature_range
    if not 0 < low < 1 < high:
        raise ValueError(f"temperature_range: expected (low, high) with 0 < low < 1 < high, got {temperature_range!r}")

    source = widgets.Dropdown(options=list(sources), description="data")
    temperature = widgets.FloatLogSlider(value=1.0, base=10, min=np.log10(low), max=np.log10(high), step=0.02,
                                         description="temperature", continuous_update=False)
    bins = widgets.IntSlider(value=int(n_bins), min=2, max=50, step=1, description="bins", continuous_update=False)
    picture = widgets.Image(format="png")
    numbers = widgets.HTML()

    def redraw(_change: Any = None) -> None:
        scores, labels = sources[source.value]
        scale = rescale_probs if from_probs.get(source.value, False) else temperature_scale
        probs = scale(scores, temperature.value)
        title = f"{source.value}: T = {temperature.value:.2f}, {bins.value} bins"

        def draw(ax):
            reliability_diagram(ax, probs, labels, n_bins=bins.value, title=title)
            ax.legend(loc="lower right", fontsize=7)

        picture.value = _figure_png(draw)
        s = calibration_summary(probs, labels, n_bins=bins.value)
        numbers.value = "<br>".join(f"{k} = {s[k]:.4f}" for k in ("accuracy", "ece", "brier", "nll", "aurc"))

    for control in (source, temperature, bins):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([source, temperature, bins, widgets.HBox([picture, numbers])])
