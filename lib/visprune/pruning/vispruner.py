"""VisPruner before the language model: important + diverse tokens (ALGORITHMS.md, "VisPruner";
Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in
VLMs", ICCV 2025; released code: https://github.com/Theia-4869/VisPruner,
``llava/model/llava_arch.py``, ``LlavaMetaForCausalLM.encode_images``, with
``llava/model/multimodal_encoder/clip_encoder.py``, ``CLIPVisionTower.feature_select``).

The released code, which this module follows:

- ``feature_select`` reads the feature layer (``mm_vision_select_layer`` = -2: CLIP layer 22) for
  both the patch features (``hidden_states[-2][:, 1:]``) and the attention (``attentions[-2][:, :,
  0, 1:]``, the CLS row over the patches); ``encode_images`` averages it over heads (a ranking
  equal to the summed one this library passes as ``saliency``).
- ``T_imp = int(K * important_ratio)`` (``important_ratio`` defaults to 0.5 in every eval
  script's argument parser), ``T_div = K - T_imp``; ``argsort(descending=True)`` of the attention,
  important = the first T_imp, residual = the rest in that order.
- While ``T_div > 0``: ``r = min(8, R - T_div)``, stop if ``r <= 0``; ``a, b = residual[::2],
  residual[1::2]`` (unit features); ``scores = (a @ b.T).max(-1)``; ``argsort(descending=True)
  [:, r:]`` keeps the even-position tokens after the r highest, **in descending score**, then all
  odd-position ones.
- Kept: important + residual (as a mask: original order), before the projector.

Where this module decides what the released code leaves open (ALGORITHMS.md agrees on the rest):

- Odd R: the even positions are ceil(R / 2) tokens, the odd ones floor(R / 2). (The released
  code indexes its survivors with ``R // 2 - r`` rows and raises an IndexError when R is odd,
  e.g. K = 66 at rho = 0.5, where T_imp = 33 leaves R = 543.)
- r larger than the number of even-position tokens (small budgets, R < 16): all of them are
  dropped, and the loop goes on with the odd ones. (The released code raises: it expands to a
  negative size, e.g. at K = 4.) Neither case arises at the published 64 / 128 / 192 with
  rho = 0.5.
- Ties: the attention is sorted stably (equal scores: the lower patch index). The scores are
  cosine similarities of float32 features (float64 for float64 inputs), so two scores within
  ``delta = rounding_delta(dtype, d)`` count as equal and the one at the lower position of the
  even-position list goes first (the order a stable sort of the released code's scores gives).
  As "within delta" is not transitive, the order is built greedily: repeatedly, among the
  remaining scores within delta of the largest, the lowest position (:func:`tolerant_order`).
  The released code runs in float16 and leaves ties to ``argsort``.
- Cost: the cosine similarities of all N patches are computed once, and each round reads its
  even x odd block from them (the released code recomputes the block every round).

How close this is to the released function (measured on 20 random images per budget, N = 576,
d = 1024, float32 on a CPU, against a transcription of ``encode_images``): with the tolerance set
to 0 the selections are identical for 20 / 20 at K = 64 and 128 and 18 / 20 at K = 192 (the two
others from rounding: one Gram matrix here, a GEMM per round there). With the tolerance, no
selection is identical and about 57 % (K = 64) to 68 % (K = 192) of the tokens agree: the
important half always, the diverse half hardly. The diverse stage is chaotic: each round orders
~270 scores whose sorted neighbours are often within 1e-6 of each other, every swap of two moves
tokens between the even and odd positions of the next round, and the rounds compound it. The
released code is therefore no more reproducible itself (it runs in float16; 1e-7 relative noise
on the features changes 2 to 3 of 20 float32 selections, with or without the tolerance), and the
diverse sets are alike in what the method aims at (mean cosine of each kept token to its nearest
kept one, 20 clustered images: 0.515 released, 0.519 here, 0.554 random at K = 64; 0.672, 0.672,
0.679 at K = 192). What the tolerance buys is that equal scores (duplicate patches) are ordered by
position on every machine instead of by the rounding of one GEMM.
"""

from __future__ import annotations

import heapq

import torch

from visprune.pruning._numerics import _check_real, _descending_order, cosine_similarity_matrix, rounding_delta
from visprune.pruning.registry import register

__all__ = ["DEFAULT_IMPORTANT_RATIO", "ROUND_DROP", "vispruner_select", "vispruner_split", "tolerant_order"]

#: The released default (``--important_ratio``, 0.5 in every eval script's argument parser).
DEFAULT_IMPORTANT_RATIO = 0.5
#: Tokens dropped per round of the diverse stage, at most (released: ``min(8, R - T_div)``).
ROUND_DROP = 8


def vispruner_split(k: int, important_ratio: float = DEFAULT_IMPORTANT_RATIO) -> tuple[int, int]:
    """(T_imp, T_div) = (int(K rho), K - int(K rho)), the released ``int(visual_token_num * important_ratio)``."""
    ratio = _check_real("important_ratio", important_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"important_ratio: the share of important tokens must lie in [0, 1], got {ratio:g}")
    n_imp = int(int(k) * ratio)
    return n_imp, int(k) - n_imp


