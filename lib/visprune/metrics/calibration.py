"""Binned calibration estimators from probabilities over the answer set: ECE, MCE, class-wise
ECE, equal-mass ECE, the ECE sweep, debiased ECE, the Brier score and the reliability table
(ALGORITHMS.md, "Metrics"). Conventions: :mod:`visprune.metrics`. The kernel estimator is in
:mod:`.smooth`, the noise floor in :mod:`.noise_floor`, the Brier decomposition in
:mod:`.decomposition`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from visprune import _validation as v


# ---------------------------------------------------------------------------------------------
# Calibration (ALGORITHMS.md, "Metrics": ECE, MCE, class-wise ECE, Brier, reliability diagram)
# ---------------------------------------------------------------------------------------------


def bin_edges(n_bins: int) -> np.ndarray:
    """The ``n_bins + 1`` equal-width bin edges ``b / n_bins`` on [0, 1], float64."""
    n_bins = v.positive_int(n_bins, "n_bins")
    return np.arange(n_bins + 1) / n_bins


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence: ``b`` with ``b/B <= c < (b+1)/B``; ``c = 1`` goes to the last bin.

    Edges are compared in the confidences' own float precision: edge ``b`` is the value nearest to
    ``b / B`` in that precision, so a float32 ``0.7`` (which is slightly below the real 0.7) lands
    in bin 7 of 10, just as float64 ``0.2`` lands in bin 1 of 5. The index comes from a search
    over the edges, never from ``floor(c * B)``, which rounding can push across an edge.
    """
    if v.holds_bool(confidence):
        raise ValueError("confidence: must hold probabilities (floats), got booleans")
    conf = v.to_numpy(confidence, "confidence")
    if not (np.issubdtype(conf.dtype, np.integer) or np.issubdtype(conf.dtype, np.floating)):
        raise ValueError(f"confidence: must hold real numbers, got dtype {conf.dtype}")
    if conf.size and not (np.all(np.isfinite(conf)) and conf.min() >= -v.RANGE_TOL and conf.max() <= 1 + v.RANGE_TOL):
        raise ValueError("confidence: must hold finite probabilities in [0, 1] (no NaN)")
    dtype = conf.dtype if np.issubdtype(conf.dtype, np.floating) else np.dtype(np.float64)
    edges = bin_edges(n_bins).astype(dtype)  # (B + 1,)
    idx = np.searchsorted(edges, conf.astype(dtype), side="right") - 1  # edges[idx] <= c < edges[idx + 1]
    return np.clip(idx, 0, n_bins - 1)


def _top_label(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence float64 (n,), confidence in input precision (n,), correct 0/1 float64 (n,))."""
    p, native = v.probability_matrix(probs, "probs")  # (n, C)
    y = v.integer_vector(labels, "labels", n_classes=p.shape[1])  # (n,)
    v.same_length(probs=p, labels=y)
    pred = np.argmax(native, axis=1)
    rows = np.arange(len(pred))
    return p[rows, pred], native[rows, pred], (pred == y).astype(np.float64)


def _bin_sums(conf: np.ndarray, conf_native: np.ndarray, hit: np.ndarray, n_bins: int):
    """Per-bin (count, sum of confidence, sum of hits), each (n_bins,)."""
    n_bins = v.positive_int(n_bins, "n_bins")
    idx = bin_index(conf_native, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_hit = np.bincount(idx, weights=hit, minlength=n_bins)
    return count, sum_conf, sum_hit


def _ece_from(conf, conf_native, hit, n_bins) -> float:
    count, sum_conf, sum_hit = _bin_sums(conf, conf_native, hit, n_bins)
    # sum_b (n_b / n) |acc_b - conf_b| = sum_b |sum_hit_b - sum_conf_b| / n; empty bins add 0.
    return float(np.sum(np.abs(sum_hit - sum_conf)) / len(conf))


def ece(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error, top-label, equal-width bins (ALGORITHMS.md, "Metrics").

    With confidence ``c_i = max_k probs[i, k]``, prediction = its argmax and ``z_i = 1`` if the
    prediction equals ``labels[i]``: bin ``b`` holds the samples with ``b/B <= c_i < (b+1)/B``
    (the last bin is closed at 1; see ``bin_index`` for float edges) and

        ECE = sum_b (n_b / n) |acc_b - conf_b|,

    ``acc_b`` and ``conf_b`` the mean of ``z`` and of ``c`` in bin ``b``. Empty bins contribute 0.
    Result in [0, 1]. Same binning as torchmetrics' ``MulticlassCalibrationError(norm="l1")``.

    Reference: Naeini et al., AAAI 2015; Guo et al., "On Calibration of Modern Neural Networks",
    ICML 2017.

    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> # bin 3 = [0.6, 0.8): c = 0.7 (right), 0.6 (wrong): |0.5 - 0.65| = 0.15
    >>> # bin 4 = [0.8, 1.0]: c = 0.9 (right), 0.8 (wrong): |0.5 - 0.85| = 0.35
    >>> round(ece(probs, [0, 1, 1, 1], n_bins=5), 10)   # 2/4 * 0.15 + 2/4 * 0.35
    0.25
    """
    conf, conf_native, hit = _top_label(probs, labels)
    return _ece_from(conf, conf_native, hit, n_bins)


