"""DART inside the language model (ALGORITHMS.md, "DART"; Wen et al., "Stop Looking for
Important Tokens in Multimodal Language Models: Duplication Matters More", 2025; released code:
https://github.com/ZichenWen1/DART, ``llava/model/language_model/modeling_llama_self.py``,
``DART.get_retained_image_token``; read here from its stored fork xqy1111111/DART).

Before layer L (default 2; published for 32 layers and mapped to the model's depth unless
``absolute_layer``), from layer L-1:

1. the keys of layer L-1 (its input norm, k projection and **rotary embedding**: the released
   code takes the ``key_states`` its attention returns, after ``apply_rotary_pos_emb``), heads
   concatenated per token (:func:`visprune.pruning._layers.layer_keys`), and layer L-1's output
   passed through the model's final norm (for the similarities only);
2. pivots: the ``pivot_image`` (4) visual tokens and the ``pivot_text`` (4) text tokens with the
   largest key L1 norm; the text tokens are those after the image up to and including the last
   prompt token (released: ``any_states[0][image_end:]``, everything after the image in the
   prefill; tokens after ``query_row`` are generated ones and are never read);
3. ``k = floor(K / (pivot_image + pivot_text))`` (released ``TOKEN_TOPK = ceil(M // 8)``, with
   the budget M = ``max_num_trunction``, i.e. floor); for each pivot in turn, the k remaining
   non-pivot visual tokens with the **lowest** cosine similarity to it are taken and removed
   from the candidates;
4. kept: the visual pivots plus the selected tokens, ``pivot_image + (pivot_image + pivot_text)
   * floor(K / 8)`` tokens (K + 4 when 8 divides K: 128 keeps 132), in original order; the kept
   tokens keep their original position ids (``renumber`` False; released: ``position_ids =
   keep_indexs``).

Pivot order (``pivot_order``). The released loop is ``for item in list(indices_set)``, a Python
set of the pivots' sequence indices built from the visual pivots (by descending norm) and then
the text pivots: CPython iterates small ints by hash-table slot (value modulo the table size),
not by value or by norm, so the order is an artefact, but it changes which tokens each pivot
gets. ``"released"`` (default) reproduces it exactly: the same set, built from the pivots'
original position ids (the released code's indices, an unpadded batch of one), iterated as
CPython does. ``"ascending"`` processes the pivots by position (visual, then text), the plain
reading of the paper.

Near-ties (rounding-robust): pivots by L1 norm within a relative 64 ulps (``TIE_RTOL``), and
least-similar tokens by cosine within an absolute ``COSINE_ATOL`` (8 float32 ulps of 1; cosines
lie around 0, where a relative tolerance means nothing), go to the lower index, as
:func:`visprune.pruning.fastv.top_visual_tokens`; the released code uses ``torch.topk``. Apart
from such near-ties the selections equal the released function's (measured: identical on 30 of
30 random LLaVA-shaped inputs with both tolerances 0).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from visprune.pruning._layers import _check_depth, check_absolute_layers, layer_keys, map_layers, ranked
from visprune.pruning.registry import register

__all__ = ["DEFAULT_LAYER", "PIVOT_ORDERS", "dart_params", "dart_per_pivot", "dart_kept", "dart_schedule", "dart_pivot_order",
           "dart_select", "DARTPruner"]

DEFAULT_LAYER = 2
PIVOT_ORDERS = ("released", "ascending")
#: Absolute tolerance on cosine similarities for near-ties: 8 float32 ulps of 1 (9.5e-7), above the
#: rounding by which a float32 cosine of 4096-wide states moves on another kernel (~1e-8), below
#: the typical gaps between the least-similar candidates (on random LLaVA-shaped inputs, 64 ulps
#: made 4 of 30 selections differ from the released code's, 16 ulps 3, 8 ulps 1).
COSINE_ATOL = 8 * torch.finfo(torch.float32).eps


def _describe(params: dict) -> str:
    notes = []
    if int(params.get("layer", DEFAULT_LAYER)) != DEFAULT_LAYER:
        notes.append(f"layer {int(params['layer'])}")
    if (params.get("pivot_image", 4), params.get("pivot_text", 4)) != (4, 4):
        notes.append(f"pivots {params['pivot_image']}+{params['pivot_text']}")
    if params.get("pivot_order", "released") != "released":
        notes.append(f"{params['pivot_order']} pivots")
    return f"DART ({', '.join(notes)})" if notes else "DART"


def dart_per_pivot(k: int, params: dict) -> int:
    """Tokens each pivot selects: floor(K / (pivot_image + pivot_text)) (released TOKEN_TOPK)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: DART's budget must be an int >= 1, got {k!r}")
    return int(k) // (params["pivot_image"] + params["pivot_text"])


