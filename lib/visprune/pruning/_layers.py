"""Shared pieces of the in-LLM pruning methods (ALGORITHMS.md, "Conventions for the methods
below", "PyramidDrop", "SparseVLM", "DART").

- :func:`map_layers`: a published layer schedule (for a 32-layer LLaMA) on a language model of
  another depth;
- :func:`attention_rows`: the head-averaged softmax attention of several query rows at a Llama
  decoder layer, recomputed from the layer's input (the model itself keeps SDPA, which never
  returns probabilities); :func:`visprune.pruning.fastv.last_token_attention` is the one-row case;
- :func:`layer_keys`: a layer's attention keys, heads concatenated per token (DART's pivots);
- :func:`ranked`: the ``m`` largest values in pick order, with the rounding-robust tie rule of
  :func:`visprune.pruning.fastv.top_visual_tokens` (near-ties go to the lower index);
- :func:`renumbered`: the positions, validity and rotary embeddings a sequence has after a drop
  with contiguous renumbering (for a method that must look at a layer's input after a drop it
  asks for at that same layer: SparseVLM on a shallow model).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

from visprune.pruning.fastv import TIE_RTOL, _apply_rotary

__all__ = ["PUBLISHED_DEPTH", "map_layers", "check_absolute_layers", "attention_rows", "layer_keys", "ranked", "renumbered"]

#: The depth of the language model the published layer schedules were chosen for (LLaMA/Vicuna-7B).
PUBLISHED_DEPTH = 32


def _check_depth(n_layers: object) -> int | None:
    if n_layers is None:
        return None
    if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 1:
        raise ValueError(f"n_layers: expected the language model's number of layers (a positive int), got {n_layers!r}")
    return int(n_layers)


def _as_layer_tuple(value: object, name: str) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of ints (booleans rejected); ValueError naming ``name``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise ValueError(f"{name}: expected a sequence of layer indices, got {value!r}")
    items = tuple(value)
    if not items or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in items):
        raise ValueError(f"{name}: expected a non-empty sequence of int layer indices, got {value!r}")
    return tuple(int(v) for v in items)


def map_layers(
    published: Sequence[int],
    n_layers: int,
    *,
    published_depth: int = PUBLISHED_DEPTH,
    minimum: int = 1,
    limit: int | None = None,
    name: str = "layers",
) -> tuple[int, ...]:
    """Map a published layer schedule to a language model of depth ``n_layers`` = D.

    ALGORITHMS.md ("Conventions"): a published layer l maps to ``max(minimum, round(l * D /
    published_depth))`` (``minimum`` = 1 by default: "prune before layer l" needs l >= 1;
    rounding is half up, computed exactly in integers: ``floor(l * D / 32 + 1/2)``). Then, in
    order, a layer that is not above the previous mapped one is bumped to previous + 1, so the
    result is strictly increasing. Every mapped layer must be below ``limit`` (default D);
    otherwise the schedule does not fit and ValueError names the parameter ``name``.

    On D = 32 this is the identity for any strictly increasing schedule of layers in 1..31.
    On D = 4: (2, 8, 16) -> (1, 2, 3) (0.25 -> 0 -> 1, 1 -> collides with 1 -> 2, 2 -> collides ->
    3) and (8, 16, 24) -> (1, 2, 3); with ``minimum=0`` (SparseVLM's scoring layers, whose drop is
    one layer later) (2, 6, 15) -> (0, 1, 2). DART's 2 -> 1.

    The published layers themselves must be a strictly increasing sequence of ints >= ``minimum``.
    """
    depth = _check_depth(n_layers)
    if depth is None:
        raise ValueError("n_layers: map_layers needs the language model's number of layers")
    if isinstance(published_depth, bool) or not isinstance(published_depth, numbers.Integral) or published_depth < 1:
        raise ValueError(f"published_depth: expected a positive int, got {published_depth!r}")
    layers = _as_layer_tuple(published, name)
    if any(b <= a for a, b in zip(layers, layers[1:])) or layers[0] < minimum:
        raise ValueError(f"{name}: expected strictly increasing layers >= {minimum}, got {list(layers)}")
    top = depth if limit is None else int(limit)
    mapped: list[int] = []
    for layer in layers:
        target = max(minimum, (2 * layer * depth + published_depth) // (2 * published_depth))  # round half up
        if mapped and target <= mapped[-1]:
            target = mapped[-1] + 1
        mapped.append(target)
    if mapped[-1] >= top:
        raise ValueError(
            f"{name}: the schedule {list(layers)} (for {published_depth} layers) maps to {mapped} on a "
            f"{depth}-layer language model, which does not fit below layer {top}; pass fewer or lower layers, "
            f"or absolute layers"
        )
    return tuple(mapped)


def check_absolute_layers(layers: Sequence[int], n_layers: int | None, *, minimum: int = 1,
                          limit: int | None = None, name: str = "layers") -> tuple[int, ...]:
    """Absolute layer indices, validated: strictly increasing ints >= ``minimum`` and below
    ``limit`` (default ``n_layers``; unchecked when both are None)."""
    items = _as_layer_tuple(layers, name)
    if any(b <= a for a, b in zip(items, items[1:])) or items[0] < minimum:
        raise ValueError(f"{name}: expected strictly increasing layers >= {minimum}, got {list(items)}")
    top = limit if limit is not None else n_layers
    if top is not None and items[-1] >= top:
        raise ValueError(f"{name}: layer {items[-1]} is not below {top} (the language model has {n_layers} layers)")
    return items


def _queries_and_keys(layer: nn.Module, hidden: torch.Tensor, position_embeddings, rows: torch.Tensor):
    """Rotary-embedded queries (P, Hq, R, D) at ``rows`` (P, R) and keys (P, Hkv, T, D), float32."""
    attn = layer.self_attn
    batch, seq_len, _ = hidden.shape
    head_dim = attn.head_dim
    x = layer.input_layernorm(hidden)  # (P, T, d)
    cos, sin = position_embeddings
    xr = x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))  # (P, R, d)
    q = attn.q_proj(xr).view(batch, rows.shape[1], -1, head_dim).transpose(1, 2)  # (P, Hq, R, D)
    k = attn.k_proj(x).view(batch, seq_len, -1, head_dim).transpose(1, 2)  # (P, Hkv, T, D)
    idx = rows[..., None].expand(-1, -1, cos.shape[-1])
    q = _apply_rotary(q, cos.gather(1, idx), sin.gather(1, idx))
    k = _apply_rotary(k, cos, sin)
    return q.float(), k.float()


def _as_rows(rows, batch: int, seq_len: int, device) -> torch.Tensor:
    rows_t = torch.as_tensor(rows, dtype=torch.long, device=device)
    if rows_t.dim() == 1:
        rows_t = rows_t.expand(batch, -1)
    if rows_t.dim() != 2 or rows_t.shape[0] != batch or rows_t.shape[1] < 1:
        raise ValueError(f"rows: expected (P, R) or (R,) query rows for P = {batch} prompts, got shape {tuple(rows_t.shape)}")
    if int(rows_t.min()) < 0 or int(rows_t.max()) >= seq_len:
        raise ValueError(f"rows: query rows must lie in 0..{seq_len - 1}")
    return rows_t


def attention_rows(
    layer: nn.Module,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    key_valid: torch.Tensor,
    rows,
) -> torch.Tensor:
    """Head-averaged attention probabilities of query ``rows`` at a Llama decoder ``layer``.

    ``hidden`` (P, T, d) is the layer's input, ``position_embeddings`` the (cos, sin) pair
    (P, T, head_dim) of the tokens' positions, ``key_valid`` (P, T) bool (False = padding),
    ``rows`` a (P, R) LongTensor or a list of R rows shared by every prompt. As the layer's own
    attention: input RMSNorm, q/k projections, rotary embedding, grouped-query heads (query head
    h reads key head h // (Hq / Hkv)), scaling ``attn.scaling``, a causal and padding mask (query
    row r sees keys j <= r that are valid), softmax in float32, mean over the query heads.
    Returns (P, R, T) float32; masked keys get 0.
    """
    batch, seq_len, _ = hidden.shape
    rows_t = _as_rows(rows, batch, seq_len, hidden.device)
    q, k = _queries_and_keys(layer, hidden, position_embeddings, rows_t)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (P, Hq, T, D)
    scores = torch.matmul(q, k.transpose(-1, -2)) * layer.self_attn.scaling  # (P, Hq, R, T)
    keys = torch.arange(seq_len, device=hidden.device)
    allowed = (keys[None, None, :] <= rows_t[:, :, None]) & key_valid.bool()[:, None, :]  # (P, R, T)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1).mean(dim=1)  # (P, R, T)


def layer_keys(layer: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The attention keys of a Llama decoder ``layer`` for its input ``hidden`` (P, T, d): input
    RMSNorm, k projection and **the rotary embedding** (DART's released code reads the keys the
    attention returns after ``apply_rotary_pos_emb``), heads concatenated per token.
    Returns (P, T, H_kv * head_dim) float32. (The released code also repeats the key heads for
    grouped-query attention, which multiplies every L1 norm by Hq / Hkv and changes no ranking.)
    """
    attn = layer.self_attn
    batch, seq_len, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    k = attn.k_proj(x).view(batch, seq_len, -1, attn.head_dim).transpose(1, 2)  # (P, Hkv, T, D)
    cos, sin = position_embeddings
    k = _apply_rotary(k, cos, sin)
    return k.transpose(1, 2).reshape(batch, seq_len, -1).float()


