"""Input checks shared by the metric functions (private helpers of ``visprune.metrics``).

Every check converts NumPy arrays, torch tensors (any device) and nested lists to NumPy and
raises a ``ValueError`` whose message starts with the argument's name and says what was wrong
and what to pass instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # torch is a dependency of the package, but the checks do not need it to import
    import torch
except ImportError:  # pragma: no cover - torch is always installed with visprune
    torch = None

# Rows of a probability matrix may miss 1 by this much (float32 softmax, then renormalised).
ROW_SUM_TOL = 1e-4
# Entries may leave [0, 1] by this much (float32 rounding); such entries are clipped.
RANGE_TOL = 1e-6


def is_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array without changing its dtype (torch tensors: detached, moved to CPU)."""
    if is_tensor(x):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
            t = t.float()
        return t.numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists and the like
        raise ValueError(f"{name}: could not be read as an array ({err}); pass a NumPy array or torch tensor") from err
    return arr


def numeric_array(x: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """A non-empty, finite, real-valued array with ``ndim`` dimensions (dtype kept)."""
    arr = to_numpy(x, name)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: must be {want}, got shape {tuple(arr.shape)}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(arr.shape)}); need at least one sample")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); all values must be finite")
    return arr


def probability_matrix(probs: Any, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """Check an (n, C) probability matrix; return (float64 copy, copy in the input's float precision).

    Each row is one sample's distribution over its answer set: entries in [0, 1] and rows summing
    to 1 within ``ROW_SUM_TOL`` (or ``C`` machine epsilons of the input's precision, if larger:
    float16 rows may miss 1 by ~1e-3). The second array keeps float16/float32 inputs in their own
    precision so that bin edges can be compared in that precision (see ``bin_index``).
    """
    arr = numeric_array(probs, name, 2)
    n, c = arr.shape
    if c < 2:
        raise ValueError(
            f"{name}: must have one column per answer (at least 2), got shape {(n, c)}; "
            "for a binary task with p = P(class 1) pass np.stack([1 - p, p], axis=1)"
        )
    native = arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)
    p = native.astype(np.float64)
    eps = float(np.finfo(native.dtype).eps)  # float16 inputs get a looser tolerance than float32
    range_tol, sum_tol = max(RANGE_TOL, eps), max(ROW_SUM_TOL, c * eps)
    low, high = p.min(), p.max()
    if low < -range_tol or high > 1 + range_tol:
        raise ValueError(
            f"{name}: probabilities must lie in [0, 1], got values from {low:.6g} to {high:.6g}; "
            "pass probabilities (e.g. softmax over the answer set), not logits"
        )
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > sum_tol:
        raise ValueError(
            f"{name}: each row must sum to 1 (within {sum_tol:g}); row {worst} sums to {sums[worst]:.6g}. "
            "Renormalise the probabilities over the answer set"
        )
    p = np.clip(p, 0.0, 1.0)
    native = np.clip(native, native.dtype.type(0), native.dtype.type(1))
    return p, native


def integer_vector(x: Any, name: str, n_classes: int | None = None) -> np.ndarray:
    """A 1-D array of non-negative integer class indices (below ``n_classes`` when given), as int64."""
    arr = numeric_array(x, name, 1)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: must hold integer class indices, got non-integer values such as {float(arr[arr != np.round(arr)][0])}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or (n_classes is not None and arr.max() >= n_classes):
        upper = f"{n_classes - 1}" if n_classes is not None else "infinity"
        raise ValueError(
            f"{name}: class indices must lie in 0..{upper}, got values from {arr.min()} to {arr.max()}"
        )
    return arr


def binary_vector(x: Any, name: str) -> np.ndarray:
    """A 1-D array of 0/1 (or bool) values, as float64."""
    arr = numeric_array(x, name, 1).astype(np.float64)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name}: must hold 0/1 (or True/False) values, got e.g. {float(arr[(arr != 0) & (arr != 1)][0])}")
    return arr


def real_vector(x: Any, name: str) -> np.ndarray:
    """A 1-D array of finite real numbers, as float64."""
    return numeric_array(x, name, 1).astype(np.float64)


def same_length(**arrays: np.ndarray) -> int:
    """Check that all arrays have the same first dimension; return it."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{' and '.join(lengths)}: must have one entry per sample, but {described}")
    return next(iter(lengths.values()))


def positive_int(x: Any, name: str, minimum: int = 1) -> int:
    """An int >= ``minimum`` (bools and non-integral numbers are rejected)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {x!r}")
    if x < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {x}")
    return int(x)
