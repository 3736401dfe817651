"""VisionZip before the language model: dominant + contextual tokens (ALGORITHMS.md, "VisionZip";
Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025;
released code: https://github.com/dvlab-research/VisionZip, ``visionzip/clip_encoder.py``,
``CLIPVisionTower_VisionZip.forward``, with ``visionzip/utils.py`` and ``visionzip/main.py``).

The released code, which this module follows:

- It reads CLIP's layer 22 (``hidden_states[-2]``, ``attentions[-2]``; ``apply_info`` marks
  layer index 22 of 24 to keep its ``metric``): the hidden states there, CLS included, are the
  vectors merged, and ``metric`` is that layer's keys (``k_proj`` of the layer-normed input, before
  any scaling) averaged over heads (``CLIPAttention_forward`` returns ``raw_key_states.mean(1)``).
- Dominant: ``cls_attention.sum(dim=1).topk(dominant_num)``, the CLS row of the attention summed
  over heads, where ``visionzip(model, dominant=54, contextual=10)`` passes ``dominant - 1`` to
  ``topk``: the CLS token is kept and counts toward ``dominant``. The kept tokens are taken with a
  mask, so they come out in index order, CLS first.
- Contextual: the other patches, in index order (a mask again), with their keys divided by their
  norms; ``step = max(1, R // contextual)`` and targets ``arange(0, R, step)[:contextual]``; every
  non-target is assigned to the ``argmax`` of its key similarity to the targets; each target's
  hidden state plus the mean of its assigned ones (``counts.clamp(min=1)``: plus 0 if none).
- Output ``cat([dominant_tokens, contextual_tokens])``, before the projector.

Where this module decides what the released code leaves open (ALGORITHMS.md agrees on the rest):

- The budget split: the released function takes ``dominant`` and ``contextual`` as given (its
  README and paper use 54 + 10, 108 + 20 and 162 + 30, a 54 : 10 ratio). Here ``dominant``
  defaults to 54/64 of K rounded half up, ``(27 K + 16) // 32`` (64, 128, 192 give the published
  splits; ALGORITHMS.md's "84/16" is this ratio, 84.4 %), and C = K - D.
- C = 0 (``dominant=K``, or K <= 3 by default): no contextual tokens (the released code divides
  by ``contextual`` and fails). R < C cannot happen: R = N - (D - 1) and C = K - D give
  R - C = N - K + 1 >= 1, since the CLS token counts toward the budget but is not a patch, so
  every target exists and at least one patch is merged.
- Ties: the released ``topk`` and ``argmax`` leave them to the kernel. Here the dominant patches
  are the top D - 1 of a stable descending sort (equal scores: the lower index), and a patch goes
  to the lowest target whose similarity is within ``rounding_delta(dtype, d_head)`` of its best
  (as :func:`visprune.pruning._numerics._first_within`); keys are compared in float32 (float64
  for float64 inputs), where the released code runs in the model's float16.
- A zero key has similarity 0 to every target (``F.normalize``); the released division gives NaN.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from visprune.pruning._numerics import _as_tensor, _descending_order, _work_dtype, rounding_delta
from visprune.pruning.registry import MergedTokens, register

__all__ = ["COST_HEADS", "visionzip_merge", "visionzip_split", "visionzip_targets"]


def visionzip_split(k: int, dominant: int | None = None) -> tuple[int, int]:
    """The budget split (D, C), D + C = K: D tokens kept (the CLS token and D - 1 patches), C merged.

    D defaults to 54/64 of K rounded half up, ``(27 K + 16) // 32`` (64 -> 54 + 10,
    128 -> 108 + 20, 192 -> 162 + 30); ``dominant`` overrides it (1 <= dominant <= K).
    """
    if dominant is None:
        d = (27 * int(k) + 16) // 32
    elif isinstance(dominant, bool) or not isinstance(dominant, numbers.Integral) or not 1 <= dominant <= k:
        raise ValueError(f"dominant: the kept tokens (the CLS token included) must be an int in 1..K = {k}, got {dominant!r}")
    else:
        d = int(dominant)
    return d, int(k) - d


def visionzip_targets(r: int, c: int) -> list[int]:
    """Positions, among the R remaining patches in index order, of the C merge targets: uniform
    stride ``step = max(1, R // C)``, positions 0, step, 2 step, ..., the first C (none for C = 0)."""
    if c == 0:
        return []
    step = max(1, r // c)
    return list(range(0, r, step))[:c]


def _check_vision_inputs(cls_feature, vision_keys, batch: int, n: int, d: int, device: torch.device):
    if cls_feature is None or vision_keys is None:
        missing = "cls_feature" if cls_feature is None else "vision_keys"
        raise ValueError(f"{missing}: VisionZip needs the vision tower's CLS feature and keys; "
                         f"run it through PrunedLlava.select_tokens (or pass cls_feature= and vision_keys=)")
    cls_feature = _as_tensor(cls_feature, "cls_feature")
    vision_keys = _as_tensor(vision_keys, "vision_keys")
    if tuple(cls_feature.shape) != (batch, d) or not cls_feature.is_floating_point():
        raise ValueError(f"cls_feature: expected a float tensor of shape (B, d_v) = {(batch, d)}, "
                         f"got {tuple(cls_feature.shape)} {cls_feature.dtype}")
    if vision_keys.dim() != 3 or tuple(vision_keys.shape[:2]) != (batch, 1 + n) or not vision_keys.is_floating_point():
        raise ValueError(f"vision_keys: expected a float tensor of shape (B, 1 + N, d_head) = ({batch}, {1 + n}, d_head), "
                         f"the feature layer's keys averaged over heads, CLS first; got {tuple(vision_keys.shape)}")
    for name, value in (("cls_feature", cls_feature), ("vision_keys", vision_keys)):
        if value.device != device:
            raise ValueError(f"{name}: is on {value.device} but features are on {device}; put both on one device")
        if value.numel() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
    return cls_feature, vision_keys


def _describe(params: dict) -> str:
    return "VisionZip" if params.get("dominant") is None else f"VisionZip (D={int(params['dominant'])})"


#: Heads of the vision tower assumed by the cost formula (CLIP ViT-L/14: 16 heads of width 64).
COST_HEADS = 16


def _flops(n: int, k: int, d: int) -> float:
    """``2 (R - C) C d / 16 + (R - C) d``: the key similarities of the R - C merged patches to the
    C targets (keys d_head = d / 16 wide, CLIP ViT-L/14's heads) and their merge sums, with (D, C)
    the default split and R = N - D + 1; d is the vision feature width (what the engine passes).
    The ranking by saliency and the head average of the keys are left out."""
    dom, c = visionzip_split(k)
    merged = n - dom + 1 - c
    return 2.0 * merged * c * d / COST_HEADS + float(merged * d)


@register("visionzip", label="VisionZip", color="#17becf", output="tokens", inputs=("cls_feature", "vision_keys"),
          source="https://github.com/dvlab-research/VisionZip",
          convention="K tokens enter the language model (the CLS token among them)",
          selector_flops=_flops, describe=_describe)
def visionzip_merge(features, saliency, k, *, dominant: int | None = None, cls_feature=None, vision_keys=None):
    """VisionZip's dominant and contextual tokens (ALGORITHMS.md, "VisionZip"; Yang et al., CVPR 2025).

    ``features`` (B, N, d_v): the patch hidden states at the feature layer (CLS dropped);
    ``saliency`` (B, N): the CLS token's attention to each patch there, summed over heads;
    ``cls_feature`` (B, d_v): the CLS hidden state there; ``vision_keys`` (B, 1 + N, d_head): that
    layer's keys averaged over heads, CLS first (both filled by the model wrapper).

    With (D, C) = :func:`visionzip_split` (K, ``dominant``):

    1. dominant: the D - 1 patches of largest saliency (equal scores: the lower index), in index
       order, after the CLS token;
    2. the R = N - D + 1 other patches, in index order; targets at the positions
       :func:`visionzip_targets` (R, C); every other one is assigned to the target whose unit key
       is most similar (near-ties within ``rounding_delta(dtype, d_head)``: the lower target);
    3. contextual token = the target's feature + the mean of its assigned patches' features (+ 0
       if none).

    Returns :class:`MergedTokens`: ``tokens`` (B, K, d_v) = [CLS, dominant patches, contextual
    tokens in target order] in the features' dtype (computed in float32, float64 for float64
    features); ``sources`` (B, K) = [-1, dominant patch indices, target patch indices].
    """
    batch, n, d = features.shape
    cls_feature, vision_keys = _check_vision_inputs(cls_feature, vision_keys, batch, n, d, features.device)
    dom, c = visionzip_split(k, dominant)
    work = _work_dtype(features)
    x = features.to(work)  # (B, N, d_v)
    device = x.device

    # 1. Dominant patches: the top D - 1 by saliency (stable: ties to the lower index), in index order.
    dominant_idx = torch.sort(_descending_order(saliency)[:, : dom - 1], dim=1).values  # (B, D - 1)
    kept = torch.ones(batch, n, dtype=torch.bool, device=device)
    kept.scatter_(1, dominant_idx, False)
    rest = kept.nonzero()[:, 1].reshape(batch, n - dom + 1)  # (B, R): the remaining patches, ascending
    tokens = [cls_feature.to(work)[:, None], x.gather(1, dominant_idx[..., None].expand(-1, -1, d))]
    sources = [torch.full((batch, 1), -1, dtype=torch.long, device=device), dominant_idx]

    # 2.-3. Contextual tokens: uniform-stride targets, every other remaining patch merged into the
    # target of most similar key.
    if c > 0:
        r = rest.shape[1]
        is_target = torch.zeros(r, dtype=torch.bool, device=device)
        is_target[torch.tensor(visionzip_targets(r, c), dtype=torch.long, device=device)] = True
        target_idx, merged_idx = rest[:, is_target], rest[:, ~is_target]  # (B, C), (B, R - C)
        keys = F.normalize(vision_keys[:, 1:].to(work), dim=-1)  # (B, N, d_head), unit rows
        head = keys.shape[-1]
        target_keys = keys.gather(1, target_idx[..., None].expand(-1, -1, head))  # (B, C, d_head)
        merged_keys = keys.gather(1, merged_idx[..., None].expand(-1, -1, head))  # (B, R - C, d_head)
        sim = torch.bmm(merged_keys, target_keys.transpose(1, 2))  # (B, R - C, C)
        delta = rounding_delta(work, head)
        near_best = sim >= sim.amax(dim=2, keepdim=True) - delta
        assign = near_best.to(torch.uint8).argmax(dim=2)  # (B, R - C): the lowest target within delta
        merged_x = x.gather(1, merged_idx[..., None].expand(-1, -1, d))  # (B, R - C, d_v)
        sums = torch.zeros(batch, c, d, dtype=work, device=device).scatter_add_(
            1, assign[..., None].expand(-1, -1, d), merged_x)  # (B, C, d_v)
        counts = torch.zeros(batch, c, dtype=work, device=device).scatter_add_(
            1, assign, torch.ones_like(assign, dtype=work))  # (B, C)
        contextual = x.gather(1, target_idx[..., None].expand(-1, -1, d)) + sums / counts.clamp(min=1)[..., None]
        tokens.append(contextual)
        sources.append(target_idx)
    return MergedTokens(torch.cat(tokens, dim=1).to(features.dtype), torch.cat(sources, dim=1), {})
