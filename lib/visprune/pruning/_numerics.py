"""Input checks and the rounding rule shared by the pre-LLM selectors (ALGORITHMS.md, "SCOPE",
paragraph "Numerics"; the same care for every selector).

Similarities are computed in float32, or float64 when the features are float64, and made exactly
symmetric. A GEMM may round one entry of S a few ulps differently from a bit-identical duplicate
of it (it sums tail columns in another order, and that differs between CPUs), so no outcome may
hinge on a difference that small. ``rounding_delta`` gives ``delta = c * sqrt(d) * eps`` (c =
``ROUNDING_C`` = 4, d the feature width, eps that of the work dtype): the size of a difference
between similarities, or distances, that rounding alone can produce. Each selector states how it
applies it; ties go to the lower token index everywhere.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ValueError(f"{name}: expected a torch tensor or NumPy array, got {type(value).__name__}")


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k: the token budget must be an integer, got {k!r}")
    k = int(k)
    if k < 1 or k > n:
        raise ValueError(f"k: the token budget must satisfy 1 <= k <= N = {n} (the number of visual tokens), got {k}")
    return k


def _check_real(name: str, value: Any, *, low: float | None = None, low_open: bool = False) -> float:
    """A finite real parameter, optionally bounded below (``low`` included unless ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if low is not None:
        if low_open and value <= low:
            raise ValueError(f"{name}: must be > {low:g}, got {value:g}")
        if not low_open and value < low:
            raise ValueError(f"{name}: must be >= {low:g}, got {value:g}")
    return value


def _check_inputs(features: Any, saliency: Any) -> tuple[torch.Tensor, torch.Tensor]:
    features = _as_tensor(features, "features")
    saliency = _as_tensor(saliency, "saliency")
    if features.dim() != 3:
        raise ValueError(f"features: expected shape (B, N, d) (batch, visual tokens, width), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features: expected a floating-point tensor, got dtype {features.dtype}")
    if saliency.shape != features.shape[:2]:
        raise ValueError(
            f"saliency: expected shape (B, N) = {tuple(features.shape[:2])} to match features, got {tuple(saliency.shape)}"
        )
    if not (saliency.is_floating_point() or saliency.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"saliency: expected a real-valued tensor, got dtype {saliency.dtype}")
    if saliency.device != features.device:
        raise ValueError(f"saliency: is on {saliency.device} but features are on {features.device}; put both on one device")
    # One min/max pass each: NaN propagates into both, +-inf shows in one (far cheaper than an
    # elementwise isfinite mask on (B, N, d) features).
    if features.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(features))).all()):
        raise ValueError("features: contains NaN or infinite values")
    if saliency.numel():
        low, high = torch.aminmax(saliency)
        if saliency.is_floating_point() and not bool(torch.isfinite(torch.stack([low, high])).all()):
            raise ValueError("saliency: contains NaN or infinite values")
        if bool(low < 0):
            raise ValueError("saliency: must be non-negative (CLS attention summed over heads), found negative values")
    return features, saliency


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise (at least float32 for all arithmetic)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# The public entry point


def cosine_similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """``S = normalize(X) @ normalize(X).T`` per image: (B, N, d) -> (B, N, N), float32 or float64.

    A zero feature vector has similarity 0 to everything (itself included).
    """
    x = F.normalize(features.to(_work_dtype(features)), dim=-1)  # (B, N, d), unit rows
    sim = torch.bmm(x, x.transpose(1, 2))  # (B, N, N), S[b, j, i] = <x_j, x_i>
    # A GEMM need not round S[j, i] and S[i, j] alike; make S exactly symmetric, as it is in
    # exact arithmetic, so that "row i" and "column i" are the same thing for every selector.
    return (sim + sim.transpose(1, 2)).mul_(0.5)


# delta = ROUNDING_C * sqrt(d) * eps. The error of one entry of S, and the difference between
# two computations of it (another summation order, a +-1 ulp change of the features), is about
# sqrt(d) * eps for unit vectors of width d: measured at 0.1-0.35 sqrt(d) eps for the GEMM and
# up to 1 sqrt(d) eps (d = 7) for a 1-ulp change of every feature; a gap is a difference of two
# such entries. 4 leaves a factor of 2 or more over all of these, and delta stays far below any
# similarity difference that means something (1.5e-5 in float32 at d = 1024).
ROUNDING_C = 4.0


def rounding_delta(dtype: torch.dtype, width: int) -> float:
    """``delta = ROUNDING_C * sqrt(width) * eps(dtype)``: below it, similarities are rounding noise.

    ALGORITHMS.md, "SCOPE", paragraph "Numerics". ``dtype`` is the work dtype of the
    similarities (float32 or float64), ``width`` the feature width d. The value is rounded to a
    float32 number, so that it is exactly the same threshold in float32 and float64 arithmetic
    (NumPy or torch, CPU or GPU).
    """
    return float(np.float32(ROUNDING_C * math.sqrt(max(int(width), 1)) * torch.finfo(dtype).eps))


def _first_within(values: torch.Tensor, tol: float | torch.Tensor) -> torch.Tensor:
    """Per row of ``values`` (B, N): the lowest index whose value is >= the row's max - ``tol``."""
    best = values.amax(dim=1, keepdim=True)  # (B, 1)
    return (values >= best - tol).to(torch.uint8).argmax(dim=1)  # argmax returns the first max


def _descending_order(values: torch.Tensor) -> torch.Tensor:
    """Token indices sorted by ``values`` (B, N) largest first; ties keep the lower index first."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices


# ----------------------------------------------------------------------------------------------
# Random
# ----------------------------------------------------------------------------------------------
