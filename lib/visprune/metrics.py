"""Metrics for pruned LLaVA runs (ALGORITHMS.md, "Metrics" and "Image statistics").

One function per metric, in the order of ALGORITHMS.md:

- POPE-style scores from predictions: ``accuracy``, ``precision``, ``recall``, ``f1``,
  ``yes_ratio`` and ``pope_scores`` (all five at once).
- Calibration from probabilities over the answer set: ``ece``, ``mce``, ``classwise_ece``,
  ``brier`` and ``reliability_table``.
- Selective prediction: ``risk_coverage``, ``aurc`` and ``eaurc``.
- Image statistics: ``erank`` and ``attention_entropy`` (validating wrappers around the batched
  torch kernels in ``visprune.instrument.image_stats``).
- Hallucination in captions: ``load_synonyms``, ``caption_objects`` and ``chair``.
- Uncertainty: ``bootstrap_ci`` and ``bootstrap_diff_ci``.

Conventions. Arrays may be NumPy arrays, torch tensors (CPU or GPU) or lists; everything except
``erank`` and ``attention_entropy`` is computed on the CPU in float64. ``probs`` is (n, C): one
row per sample, a probability distribution over that sample's answer set (rows sum to 1).
``labels`` are int class indices into the answer set. The prediction is the argmax of a row (the
first maximum on ties) and the confidence is its probability. Every bad input raises a
``ValueError`` whose message starts with the name of the argument; a metric never returns NaN
for valid input.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from visprune import _paths
from visprune import _validation as v
from visprune.instrument.image_stats import attention_entropy_batch, erank_batch
from visprune.instrument.prompts import POPE_ANSWERS

__all__ = [
    "POPE_YES",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "yes_ratio",
    "pope_scores",
    "ece",
    "mce",
    "classwise_ece",
    "brier",
    "reliability_table",
    "bin_edges",
    "bin_index",
    "risk_coverage",
    "aurc",
    "eaurc",
    "erank",
    "attention_entropy",
    "load_synonyms",
    "caption_objects",
    "object_parser",
    "chair",
    "bootstrap_ci",
    "bootstrap_diff_ci",
]

#: Index of "yes" in POPE's answer set ``visprune.instrument.prompts.POPE_ANSWERS == ("yes", "no")``: 0.
POPE_YES: int = POPE_ANSWERS.index("yes")


# ---------------------------------------------------------------------------------------------
# Classification scores (ALGORITHMS.md, "Metrics": accuracy; POPE precision, recall, F1, yes-ratio)
# ---------------------------------------------------------------------------------------------


def _predictions(pred: Any, name: str = "pred") -> np.ndarray:
    """Predicted class indices (n,): ``pred`` itself if 1-D, the row-wise argmax if (n, C) probabilities."""
    if v.holds_bool(pred):  # checked on the input: np.asarray([True, 0]) is an int array
        return v.integer_vector(pred, name)  # raises, naming ``name``
    arr = v.to_numpy(pred, name)
    if arr.ndim == 2:
        _, native = v.probability_matrix(arr, name)
        return np.argmax(native, axis=1)
    return v.integer_vector(arr, name)


def _n_columns(pred: Any) -> int | None:
    """The number of classes when ``pred`` is an (n, C) probability matrix, else None."""
    shape = getattr(pred, "shape", None)
    if shape is None:
        if not isinstance(pred, (list, tuple)) or not pred or not isinstance(pred[0], (list, tuple)):
            return None
        return len(pred[0])
    return int(shape[1]) if len(shape) == 2 else None


def _pred_and_labels(pred: Any, labels: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validated predictions and labels; with (n, C) probabilities the labels must be below C."""
    p = _predictions(pred) if n_classes is None else v.integer_vector(_predictions(pred), "pred", n_classes)
    y = v.integer_vector(labels, "labels", n_classes=n_classes if n_classes is not None else _n_columns(pred))
    v.same_length(pred=p, labels=y)
    return p, y


