"""FastV's token choice inside the language model (ALGORITHMS.md, "FastV").

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024) runs the language
model normally through layer L-1, ranks the visual tokens by the attention the last prompt
token pays them (averaged over heads), keeps the K best and drops the others from layer L on.
This module holds the pieces that do not depend on how the decoder is driven:

- ``fastv_params``: FastV's parameters, declared once with their defaults (``layer`` L = 2,
  ``ranking`` = "previous"), validated and completed; the model wrapper and the command line
  read them from here;
- ``last_token_attention``: the attention row of one query token at one Llama decoder layer,
  recomputed from the layer's input (input RMSNorm, q/k projections, rotary embeddings at the
  tokens' own positions, grouped-query heads, padding mask, softmax in float32), so the model
  itself keeps its fast attention kernel (SDPA never returns attention probabilities);
- ``top_visual_tokens``: the K visual tokens with the largest head-averaged attention, ascending,
  with a tolerance so that rounding noise cannot decide near-ties (see ``TIE_RTOL``);
- ``kept_sequence_index``: the sequence positions that survive the drop (text, padding and the
  kept visual tokens, in their original order), for gathering hidden states, position ids and
  masks.

Which layer's attention ranks the tokens (``ranking``):

- ``"previous"`` (default, the released FastV code and its KV-cache variant, as ALGORITHMS.md
  "FastV" now specifies): the attention probabilities computed *inside layer L-1*, i.e. from
  layer L-1's input with layer L-1's weights, over all N visual tokens (layer L-1 still runs
  unpruned); the drop then applies to the input of layer L. With L = 2 that is the second
  layer's attention map. L = 0 has no previous layer and is rejected under this ranking.
- ``"same"`` (this library's earlier convention, kept as an option): the row layer L itself
  would compute from its input, over all N tokens, before the drop; layer L then runs on the
  kept tokens only. This is the only ranking that allows L = 0 (prune before the first layer).

In both, layers before L see all N tokens and the kept tokens keep their original position ids.
"""

from __future__ import annotations

import inspect
import numbers

import torch
from torch import nn

from visprune.pruning.registry import register

#: FastV's default layer L (the released code's K = 2: drop from the third layer on).
DEFAULT_LAYER = 2
#: Which layer's attention ranks the visual tokens: "previous" (layer L-1, the released code) or "same" (layer L).
RANKINGS = ("previous", "same")
DEFAULT_RANKING = "previous"
#: Near-ties in the attention ranking: a token counts as tied with the best remaining one when its
#: attention is within this *relative* distance of it (64 float32 ulps, about 7.6e-6). Attention
#: rows come from float32 GEMMs whose rounding depends on the BLAS kernel, so differences of a few
#: ulps carry no information; such ties go to the lower token index (see ``top_visual_tokens``).
TIE_RTOL = 64 * torch.finfo(torch.float32).eps


def _fastv_label(params: dict) -> str:
    """``FastV``, with the layer and ranking when they are not the defaults."""
    notes = [] if int(params.get("layer", DEFAULT_LAYER)) == DEFAULT_LAYER else [f"layer {int(params['layer'])}"]
    if params.get("ranking", DEFAULT_RANKING) != DEFAULT_RANKING:
        notes.append(f"{params['ranking']}-layer ranking")
    return f"FastV ({', '.join(notes)})" if notes else "FastV"


class FastVPruner:
    """FastV for one prompt batch (the :class:`~visprune.pruning.registry.LayerPruner`
    the language-model loop consults): rank before layer ``ranking_layer(params)``, drop before
    layer L."""

    def __init__(self, params: dict, k: int) -> None:
        self.params = params
        self.k = k
        self.rank_at = ranking_layer(params)
        self.drop_at = params["layer"]
        self.keep: torch.Tensor | None = None

    def before_layer(self, i: int, layer: nn.Module, state: dict) -> torch.Tensor | None:
        if i == self.rank_at:  # layer L-1 ("previous") or L ("same"), on all N visual tokens
            attention = last_token_attention(layer, state["hidden"], state["rope"], state["valid"], state["query_row"])
            self.keep = top_visual_tokens(attention, state["image_start"], state["num_visual"], self.k)
        return self.keep if i == self.drop_at else None