def dart_kept(k: int, params: dict) -> int:
    """Visual tokens DART keeps after its layer: pivot_image + (pivot_image + pivot_text) * per pivot."""
    return params["pivot_image"] + (params["pivot_image"] + params["pivot_text"]) * dart_per_pivot(k, params)


def dart_schedule(n: int, k: int, params: dict, n_layers: int) -> list[int]:
    """The visual tokens each of the ``n_layers`` layers sees: all N before layer L, then
    :func:`dart_kept` (the same signature as PyramidDrop's and SparseVLM's schedules)."""
    kept = dart_kept(k, params)
    if kept > n:
        raise ValueError(f"k: DART would keep {kept} of {n} visual tokens; choose a smaller k")
    layer = int(params["layer"]) if params.get("absolute_layer") else map_layers((params["layer"],), n_layers, name="layer")[0]
    return [n if i < layer else kept for i in range(int(n_layers))]


def dart_pivot_order(visual_pivots: list[int], text_pivots: list[int], visual_positions: list[int],
                     text_positions: list[int], order: str) -> list[tuple[str, int]]:
    """The order the pivots are processed in, as ("visual" | "text", index) pairs.

    ``visual_pivots``/``text_pivots``: indices in descending-norm order; ``*_positions``: their
    original position ids. "released": ``list(set(positions))`` as the released code iterates it
    (CPython's set order); "ascending": by position."""
    tagged = {pos: ("visual", idx) for idx, pos in zip(visual_pivots, visual_positions)}
    tagged.update({pos: ("text", idx) for idx, pos in zip(text_pivots, text_positions)})
    if len(tagged) != len(visual_pivots) + len(text_pivots):
        raise ValueError("positions: two DART pivots share a position id")
    if order == "released":
        sequence = list(set(list(visual_positions) + list(text_positions)))
    elif order == "ascending":
        sequence = sorted(tagged)
    else:
        raise ValueError(f"pivot_order: expected one of {PIVOT_ORDERS}, got {order!r}")
    return [tagged[pos] for pos in sequence]


def dart_select(
    visual_keys: torch.Tensor,
    text_keys: torch.Tensor,
    visual_states: torch.Tensor,
    text_states: torch.Tensor,
    per_pivot: int,
    *,
    pivot_image: int = 4,
    pivot_text: int = 4,
    visual_positions: torch.Tensor | None = None,
    text_positions: torch.Tensor | None = None,
    pivot_order: str = "released",
) -> torch.Tensor:
    """DART's kept visual tokens for one prompt, ascending indices into 0..N-1.

    ``visual_keys`` (N, dk) / ``text_keys`` (t, dk): layer L-1's keys; ``visual_states`` (N, d) /
    ``text_states`` (t, d): layer L-1's outputs after the final norm; ``per_pivot``: k;
    ``*_positions``: the tokens' original position ids (default: visual 0..N-1, text N..N+t-1)
    for the released pivot order. Returns ``pivot_image + (pivot_image + pivot_text) * k`` indices.
    """
    n, t = visual_keys.shape[0], text_keys.shape[0]
    if t < pivot_text:
        raise ValueError(f"pivot_text: DART needs {pivot_text} text tokens after the image, the prompt has {t}")
    needed = pivot_image + (pivot_image + pivot_text) * per_pivot
    if needed > n:
        raise ValueError(f"k: DART would keep {needed} of {n} visual tokens ({pivot_image} pivots + "
                         f"{pivot_image + pivot_text} x {per_pivot}); choose a smaller k")
    if visual_positions is None:
        visual_positions = torch.arange(n)
    if text_positions is None:
        text_positions = torch.arange(n, n + t)
    v_piv = ranked(visual_keys.float().abs().sum(dim=-1)[None], pivot_image)[0].tolist()
    t_piv = ranked(text_keys.float().abs().sum(dim=-1)[None], pivot_text)[0].tolist()
    order = dart_pivot_order(v_piv, t_piv, [int(visual_positions[i]) for i in v_piv],
                             [int(text_positions[i]) for i in t_piv], pivot_order)
    vis = visual_states.float()
    txt = text_states.float()
    candidate = torch.ones(n, dtype=torch.bool)
    candidate[v_piv] = False
    chosen = list(v_piv)
    for kind, idx in order:
        if per_pivot == 0:
            break
        pool = candidate.nonzero()[:, 0]  # ascending, as the released list(valid_indices)
        anchor = vis[idx] if kind == "visual" else txt[idx]
        cos = F.cosine_similarity(anchor[None], vis[pool.to(vis.device)], dim=-1)  # (|pool|,)
        picks = pool[ranked((-cos)[None], per_pivot, atol=COSINE_ATOL)[0].cpu()]
        chosen.extend(picks.tolist())
        candidate[picks] = False
    return torch.tensor(sorted(chosen), dtype=torch.long)