def _check_positive(positive: Any, n_classes: int | None = None) -> int:
    positive = v.positive_int(positive, "positive", minimum=0)
    if n_classes is not None and positive >= n_classes:
        raise ValueError(f"positive: must be a class index below {n_classes}, got {positive}")
    return positive


def accuracy(pred: Any, labels: Any) -> float:
    """Accuracy ``mean_i [pred_i == label_i]`` (ALGORITHMS.md, "Metrics").

    ``pred``: (n,) predicted class indices, or (n, C) probabilities (the argmax of each row is
    the prediction). ``labels``: (n,) true class indices.

    >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
    0.75
    """
    p, y = _pred_and_labels(pred, labels)
    return float(np.mean(p == y))


def _confusion(pred: Any, labels: Any, positive: int) -> tuple[int, int, int, int]:
    p, y = _pred_and_labels(pred, labels)
    positive = _check_positive(positive, _n_columns(pred))
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    return tp, fp, fn, len(p)


def precision(pred: Any, labels: Any, positive: int = POPE_YES) -> float:
    """Precision ``TP / (TP + FP)`` for the class ``positive`` (ALGORITHMS.md, "Metrics").

    For POPE the positive class is "yes", index ``POPE_YES == 0`` of ``("yes", "no")``.
    Returns 0.0 when nothing is predicted positive (scikit-learn's ``zero_division=0``).

    >>> precision([0, 0, 1, 0], [0, 1, 1, 0])   # TP = 2, FP = 1
    0.6666666666666666
    """
    tp, fp, _, _ = _confusion(pred, labels, positive)
    return tp / (tp + fp) if tp + fp > 0 else 0.0


def recall(pred: Any, labels: Any, positive: int = POPE_YES) -> float:
    """Recall ``TP / (TP + FN)`` for the class ``positive`` (default "yes" of POPE).

    Returns 0.0 when no label is positive.

    >>> recall([0, 1, 1, 0], [0, 0, 1, 0])   # TP = 2, FN = 1
    0.6666666666666666
    """
    tp, _, fn, _ = _confusion(pred, labels, positive)
    return tp / (tp + fn) if tp + fn > 0 else 0.0


def f1(pred: Any, labels: Any, positive: int = POPE_YES) -> float:
    """F1 ``2 P R / (P + R)`` for the class ``positive`` (default "yes"); 0.0 when P + R = 0.

    >>> f1([0, 0, 1, 0], [0, 1, 1, 0])   # P = 2/3, R = 1
    0.8
    """
    p = precision(pred, labels, positive)
    r = recall(pred, labels, positive)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def yes_ratio(pred: Any, positive: int = POPE_YES) -> float:
    """Fraction of *predictions* equal to ``positive`` (POPE's yes-ratio; "yes" is index 0).

    >>> yes_ratio([0, 1, 0, 0])
    0.75
    """
    p = _predictions(pred)
    return float(np.mean(p == _check_positive(positive, _n_columns(pred))))


def pope_scores(pred: Any, labels: Any, positive: int = POPE_YES) -> dict[str, float]:
    """POPE's table row: accuracy, precision, recall, F1 (positive = "yes") and yes-ratio.

    ``pred`` and ``labels`` are indices into ``visprune.instrument.prompts.POPE_ANSWERS`` (yes = 0, no = 1),
    or ``pred`` is (n, 2) probabilities in that order.

    Every prediction and label must be 0 or 1 (booleans are rejected: which of yes and no
    would ``True`` be?), and (n, C) probabilities must have C = 2 columns.

    >>> pope_scores([0, 0, 1, 0], [0, 1, 1, 0])["f1"]
    0.8
    """
    n_answers = len(POPE_ANSWERS)
    columns = _n_columns(pred)
    if columns is not None and columns != n_answers:
        raise ValueError(f"pred: POPE probabilities must have {n_answers} columns (yes, no), got {columns}")
    _pred_and_labels(pred, labels, n_classes=n_answers)  # 0 = yes, 1 = no: anything else is an error
    _check_positive(positive, n_answers)
    return {
        "accuracy": accuracy(pred, labels),
        "precision": precision(pred, labels, positive),
        "recall": recall(pred, labels, positive),
        "f1": f1(pred, labels, positive),
        "yes_ratio": yes_ratio(pred, positive),
    }


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
# Selective prediction (ALGORITHMS.md, "Metrics": risk-coverage, AURC, E-AURC)
# ---------------------------------------------------------------------------------------------