def mce(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Maximum calibration error: ``max_b |acc_b - conf_b|`` over the non-empty bins of ``ece``.

    Same bins and inputs as ``ece`` (ALGORITHMS.md, "Metrics"); the torchmetrics ``norm="max"``
    variant. Reference: Naeini et al., AAAI 2015.

    >>> round(mce([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], [0, 1, 1, 1], n_bins=5), 10)
    0.35
    """
    conf, conf_native, hit = _top_label(probs, labels)
    count, sum_conf, sum_hit = _bin_sums(conf, conf_native, hit, n_bins)
    full = count > 0
    return float(np.max(np.abs(sum_hit[full] - sum_conf[full]) / count[full]))


def classwise_ece(probs: Any, labels: Any, n_bins: int = 15, class_index: int | None = None) -> float:
    """Class-wise ECE: the calibration of ``P(class k)`` itself, not only of the top label.

    For class ``k``, bin the samples by ``p_ik = probs[i, k]`` (any value in [0, 1], bins as in
    ``ece``) and compare with the indicator ``y_ik = [labels[i] == k]``:

        ECE_k = sum_b (n_bk / n) |mean(y_ik in b) - mean(p_ik in b)|.

    ``class_index=k`` returns ``ECE_k``; for POPE, ``class_index=POPE_YES`` is the calibration of
    P(yes) against the yes indicator (ALGORITHMS.md, "Metrics": the class-wise variant). With the
    default ``None`` the result is the mean over classes, ``(1/C) sum_k ECE_k`` (Kull et al.,
    NeurIPS 2019). For a binary task the two classes mirror each other (``p_i0 = 1 - p_i1``), so
    ``ECE_0 == ECE_1`` except for samples exactly on a bin edge.

    >>> # P(class 0) = 0.9, 0.8 (bin 4, one is class 0): 2/4 |0.5 - 0.85|; 0.3 (bin 1): 1/4 * 0.3; 0.6 (bin 3): 1/4 * 0.6
    >>> round(classwise_ece([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], [0, 1, 1, 1], n_bins=5, class_index=0), 10)
    0.4
    """
    p, native = v.probability_matrix(probs, "probs")  # (n, C)
    n, n_classes = p.shape
    y = v.integer_vector(labels, "labels", n_classes=n_classes)
    v.same_length(probs=p, labels=y)
    if class_index is not None:
        class_index = v.positive_int(class_index, "class_index", minimum=0)
        if class_index >= n_classes:
            raise ValueError(f"class_index: must be below the number of classes {n_classes}, got {class_index}")
        classes = [class_index]
    else:
        classes = range(n_classes)
    per_class = [_ece_from(p[:, k], native[:, k], (y == k).astype(np.float64), n_bins) for k in classes]
    return float(np.mean(per_class))


def brier(probs: Any, labels: Any) -> float:
    """Brier score ``mean_i sum_c (p_ic - y_ic)^2``, y one-hot (ALGORITHMS.md, "Metrics").

    Summed over the answer set, averaged over samples; range [0, 2]. For a binary task it is
    twice the one-class form ``mean_i (p_i,yes - y_i,yes)^2``. Reference: Brier, Monthly Weather
    Review 1950.

    >>> round(brier([[0.9, 0.1], [0.4, 0.6]], [0, 0]), 10)   # ((0.1^2 + 0.1^2) + (0.6^2 + 0.6^2)) / 2
    0.37
    """
    p, _ = v.probability_matrix(probs, "probs")  # (n, C)
    y = v.integer_vector(labels, "labels", n_classes=p.shape[1])
    v.same_length(probs=p, labels=y)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_table(probs: Any, labels: Any, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin numbers of a reliability diagram (ALGORITHMS.md, "Metrics"), bins as in ``ece``.

    One row per bin, all ``n_bins`` rows present, with columns

    - ``bin`` (0..B-1), ``lower`` = b/B, ``upper`` = (b+1)/B;
    - ``count`` (samples in the bin) and ``fraction`` = count / n;
    - ``confidence`` = mean top-label confidence, ``accuracy`` = mean correctness;
    - ``gap`` = accuracy - confidence (negative = over-confident).

    An empty bin has count 0 and confidence, accuracy and gap 0.0 (no NaN); filter on
    ``count > 0`` before drawing points. ``ece == sum(fraction * |gap|)`` and
    ``mce == max |gap|`` over bins with ``count > 0``.

    >>> t = reliability_table([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], [0, 1, 1, 1], n_bins=5)
    >>> t["count"].tolist()
    [0, 0, 0, 2, 2]
    """
    conf, conf_native, hit = _top_label(probs, labels)
    count, sum_conf, sum_hit = _bin_sums(conf, conf_native, hit, n_bins)
    edges = bin_edges(n_bins)
    safe = np.maximum(count, 1)
    mean_conf = np.where(count > 0, sum_conf / safe, 0.0)
    mean_acc = np.where(count > 0, sum_hit / safe, 0.0)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count.astype(np.int64),
            "fraction": count / len(conf),
            "confidence": mean_conf,
            "accuracy": mean_acc,
            "gap": mean_acc - mean_conf,
        }
    )


