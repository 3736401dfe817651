"""Image statistics: effective rank and attention entropy, validating wrappers around the batched
torch kernels of :mod:`visprune.instrument.image_stats` (ALGORITHMS.md, "Image statistics")."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from visprune import _validation as v

from visprune.instrument.image_stats import attention_entropy_batch, erank_batch


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