def ranked(values: torch.Tensor, m: int, *, atol: float = 0.0) -> torch.Tensor:
    """The ``m`` largest entries of each row of ``values`` (B, n), in pick order (largest first).

    Tie rule (as :func:`visprune.pruning.fastv.top_visual_tokens`): one pick at a time, the
    lowest index among the remaining entries within ``max(TIE_RTOL * |best|, atol)`` of the
    largest remaining one, so rounding noise of a few ulps cannot decide. Compared on the CPU in
    float64. Returns a (B, m) LongTensor on ``values``' device. ``atol`` is for values of either
    sign around 0 (cosine similarities).
    """
    n = values.shape[1]
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 0 <= m <= n:
        raise ValueError(f"m: expected an int in 0..{n}, got {m!r}")
    work = values.detach().float().cpu().double().clone()
    batch = work.shape[0]
    rows = torch.arange(batch)
    picks = torch.empty(batch, m, dtype=torch.long)
    for step in range(m):
        best = work.amax(dim=1, keepdim=True)
        slack = torch.clamp(best.abs() * TIE_RTOL, min=atol)
        tied = work >= best - slack  # taken entries hold -inf and never qualify
        pick = tied.to(torch.uint8).argmax(dim=1)
        picks[:, step] = pick
        work[rows, pick] = float("-inf")
    return picks.to(values.device)


