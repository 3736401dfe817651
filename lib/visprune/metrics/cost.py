"""The cost of a run: the analytic prefill FLOPs of a Llama language model (ALGORITHMS.md,
"Metrics", "Prefill FLOPs of the language model"; "Conventions for the methods below").

Per decoder layer that sees n tokens, with hidden width d, key/value width d_kv (key/value heads
x head width) and MLP width m, the multiply-accumulates (MACs) of the prefill are

    2 n d^2        the q and o projections (d x d each)
  + 2 n d d_kv     the k and v projections (d x d_kv each)
  + 2 n^2 d        the attention scores Q K^T and the weighted sum A V (every head together)
  + 3 n d m        the gate, up and down projections of the MLP

and FLOPs = 2 x MACs, summed over the layers, each with its own n (an in-LLM method changes n
from its layer on). Norms, rotary embeddings, softmax and the LM head are not counted; neither is
the vision tower, the same for every method. The full causal n^2 is counted (kernels that skip
the masked half do about half the attention work; the convention of FastV's and PyramidDrop's
papers is the full square).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["layer_macs", "prefill_flops"]


def layer_macs(n: Any, hidden: int, kv_width: int, mlp_width: int) -> np.ndarray:
    """MACs of one Llama layer over ``n`` tokens (any array shape), float64 (see the module docstring)."""
    n = np.asarray(n, dtype=np.float64)
    if np.any(n < 0):
        raise ValueError("n: token counts must be non-negative")
    for name, value in (("hidden", hidden), ("kv_width", kv_width), ("mlp_width", mlp_width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    d, dkv, m = float(hidden), float(kv_width), float(mlp_width)
    return 2 * n * d * d + 2 * n * d * dkv + 2 * n * n * d + 3 * n * d * m


def prefill_flops(tokens_per_layer: Any, hidden: int, kv_width: int, mlp_width: int) -> np.ndarray:
    """Prefill FLOPs of the language model: ``2 * sum_l layer_macs(n_l)`` over the last axis.

    ``tokens_per_layer`` (..., D): the tokens each of the D layers saw (``ScoreOutput.tokens_per_layer``).
    Returns float64 of shape (...,).
    """
    counts = np.asarray(tokens_per_layer, dtype=np.float64)
    if counts.ndim < 1 or counts.shape[-1] < 1:
        raise ValueError(f"tokens_per_layer: expected (..., D) with D >= 1 layers, got shape {counts.shape}")
    return 2.0 * layer_macs(counts, hidden, kv_width, mlp_width).sum(axis=-1)