def _confidence_and_errors(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    c = v.real_vector(confidence, "confidence")
    z = v.binary_vector(correct, "correct")
    v.same_length(confidence=c, correct=z)
    return c, 1.0 - z


def risk_coverage(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve with ties at their expected value (ALGORITHMS.md, "Metrics").

    Sort the samples by ``confidence``, highest first. At coverage ``k/n`` (k = 1..n) the
    selective risk is the error rate of the ``k`` most confident samples. ``confidence`` may be any
    finite real score (only its order matters); ``correct`` is 0/1 or bool.

    Ties. Samples with equal confidence have no order, so the risk is taken as its expectation
    over a uniformly random order within each tie group. If position ``k`` falls inside a tie
    group ``g`` (``s_g`` samples, ``e_g`` errors, starting after ``start_g`` samples of higher
    confidence with ``E_before_g`` errors), the top ``k`` contain ``m = k - start_g`` members of
    ``g`` drawn without replacement, with ``m e_g / s_g`` errors on average, so

        risk(k) = (E_before_g + (k - start_g) e_g / s_g) / k.

    The curve therefore does not depend on the order of the input. Reference: Geifman and
    El-Yaniv, NeurIPS 2017; Geifman et al., ICLR 2019.

    Returns ``(coverage, risk)``, two float64 arrays of shape (n,).

    >>> cov, risk = risk_coverage([0.9, 0.8, 0.8, 0.6], [1, 0, 1, 0])
    >>> cov.tolist(), risk.tolist()   # k = 2: half an error expected among the tied pair
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.25, 0.3333333333333333, 0.5])
    """
    c, err = _confidence_and_errors(confidence, correct)
    n = len(c)
    order = np.argsort(-c, kind="stable")  # most confident first
    c_sorted, e_sorted = c[order], err[order]  # (n,), (n,)
    starts = np.flatnonzero(np.r_[True, c_sorted[1:] != c_sorted[:-1]])  # (G,) first position of each tie group
    sizes = np.diff(np.r_[starts, n])  # (G,)
    group_err = np.add.reduceat(e_sorted, starts)  # (G,) errors per group
    err_before = np.cumsum(group_err) - group_err  # (G,) errors in strictly more confident groups
    group = np.repeat(np.arange(len(starts)), sizes)  # (n,) group of each sorted position
    k = np.arange(1, n + 1)  # (n,) number of samples kept
    expected_errors = err_before[group] + (k - starts[group]) * group_err[group] / sizes[group]
    return k / n, expected_errors / k


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk-coverage curve: ``(1/n) sum_k risk(k)`` (ALGORITHMS.md, "Metrics").

    ``risk`` as in ``risk_coverage``, with tied confidences at their expected value under a
    random order of each tie (so AURC is the expected AURC over those orders and does not depend
    on the input order). Lower is better; range [0, 1]. Reference: Geifman et al., "Bias-Reduced
    Uncertainty Estimation for Deep Neural Classifiers", ICLR 2019.

    >>> aurc([0.9, 0.8, 0.8, 0.6], [1, 0, 1, 0])   # (0 + 1/4 + 1/3 + 1/2) / 4
    0.2708333333333333
    """
    _, risk = risk_coverage(confidence, correct)
    return float(np.mean(risk))


