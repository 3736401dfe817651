"""FastV's token choice inside the language model (ALGORITHMS.md, "FastV").

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024) runs the language
model normally up to layer L, then keeps the K visual tokens that the last prompt token attends
to most (attention averaged over heads) and drops the others from layer L on. This module holds
the three pieces that do not depend on how the decoder is driven:

- ``last_token_attention``: the attention row of one query token at one Llama decoder layer,
  recomputed from the layer's input (input RMSNorm, q/k projections, rotary embeddings at the
  tokens' own positions, grouped-query heads, padding mask, softmax in float32), so the model
  itself keeps its fast attention kernel (SDPA never returns attention probabilities);
- ``top_visual_tokens``: the K visual tokens with the largest head-averaged attention, ascending;
- ``kept_sequence_index``: the sequence positions that survive the drop (text, padding and the
  kept visual tokens, in their original order), for gathering hidden states, position ids and
  masks.

Choice recorded here: the attention row is the one layer L itself computes (from layer L's
input, with layer L's weights), and layer L already runs on the kept tokens only. The released
FastV code instead reuses the attention map that layer L-1 produced and prunes the input of
layer L; with L = 2 that is the map of the second layer.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last axis, the rotation Llama's rotary embedding uses."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (B, H, T, D) with ``cos``/``sin`` (B, T, D) of the tokens' positions."""
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


def last_token_attention(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    key_valid: torch.Tensor,
    row: int,
) -> torch.Tensor:
    """Attention of query ``row`` to keys ``0..row`` at a Llama decoder ``layer``, mean over heads.

    ``hidden_states`` (B, T, d) is the layer's input, ``position_embeddings`` the (cos, sin)
    pair (B, T, head_dim) the model's rotary module gives for the tokens' position ids, and
    ``key_valid`` (B, T) bool marks real tokens (False = padding). Causality is implied: only
    keys up to ``row`` are scored. Returns (B, row + 1) float32 probabilities (each row sums to
    1 over the valid keys; padding gets 0), averaged over the query heads.
    """
    attn = layer.self_attn
    batch, seq_len, _ = hidden_states.shape
    if not 0 <= row < seq_len:
        raise ValueError(f"row: the FastV query row must lie in 0..{seq_len - 1}, got {row}")
    head_dim = attn.head_dim
    x = layer.input_layernorm(hidden_states)  # (B, T, d)
    cos, sin = position_embeddings
    n_keys = row + 1

    q = attn.q_proj(x[:, row : row + 1]).view(batch, 1, -1, head_dim).transpose(1, 2)  # (B, Hq, 1, D)
    k = attn.k_proj(x[:, :n_keys]).view(batch, n_keys, -1, head_dim).transpose(1, 2)  # (B, Hkv, R, D)
    q = _apply_rotary(q, cos[:, row : row + 1], sin[:, row : row + 1])
    k = _apply_rotary(k, cos[:, :n_keys], sin[:, :n_keys])
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)  # (B, Hq, R, D): query head h reads key/value head h // n_rep

    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.scaling  # (B, Hq, 1, R)
    scores = scores.masked_fill(~key_valid[:, None, None, :n_keys], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, Hq, 1, R)
    return probs.mean(dim=1)[:, 0]  # (B, R)


def top_visual_tokens(
    attention: torch.Tensor, image_start: torch.Tensor, num_visual: int, k: int
) -> torch.Tensor:
    """The ``k`` visual tokens with the largest ``attention``, as indices 0..num_visual-1, ascending.

    ``attention`` (B, R) is a query's attention over sequence positions; the visual tokens of
    row b sit at positions ``image_start[b] .. image_start[b] + num_visual - 1``.
    Returns a (B, k) LongTensor.
    """
    if not 1 <= k <= num_visual:
        raise ValueError(f"k: FastV keeps between 1 and {num_visual} visual tokens, got {k}")
    offsets = torch.arange(num_visual, device=attention.device)
    columns = image_start[:, None].to(attention.device) + offsets  # (B, N)
    if int(columns.max()) >= attention.shape[1]:
        raise ValueError("the FastV query row must come after every visual token of its prompt")
    visual = attention.gather(1, columns)  # (B, N)
    keep = visual.topk(k, dim=1).indices  # (B, k)
    return keep.sort(dim=1).values


def kept_sequence_index(
    seq_len: int, image_start: torch.Tensor, num_visual: int, keep: torch.Tensor
) -> torch.Tensor:
    """Positions of a length-``seq_len`` sequence left after dropping the visual tokens not in ``keep``.

    ``keep`` (B, K) holds visual-token indices 0..num_visual-1. Every row loses the same
    num_visual - K positions, so the result is a rectangular (B, seq_len - num_visual + K)
    LongTensor, ascending per row (text, padding and kept visual tokens in original order).
    """
    batch, k = keep.shape
    device = keep.device
    starts = image_start.to(device)[:, None]
    drop = torch.zeros(batch, seq_len, dtype=torch.bool, device=device)
    drop.scatter_(1, starts + torch.arange(num_visual, device=device), True)  # every visual slot
    drop.scatter_(1, starts + keep, False)  # ... except the kept ones
    kept = (~drop).nonzero()  # (B * T', 2), row-major, so ascending within each row
    return kept[:, 1].view(batch, seq_len - num_visual + k)
