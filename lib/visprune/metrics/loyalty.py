"""Loyalty: how often a pruned model's answer flips against the unpruned model's on the same
question (ALGORITHMS.md, "Metrics", "Flip rate (loyalty)").

A method can keep accuracy while changing many answers (right ones turned wrong and wrong ones
right in equal number); the flip rate sees that, accuracy does not.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["flip_rate", "wilson_interval"]


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson, 1927): the interval of every
    proportion p0 whose score test does not reject at ``level``.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with p = successes / n and z the
    normal quantile of (1 + level) / 2. Unlike the normal approximation it stays inside [0, 1] and
    is not empty at p = 0 or 1 (0 flips in 300 questions: [0, 0.0126]).
    """
    from statistics import NormalDist

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected a positive number of samples, got {n!r}")
    if isinstance(successes, bool) or not isinstance(successes, (int, np.integer)) or not 0 <= successes <= n:
        raise ValueError(f"successes: expected an int in 0..{n}, got {successes!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)


def flip_rate(predictions: Any, reference: Any, level: float = 0.95) -> tuple[float, float, float]:
    """The fraction of samples whose prediction differs from the reference's on the same sample,
    with its Wilson interval: ``(rate, low, high)``.

    ``predictions`` and ``reference``: equal-length sequences (answer indices, answer strings,
    or captions), aligned by sample (the unpruned run's predictions as ``reference``).
    """
    a = np.asarray(list(predictions), dtype=object)
    b = np.asarray(list(reference), dtype=object)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"predictions: expected one prediction per reference sample ({b.shape[0] if b.ndim else 0}), "
                         f"got {a.shape[0] if a.ndim else 0}")
    if a.size == 0:
        raise ValueError("predictions: got no samples")
    flips = int(sum(x != y for x, y in zip(a, b)))
    low, high = wilson_interval(flips, int(a.size), level)
    return flips / a.size, low, high