def _ideal_aurc(n: int, n_errors: int) -> float:
    """AURC of the ranking that puts all ``r = n - E`` correct samples first.

    risk*(k) = 0 for k <= r and (k - r) / k for k > r, so
    AURC* = (1/n) sum_{k=r+1}^{n} (1 - r/k) = (E - r (H_n - H_r)) / n, H the harmonic numbers.
    """
    r = n - n_errors
    if n_errors == 0:
        return 0.0
    harmonic_gap = float(np.sum(1.0 / np.arange(r + 1, n + 1)))  # H_n - H_r
    return (n_errors - r * harmonic_gap) / n


def eaurc(confidence: Any, correct: Any) -> float:
    """Excess AURC: ``AURC - AURC*``, AURC* the AURC of an ideal ranking with the same errors.

    With ``E`` errors among ``n`` samples and ``r = n - E``, the ideal ranking puts every correct
    sample first: ``AURC* = (E - r (H_n - H_r)) / n`` with ``H_m = sum_{j<=m} 1/j``
    (ALGORITHMS.md, "Metrics"; Geifman et al., ICLR 2019). Zero for a perfect ranking, >= 0
    always.

    >>> eaurc([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0])
    0.0
    """
    c, err = _confidence_and_errors(confidence, correct)
    value = aurc(c, 1.0 - err) - _ideal_aurc(len(c), int(err.sum()))
    return max(value, 0.0)  # >= 0 in exact arithmetic; removes a rounding residue of ~1e-17


# ---------------------------------------------------------------------------------------------
# Image statistics (ALGORITHMS.md, "Image statistics")
# ---------------------------------------------------------------------------------------------


def _float_tensor(x: Any, name: str, min_dim: int, max_dim: int) -> torch.Tensor:
    """``x`` as a finite floating torch tensor on its own device (NumPy arrays become CPU tensors)."""
    if v.is_tensor(x):
        t = x.detach()
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name}: must hold real numbers, got dtype {t.dtype}")
    else:
        arr = v.to_numpy(x, name)
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{name}: must hold real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if not t.is_floating_point():
        t = t.double()
    if not (min_dim <= t.dim() <= max_dim):
        want = f"{min_dim}-D" if min_dim == max_dim else f"{min_dim}-D to {max_dim}-D"
        raise ValueError(f"{name}: must be {want}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values; all values must be finite")
    return t


def erank(matrix: Any) -> float | np.ndarray:
    """Effective rank of a token matrix, rows = tokens (ALGORITHMS.md, "Image statistics").

    With singular values ``s_k`` and ``q_k = s_k / sum(s)``: ``erank = exp(-sum_k q_k ln q_k)``
    (terms with q_k = 0 add 0; rows are not centred), between 1 and the rank of the matrix; an
    all-zero matrix gives 0. Computed by ``visprune.instrument.image_stats.erank_batch`` on the tensor's
    own device (float32, or float64 for float64 input). ``matrix`` is (N, d) -> float, or a batch
    (B, N, d) -> NumPy array (B,). Reference: Roy and Vetterli, EUSIPCO 2007.

    >>> round(erank(np.diag([1.0, 1.0, 2.0])), 4)   # q = (1/4, 1/4, 1/2): exp(1.5 ln 2) = 2^1.5
    2.8284
    """
    t = _float_tensor(matrix, "matrix", 2, 3)
    out = erank_batch(t)
    return float(out) if t.dim() == 2 else out.cpu().double().numpy()


