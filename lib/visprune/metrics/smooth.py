"""SmoothECE, the kernel-smoothed calibration error of Blasiok and Nakkiran (2023)
(ALGORITHMS.md, "Metrics": SmoothECE). Conventions: :mod:`visprune.metrics`.

The residuals ``r_i = c_i - z_i`` (confidence minus correctness) are smoothed with a Gaussian
kernel of bandwidth ``sigma`` reflected at 0 and 1, and the calibration error at that bandwidth
is the mass of the smoothed residual,

    smECE_sigma = int_0^1 | (1/n) sum_i r_i K_sigma(t, c_i) | dt.

The reflected kernel ``K_sigma(t, x) = sum_m [phi_sigma(t - x + 2m) + phi_sigma(t + x + 2m)]``
keeps every sample's mass inside [0, 1], and its cosine series (Poisson summation) is exact:

    K_sigma(t, x) = 1 + 2 sum_{k >= 1} exp(-pi^2 k^2 sigma^2 / 2) cos(pi k t) cos(pi k x),

so the smoothed residual is ``a_0 + 2 sum_k exp(-pi^2 k^2 sigma^2 / 2) a_k cos(pi k t)`` with
``a_k = (1/n) sum_i r_i cos(pi k c_i)``: the coefficients do not depend on ``sigma``, and the
series is cut where its factor falls below 1e-12. The integral is a midpoint sum on a grid of
cells no wider than ``sigma / 12``, evaluated with one FFT. Smoothing with this kernel is a contraction in L1, so ``smECE_sigma`` falls
as ``sigma`` grows, and SmoothECE is the unique fixed point ``smECE_sigma* = sigma*``, found by
bisection on [1e-3, 1] (the range of ``relplot.smECE``). This implementation
shares no code with ``relplot``, which rounds the samples to a grid and convolves; the tests
compare the two.

Reference: Blasiok and Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel
Smoothing", ICLR 2024 (arXiv 2309.12236).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from visprune.metrics.calibration import _top_label

__all__ = ["smooth_ece", "smooth_ece_at", "SIGMA_RANGE"]

#: The bandwidths searched for the fixed point (as relplot's smECE).
SIGMA_RANGE = (1e-3, 1.0)
_BISECTIONS = 30  # halvings of SIGMA_RANGE: absolute precision ~ 1e-9
_CUT = np.sqrt(2.0 * np.log(1e12)) / np.pi  # k_max = _CUT / sigma: exp(-pi^2 k^2 sigma^2 / 2) < 1e-12 beyond


@lru_cache(maxsize=32)
def _cosines(k_max: int, grid: int) -> np.ndarray:
    """(K + 1, G) ``cos(pi k t_j)`` at the grid's midpoints ``t_j = (j + 1/2) / G``."""
    t = (np.arange(grid) + 0.5) / grid
    return np.cos(np.pi * np.outer(np.arange(k_max + 1), t))


class _Series:
    """Cosine coefficients of many weighted residual sets on the same confidences, extended on
    demand: rows are the sets (bootstrap resamples, noise-floor draws)."""

    def __init__(self, conf: np.ndarray, signed: np.ndarray) -> None:
        self.conf = conf  # (n,)
        self.signed = signed  # (R, n): weight_ri * r_i / n, so a_k = sum_i signed_ri cos(pi k c_i)
        self.coef = signed.sum(axis=1, keepdims=True)  # (R, 1): a_0

    def up_to(self, k_max: int) -> np.ndarray:
        have = self.coef.shape[1] - 1
        if k_max > have:
            k = np.arange(have + 1, k_max + 1)
            basis = np.cos(np.pi * np.outer(self.conf, k))  # (n, K_new)
            self.coef = np.concatenate([self.coef, self.signed @ basis], axis=1)
        return self.coef[:, : k_max + 1]

    def error(self, sigma: np.ndarray) -> np.ndarray:
        """(R,) smECE of each row at its own bandwidth ``sigma`` (R,).

        The smoothed residual is summed at the midpoints ``t_j = (j + 1/2) / G`` of a grid of
        ``G >= 12 / sigma`` cells; ``sum_k c_k cos(pi k t_j)`` is the real part of one inverse FFT
        of length 2G of ``c_k exp(i pi k / 2G)`` (or, for a few terms, a product with a cached cosine
table). Rows are grouped by their grid size (a power of
        two), so a row with a small bandwidth does not make the others pay for its finer grid.
        """
        out = np.empty(len(sigma))
        grids = np.maximum(512, 2 ** np.ceil(np.log2(12.0 / sigma))).astype(np.int64)
        for grid in np.unique(grids):
            rows = np.flatnonzero(grids == grid)
            s = sigma[rows]
            k_max = min(int(np.ceil(_CUT / s.min())), 2 * int(grid) - 1)
            coef = self.up_to(k_max)[rows]  # (r, K + 1)
            k = np.arange(k_max + 1)
            damp = np.exp(-0.5 * (np.pi * s[:, None] * k[None, :]) ** 2)  # (r, K + 1)
            damp[:, 1:] *= 2.0
            if k_max <= 256:  # few terms: a product with the cosine table is cheaper than the FFT
                values = (coef * damp) @ _cosines(k_max, int(grid))  # (r, G)
            else:
                shifted = coef * damp * np.exp(1j * np.pi * k / (2 * grid))[None, :]
                values = np.fft.ifft(shifted, n=2 * int(grid), axis=1)[:, : int(grid)].real * (2 * grid)  # (r, G)
            out[rows] = np.abs(values).mean(axis=1)
        return out


