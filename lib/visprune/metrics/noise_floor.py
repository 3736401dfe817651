"""The noise floor of a calibration estimator (ALGORITHMS.md, "Metrics": noise floor).

An estimator of calibration error is itself noisy, and for binned ECE the noise is one-sided:
``|acc_b - conf_b|`` is never negative, so sampling noise in ``acc_b`` only ever adds to it. The
noise floor makes this visible: the values the estimator gives for a *perfectly calibrated*
predictor with the same confidences and the same n, whose correctness is drawn as
``z_i ~ Bernoulli(c_i)``. A measured value below the floor's upper quantile cannot be told apart
from perfect calibration by that estimator, and a difference between two methods smaller than
the floor's spread may be the estimator's noise rather than the methods'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visprune import _validation as v
from visprune.metrics.calibration import _top_label
from visprune.metrics.specs import METRIC_SPECS

__all__ = ["NoiseFloor", "noise_floor", "FLOOR_METRICS"]

#: The metrics that have a noise floor: the top-label calibration estimators.
FLOOR_METRICS = tuple(name for name, s in METRIC_SPECS.items() if s.floor is not None)


@dataclass(frozen=True)
class NoiseFloor:
    """The estimator's values on ``n_draws`` perfectly calibrated draws: their ``mean`` and their
    ``level`` quantile ``upper`` (the 95th percentile by default)."""

    metric: str
    mean: float
    upper: float
    level: float
    n_draws: int
    draws: np.ndarray  # (n_draws,)

    def covers(self, value: float) -> bool:
        """Whether ``value`` is at or below the floor's upper quantile (indistinguishable from
        perfect calibration by this estimator)."""
        return bool(value <= self.upper)


def noise_floor(metric: str, probs: Any, labels: Any = None, *, n_draws: int = 1000, seed: Any = 0,
                n_bins: int = 15, level: float = 0.95) -> NoiseFloor:
    """The noise floor of ``metric`` (one of :data:`FLOOR_METRICS`) for the confidences of ``probs``.

    The top-label confidences ``c_i`` (the largest probability of each row of ``probs``, (n, C))
    stay fixed; each of ``n_draws`` draws (``numpy.random.default_rng(seed)``) replaces the
    correctness by ``z_i ~ Bernoulli(c_i)`` and computes the estimator. ``labels`` is not used
    (the draws replace it) and may be given for symmetry with the metrics. Returns the mean and
    the ``level`` quantile of the draws (ALGORITHMS.md: default 1,000 draws, 95th percentile).

    >>> floor = noise_floor("ece", [[0.7, 0.3]] * 100, n_draws=200)
    >>> 0.0 < floor.mean < floor.upper < 0.2   # calibrated by construction, yet ECE > 0
    True
    """
    spec = METRIC_SPECS.get(metric)
    if spec is None or spec.floor is None:
        raise ValueError(f"metric: the noise floor is defined for {FLOOR_METRICS}, got {metric!r}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws: expected a positive int, got {n_draws!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    matrix, _ = v.probability_matrix(probs, "probs")  # (n, C)
    conf, _, _ = _top_label(matrix, np.zeros(len(matrix), dtype=np.int64))
    rng = np.random.default_rng(seed)
    hits = (rng.random((int(n_draws), len(conf))) < conf[None, :]).astype(np.float64)  # (R, n)
    draws = np.asarray(spec.floor(conf, hits, n_bins), dtype=np.float64)
    return NoiseFloor(metric, float(draws.mean()), float(np.quantile(draws, level)), float(level), int(n_draws), draws)