def attention_entropy(attn: Any) -> float | np.ndarray:
    """Entropy of an attention distribution over patches (ALGORITHMS.md, "Image statistics").

    ``H = -sum_i p_i ln p_i`` with ``p = a / sum(a)`` over the last axis (the N patches); natural
    log, so 0 <= H <= ln N. ``attn`` holds non-negative masses with a positive sum along the last
    axis; (N,) -> float, (..., N) -> NumPy array of the leading shape. Computed by
    ``visprune.instrument.image_stats.attention_entropy_batch`` on the tensor's device.

    >>> round(attention_entropy([1.0, 1.0, 2.0]), 6)   # p = (1/4, 1/4, 1/2): 1.5 ln 2
    1.039721
    """
    t = _float_tensor(attn, "attn", 1, 64)
    if bool((t < 0).any()):
        raise ValueError("attn: attention masses must be non-negative")
    if bool((t.sum(dim=-1) <= 0).any()):
        raise ValueError("attn: every attention vector (last axis) must have a positive sum; got an all-zero vector")
    out = attention_entropy_batch(t)
    return float(out) if t.dim() == 1 else out.cpu().double().numpy()


# ---------------------------------------------------------------------------------------------
# CHAIR (ALGORITHMS.md, "Metrics": CHAIR; Rohrbach et al., EMNLP 2018)
# ---------------------------------------------------------------------------------------------

#: Where the shipped COCO synonym list lives, relative to the repository root.

#: Words that qualify a following object and are not an object themselves: "baby elephant" is an
#: elephant, not a person; "passenger train" is a train (Rohrbach et al.'s rules).
QUALIFIER_WORDS = frozenset({"baby", "adult", "passenger"})

#: Phrases whose words must not be read as objects ("train tracks" do not show a train).
NON_OBJECT_PHRASES = ("train track",)

# Irregular plurals of words that occur in object names; regular ones are handled by rules.
_IRREGULAR_PLURALS = {
    "people": "person",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "oxen": "ox",
    "teeth": "tooth",
    "feet": "foot",
    "dice": "die",
}


def _normalise_phrase(text: str) -> str:
    return " ".join(text.lower().split())


def _default_synonyms_path() -> Path:
    """The shipped COCO list (package data: ``visprune/assets/chair/coco_synonyms.txt``)."""
    return _paths.asset(_paths.COCO_SYNONYMS)


def _add_synonym(table: dict[str, str], word: str, canonical: str, where: str) -> None:
    known = table.get(word)
    if known is not None and known != canonical:
        raise ValueError(f"{where}: '{word}' is listed under both '{known}' and '{canonical}'; keep it under one category")
    table[word] = canonical


def _read_synonym_file(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            names = [_normalise_phrase(part) for part in line.split(",")]
            names = [name for name in names if name]
            canonical = names[0]
            for name in names:
                _add_synonym(table, name, canonical, f"synonyms file {path}, line {line_no}")
    if not table:
        raise ValueError(f"synonyms file {path}: holds no categories; expected lines 'canonical, synonym, ...'")
    return table


def load_synonyms(source: str | os.PathLike | Mapping | None = None) -> dict[str, str]:
    """The CHAIR object vocabulary as ``{word or phrase: canonical category}`` (lower case).

    ``source``:

    - ``None``: the shipped COCO list ``lib/visprune/assets/chair/coco_synonyms.txt`` (80 categories after
      Rohrbach et al.'s ``synonyms.txt``), found by walking up from this module to the
      repository root.
    - a path to a file in the same format: one category per line, ``canonical, synonym, ...``;
      blank lines and lines starting with ``#`` are skipped.
    - a mapping ``canonical -> iterable of synonyms``, or a mapping ``word -> canonical`` (string
      values; e.g. the output of this function).

    Every canonical name maps to itself. A word listed under two categories is a ValueError.

    >>> table = load_synonyms({"dog": ["puppy", "hound"], "hot dog": []})
    >>> table["puppy"], table["hot dog"]
    ('dog', 'hot dog')
    """
    if source is None:
        return _read_synonym_file(_default_synonyms_path())
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"synonyms file not found: {path}. Pass a file with lines 'canonical, synonym, ...', a mapping, or None for COCO"
            )
        return _read_synonym_file(path)
    if not isinstance(source, Mapping):
        raise ValueError(
            f"synonyms: expected None, a file path or a mapping, got {type(source).__name__}"
        )
    if not source:
        raise ValueError("synonyms: the mapping is empty; give at least one category")
    table: dict[str, str] = {}
    for key, value in source.items():
        if not isinstance(key, str) or not _normalise_phrase(key):
            raise ValueError(f"synonyms: keys must be non-empty strings, got {key!r}")
        key_n = _normalise_phrase(key)
        if isinstance(value, str):  # word -> canonical
            canonical = _normalise_phrase(value)
            if not canonical:
                raise ValueError(f"synonyms: the category of {key!r} is an empty string")
            _add_synonym(table, canonical, canonical, "synonyms")
            _add_synonym(table, key_n, canonical, "synonyms")
        elif isinstance(value, Iterable):  # canonical -> synonyms
            _add_synonym(table, key_n, key_n, "synonyms")
            for word in value:
                if not isinstance(word, str) or not _normalise_phrase(word):
                    raise ValueError(f"synonyms: synonyms of {key!r} must be non-empty strings, got {word!r}")
                _add_synonym(table, _normalise_phrase(word), key_n, "synonyms")
        else:
            raise ValueError(
                f"synonyms: the value for {key!r} must be a category name or a list of synonyms, got {type(value).__name__}"
            )
    return table