def _fixed_point(series: _Series) -> tuple[np.ndarray, np.ndarray]:
    """(R,) SmoothECE and (R,) bandwidth of every row: bisection on ``smECE_sigma - sigma``."""
    rows = series.signed.shape[0]
    lo, hi = np.full(rows, SIGMA_RANGE[0]), np.full(rows, SIGMA_RANGE[1])
    done = series.error(hi) >= hi  # the error exceeds even the widest bandwidth: sigma* = 1
    for _ in range(_BISECTIONS):
        # halving the bandwidth interval (not its logarithm) reaches small bandwidths, whose
        # finer grids cost more, only for the rows whose fixed point is there
        mid = (lo + hi) / 2.0
        above = series.error(mid) >= mid  # error above sigma: the fixed point is wider
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    sigma = np.where(done, SIGMA_RANGE[1], hi)
    return series.error(sigma), sigma


def _rows(conf: np.ndarray, hits: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(R,) SmoothECE of confidences ``conf`` (n,) with correctness rows ``hits`` (R, n) or (n,),
    each sample weighted by ``weights`` (R, n) (bootstrap counts; default 1)."""
    hits = np.atleast_2d(hits).astype(np.float64)
    w = np.ones_like(hits) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=1, keepdims=True)
    signed = w * (conf[None, :] - hits) / total
    return _fixed_point(_Series(conf, signed))[0]


def smooth_ece(probs: Any, labels: Any, return_sigma: bool = False) -> float | tuple[float, float]:
    """SmoothECE of the top-label confidence (see the module docstring), in [0, 1].

    ``probs`` (n, C) and ``labels`` (n,) as for :func:`visprune.metrics.ece`; the confidence is
    the largest probability and the residual is confidence minus correctness. Unlike binned ECE
    it has no bin edges for a confidence to fall across, and its bandwidth adapts to the data
    (the fixed point), which is why Blasiok and Nakkiran recommend it. ``return_sigma=True`` also
    returns the bandwidth, which equals the value at the fixed point.

    >>> probs = [[0.9, 0.1]] * 9 + [[0.1, 0.9]]
    >>> round(smooth_ece(probs, [0] * 9 + [1]), 3)   # ten right answers at confidence 0.9
    0.1
    """
    conf, _, hit = _top_label(probs, labels)
    value, sigma = _fixed_point(_Series(conf, ((conf - hit) / len(conf))[None, :]))
    return (float(value[0]), float(sigma[0])) if return_sigma else float(value[0])


def smooth_ece_at(probs: Any, labels: Any, sigma: float) -> float:
    """smECE at a fixed bandwidth ``sigma`` (no fixed point): ``relplot.smECE_sigma``'s quantity.

    >>> round(smooth_ece_at([[0.9, 0.1]] * 4, [0] * 4, sigma=0.05), 6)   # residual 0.1 spread over [0, 1]
    0.1
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma <= 10:
        raise ValueError(f"sigma: must be a bandwidth in (0, 10], got {sigma!r}")
    conf, _, hit = _top_label(probs, labels)
    series = _Series(conf, ((conf - hit) / len(conf))[None, :])
    return float(series.error(np.array([float(sigma)]))[0])