def tolerant_order(scores: torch.Tensor, delta: float) -> torch.Tensor:
    """Positions of ``scores`` (B, E), largest first, where scores within ``delta`` count as equal.

    Greedy: repeatedly take, among the remaining scores within ``delta`` of the largest remaining
    one, the lowest position. Without two sorted neighbours within delta this is the stable
    descending sort (computed so, vectorised); otherwise each run of sorted neighbours within delta
    of each other (no window crosses the end of such a run) is reordered by the greedy rule.
    Differences are formed in float64, exact for float32 scores.
    """
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, E)
    if scores.shape[1] < 2:
        return order
    values = scores.gather(1, order).double()  # (B, E), non-increasing
    close = (values[:, :-1] - values[:, 1:]) <= delta  # (B, E - 1): sorted neighbours within delta
    if not bool(close.any()):
        return order
    fixed = order.cpu()  # a copy when order is on a GPU; rewritten row by row below
    close_rows = close.any(dim=1).cpu()
    for b in close_rows.nonzero().flatten().tolist():
        pos, val, flags = fixed[b].tolist(), values[b].tolist(), close[b].tolist()
        start = 0
        while start < len(flags):
            if not flags[start]:
                start += 1
                continue
            end = start
            while end < len(flags) and flags[end]:
                end += 1
            # sorted ranks start..end (inclusive) form a run of neighbours within delta
            pos[start:end + 1] = _greedy_run(pos[start:end + 1], val[start:end + 1], delta)
            start = end + 1
        fixed[b] = torch.tensor(pos, dtype=fixed.dtype)
    return fixed.to(order.device)


def _greedy_run(pos: list[int], val: list[float], delta: float) -> list[int]:
    """The greedy order of one run (``val`` non-increasing, ``pos`` their positions)."""
    out: list[int] = []
    heap: list[tuple[int, int]] = []
    taken = [False] * len(pos)
    top = nxt = 0
    while len(out) < len(pos):
        while taken[top]:
            top += 1
        best = val[top]  # the largest remaining score
        while nxt < len(pos) and best - val[nxt] <= delta:  # the window only grows as best falls
            heapq.heappush(heap, (pos[nxt], nxt))
            nxt += 1
        p, i = heapq.heappop(heap)
        out.append(p)
        taken[i] = True
    return out


def _describe(params: dict) -> str:
    ratio = float(params.get("important_ratio", DEFAULT_IMPORTANT_RATIO))
    return "VisPruner" if ratio == DEFAULT_IMPORTANT_RATIO else f"VisPruner ρ={ratio:g}"


def _flops(n: int, k: int, d: int) -> float:
    """The cosine similarities of the N patches, computed once: 2 N^2 d (d: the feature width)."""
    return 2.0 * n * n * d


@register("vispruner", label="VisPruner", color="#bcbd22", source="https://github.com/Theia-4869/VisPruner",
          convention="K tokens enter the language model", selector_flops=_flops, describe=_describe)
def vispruner_select(features, saliency, k, *, important_ratio: float = DEFAULT_IMPORTANT_RATIO):
    """VisPruner's important and diverse tokens (ALGORITHMS.md, "VisPruner"; Zhang et al., ICCV 2025).

    ``features`` (B, N, d): the vision features at the feature layer; ``saliency`` (B, N): the CLS
    attention there (summed or averaged over heads: the same ranking). With
    (T_imp, T_div) = :func:`vispruner_split` (K, ``important_ratio``):

    1. important: the T_imp patches of largest saliency (stable sort: ties to the lower index);
       the residual list is the rest, in that order;
    2. until the list has T_div tokens: with R its length, ``r = min(8, R - T_div)``, score each
       even-position token by its largest cosine similarity to an odd-position one, drop the r
       highest-scoring even ones (all of them if fewer; ties within ``rounding_delta(dtype, d)``
       by :func:`tolerant_order`), and continue with the surviving even ones, in that order,
       followed by the odd ones;
    3. kept: important + residual.

    Returns a LongTensor (B, K) (the registry sorts each row).
    """
    n_imp, n_div = vispruner_split(k, important_ratio)
    ranked = _descending_order(saliency)  # (B, N)
    important, residual = ranked[:, :n_imp], ranked[:, n_imp:]  # (B, T_imp), (B, R)
    if n_div == 0:
        return important
    sim = cosine_similarity_matrix(features)  # (B, N, N)
    delta = rounding_delta(sim.dtype, features.shape[-1])
    rows = torch.arange(sim.shape[0], device=sim.device)[:, None, None]
    while True:
        drop = min(ROUND_DROP, residual.shape[1] - n_div)
        if drop <= 0:
            break
        even, odd = residual[:, 0::2], residual[:, 1::2]  # (B, ceil(R/2)), (B, floor(R/2))
        scores = sim[rows, even[:, :, None], odd[:, None, :]].amax(dim=2)  # (B, E): best similarity to an odd one
        survivors = even.gather(1, tolerant_order(scores, delta)[:, drop:])  # (B, E - drop), descending score
        residual = torch.cat([survivors, odd], dim=1)
    return torch.cat([important, residual], dim=1)
