"""SparseVLM inside the language model (ALGORITHMS.md, "SparseVLM"; Zhang et al., ICML 2025;
released code: https://github.com/Gumpest/SparseVLMs, ``llava/model/language_model/
modelling_sparse_llama.py``, ``score.py``, ``utils.py``; its default ``USE_VERSION=1_0``).

1. **Raters**, once, from the language model's input embeddings (the input of layer 0): the
   text tokens after the image up to and including the last prompt token (the released code
   takes ``hidden_states[:, text_token_start:]``, everything after the image in the prefill, i.e.
   "\\n{question} ASSISTANT:"; tokens after ``query_row`` are generated ones and are never read).
   ``M = V T^T`` (visual x text), softmax over the text axis, mean over the visual tokens;
   raters = the text tokens scoring above the mean of that vector (if none does, e.g. a single
   text token, every text token rates: the released code would average an empty set).
2. **Scores** at each stage layer l (published 2, 6, 15): layer l's own attention of the rater
   rows, recomputed from its input (:func:`visprune.pruning._layers.attention_rows`; the
   released code reads the probabilities layer l computes), mean over heads, the current visual
   columns (recycled tokens of earlier stages included), mean over the raters. The drop applies
   to layer l's **output**: layers l+1 .. see only the kept tokens. Keep the top
   ``min(k_l, n_visual - 1)`` (the released ``attn_postprocess_topk`` always drops at least
   one), in original order; near-ties go to the lower index.
3. **Recycling** (``recycle=True``): of the dropped tokens, the top ``floor(0.3 n_drop) + 1`` by
   score (layer l's outputs), clustered into ``floor(n / 10) + 1`` clusters by the released
   density-peak kNN clustering (``cluster_and_merge``): distances ``||x_i - x_j|| / sqrt(d)``;
   density ``exp(-mean of the squared distances to the k nearest tokens, itself included)``
   with **k = the number of clusters**, plus ``1e-6 * U[0, 1)`` noise (the released code draws it
   from torch's global generator; here a generator seeded with ``seed + stage``, the same draws
   for every prompt); a token's parent distance is its distance to the nearest denser token (the
   largest distance of the matrix for the densest); centres = the ``n_clusters`` largest
   ``density x parent distance``; every token joins its nearest centre (centres join their own);
   each cluster's vector is ``sum / (count + 1e-6)`` (the released weights). The clusters, in
   centre order (largest score first), are inserted right after the kept visual tokens
   (:class:`~visprune.pruning.registry.LayerDrop`) and count as visual tokens from then on.
4. Positions renumbered contiguously after each drop (``renumber = True``; the released code
   truncates ``position_ids`` to the new length, and while decoding each layer's new token takes
   its cache length as position).

Budgets (``score.py``, version 1.0): ``k_l`` for 192: (300, 200, 110); 128: (303, 110, 36); 96:
(238, 48, 26) (released, not in ALGORITHMS.md); 64: (66, 30, 17), all of N = 576. On another N,
K is read as the 576-token budget ``b`` with ``round(b * N / 576) == K`` and ``k_l`` becomes
``max(1, round(k_l * N / 576))``; any other K raises ValueError listing the supported budgets,
unless ``schedule`` gives explicit fractions of N per stage (then K is not used). K is the
published budget, not the layer-average: :func:`sparsevlm_schedule` gives the visual tokens per
layer (192 of 576 averages 206.5 over 32 layers, 128 averages 145.41, 64 averages 82.25).

Layers: published layers map to the model's depth with
:func:`~visprune.pruning._layers.map_layers` (``minimum=0``: the scoring layer may be layer 0
on a shallow model, the drop being one layer later; and every mapped layer must be below D - 1,
so that its drop happens); consecutive stage layers l, l + 1 (a shallow model) are handled by
scoring layer l + 1 on the sequence after stage l's drop.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from visprune.pruning._layers import _check_depth, attention_rows, check_absolute_layers, map_layers, ranked, renumbered
from visprune.pruning.registry import LayerDrop, register

__all__ = ["DEFAULT_LAYERS", "BUDGETS", "REFERENCE_N", "sparsevlm_params", "sparsevlm_stage_counts",
           "sparsevlm_schedule", "sparsevlm_raters", "sparsevlm_scores", "sparsevlm_keep", "density_peak_merge",
           "sparsevlm_recycle", "SparseVLMPruner"]

DEFAULT_LAYERS = (2, 6, 15)
REFERENCE_N = 576
#: The released per-stage budgets (score.py, USE_VERSION 1_0), visual tokens of 576.
BUDGETS = {64: (66, 30, 17), 96: (238, 48, 26), 128: (303, 110, 36), 192: (300, 200, 110)}
#: The share of dropped tokens that is recycled (released: ``int(n * 0.3) + 1``).
RECYCLE_SHARE = (3, 10)
#: Noise scale on the densities (released: ``torch.rand(...) * 1e-6``).
DENSITY_NOISE = 1e-6
#: Cluster weights (released: ``all_weight + 1e-6``).
MERGE_EPS = 1e-6


def _describe(params: dict) -> str:
    notes = []
    if tuple(params.get("layers", DEFAULT_LAYERS)) != DEFAULT_LAYERS:
        notes.append("layers " + ",".join(str(int(v)) for v in params["layers"]))
    if not params.get("recycle", True):
        notes.append("no recycling")
    if params.get("schedule") is not None:
        notes.append("schedule " + ",".join(f"{f:g}" for f in params["schedule"]))
    return f"SparseVLM ({', '.join(notes)})" if notes else "SparseVLM"


# ----------------------------------------------------------------------------- budgets


def sparsevlm_stage_counts(n: int, k: int, params: dict) -> tuple[int, ...]:
    """The per-stage kept counts k_l (before the ``n_visual - 1`` cap) for N = ``n``, budget ``k``."""
    if params.get("schedule") is not None:
        return tuple(max(1, int(math.floor(f * n + 0.5))) for f in params["schedule"])
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k: SparseVLM's budget must be an int, got {k!r}")
    matches = [b for b in BUDGETS if int(math.floor(b * n / REFERENCE_N + 0.5)) == k]
    if not matches:
        supported = ", ".join(f"{int(math.floor(b * n / REFERENCE_N + 0.5))} (= {b} of {REFERENCE_N})" for b in BUDGETS)
        raise ValueError(
            f"k: SparseVLM has released budgets only for {', '.join(map(str, BUDGETS))} of {REFERENCE_N} visual tokens; "
            f"with N = {n} that is k in {supported}, got {k}; or pass schedule=(f_1, f_2, f_3), the kept fractions of N"
        )
    budget = min(matches, key=lambda b: abs(b * n / REFERENCE_N - k))
    return tuple(max(1, int(math.floor(c * n / REFERENCE_N + 0.5))) for c in BUDGETS[budget])


def _after_stage(n_visual: int, k_l: int, recycle: bool) -> tuple[int, int, int]:
    """(kept, recycled candidates, clusters) of one stage on ``n_visual`` tokens."""
    kept = min(k_l, n_visual - 1)
    n_drop = n_visual - kept
    if not recycle or n_drop <= 0:
        return kept, 0, 0
    n_rec = (RECYCLE_SHARE[0] * n_drop) // RECYCLE_SHARE[1] + 1
    return kept, n_rec, n_rec // 10 + 1


def sparsevlm_schedule(n: int, k: int, params: dict, n_layers: int) -> list[int]:
    """The visual tokens each of the ``n_layers`` layers sees (its input) for N = ``n`` and
    budget ``k``: all N up to and including the first stage layer, then kept + recycled."""
    layers = _used_layers(params, n_layers)
    counts = sparsevlm_stage_counts(n, k, params)
    per_layer, nv = [], n
    drops = {}
    for layer, k_l in zip(layers, counts):
        kept, _, clusters = _after_stage(nv, k_l, params.get("recycle", True))
        nv = kept + clusters
        drops[layer + 1] = nv
    nv = n
    for i in range(int(n_layers)):
        nv = drops.get(i, nv)
        per_layer.append(nv)
    return per_layer


def _used_layers(params: dict, n_layers: int | None) -> tuple[int, ...]:
    """The model's scoring layers: ``layers`` when ``absolute_layers`` (completed params), else
    mapped to ``n_layers``."""
    if params.get("absolute_layers"):
        return tuple(int(v) for v in params["layers"])
    if n_layers is None:
        raise ValueError("n_layers: SparseVLM's published layers need the model's depth to be mapped")
    return map_layers(params["layers"], n_layers, minimum=0, limit=int(n_layers) - 1, name="layers")


# ----------------------------------------------------------------------------- pure steps


def sparsevlm_raters(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Rater mask (T,) bool over the text tokens: ``visual`` (N, d) and ``text`` (T, d) input
    embeddings; ``softmax(V T^T, over text).mean(over visual) > its mean`` (all True if none)."""
    relation = (visual.float() @ text.float().T).softmax(dim=1).mean(dim=0)  # (T,)
    raters = relation > relation.mean()
    return raters if bool(raters.any()) else torch.ones_like(raters)