class _ObjectFinder:
    """Finds the object mentions of a caption for one synonym table (see ``caption_objects``)."""

    def __init__(self, table: Mapping[str, str]):
        self.categories = frozenset(table.values())
        # (token, token, ...) -> canonical, or None for a phrase that blocks its words
        self.phrases: dict[tuple[str, ...], str | None] = {tuple(k.split()): c for k, c in table.items()}
        if "toilet" in self.categories:
            self.phrases.setdefault(("toilet", "seat"), "toilet")  # a toilet seat is not a chair
        for phrase in NON_OBJECT_PHRASES:
            self.phrases[tuple(phrase.split())] = None
        self.max_len = max(len(k) for k in self.phrases)
        self.words = frozenset(w for k in self.phrases for w in k)  # every word of every phrase

    def singular(self, word: str) -> str:
        """The first singular candidate of ``word`` that occurs in the vocabulary, else ``word``.

        Candidates: the word itself, an irregular plural, then suffix rules (-men -> -man,
        -ies -> -y/-ie, -ves -> -f/-fe/-ve, -oes -> -o, sibilant + -es -> drop -es, -s -> drop -s).
        Only vocabulary words count, so "skies" never becomes "ski" and "glass" stays "glass".
        """
        if word in self.words:
            return word
        candidates = []
        if word in _IRREGULAR_PLURALS:
            candidates.append(_IRREGULAR_PLURALS[word])
        if word.endswith("men"):
            candidates.append(word[:-3] + "man")
        if word.endswith("ies"):
            candidates += [word[:-3] + "y", word[:-1]]
        elif word.endswith("ves"):
            candidates += [word[:-3] + "f", word[:-3] + "fe", word[:-1]]
        elif word.endswith("oes"):
            candidates += [word[:-2], word[:-1]]
        elif re.search(r"(s|x|z|ch|sh)es$", word):
            candidates += [word[:-2], word[:-1]]
        elif word.endswith("s") and not word.endswith("ss"):
            candidates.append(word[:-1])
        for candidate in candidates:
            if candidate in self.words:
                return candidate
        return word

    def tokens(self, caption: str) -> list[str]:
        text = caption.lower().replace("\u2019", "'")
        text = re.sub(r"'s\b", " ", text)  # possessive: "dog's" -> "dog"
        return [self.singular(w) for w in re.findall(r"[a-z]+", text)]

    def mentions(self, caption: str) -> list[tuple[tuple[str, ...], str]]:
        """(matched phrase, canonical) of every object mention, in order of appearance."""
        tokens = self.tokens(caption)
        found: list[tuple[int, tuple[str, ...], str]] = []  # (start token, phrase, canonical)
        i = 0
        while i < len(tokens):
            for length in range(min(self.max_len, len(tokens) - i), 0, -1):  # longest match first
                phrase = tuple(tokens[i : i + length])
                if phrase in self.phrases:
                    if self.phrases[phrase] is not None:
                        found.append((i, phrase, self.phrases[phrase]))
                    i += length
                    break
            else:
                i += 1
        # A qualifier directly followed by another object only qualifies it ("baby elephant").
        starts = {start for start, _, _ in found}
        found = [
            (start, phrase, canonical)
            for start, phrase, canonical in found
            if not (len(phrase) == 1 and phrase[0] in QUALIFIER_WORDS and start + 1 in starts)
        ]
        # Rohrbach et al.: when a caption mentions a toilet, "seat" is the toilet's, not a chair.
        if any(canonical == "toilet" for _, _, canonical in found):
            found = [f for f in found if f[1] != ("seat",)]
        return [(phrase, canonical) for _, phrase, canonical in found]


