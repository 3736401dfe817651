"""Selective prediction: the risk-coverage curve, AURC and E-AURC (ALGORITHMS.md, "Metrics")."""

from __future__ import annotations

from typing import Any

import numpy as np

from visprune import _validation as v


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