@register("fastv", stage="in-llm", label="FastV", color="#d62728", inputs=("n_layers",),
          pruner=FastVPruner, describe=_fastv_label, source="https://github.com/pkunlp-icler/FastV",
          convention="K visual tokens after its layer; all N before it",
          selector_flops=lambda n, k, d: 2.0 * n * d)  # one query's attention row at its layer
def fastv_params(*, layer: int = DEFAULT_LAYER, ranking: str = DEFAULT_RANKING, n_layers: int | None = None) -> dict:
    """FastV's parameters, validated and completed with their defaults (ALGORITHMS.md, "FastV").

    - ``layer``: L, the first decoder layer that sees only the kept visual tokens (an int;
      booleans are rejected). ``ranking="previous"`` needs 1 <= L (it ranks inside layer L-1);
      ``ranking="same"`` allows L = 0. With ``n_layers`` (the language model's depth) given,
      L must also be below it.
    - ``ranking``: "previous" (default; layer L-1's attention, the released code) or "same"
      (layer L's own attention, before the drop).
    - ``n_layers``: not a FastV parameter but the model's depth, for the range check (None:
      only the lower bound is checked; the model wrapper always passes it).

    Returns ``{"layer": L, "ranking": ranking}`` (the dict a run records). Raises ValueError
    naming the parameter.
    """
    bad_depth = isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 1
    if n_layers is not None and bad_depth:
        raise ValueError(f"n_layers: expected the language model's number of layers (a positive int), got {n_layers!r}")
    if not isinstance(ranking, str) or ranking not in RANKINGS:
        raise ValueError(f"ranking: FastV's ranking must be one of {', '.join(map(repr, RANKINGS))}, got {ranking!r}")
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise ValueError(f"layer: FastV's layer L must be an int, got {layer!r}")
    low = 1 if ranking == "previous" else 0
    high = None if n_layers is None else int(n_layers) - 1
    if layer < low or (high is not None and layer > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        hint = (
            " (ranking='previous' reads layer L-1's attention, so L = 0 has no previous layer; "
            "pass ranking='same' to prune before the first layer)"
            if ranking == "previous" and layer == 0
            else ""
        )
        raise ValueError(f"layer: FastV's layer L must be an int in {span}, got {layer!r}{hint}")
    return {"layer": int(layer), "ranking": ranking}


def param_names() -> tuple[str, ...]:
    """FastV's parameter names: the keyword-only parameters of ``fastv_params`` except ``n_layers``."""
    signature = inspect.signature(fastv_params)
    return tuple(p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "n_layers")


def ranking_layer(params: dict) -> int:
    """The decoder layer whose attention ranks the tokens for completed ``params``: L-1 or L."""
    return params["layer"] - 1 if params["ranking"] == "previous" else params["layer"]


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
    Returns a (B, k) LongTensor on ``attention``'s device.

    Tie rule (so that a few ulps of GEMM rounding cannot decide): the K tokens are taken one at
    a time; each time, among the tokens not yet taken, the one with the *lowest index* whose
    attention is at least ``(1 - TIE_RTOL)`` times the largest remaining attention. Without
    near-ties this is the plain top-K. The comparison runs on the CPU in float64 on the
    float32 attention values, so it is the same on every device.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_visual:
        raise ValueError(f"k: FastV keeps between 1 and {num_visual} visual tokens, got {k!r}")
    offsets = torch.arange(num_visual, device=attention.device)
    columns = image_start[:, None].to(attention.device) + offsets  # (B, N)
    if int(columns.max()) >= attention.shape[1]:
        raise ValueError("the FastV query row must come after every visual token of its prompt")
    visual = attention.gather(1, columns).float().cpu().double()  # (B, N)
    batch = visual.shape[0]
    if k == num_visual:
        return offsets.expand(batch, num_visual).clone()
    rows = torch.arange(batch)
    picks = torch.empty(batch, k, dtype=torch.long)
    for step in range(k):
        best = visual.amax(dim=1, keepdim=True)  # (B, 1) largest remaining attention
        tied = visual >= best * (1.0 - TIE_RTOL)  # (B, N); taken tokens hold -inf and never qualify
        pick = tied.to(torch.uint8).argmax(dim=1)  # (B,) the lowest tied index
        picks[:, step] = pick
        visual[rows, pick] = float("-inf")
    return picks.sort(dim=1).values.to(attention.device)


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