# ---------------------------------------------------------------------------------------------
# Equal-mass bins: equal-mass ECE, the ECE sweep, debiased ECE (ALGORITHMS.md, "Metrics")
# ---------------------------------------------------------------------------------------------


def equal_mass_edges(confidence: Any, n_bins: int = 15) -> np.ndarray:
    """Upper edges of ``n_bins`` equal-mass bins of ``confidence`` (the last edge is 1.0).

    The rule of Kumar et al.'s released code (``calibration.get_equal_bins``): sort the
    confidences, split them into ``min(n_bins, n)`` consecutive groups of sizes differing by at
    most one (the first ``n mod B`` groups hold one more, as ``numpy.array_split``), and put an
    edge half-way between the last confidence of a group and the first of the next. Repeated
    edges (ties across a group boundary) merge their bins, so there may be fewer than
    ``n_bins``. A confidence goes to the first bin whose edge is >= it (:func:`equal_mass_index`):
    the bins depend only on the values, not on the order of the samples.

    >>> equal_mass_edges([0.9, 0.6, 0.7, 0.8], n_bins=2).tolist()   # groups {0.6, 0.7}, {0.8, 0.9}
    [0.75, 1.0]
    """
    conf = np.sort(v.real_vector(confidence, "confidence"))
    n_bins = min(v.positive_int(n_bins, "n_bins"), max(len(conf), 1))
    groups = np.array_split(conf, n_bins)
    inner = [(a[-1] + b[0]) / 2.0 for a, b in zip(groups[:-1], groups[1:]) if len(a) and len(b)]
    return np.unique(np.asarray([*inner, 1.0], dtype=np.float64))


