"""Metric specs: every metric of a run's answers declared once, with its direction and the
resampled form the bootstrap uses (ALGORITHMS.md, "Metrics" and "Bootstrap").

A :class:`MetricSpec` holds the plain function of ``(probs, labels)`` (what
:func:`metric_value` computes, through the family modules), whether lower or higher is better,
whether it needs POPE's yes/no answer set, its axis label, and ``resampled(prepared, idx)``: the
same metric on many bootstrap resamples at once (R, n index matrix -> (R,) values), from the
per-sample quantities :class:`Resampled` prepares once. The tables, the paired differences and
the plots read :data:`METRIC_SPECS`; ``tests/test_metrics.py`` checks every resampled form
against the plain function on random resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from visprune.metrics.calibration import (_debiased_of, _equal_mass_ece_of, _monotone_bins, bin_index, brier, classwise_ece,
                                          debiased_ece, ece, ece_sweep, equal_mass_ece, mce)
from visprune.metrics.pope import POPE_YES, accuracy, f1, precision, recall, yes_ratio
from visprune.metrics.selective import aurc, eaurc
from visprune.metrics.smooth import _rows as _smooth_rows
from visprune.metrics.smooth import smooth_ece

__all__ = ["MetricSpec", "ScoreSpec", "SCORE_SPECS", "METRIC_SPECS", "METRICS", "BINARY_METRICS", "LOWER_IS_BETTER", "Resampled", "metric_value",
           "draw_indices"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of ``(probs, labels)`` (see the module docstring)."""

    name: str
    label: str
    direction: str | None  # "lower" or "higher" is better; None: descriptive (the yes-ratio)
    plain: Callable[[np.ndarray, np.ndarray, int], float]
    resampled: Callable[["Resampled", np.ndarray], np.ndarray]
    binary_only: bool = False
    #: ``floor(conf (n,), hits (R, n), n_bins) -> (R,)``: the estimator on fixed top-label
    #: confidences with R rows of correctness (the noise floor's draws); None for metrics that
    #: are not top-label calibration estimators.
    floor: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None