def object_parser(synonyms: Any = None) -> _ObjectFinder:
    """A reusable caption parser for a synonym table (anything ``load_synonyms`` accepts).

    Building the parser indexes the table's phrases once; pass the result as ``synonyms`` to
    :func:`caption_objects` (or :func:`chair`) when parsing many captions with one table.
    """
    return synonyms if isinstance(synonyms, _ObjectFinder) else _ObjectFinder(load_synonyms(synonyms))





def caption_objects(caption: str, synonyms: Any = None) -> list[str]:
    """Canonical categories of the objects a caption mentions, in order, repeats kept.

    The CHAIR parser (ALGORITHMS.md, "Metrics"; Rohrbach et al., EMNLP 2018): lower-case, drop
    possessive 's, split into letter runs; singularise each word against the vocabulary
    ("dogs" -> "dog", "buses" -> "bus", "knives" -> "knife", "mice" -> "mouse", "people" ->
    "person"); match the longest phrase of the synonym table at each position ("hot dog",
    "traffic light", "stove top oven"), then map it to its category. Rules as in Rohrbach et
    al.'s code: a qualifier ("baby", "adult", "passenger") directly before an object is not a
    person; "train track" is not a train; "seat" is not a chair when a toilet is mentioned.

    ``synonyms``: anything ``load_synonyms`` accepts (``None`` = the COCO list).

    >>> caption_objects("Two dogs and a man eat hot dogs near the traffic lights.")
    ['dog', 'person', 'hot dog', 'traffic light']
    """
    if not isinstance(caption, str):
        raise ValueError(f"caption: must be a string, got {type(caption).__name__}")
    return [canonical for _, canonical in object_parser(synonyms).mentions(caption)]