def sparsevlm_scores(attention: torch.Tensor, rater_rows: torch.Tensor, visual_start: int, num_visual: int) -> torch.Tensor:
    """Scores (N',) of the visual tokens: ``attention`` (R, T) rows of the raters (or (T, T)
    with ``rater_rows`` selecting them; pass ``None`` when ``attention`` already holds the rater
    rows), columns ``visual_start .. + num_visual``, mean over the raters."""
    rows = attention if rater_rows is None else attention[rater_rows]
    return rows[:, visual_start: visual_start + num_visual].float().mean(dim=0)


def sparsevlm_keep(scores: torch.Tensor, k_l: int) -> torch.Tensor:
    """The kept visual tokens (P, K'') ascending for ``scores`` (P, N'): the top
    ``min(k_l, N' - 1)``, near-ties to the lower index."""
    kept = min(int(k_l), scores.shape[1] - 1)
    if kept < 1:
        raise ValueError(f"k: SparseVLM cannot keep any of {scores.shape[1]} visual tokens (k_l = {k_l})")
    return ranked(scores, kept).sort(dim=1).values


def density_peak_merge(x: torch.Tensor, n_clusters: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The released density-peak kNN clustering (``cluster_and_merge``) of ``x`` (n, d) into
    ``n_clusters`` vectors (n_clusters, d), float32, in centre order (see the module docstring);
    ``noise`` (n,) in [0, 1) is scaled by 1e-6 and added to the densities (None: no noise)."""
    x = x.float()
    n, d = x.shape
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters: expected 1..{n}, got {n_clusters}")
    dist = torch.cdist(x[None], x[None], compute_mode="donot_use_mm_for_euclid_dist")[0] / math.sqrt(d)  # (n, n)
    nearest = dist.topk(n_clusters, dim=1, largest=False).values  # itself (0) included
    density = torch.exp(-(nearest**2).mean(dim=1))
    if noise is not None:
        density = density + noise.to(density) * DENSITY_NOISE
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    parent = torch.where(denser, dist, dist.max()).min(dim=1).values
    centres = ranked((parent * density)[None], n_clusters)[0]  # (C,) largest score first
    assign = dist[centres].argmin(dim=0)  # (n,) nearest centre, first on exact ties
    assign[centres] = torch.arange(n_clusters, device=x.device)
    sums = torch.zeros(n_clusters, d, device=x.device).index_add_(0, assign, x)
    counts = torch.zeros(n_clusters, device=x.device).index_add_(0, assign, torch.ones(n, device=x.device))
    return sums / (counts[:, None] + MERGE_EPS)


def sparsevlm_recycle(dropped: torch.Tensor, scores: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Recycled tokens (E, d) from the dropped tokens' hidden states ``dropped`` (n_drop, d) (layer
    l's outputs) and their ``scores`` (n_drop,): the top ``floor(0.3 n_drop) + 1`` by score,
    clustered into ``floor(n / 10) + 1``. ``noise``: (n,) uniform draws for the densities."""
    n_drop = dropped.shape[0]
    n_rec = (RECYCLE_SHARE[0] * n_drop) // RECYCLE_SHARE[1] + 1
    order = ranked(scores[None].float(), n_rec)[0]
    return density_peak_merge(dropped[order], n_rec // 10 + 1, noise)


# ----------------------------------------------------------------------------- the pruner


class SparseVLMPruner:
    """SparseVLM for one prompt batch (a :class:`~visprune.pruning.registry.LayerPruner`)."""

    renumber = True

    def __init__(self, params: dict, k: int) -> None:
        if not params.get("absolute_layers"):
            raise ValueError("params: SparseVLM's parameters must be completed for the model "
                             "(sparsevlm_params(..., n_layers=D)) before pruning")
        self.params = params
        self.k = k
        self.layers = _used_layers(params, None)
        self.recycle = bool(params.get("recycle", True))
        self.seed = int(params.get("seed", 0))
        self.counts: tuple[int, ...] | None = None
        self.raters: list[torch.Tensor] | None = None  # per prompt: rater offsets after the image
        self.pending: tuple[int, torch.Tensor] | None = None  # (stage, scores (P, N')) to drop before the next layer

    def _score(self, layer: nn.Module, hidden, rope, valid, image_start, num_visual: int) -> torch.Tensor:
        scores = []
        for p, offsets in enumerate(self.raters):
            text_start = int(image_start[p]) + num_visual
            rows = (text_start + offsets.to(hidden.device))[None]  # (1, R)
            att = attention_rows(layer, hidden[p: p + 1], (rope[0][p: p + 1], rope[1][p: p + 1]), valid[p: p + 1], rows)
            scores.append(sparsevlm_scores(att[0], None, int(image_start[p]), num_visual))
        return torch.stack(scores)  # (P, N')

    def before_layer(self, i: int, layer: nn.Module, state: dict) -> torch.Tensor | LayerDrop | None:
        hidden, image_start, nv = state["hidden"], state["image_start"], state["num_visual"]
        if self.raters is None:  # layer 0's input: the input embeddings
            self.counts = sparsevlm_stage_counts(nv, self.k, self.params)
            row = state["query_row"]
            self.raters = []
            for p in range(hidden.shape[0]):
                start = int(image_start[p])
                text = hidden[p, start + nv: row + 1]
                if text.shape[0] < 1:
                    raise ValueError("query_row: SparseVLM needs at least one prompt token after the image")
                mask = sparsevlm_raters(hidden[p, start: start + nv], text)
                self.raters.append(mask.nonzero()[:, 0].cpu())
        drop = None
        rope, valid = state["rope"], state["valid"]
        if self.pending is not None:
            stage, scores = self.pending
            self.pending = None
            keep = sparsevlm_keep(scores, self.counts[stage])  # (P, K'')
            insert = None
            if self.recycle:
                merged = []
                for p in range(hidden.shape[0]):
                    dropped = torch.ones(nv, dtype=torch.bool, device=keep.device)
                    dropped[keep[p]] = False
                    idx = dropped.nonzero()[:, 0]
                    if idx.numel() == 0:
                        break
                    gen = torch.Generator().manual_seed(self.seed + stage)
                    n_rec = (RECYCLE_SHARE[0] * idx.numel()) // RECYCLE_SHARE[1] + 1
                    noise = torch.rand(n_rec, generator=gen)
                    start = int(image_start[p])
                    merged.append(sparsevlm_recycle(hidden[p, start + idx.to(hidden.device)], scores[p, idx.to(scores.device)], noise))
                if len(merged) == hidden.shape[0]:
                    insert = torch.stack(merged).to(device=hidden.device, dtype=hidden.dtype)  # (P, E, d)
            drop = LayerDrop(keep.to(hidden.device), insert)
            if i in self.layers:  # a stage at the very next layer scores the sequence after this drop
                hidden, valid, _, rope = renumbered(hidden, valid, state["positions"], rope, image_start, nv,
                                                    drop.keep, insert)
                nv = keep.shape[1] + (0 if insert is None else insert.shape[1])
        if i in self.layers:
            stage = self.layers.index(i)
            self.pending = (stage, self._score(layer, hidden, rope, valid, image_start, nv))
        return drop


@register("sparsevlm", stage="in-llm", label="SparseVLM", color="#aec7e8", inputs=("n_layers",),
          pruner=SparseVLMPruner, describe=_describe, source="https://github.com/Gumpest/SparseVLMs",
          convention="K = the published budget (192/128/64 of 576); the visual tokens averaged over layers "
                     "are reported beside it")
def sparsevlm_params(
    *,
    layers=DEFAULT_LAYERS,
    absolute_layers: bool = False,
    recycle: bool = True,
    seed: int = 0,
    schedule=None,
    n_layers: int | None = None,
) -> dict:
    """SparseVLM's parameters, validated and completed (ALGORITHMS.md, "SparseVLM").

    - ``layers``: the scoring layers (the drop is one layer later), strictly increasing;
      published (32-layer) layers mapped to the model's depth, or with ``absolute_layers=True``
      the model's own indices (0 <= l < D - 1).
    - ``recycle``: insert the recycled clusters (the released method) or only drop.
    - ``seed``: the seed of the density noise of the clustering.
    - ``schedule``: None (the released budgets, scaled to N; needs three layers) or one kept
      fraction of N in (0, 1] per layer.
    - ``n_layers``: the model's depth (filled by the engine); None only validates.

    Returns the parameters; with ``n_layers`` the layers are the model's own (published ones
    replaced by their mapping, ``absolute_layers`` True), so completing again changes nothing.
    """
    depth = _check_depth(n_layers)
    for name, value in (("absolute_layers", absolute_layers), ("recycle", recycle)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected True or False, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    given = check_absolute_layers(layers, None, minimum=0, name="layers")
    if schedule is not None:
        if isinstance(schedule, (str, bytes)) or not hasattr(schedule, "__iter__"):
            raise ValueError(f"schedule: expected one kept fraction of N per layer, got {schedule!r}")
        schedule = tuple(schedule)
        if len(schedule) != len(given) or any(
            isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < float(f) <= 1 for f in schedule
        ):
            raise ValueError(f"schedule: expected {len(given)} fractions in (0, 1], one per layer, got {schedule!r}")
        schedule = tuple(float(f) for f in schedule)
    elif len(given) != 3:
        raise ValueError(f"layers: the released budgets have three stages; with {len(given)} layers pass schedule=(...)")
    if depth is None:
        mapped = None
    elif absolute_layers:
        mapped = check_absolute_layers(given, depth, minimum=0, limit=depth - 1, name="layers")
    else:
        mapped = map_layers(given, depth, minimum=0, limit=depth - 1, name="layers")
    if mapped is not None:
        given, absolute_layers = mapped, True
    return {"layers": given, "absolute_layers": absolute_layers, "recycle": recycle, "seed": int(seed),
            "schedule": schedule}