def _top(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    return p.max(axis=1), np.argmax(p, axis=1) == np.asarray(labels)


def _known(name: Any) -> str:
    if name not in METRIC_SPECS:
        raise ValueError(f"metric: unknown metric {name!r}; choose from {METRICS}")
    return name


def metric_value(metric: str, probs: Any, labels: Any, n_bins: int = 15) -> float:
    """One metric of ``(probs, labels)``: its spec's plain function.

    ``aurc`` and ``eaurc`` use the top-label confidence and correctness; ``precision``,
    ``recall``, ``f1`` and ``yes_ratio`` take index 0 ("yes") as the positive class.

    >>> metric_value("accuracy", [[0.9, 0.1], [0.3, 0.7]], [0, 0])
    0.5
    """
    return METRIC_SPECS[_known(metric)].plain(probs, labels, n_bins)


def draw_indices(n: int, n_resamples: int, seed: Any) -> np.ndarray:
    """(R, n) resample indices, drawn exactly as ``metrics.bootstrap_ci`` draws them."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, size=n) for _ in range(n_resamples)])


class Resampled:
    """Every metric of ``(probs, labels)`` on many resamples at once.

    Built once per set of samples; :meth:`values` takes an (R, n) index matrix and returns the
    (R,) metric values, the same numbers a loop of ``metric_value`` calls on ``probs[idx_r]``,
    ``labels[idx_r]`` would give (up to float rounding).
    """

    def __init__(self, probs: np.ndarray, labels: np.ndarray, n_bins: int) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        self.n, self.n_bins = len(labels), n_bins
        pred = np.argmax(probs, axis=1)  # (n,)
        rows = np.arange(self.n)
        self.conf = probs[rows, pred]  # (n,) top-label confidence
        self.hit = (pred == labels).astype(np.float64)  # (n,)
        onehot = np.zeros_like(probs)
        onehot[rows, labels] = 1.0
        self.brier_i = np.sum((probs - onehot) ** 2, axis=1)  # (n,)
        self.pred_yes = (pred == POPE_YES).astype(np.float64)  # (n,)
        self.label_yes = (labels == POPE_YES).astype(np.float64)  # (n,)
        self.p_yes = probs[:, POPE_YES] if probs.shape[1] > POPE_YES else np.zeros(self.n)  # (n,)
        self.bin_yes = bin_index(np.clip(self.p_yes, 0.0, 1.0), n_bins)  # (n,)
        self.bin = bin_index(self.conf, n_bins)  # (n,)
        # tie groups of the selective-risk curve: distinct confidences, most confident first
        levels, inverse = np.unique(-self.conf, return_inverse=True)
        self.level, self.n_levels = inverse.reshape(-1), len(levels)  # (n,), G

    @staticmethod
    def _per_group(idx: np.ndarray, group: np.ndarray, n_groups: int, weights: np.ndarray | None) -> np.ndarray:
        """(R, G) sums of ``weights`` (or counts) of each resample's samples per group."""
        r = idx.shape[0]
        flat = (np.arange(r)[:, None] * n_groups + group[idx]).ravel()  # (R * n,)
        w = None if weights is None else weights[idx].ravel()
        return np.bincount(flat, weights=w, minlength=r * n_groups).reshape(r, n_groups)

    def aurc(self, idx: np.ndarray) -> np.ndarray:
        # risk(k) inside tie group g (start s0, size s, e errors, E errors before it) is
        # (E + (k - s0) e / s) / k; summed over k = s0+1 .. s0+s that is
        # E (H[s0+s] - H[s0]) + (e / s) (s - s0 (H[s0+s] - H[s0])), H the harmonic numbers.
        size = self._per_group(idx, self.level, self.n_levels, None)  # (R, G)
        errors = self._per_group(idx, self.level, self.n_levels, 1.0 - self.hit)  # (R, G)
        end = np.cumsum(size, axis=1)  # (R, G)
        start = end - size
        err_before = np.cumsum(errors, axis=1) - errors
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, self.n + 1))])  # (n + 1,)
        h_gap = harmonic[end.astype(np.int64)] - harmonic[start.astype(np.int64)]
        rate = np.divide(errors, size, out=np.zeros_like(errors), where=size > 0)
        total = err_before * h_gap + rate * (size - start * h_gap)
        return total.sum(axis=1) / self.n

    def eaurc(self, idx: np.ndarray) -> np.ndarray:
        n = self.n
        n_errors = np.rint((1.0 - self.hit)[idx].sum(axis=1)).astype(np.int64)  # (R,)
        right = n - n_errors
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
        ideal = (n_errors - right * (harmonic[n] - harmonic[right])) / n
        return np.maximum(self.aurc(idx) - ideal, 0.0)

    def values(self, metric: str, idx: np.ndarray) -> np.ndarray:
        """(R,) values of ``metric`` on the resamples ``idx`` (R, n): its spec's resampled form."""
        return METRIC_SPECS[_known(metric)].resampled(self, idx)

    # one resampled form per metric; each equals its spec's plain function on probs[idx_r], labels[idx_r]

    def accuracy(self, idx: np.ndarray) -> np.ndarray:
        return self.hit[idx].mean(axis=1)

    def brier(self, idx: np.ndarray) -> np.ndarray:
        return self.brier_i[idx].mean(axis=1)

    def yes_ratio(self, idx: np.ndarray) -> np.ndarray:
        return self.pred_yes[idx].mean(axis=1)

    def _precision_recall(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tp = (self.pred_yes * self.label_yes)[idx].sum(axis=1)
        predicted = self.pred_yes[idx].sum(axis=1)
        actual = self.label_yes[idx].sum(axis=1)
        prec = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        rec = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
        return prec, rec

    def precision(self, idx: np.ndarray) -> np.ndarray:
        return self._precision_recall(idx)[0]

    def recall(self, idx: np.ndarray) -> np.ndarray:
        return self._precision_recall(idx)[1]

    def f1(self, idx: np.ndarray) -> np.ndarray:
        prec, rec = self._precision_recall(idx)
        return np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(prec), where=prec + rec > 0)

    def _bin_gaps(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = self._per_group(idx, self.bin, self.n_bins, None)  # (R, B)
        sum_conf = self._per_group(idx, self.bin, self.n_bins, self.conf)
        sum_hit = self._per_group(idx, self.bin, self.n_bins, self.hit)
        return np.abs(sum_hit - sum_conf), count

    def ece(self, idx: np.ndarray) -> np.ndarray:
        return self._bin_gaps(idx)[0].sum(axis=1) / self.n

    def ece_yes(self, idx: np.ndarray) -> np.ndarray:
        sum_p = self._per_group(idx, self.bin_yes, self.n_bins, self.p_yes)  # (R, B)
        sum_y = self._per_group(idx, self.bin_yes, self.n_bins, self.label_yes)
        return np.abs(sum_y - sum_p).sum(axis=1) / self.n

    def smece(self, idx: np.ndarray) -> np.ndarray:
        counts = self._per_group(idx, np.arange(self.n), self.n, None)  # (R, n) times each sample is drawn
        return _smooth_rows(self.conf, np.broadcast_to(self.hit, counts.shape), counts)

    def _looped(self, of: Callable[[np.ndarray, np.ndarray], float], idx: np.ndarray) -> np.ndarray:
        """A metric whose bins move with the resample (equal-mass bins), one resample at a time."""
        return np.array([of(self.conf[row], self.hit[row]) for row in idx])

    def ece_em(self, idx: np.ndarray) -> np.ndarray:
        return self._looped(lambda c, z: _equal_mass_ece_of(c, z, self.n_bins), idx)

    def debiased_ece(self, idx: np.ndarray) -> np.ndarray:
        return self._looped(lambda c, z: _debiased_of(c, z, self.n_bins), idx)

    def ece_sweep(self, idx: np.ndarray) -> np.ndarray:
        return self._looped(lambda c, z: _equal_mass_ece_of(c, z, _monotone_bins(c, z)), idx)

    def mce(self, idx: np.ndarray) -> np.ndarray:
        gap, count = self._bin_gaps(idx)
        return np.divide(gap, count, out=np.zeros_like(gap), where=count > 0).max(axis=1)


def _spec(name, label, direction, plain, binary_only=False, floor=None) -> MetricSpec:
    """A metric whose resampled form is the :class:`Resampled` method of the same name."""
    return MetricSpec(name, label, direction, plain, getattr(Resampled, name), binary_only, floor)


def _ece_floor(conf: np.ndarray, hits: np.ndarray, n_bins: int) -> np.ndarray:
    """Binned ECE of fixed confidences with R rows of correctness: (R,)."""
    one_hot = np.eye(n_bins)[bin_index(conf, n_bins)]  # (n, B)
    gap = hits @ one_hot - conf @ one_hot  # (R, B): sum of hits minus sum of confidences per bin
    return np.abs(gap).sum(axis=1) / len(conf)


def _per_row(of: Callable[[np.ndarray, np.ndarray, int], float]):
    return lambda conf, hits, n_bins: np.array([of(conf, row, n_bins) for row in hits])




_SPECS = (
    _spec("accuracy", "accuracy", "higher", lambda p, y, b: accuracy(p, y)),
    _spec("precision", "precision (yes)", "higher", lambda p, y, b: precision(p, y), True),
    _spec("recall", "recall (yes)", "higher", lambda p, y, b: recall(p, y), True),
    _spec("f1", "F1 (yes)", "higher", lambda p, y, b: f1(p, y), True),
    _spec("yes_ratio", "yes-ratio", None, lambda p, y, b: yes_ratio(p), True),
    _spec("ece", "ECE", "lower", lambda p, y, b: ece(p, y, n_bins=b), floor=_ece_floor),
    _spec("smece", "SmoothECE", "lower", lambda p, y, b: smooth_ece(p, y),
          floor=lambda conf, hits, b: _smooth_rows(conf, hits)),
    _spec("ece_em", "equal-mass ECE", "lower", lambda p, y, b: equal_mass_ece(p, y, n_bins=b),
          floor=_per_row(_equal_mass_ece_of)),
    _spec("ece_sweep", "ECE sweep", "lower", lambda p, y, b: ece_sweep(p, y)),
    _spec("debiased_ece", "debiased ECE (L2)", "lower", lambda p, y, b: debiased_ece(p, y, n_bins=b),
          floor=_per_row(_debiased_of)),
    _spec("ece_yes", "ECE of P(yes)", "lower", lambda p, y, b: classwise_ece(p, y, n_bins=b, class_index=POPE_YES),
          True),
    _spec("mce", "MCE", "lower", lambda p, y, b: mce(p, y, n_bins=b)),
    _spec("brier", "Brier score", "lower", lambda p, y, b: brier(p, y)),
    _spec("aurc", "AURC", "lower", lambda p, y, b: aurc(*_top(p, y))),
    _spec("eaurc", "E-AURC", "lower", lambda p, y, b: eaurc(*_top(p, y))),
)
METRIC_SPECS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
#: The metrics a summary can hold, in table order.
METRICS = tuple(METRIC_SPECS)
#: Metrics defined only for POPE's yes/no answer set ("yes" is the positive class).
BINARY_METRICS = tuple(n for n, s in METRIC_SPECS.items() if s.binary_only)
LOWER_IS_BETTER = tuple(n for n, s in METRIC_SPECS.items() if s.direction == "lower")


@dataclass(frozen=True)
class ScoreSpec:
    """A metric of per-sample score columns (captions' CHAIR counts, correctness, kept erank):
    ``function(*columns)`` over the columns named, and its direction."""

    name: str
    label: str
    direction: str | None
    columns: tuple[str, ...]
    function: Callable[..., float]


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    """sum(num) / sum(den), 0 when the denominator sums to 0 (no mentions, no truth)."""
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total > 0 else 0.0


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


#: Caption metrics follow ALGORITHMS.md, "CHAIR" (CHAIR_I and recall are ratios of summed
#: counts); ``accuracy`` works on question-answering records (column ``correct``), ``erank_kept``
#: on any records.
SCORE_SPECS: dict[str, ScoreSpec] = {s.name: s for s in (
    ScoreSpec("chair_s", "CHAIR_S", "lower", ("hallucinated",), _mean),
    ScoreSpec("chair_i", "CHAIR_I", "lower", ("n_hallucinated", "n_mentions"), _ratio),
    ScoreSpec("recall", "object recall", "higher", ("n_hits", "n_truth"), _ratio),
    ScoreSpec("length", "caption length (words)", None, ("n_words",), _mean),
    ScoreSpec("accuracy", "accuracy", "higher", ("correct",), _mean),
    ScoreSpec("erank_kept", "erank of the kept tokens", None, ("erank_kept",), _mean),
)}
