"""Image statistics on batched torch tensors (ALGORITHMS.md, "Image statistics").

These are the batched, device-agnostic kernels; ``visprune.metrics.erank`` and
``visprune.metrics.attention_entropy`` validate inputs and wrap them for NumPy users.
"""

from __future__ import annotations

import torch


def erank_batch(x: torch.Tensor) -> torch.Tensor:
    """Effective rank (Roy and Vetterli, 2007) of each matrix in a batch.

    ``x`` is (B, N, d) or (N, d) with rows = tokens (not centred). With singular values s_k,
    ``q_k = s_k / sum(s)`` and ``erank = exp(-sum_k q_k ln q_k)``; terms with q_k = 0 add 0.
    Returns a (B,) float tensor (a 0-d tensor for a single matrix), computed in float32 or
    float64 (whichever is wider than the input) on the input's device. An all-zero matrix
    has erank 0 by convention (it has no singular value mass at all).
    """
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    work = x.double() if x.dtype == torch.float64 else x.float()
    s = torch.linalg.svdvals(work)  # (B, min(N, d))
    total = s.sum(dim=-1, keepdim=True)
    q = s / total.clamp_min(torch.finfo(work.dtype).tiny)
    plogp = torch.where(q > 0, q * torch.log(q.clamp_min(torch.finfo(work.dtype).tiny)), torch.zeros_like(q))
    out = torch.exp(-plogp.sum(dim=-1))
    out = torch.where(total.squeeze(-1) > 0, out, torch.zeros_like(out))
    return out[0] if single else out


def attention_entropy_batch(attn: torch.Tensor) -> torch.Tensor:
    """Entropy ``H = -sum_i p_i ln p_i`` of ``p = a / sum(a)`` over the last axis (patches).

    Natural log, so the maximum is ln N. ``attn`` holds non-negative attention masses of any
    leading shape; returns a tensor of that leading shape in float32 (float64 if given).
    """
    work = attn.double() if attn.dtype == torch.float64 else attn.float()
    p = work / work.sum(dim=-1, keepdim=True)
    tiny = torch.finfo(work.dtype).tiny
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(tiny)), torch.zeros_like(p))
    return -plogp.sum(dim=-1)