def equal_mass_index(confidence: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each confidence under :func:`equal_mass_edges`: the first edge >= it."""
    return np.minimum(np.searchsorted(edges, confidence, side="left"), len(edges) - 1)


def _grouped(conf: np.ndarray, hit: np.ndarray, index: np.ndarray, n_groups: int):
    """Per-bin (count, mean confidence, mean hit) of samples binned by ``index``, each (B,)."""
    count = np.bincount(index, minlength=n_groups).astype(np.float64)
    safe = np.maximum(count, 1.0)
    return (count, np.bincount(index, weights=conf, minlength=n_groups) / safe,
            np.bincount(index, weights=hit, minlength=n_groups) / safe)


def _equal_mass_ece_of(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
    edges = equal_mass_edges(conf, n_bins)
    count, mean_conf, mean_hit = _grouped(conf, hit, equal_mass_index(conf, edges), len(edges))
    return float(np.sum(count * np.abs(mean_hit - mean_conf)) / len(conf))


def equal_mass_ece(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Top-label ECE over equal-mass (adaptive) bins (ALGORITHMS.md, "Metrics").

    As :func:`ece`, ``sum_b (n_b / n) |acc_b - conf_b|``, but the bins are the equal-mass bins
    of :func:`equal_mass_edges`: each holds about ``n / B`` samples, so no bin is nearly empty
    where confidences crowd (POPE's confidences sit near 1). The same value as
    ``calibration.get_ece_em(probs, labels, num_bins=n_bins)`` of Kumar et al.'s package.

    References: Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019;
    Kumar, Liang and Ma, NeurIPS 2019.

    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> # bins {0.6 wrong, 0.7 right}: |0.5 - 0.65|; {0.8 wrong, 0.9 right}: |0.5 - 0.85|
    >>> round(equal_mass_ece(probs, [0, 1, 1, 1], n_bins=2), 10)
    0.25
    """
    conf, _, hit = _top_label(probs, labels)
    return _equal_mass_ece_of(conf, hit, n_bins)


def _monotone_bins(conf: np.ndarray, hit: np.ndarray) -> int:
    """The number of equal-mass bins the sweep settles on (see :func:`ece_sweep`)."""
    n = len(conf)
    chosen = 1
    for b in range(2, n + 1):
        edges = equal_mass_edges(conf, b)
        count, _, mean_hit = _grouped(conf, hit, equal_mass_index(conf, edges), len(edges))
        acc = mean_hit[count > 0]
        if np.any(np.diff(acc) < 0):
            break
        chosen = b
    return chosen


def ece_sweep(probs: Any, labels: Any, return_bins: bool = False) -> float | tuple[float, int]:
    """The monotonic sweep ECE of Roelofs et al. (2022) (ALGORITHMS.md, "Metrics").

    Try ``b = 2, 3, ...`` equal-mass bins (:func:`equal_mass_edges`) and stop at the first ``b``
    whose bin accuracies are not non-decreasing in confidence; the estimate is the equal-mass
    ECE with the last monotone ``b`` (1 if even two bins are not monotone; ``n`` if every count
    is). The choice of ``b`` thus adapts to n and to the data: a well-calibrated model's
    accuracy rises with its confidence, and finer bins than the data can support start to
    break that order. ``return_bins=True`` also returns ``b``.

    Reference: Roelofs, Cain, Shlens and Mozer, "Mitigating Bias in Calibration Error
    Estimation", AISTATS 2022.

    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> ece_sweep(probs, [0, 0, 1, 0], return_bins=True)   # all right: accuracies 1 at every b, so b = n = 4
    (0.25, 4)
    """
    conf, _, hit = _top_label(probs, labels)
    b = _monotone_bins(conf, hit)
    value = _equal_mass_ece_of(conf, hit, b)
    return (value, b) if return_bins else value


def _debiased_of(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
    edges = equal_mass_edges(conf, n_bins)
    count, mean_conf, mean_hit = _grouped(conf, hit, equal_mass_index(conf, edges), len(edges))
    usable = count >= 2
    term = (mean_hit - mean_conf) ** 2 - mean_hit * (1.0 - mean_hit) / np.maximum(count - 1.0, 1.0)
    squared = float(np.sum(np.where(usable, count * term, 0.0)) / len(conf))
    return float(np.sqrt(max(squared, 0.0)))


def debiased_ece(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Debiased (L2) calibration error of Kumar, Liang and Ma (2019) (ALGORITHMS.md, "Metrics").

    Over the equal-mass bins of :func:`equal_mass_edges`, the plug-in squared error
    ``(acc_b - conf_b)^2`` of each bin overstates the true one by the variance of ``acc_b``,
    ``acc_b (1 - acc_b) / (n_b - 1)`` when estimated without bias; subtracting it gives

        CE^2 = sum_b (n_b / n) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)]

    over the bins with ``n_b >= 2`` (a bin of one sample adds 0), reported as
    ``sqrt(max(CE^2, 0))``. It is an L2 error, so it is not on the scale of the L1 ECE; compare
    it with itself. The same value as ``calibration.lower_bound_scaling_ce(probs, labels, p=2,
    debias=True, num_bins=n_bins, binning_scheme=calibration.get_equal_bins, mode="top-label")``.

    Reference: Kumar, Liang and Ma, "Verified Uncertainty Calibration", NeurIPS 2019.

    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> # bins of two: (0.5 - 0.65)^2 - 0.25 and (0.5 - 0.85)^2 - 0.25 average to -0.12: clipped at 0
    >>> debiased_ece(probs, [0, 1, 1, 1], n_bins=2)
    0.0
    """
    conf, _, hit = _top_label(probs, labels)
    return _debiased_of(conf, hit, n_bins)
