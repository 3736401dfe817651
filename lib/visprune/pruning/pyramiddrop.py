"""PyramidDrop inside the language model (ALGORITHMS.md, "PyramidDrop"; Xing et al., CVPR 2025;
released code: https://github.com/Cooperx521/PyramidDrop, ``llava/model/modeling_llama_pdrop.py``).

Staged drops: with boundaries l_1 < l_2 < ... (published for 32 layers, mapped to the model's
depth D by :func:`visprune.pruning._layers.map_layers` unless ``absolute_layers``) and a ratio
lambda, layers before l_1 see all N visual tokens and stage s (layers l_s .. l_{s+1} - 1) sees
``floor(N * lambda^s)`` of them (at least 1). At a boundary l, before layer l runs: layer l's
input norm, q/k projections and rotary embedding on the current sequence, the last prompt
token's attention row (float32 softmax, causal, mean over heads;
:func:`visprune.pruning.fastv.last_token_attention`), the top tokens kept in original order
(:func:`visprune.pruning.fastv.top_visual_tokens`, near-ties to the lower index). Positions are
renumbered contiguously after each drop (``renumber = True``), as the released code does
(``position_ids[i, :cur_len] = arange(cur_len)``, and ``position_ids -= dropped`` per stage
while decoding).

The budget K (this library's convention for PyramidDrop): **the visual tokens averaged over
the D layers**. With ``ratio=None`` lambda is solved per run: the largest lambda in (0, 1] whose
layer-average of the schedule does not exceed K (bisection, 60 halvings of [0, 1]; the average is
a non-decreasing step function of lambda, so this is the reachable average closest to K from
below). Published budgets 64/128/192 have no official schedule; the default boundaries
(2, 8, 16) make them reachable (the released [8, 16, 24] keeps all 576 tokens for 8 of 32 layers,
an average of at least 144). The released default (``layers=(8, 16, 24), ratio=0.5``; its
``image_token_ratio_list`` [0.5, 0.25, 0.125]) is a fixed schedule averaging 270 of 576 visual
tokens over 32 layers; with an explicit ratio K is not used (:func:`pdrop_schedule` reports the
average).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from visprune.pruning._layers import _check_depth, check_absolute_layers, map_layers
from visprune.pruning.fastv import last_token_attention, top_visual_tokens
from visprune.pruning.registry import register

__all__ = ["DEFAULT_LAYERS", "RELEASED_LAYERS", "RELEASED_RATIO", "pdrop_params", "pdrop_schedule", "pdrop_ratio",
           "pdrop_select", "PyramidDropPruner"]

#: This library's default boundaries (published-depth layers) for a budget given as an average.
DEFAULT_LAYERS = (2, 8, 16)
#: The released code's default boundaries and ratio (scripts/v1_5/pdrop_eval/*.sh).
RELEASED_LAYERS = (8, 16, 24)
RELEASED_RATIO = 0.5
#: Bisection steps for lambda (2^-60 of the unit interval: far below any step of the schedule).
BISECTION_STEPS = 60


def _stage_counts(n: int, ratio: float, n_stages: int) -> list[int]:
    """Visual tokens of stage 0..n_stages: floor(N * ratio^s), at least 1 (stage 0 = all N)."""
    return [n] + [max(1, int(n * ratio**s)) for s in range(1, n_stages + 1)]


def _per_layer(n: int, ratio: float, layers: tuple[int, ...], n_layers: int) -> list[int]:
    counts = _stage_counts(n, ratio, len(layers))
    out, stage = [], 0
    for i in range(n_layers):
        while stage < len(layers) and layers[stage] <= i:
            stage += 1
        out.append(counts[stage])
    return out


def _used_layers(params: dict, n_layers: int | None) -> tuple[int, ...]:
    """The model's boundary layers: ``layers`` as they are when ``absolute_layers`` (completed
    params), else mapped to ``n_layers``."""
    if params.get("absolute_layers"):
        return tuple(int(v) for v in params["layers"])
    if n_layers is None:
        raise ValueError("n_layers: PyramidDrop's published layers need the model's depth to be mapped")
    return map_layers(params["layers"], n_layers, name="layers")


def pdrop_ratio(n: int, k: int, params: dict, n_layers: int) -> float:
    """lambda for N visual tokens and budget K: the explicit ``ratio`` or the solved one (see the
    module docstring). ValueError naming ``k`` when K is below the smallest reachable average."""
    if params.get("ratio") is not None:
        return float(params["ratio"])
    layers = _used_layers(params, n_layers)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: PyramidDrop's budget (visual tokens averaged over layers) must be an int >= 1, got {k!r}")
    if k >= n:
        return 1.0

    def average(lam: float) -> float:
        return sum(_per_layer(n, lam, layers, n_layers)) / n_layers

    low = (layers[0] * n + (n_layers - layers[0])) / n_layers  # lambda -> 0: all N before the first boundary, then 1
    if k < low:
        raise ValueError(
            f"k: PyramidDrop cannot average {k} visual tokens over {n_layers} layers with boundaries {list(layers)}: "
            f"the first {layers[0]} layers see all {n}, so the smallest reachable average is {low:.2f}; "
            f"raise k or pass an earlier first layer (layers=...)"
        )
    lo, hi = 0.0, 1.0  # average(lo) <= k < average(hi)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if mid > 0 and average(mid) <= k:
            lo = mid
        else:
            hi = mid
    return lo  # > 0: below 1/N every stage after the first keeps 1 token, so average(2^-60) = low <= k


def pdrop_schedule(n: int, k: int, params: dict, n_layers: int) -> list[int]:
    """The visual tokens each of the ``n_layers`` layers sees (its input), for N = ``n`` visual
    tokens, budget ``k`` and ``params`` (completed by :func:`pdrop_params`, or as a run gives
    them: published layers are then mapped to ``n_layers``). Its mean is the
    layer-average that K stands for (<= K and the closest reachable with ``ratio=None``)."""
    return _per_layer(int(n), pdrop_ratio(n, k, params, n_layers), _used_layers(params, n_layers), int(n_layers))


def pdrop_select(attention: torch.Tensor, image_start: torch.Tensor, num_visual: int, keep: int) -> torch.Tensor:
    """One PyramidDrop drop: the ``keep`` visual tokens (indices 0..num_visual-1, ascending) with
    the largest attention of the last instruction token, ``attention`` (P, R) over sequence
    positions (visual tokens of row p at image_start[p] ..). Near-ties go to the lower index."""
    return top_visual_tokens(attention, image_start, num_visual, keep)


def _describe(params: dict) -> str:
    notes = []
    if tuple(params.get("layers", DEFAULT_LAYERS)) != DEFAULT_LAYERS:
        notes.append("layers " + ",".join(str(int(v)) for v in params["layers"]))
    if params.get("ratio") is not None:
        notes.append(f"λ={params['ratio']:g}")
    return f"PyramidDrop ({', '.join(notes)})" if notes else "PyramidDrop"


class PyramidDropPruner:
    """PyramidDrop for one prompt batch (a :class:`~visprune.pruning.registry.LayerPruner`): at
    each boundary l, rank with layer l's own attention and keep that stage's count."""

    renumber = True

    def __init__(self, params: dict, k: int) -> None:
        if not params.get("absolute_layers"):
            raise ValueError("params: PyramidDrop's parameters must be completed for the model "
                             "(pdrop_params(..., n_layers=D)) before pruning")
        self.params = params
        self.k = k
        self.layers = _used_layers(params, None)
        self.schedule: list[int] | None = None

    def before_layer(self, i: int, layer: nn.Module, state: dict) -> torch.Tensor | None:
        if self.schedule is None:  # the first call (i = 0) sees all N visual tokens
            # the depth D (for the layer-average) from the decoder layer's own config
            n_layers = int(layer.self_attn.config.num_hidden_layers)
            self.schedule = pdrop_schedule(state["num_visual"], self.k, self.params, n_layers)
        if i not in self.layers:
            return None
        target = self.schedule[i]
        if target >= state["num_visual"]:
            return None
        attention = last_token_attention(layer, state["hidden"], state["rope"], state["valid"], state["query_row"])
        return pdrop_select(attention, state["image_start"], state["num_visual"], target)


@register("pdrop", stage="in-llm", label="PyramidDrop", color="#e377c2", inputs=("n_layers",),
          pruner=PyramidDropPruner, describe=_describe, source="https://github.com/Cooperx521/PyramidDrop",
          convention="K = the visual tokens averaged over the language model's layers",
          selector_flops=lambda n, k, d: 3 * 2.0 * n * d,
          check=lambda params, k, n, n_layers: pdrop_ratio(n, k, params, n_layers))  # one query's attention row at each of its 3 layers
def pdrop_params(
    *,
    layers=DEFAULT_LAYERS,
    ratio: float | None = None,
    absolute_layers: bool = False,
    n_layers: int | None = None,
) -> dict:
    """PyramidDrop's parameters, validated and completed (ALGORITHMS.md, "PyramidDrop").

    - ``layers``: the stage boundaries, strictly increasing; published (32-layer) layers mapped
      to the model's depth (:func:`~visprune.pruning._layers.map_layers`), or, with
      ``absolute_layers=True``, the model's own layer indices (1 <= l < D).
    - ``ratio``: lambda in (0, 1], stage s keeping floor(N * lambda^s); None (default) solves
      lambda from the budget K (the layer-average of visual tokens). The released default is
      ``layers=(8, 16, 24), ratio=0.5``.
    - ``n_layers``: the model's depth (filled by the engine); None only validates.

    Returns ``{"layers", "ratio", "absolute_layers"}``. With ``n_layers`` the layers are the
    model's own: published ones are replaced by their mapping and ``absolute_layers`` becomes
    True, so the dict records the layers used and completing it again changes nothing. Without
    ``n_layers`` the parameters are only validated.
    """
    depth = _check_depth(n_layers)
    if not isinstance(absolute_layers, bool):
        raise ValueError(f"absolute_layers: expected True or False, got {absolute_layers!r}")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < float(ratio) <= 1:
            raise ValueError(f"ratio: PyramidDrop's lambda must be a number in (0, 1] or None, got {ratio!r}")
        ratio = float(ratio)
    given = check_absolute_layers(layers, None, minimum=1, name="layers")
    if depth is None:
        mapped = None
    elif absolute_layers:
        mapped = check_absolute_layers(given, depth, minimum=1, name="layers")
    else:
        mapped = map_layers(given, depth, name="layers")
    if mapped is None:
        return {"layers": given, "ratio": ratio, "absolute_layers": absolute_layers}
    return {"layers": mapped, "ratio": ratio, "absolute_layers": True}