class DARTPruner:
    """DART for one prompt batch (a :class:`~visprune.pruning.registry.LayerPruner`): keys before
    layer L-1, the selection before layer L."""

    renumber = False

    def __init__(self, params: dict, k: int) -> None:
        self.params = params
        self.k = k
        if not params.get("absolute_layer"):
            raise ValueError("params: DART's parameters must be completed for the model "
                             "(dart_params(..., n_layers=D)) before pruning")
        self.layer = int(params["layer"])
        self.per_pivot = dart_per_pivot(k, params)
        self.keys: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None

    def before_layer(self, i: int, layer: nn.Module, state: dict) -> torch.Tensor | None:
        if i == self.layer - 1:
            self.keys = layer_keys(layer, state["hidden"], state["rope"])
            self.positions = state["positions"]
            return None
        if i != self.layer:
            return None
        hidden, image_start, nv, row = state["hidden"], state["image_start"], state["num_visual"], state["query_row"]
        normed = state["final_norm"](hidden)
        keeps = []
        for p in range(hidden.shape[0]):
            start = int(image_start[p])
            end = start + nv
            if row < end:
                raise ValueError("query_row: DART needs the prompt's text tokens after the image")
            keeps.append(dart_select(
                self.keys[p, start:end], self.keys[p, end: row + 1], normed[p, start:end], normed[p, end: row + 1],
                self.per_pivot, pivot_image=self.params["pivot_image"], pivot_text=self.params["pivot_text"],
                visual_positions=self.positions[p, start:end].cpu(), text_positions=self.positions[p, end: row + 1].cpu(),
                pivot_order=self.params["pivot_order"]))
        return torch.stack(keeps).to(hidden.device)


@register("dart", stage="in-llm", label="DART", color="#ff9896", inputs=("n_layers",), pruner=DARTPruner,
          describe=_describe, source="https://github.com/ZichenWen1/DART",
          selector_flops=lambda n, k, d: 2.0 * 8 * n * d + 2.0 * n * d,  # 8 pivots' cosines, key norms
          convention="K + 4 visual tokens after its layer (its 4 pivots are kept beyond the nominal budget); "
                     "all N before it")
def dart_params(
    *,
    layer: int = DEFAULT_LAYER,
    absolute_layer: bool = False,
    pivot_image: int = 4,
    pivot_text: int = 4,
    pivot_order: str = "released",
    n_layers: int | None = None,
) -> dict:
    """DART's parameters, validated and completed (ALGORITHMS.md, "DART").

    - ``layer``: L, the first layer that sees only the kept tokens (>= 1: the keys and states
      come from layer L-1); published (32-layer) and mapped, or the model's own index with
      ``absolute_layer=True`` (1 <= L < D).
    - ``pivot_image``, ``pivot_text``: the numbers of pivots (ints >= 1; released 4 and 4).
    - ``pivot_order``: "released" (default) or "ascending" (see the module docstring).
    - ``n_layers``: the model's depth (filled by the engine); None only validates.

    Returns the parameters; with ``n_layers`` ``layer`` is the model's own (a published one
    replaced by its mapping, ``absolute_layer`` True), so completing again changes nothing.
    """
    depth = _check_depth(n_layers)
    if not isinstance(absolute_layer, bool):
        raise ValueError(f"absolute_layer: expected True or False, got {absolute_layer!r}")
    for name, value in (("pivot_image", pivot_image), ("pivot_text", pivot_text)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not isinstance(pivot_order, str) or pivot_order not in PIVOT_ORDERS:
        raise ValueError(f"pivot_order: expected one of {', '.join(map(repr, PIVOT_ORDERS))}, got {pivot_order!r}")
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise ValueError(f"layer: DART's layer L must be an int, got {layer!r}")
    check_absolute_layers((layer,), None, minimum=1, name="layer")
    layer = int(layer)
    if depth is not None:
        if absolute_layer:
            layer = check_absolute_layers((layer,), depth, minimum=1, name="layer")[0]
        else:
            layer = map_layers((layer,), depth, name="layer")[0]
        absolute_layer = True
    return {"layer": layer, "absolute_layer": absolute_layer, "pivot_image": int(pivot_image),
            "pivot_text": int(pivot_text), "pivot_order": pivot_order}
