"""Uncertainty: percentile-bootstrap intervals of a metric and of a difference of two
(ALGORITHMS.md, "Bootstrap")."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from visprune import _validation as v


# ---------------------------------------------------------------------------------------------
# Uncertainty (ALGORITHMS.md, "Metrics": paired bootstrap)
# ---------------------------------------------------------------------------------------------


def _resamplable(arrays: Sequence[Any], name: str) -> list[np.ndarray]:
    out = []
    for j, x in enumerate(arrays):
        arr = v.to_numpy(x, f"{name}[{j}]")
        if arr.ndim == 0:
            raise ValueError(f"{name}[{j}]: must be an array with one entry per sample, got a scalar")
        out.append(arr)
    return out


def _check_bootstrap_args(metric: Any, n_resamples: Any, level: Any, seed: Any = 0) -> int:
    if not callable(metric):
        raise ValueError(f"metric: must be a function of the arrays, got {type(metric).__name__}")
    n_resamples = v.positive_int(n_resamples, "n_resamples")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    if v.holds_bool(seed):
        raise ValueError(f"seed: must be an integer >= 0 (or a numpy SeedSequence or Generator), got {seed!r}")
    try:
        np.random.default_rng(seed)  # a Generator comes back unchanged: nothing is drawn here
    except (TypeError, ValueError):
        raise ValueError(f"seed: must be an integer >= 0 (or a numpy SeedSequence or Generator), got {seed!r}") from None
    return n_resamples


def _percentile_interval(
    statistic: Callable[[np.ndarray], float], n: int, n_resamples: int, seed: Any, level: float
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = rng.integers(0, n, size=n)  # (n,) sample indices drawn with replacement
        value = statistic(idx)
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metric: must return a number, got {value!r}") from err
        if not math.isfinite(value):
            raise ValueError(f"metric: returned {value} on bootstrap resample {r}; it must be finite on every resample")
        stats[r] = value
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Any,
    n_resamples: int = 1000,
    seed: Any = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of ``metric(*arrays)`` (ALGORITHMS.md, "Metrics").

    Each resample draws ``n`` sample indices with replacement from ``numpy.random.default_rng
    (seed)`` and applies the same indices to every array (so the rows of ``probs`` stay with their
    ``labels``), then calls ``metric(*resampled_arrays)``. The interval is the
    ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the ``n_resamples`` values. Arrays keep
    their dtype (torch tensors become NumPy arrays) and must share their first dimension.
    Reference: Efron and Tibshirani, "An Introduction to the Bootstrap", 1993.

    >>> rng = np.random.default_rng(1)
    >>> correct = rng.random(200) < 0.7
    >>> low, high = bootstrap_ci(lambda z: z.mean(), correct, n_resamples=200)
    >>> bool(low < correct.mean() < high)
    True
    """
    n_resamples = _check_bootstrap_args(metric, n_resamples, level, seed)
    if not arrays:
        raise ValueError("arrays: give at least one array to resample")
    data = _resamplable(arrays, "arrays")
    n = v.same_length(**{f"arrays[{j}]": a for j, a in enumerate(data)})
    if n == 0:
        raise ValueError("arrays: are empty; need at least one sample")
    return _percentile_interval(lambda idx: metric(*[a[idx] for a in data]), n, n_resamples, seed, level)


def bootstrap_diff_ci(
    metric: Callable[..., float],
    arrays_a: Any,
    arrays_b: Any,
    n_resamples: int = 1000,
    seed: Any = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Paired bootstrap interval of ``metric(*arrays_a) - metric(*arrays_b)`` on the same samples.

    ``arrays_a`` and ``arrays_b`` are the inputs of ``metric`` for two methods evaluated on the
    same ``n`` samples, in the same order: a tuple of arrays (the arguments of ``metric``), or
    one array (a NumPy array, tensor or list) for a one-argument metric. Each resample draws one set of indices and applies it to
    both methods, so the interval reflects the difference, not the two methods' separate noise
    (ALGORITHMS.md, "Metrics"). An interval that excludes 0 marks a difference that resampling
    the samples does not erase.

    >>> from visprune.metrics import brier
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]); y = np.array([0, 1, 1, 1])
    >>> bootstrap_diff_ci(brier, (p, y), (p, y), n_resamples=50)
    (0.0, 0.0)
    """
    n_resamples = _check_bootstrap_args(metric, n_resamples, level, seed)
    groups = {}
    for name, group in (("arrays_a", arrays_a), ("arrays_b", arrays_b)):
        if not isinstance(group, tuple):
            group = (group,)
        if len(group) == 0:
            raise ValueError(f"{name}: give at least one array to resample")
        groups[name] = _resamplable(group, name)
    data_a, data_b = groups["arrays_a"], groups["arrays_b"]
    named = {f"arrays_a[{j}]": a for j, a in enumerate(data_a)}
    named.update({f"arrays_b[{j}]": b for j, b in enumerate(data_b)})
    n = v.same_length(**named)
    if n == 0:
        raise ValueError("arrays_a: are empty; need at least one sample")

    def difference(idx: np.ndarray) -> float:
        return float(metric(*[a[idx] for a in data_a])) - float(metric(*[b[idx] for b in data_b]))

    return _percentile_interval(difference, n, n_resamples, seed, level)