def renumbered(
    hidden: torch.Tensor,
    valid: torch.Tensor,
    positions: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    image_start: torch.Tensor,
    num_visual: int,
    keep: torch.Tensor,
    insert: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The sequence after keeping visual tokens ``keep`` (P, K') and inserting ``insert``
    (P, E, d) right after them, positions renumbered contiguously (``cumsum(valid) - 1``, padding
    at 0): (hidden, valid, positions, (cos, sin)). The rotary embeddings of the new positions are
    gathered from ``rope`` (every new position of a row is one of its old positions, which are
    contiguous from 0), so no rotary module is needed. What the decoder loop does with a
    :class:`~visprune.pruning.registry.LayerDrop` of a ``renumber`` pruner.
    """
    batch, seq_len, d = hidden.shape
    extra = 0 if insert is None else insert.shape[1]
    pieces_h, pieces_v = [], []
    for p in range(batch):
        start = int(image_start[p])
        vis = hidden[p, start + keep[p]]
        parts = [hidden[p, :start], vis] + ([insert[p].to(hidden.dtype)] if extra else []) + [hidden[p, start + num_visual:]]
        pieces_h.append(torch.cat(parts, dim=0))
        ones = torch.ones(keep.shape[1] + extra, dtype=torch.bool, device=valid.device)
        pieces_v.append(torch.cat([valid[p, :start], ones, valid[p, start + num_visual:]]))
    new_hidden = torch.stack(pieces_h)
    new_valid = torch.stack(pieces_v)
    new_positions = (new_valid.long().cumsum(dim=1) - 1).clamp_min(0)
    # per row, the column of each old position value (valid tokens; their positions are 0..L-1)
    table = torch.zeros(batch, int(positions.max()) + 1, dtype=torch.long, device=positions.device)
    cols = torch.arange(seq_len, device=positions.device)
    for p in range(batch):
        vmask = valid[p].bool()
        table[p, positions[p, vmask]] = cols[vmask]
    if int(new_positions.max()) >= table.shape[1]:
        raise RuntimeError("renumbered: a new position has no old one (positions were not contiguous)")
    src = table.gather(1, new_positions)  # (P, T')
    cos, sin = rope
    idx = src[..., None].expand(-1, -1, cos.shape[-1])
    return new_hidden, new_valid, new_positions, (cos.gather(1, idx), sin.gather(1, idx))
