"""The Brier score's decomposition into reliability, resolution and uncertainty (ALGORITHMS.md,
"Metrics": Brier decomposition). Conventions: :mod:`visprune.metrics`."""

from __future__ import annotations

from typing import Any

import numpy as np

from visprune import _validation as v
from visprune.metrics.calibration import bin_index

__all__ = ["brier_decomposition", "DECOMPOSITION_PARTS"]

#: The parts, in the order of the identity ``brier = reliability - resolution + uncertainty
#: + within_variance - within_covariance``.
DECOMPOSITION_PARTS = ("reliability", "resolution", "uncertainty", "within_variance", "within_covariance")


def _binary_parts(f: np.ndarray, o: np.ndarray, native: np.ndarray, n_bins: int) -> np.ndarray:
    """The five parts for one forecast column ``f`` (n,) of outcomes ``o`` (n,) 0/1."""
    n = len(f)
    idx = bin_index(native, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    f_bar = np.bincount(idx, weights=f, minlength=n_bins) / safe  # (B,) mean forecast per bin
    o_bar = np.bincount(idx, weights=o, minlength=n_bins) / safe  # (B,) observed frequency per bin
    base = o.mean()
    reliability = np.sum(count * (f_bar - o_bar) ** 2) / n
    resolution = np.sum(count * (o_bar - base) ** 2) / n
    uncertainty = base * (1.0 - base)
    df, do = f - f_bar[idx], o - o_bar[idx]
    within_variance = np.sum(df**2) / n
    within_covariance = 2.0 * np.sum(df * do) / n
    return np.array([reliability, resolution, uncertainty, within_variance, within_covariance])


def brier_decomposition(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, float]:
    """Murphy's decomposition of the Brier score, with the within-bin terms that make it exact.

    For one binary forecast ``f_i`` of outcomes ``o_i`` binned as :func:`visprune.metrics.ece`
    bins (equal width, ``n_bins``), with ``f_b``, ``o_b`` the bin means, ``o`` the base rate and
    ``n_b`` the bin counts:

    - reliability ``= sum_b (n_b / n) (f_b - o_b)^2`` (0 for a calibrated forecast; lower is better),
    - resolution ``= sum_b (n_b / n) (o_b - o)^2`` (how far the bins' outcomes move from the
      base rate; higher is better),
    - uncertainty ``= o (1 - o)`` (the data's, not the model's),
    - within_variance ``= (1/n) sum_i (f_i - f_b(i))^2`` and within_covariance ``= (2/n)
      sum_i (f_i - f_b(i)) (o_i - o_b(i))`` (Stephenson et al., 2008), the terms that binning
      a continuous forecast adds,

    and ``brier = reliability - resolution + uncertainty + within_variance - within_covariance``
    exactly. Murphy's form over the distinct forecast values is the case where every bin holds
    a single value (the within-bin terms are 0).

    For an answer set of C answers the Brier score of :func:`visprune.metrics.brier` is the sum
    over answers of the one-column scores ``mean_i (p_ic - y_ic)^2``; each part here is that sum
    of the columns' parts, so the identity holds for the same score. For POPE that is twice the
    one-class score of P(yes) (the two columns mirror each other). The result also holds the
    score itself under ``brier``.

    References: Murphy, "A New Vector Partition of the Probability Score", J. Applied
    Meteorology 1973; Stephenson, Coelho and Jolliffe, "Two Extra Components in the Brier Score
    Decomposition", Weather and Forecasting 2008.

    >>> d = brier_decomposition([[0.8, 0.2], [0.8, 0.2], [0.3, 0.7], [0.3, 0.7]], [0, 1, 1, 1], n_bins=5)
    >>> round(d["reliability"], 4), round(d["resolution"], 4), round(d["uncertainty"], 4)   # per column: 0.09, 0.0625, 0.1875
    (0.18, 0.125, 0.375)
    >>> round(d["reliability"] - d["resolution"] + d["uncertainty"], 4), round(d["brier"], 4)
    (0.43, 0.43)
    """
    p, native = v.probability_matrix(probs, "probs")  # (n, C)
    y = v.integer_vector(labels, "labels", n_classes=p.shape[1])
    v.same_length(probs=p, labels=y)
    n_bins = v.positive_int(n_bins, "n_bins")
    parts = sum(_binary_parts(p[:, c], (y == c).astype(np.float64), native[:, c], n_bins) for c in range(p.shape[1]))
    out = dict(zip(DECOMPOSITION_PARTS, map(float, parts)))
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    out["brier"] = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    return out