def _caption_length(caption: str) -> int:
    """Number of words: runs of letters/digits, with inner apostrophes or hyphens ("dog's", "t-shirt")."""
    return len(re.findall(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*", caption))


def chair(
    captions: Mapping[Any, str],
    ground_truth: Mapping[Any, Iterable[str]],
    synonyms: Any = None,
    count_repeats: bool = True,
) -> dict[str, Any]:
    """CHAIR hallucination scores of generated captions (ALGORITHMS.md, "Metrics").

    ``captions``: mapping id -> caption. ``ground_truth``: mapping id -> category names present in
    that image (its annotated instance categories plus the objects named in its reference
    captions; synonyms are mapped to their category). Every caption id must be in
    ``ground_truth``. ``synonyms``: as in ``load_synonyms`` (None = COCO).

    Mentions come from ``caption_objects``. With ``count_repeats=True`` (the default, as in
    Rohrbach et al.'s code) every mention counts, so "a dog next to another dog" is two mentions;
    with ``False`` each distinct category counts once per caption.

        CHAIR_I = hallucinated mentions / all mentions            (0.0 if there are no mentions)
        CHAIR_S = captions with >= 1 hallucinated mention / captions
        recall  = sum_i |mentioned_i & GT_i| / sum_i |GT_i|       (0.0 if no ground truth at all)
        length  = mean number of words per caption

    Returns a dict with ``chair_s``, ``chair_i``, ``recall``, ``length``, the counts
    ``n_captions``, ``n_mentions``, ``n_hallucinated`` (mentions), ``n_hallucinated_captions``,
    ``n_ground_truth``, and ``per_caption``: a DataFrame with one row per caption (``id``,
    ``n_words``, ``mentioned``, ``hallucinated``, ``ground_truth`` (sorted), ``chair_s``,
    ``chair_i``, ``recall``).

    >>> out = chair({1: "A cat on a couch with a dog."}, {1: ["cat", "couch"]})
    >>> out["chair_i"], out["chair_s"], out["recall"]
    (0.3333333333333333, 1.0, 1.0)
    """
    if not isinstance(captions, Mapping):
        raise ValueError(f"captions: must be a mapping id -> caption string, got {type(captions).__name__}")
    if not isinstance(ground_truth, Mapping):
        raise ValueError(f"ground_truth: must be a mapping id -> category names, got {type(ground_truth).__name__}")
    if len(captions) == 0:
        raise ValueError("captions: is empty; need at least one caption")
    missing = [key for key in captions if key not in ground_truth]
    if missing:
        raise ValueError(
            f"ground_truth: has no entry for {len(missing)} caption id(s), e.g. {missing[:3]!r}; "
            "give the ground-truth objects of every captioned image"
        )
    finder = object_parser(synonyms)
    table = {" ".join(k): c for k, c in finder.phrases.items() if c is not None}

    rows = []
    for key, caption in captions.items():
        if not isinstance(caption, str):
            raise ValueError(f"captions: the caption of id {key!r} must be a string, got {type(caption).__name__}")
        names = ground_truth[key]
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise ValueError(f"ground_truth: the entry of id {key!r} must be a list of category names, got {names!r}")
        truth = set()
        for name in names:
            name_n = _normalise_phrase(name) if isinstance(name, str) else None
            if name_n not in table:
                raise ValueError(
                    f"ground_truth: id {key!r} lists {name!r}, which is not a category or synonym of the synonym table; "
                    "use the table's category names or pass synonyms=..."
                )
            truth.add(table[name_n])
        mentioned = [canonical for _, canonical in finder.mentions(caption)]
        if not count_repeats:
            mentioned = list(dict.fromkeys(mentioned))
        hallucinated = [m for m in mentioned if m not in truth]
        hits = set(mentioned) & truth
        rows.append(
            {
                "id": key,
                "n_words": _caption_length(caption),
                "mentioned": mentioned,
                "hallucinated": hallucinated,
                "ground_truth": sorted(truth),
                "chair_s": int(len(hallucinated) > 0),
                "chair_i": len(hallucinated) / len(mentioned) if mentioned else 0.0,
                "recall": len(hits) / len(truth) if truth else 0.0,
                "_hits": len(hits),
            }
        )
    per_caption = pd.DataFrame(rows)
    n_mentions = int(sum(len(r["mentioned"]) for r in rows))
    n_hallucinated = int(sum(len(r["hallucinated"]) for r in rows))
    n_ground_truth = int(sum(len(r["ground_truth"]) for r in rows))
    n_hits = int(per_caption["_hits"].sum())
    return {
        "chair_s": float(per_caption["chair_s"].mean()),
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "recall": n_hits / n_ground_truth if n_ground_truth else 0.0,
        "length": float(per_caption["n_words"].mean()),
        "n_captions": len(rows),
        "n_mentions": n_mentions,
        "n_hallucinated": n_hallucinated,
        "n_hallucinated_captions": int(per_caption["chair_s"].sum()),
        "n_ground_truth": n_ground_truth,
        "per_caption": per_caption.drop(columns="_hits"),
    }


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
