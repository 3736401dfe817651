"""Temperature scaling of the first-token logits over the answer set (ALGORITHMS.md, "Metrics":
temperature scaling).

A record keeps, for each answer of its set, the first-token logits ``l_t`` of the answer's
single-token variants (``answer_logits``: one list per answer, aligned with
``answer_token_ids``). The model's probability of answer ``a`` is the softmax mass of its
tokens renormalised over the set, and temperature ``T`` divides every logit first:

    p_a(T) = sum_{t in a} exp(l_t / T) / sum_{t in set} exp(l_t / T),

so ``T = 1`` gives back the record's ``probs``; ``T > 1`` softens the distribution (for an
over-confident model) and ``T < 1`` sharpens it. With one token per answer this is
``softmax(z / T)`` of Guo et al. Dividing by a positive ``T`` keeps the order of the logits
within a set and, with one token per answer, the prediction; the ranking of samples by
confidence can still change, because each sample's confidence moves by its own amount.

``T`` is fitted by minimising the mean negative log-likelihood of the labels on a fitting split
that shares no sample with the one evaluated: a coarse grid over ``log T`` in [log 0.05,
log 20], then golden-section search around the best grid point to a precision of 1e-6 in
``log T``. Deterministic, and robust where the likelihood is not convex in ``1/T`` (several
tokens per answer).

Reference: Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks",
ICML 2017.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["AnswerLogits", "temperature_probs", "temperature_nll", "fit_temperature", "T_RANGE"]

#: The temperatures searched (log-spaced grid, then golden-section refinement).
T_RANGE = (0.05, 20.0)
_GRID = 97
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class AnswerLogits:
    """The answer logits of n samples, flattened: token ``j`` has logit ``logit[j]``, belongs to
    sample ``sample[j]`` and to its answer ``answer[j]`` (the answer's index in its set)."""

    logit: np.ndarray  # (M,) float64
    sample: np.ndarray  # (M,) int64, non-decreasing
    answer: np.ndarray  # (M,) int64
    n: int
    width: int  # the largest answer set

    @classmethod
    def of(cls, answer_logits: Sequence[Sequence[Sequence[float]]]) -> "AnswerLogits":
        """From one entry per sample: a list per answer of its tokens' logits (a record's
        ``answer_logits``), or from an (n, C) array of logits (one token per answer, the
        classifier case of Guo et al.)."""
        if isinstance(answer_logits, np.ndarray) or (hasattr(answer_logits, "detach") and hasattr(answer_logits, "ndim")):
            matrix = np.asarray(answer_logits.detach().cpu() if hasattr(answer_logits, "detach") else answer_logits,
                                dtype=np.float64)
            if matrix.ndim == 2:
                if matrix.shape[1] < 2 or not np.all(np.isfinite(matrix)):
                    raise ValueError(f"answer_logits: an (n, C) logit array needs C >= 2 finite columns, got {matrix.shape}")
                n, c = matrix.shape
                return cls(matrix.ravel(), np.repeat(np.arange(n), c), np.tile(np.arange(c), n), n, c)
            answer_logits = answer_logits.tolist()
        if isinstance(answer_logits, (str, bytes)) or not hasattr(answer_logits, "__len__"):
            raise ValueError("answer_logits: expected one list per sample of per-answer logit lists")
        logit, sample, answer, width = [], [], [], 0
        for i, per_answer in enumerate(answer_logits):
            if per_answer is None or len(per_answer) < 2:
                raise ValueError(f"answer_logits[{i}]: expected the logits of at least two answers, got {per_answer!r}"
                                 " (records written before engine version 5 lack them: run again)")
            width = max(width, len(per_answer))
            for a, tokens in enumerate(per_answer):
                if len(tokens) == 0:
                    raise ValueError(f"answer_logits[{i}][{a}]: an answer needs at least one token logit")
                for value in tokens:
                    logit.append(float(value))
                    sample.append(i)
                    answer.append(a)
        values = np.asarray(logit, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("answer_logits: must be finite numbers")
        return cls(values, np.asarray(sample, dtype=np.int64), np.asarray(answer, dtype=np.int64),
                   len(answer_logits), width)

    def log_probs(self, temperature: float) -> np.ndarray:
        """(n, width) log p_a(T); answers a sample does not have are -inf."""
        scaled = self.logit / temperature
        cell = self.sample * self.width + self.answer  # (M,) flat (sample, answer) cell
        top = np.full(self.n * self.width, -np.inf)
        np.maximum.at(top, cell, scaled)
        row_top = top.reshape(self.n, self.width).max(axis=1)  # (n,)
        mass = np.zeros(self.n * self.width)
        np.add.at(mass, cell, np.exp(scaled - row_top[self.sample]))
        mass = mass.reshape(self.n, self.width)
        with np.errstate(divide="ignore"):
            return np.log(mass) - np.log(mass.sum(axis=1, keepdims=True))


def _logits(answer_logits: Any) -> AnswerLogits:
    return answer_logits if isinstance(answer_logits, AnswerLogits) else AnswerLogits.of(answer_logits)


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: must be a positive finite number, got {temperature!r}")
    return float(temperature)


def temperature_probs(answer_logits: Any, temperature: float) -> np.ndarray:
    """(n, width) ``p_a(T)`` of every sample (padded with 0 to the widest set).

    >>> temperature_probs([[[2.0], [0.0]]], 1.0).round(4).tolist()   # softmax(2, 0)
    [[0.8808, 0.1192]]
    >>> temperature_probs([[[2.0], [0.0]]], 2.0).round(4).tolist()   # softmax(1, 0)
    [[0.7311, 0.2689]]
    >>> temperature_probs(np.array([[2.0, 0.0]]), 2.0).round(4).tolist()   # the same, from an (n, C) array
    [[0.7311, 0.2689]]
    """
    return np.exp(_logits(answer_logits).log_probs(_check_temperature(temperature)))


def temperature_nll(answer_logits: Any, labels: Any, temperature: float) -> float:
    """Mean negative log-likelihood ``-mean_i log p_{y_i}(T)`` of the labels."""
    logits = _logits(answer_logits)
    y = _labels(labels, logits)
    return float(-logits.log_probs(_check_temperature(temperature))[np.arange(logits.n), y].mean())


def _labels(labels: Any, logits: AnswerLogits) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (logits.n,) or not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        raise ValueError(f"labels: expected {logits.n} integer answer indices, got shape {y.shape} dtype {y.dtype}")
    sizes = np.bincount(logits.sample, weights=None, minlength=logits.n)  # tokens per sample (> 0)
    n_answers = np.zeros(logits.n, dtype=np.int64)
    np.maximum.at(n_answers, logits.sample, logits.answer + 1)
    if sizes.min() == 0 or np.any(y < 0) or np.any(y >= n_answers):
        raise ValueError("labels: each label must index an answer of its sample's set")
    return y.astype(np.int64)


def fit_temperature(answer_logits: Any, labels: Any) -> float:
    """The temperature in :data:`T_RANGE` minimising the labels' mean NLL (see the module docstring).

    Fit it on a split that shares no sample with the one it is applied to.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(4000, 2)) * 3                      # logits of an over-confident model ...
    >>> p_true = np.exp(z / 2.5) / np.exp(z / 2.5).sum(1, keepdims=True)
    >>> y = (rng.random(4000) < p_true[:, 1]).astype(int)       # ... whose answers follow softmax(z / 2.5)
    >>> abs(fit_temperature([[[a], [b]] for a, b in z], y) - 2.5) < 0.3   # recovered up to sampling noise
    True
    """
    logits = _logits(answer_logits)
    y = _labels(labels, logits)
    rows = np.arange(logits.n)

    def nll(log_t: float) -> float:
        return float(-logits.log_probs(math.exp(log_t))[rows, y].mean())

    grid = np.linspace(math.log(T_RANGE[0]), math.log(T_RANGE[1]), _GRID)
    values = [nll(g) for g in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, _GRID - 1)]
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-6:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = nll(b)
    candidates = [(values[best], grid[best]), (fa, a), (fb, b)]
    return float(math.exp(min(candidates)[1]))
