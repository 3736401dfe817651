"""Adaptive: attention-first selection with an image-aware diversity threshold (ALGORITHMS.md, "Adaptive")."""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F

from visprune.instrument.image_stats import erank_batch

from visprune.pruning._numerics import _as_tensor, _check_real, _descending_order, _work_dtype, cosine_similarity_matrix, rounding_delta
from visprune.pruning.registry import register


ADAPTIVE_DEFAULT_C = 0.1
ADAPTIVE_DEFAULT_TAU_MAX = 0.5


def adaptive_threshold(
    features: Any,
    *,
    erank_ref: float,
    c: float = ADAPTIVE_DEFAULT_C,
    tau_max: float = ADAPTIVE_DEFAULT_TAU_MAX,
    image_erank: Any = None,
) -> torch.Tensor:
    """Per-image distance threshold ``tau = clip(c * erank(X) / erank_ref, 0, tau_max)``: (B,) tensor.

    ALGORITHMS.md, "Adaptive". ``erank(X)`` is the effective rank of the image's N features
    (``visprune.instrument.image_stats.erank_batch``), unless ``image_erank`` (B,) gives it precomputed (the
    SVD dominates the adaptive selector's cost, and an evaluation run computes it anyway).
    ``erank_ref`` is required: the mean erank over a calibration set of images from the same
    vision tower (``erank_batch(calibration_features).mean()``), stored with the run. It has no
    default on purpose: a batch-dependent default would make a sample's selection depend on the
    other images in its batch.
    """
    return _threshold_and_erank(features, erank_ref, c, tau_max, image_erank)[0]


def _threshold_and_erank(features, erank_ref, c, tau_max, image_erank) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, erank), each (B,), for ``adaptive_threshold`` and the adaptive selector."""
    features = _as_tensor(features, "features")
    if features.dim() != 3:
        raise ValueError(f"features: expected shape (B, N, d), got {tuple(features.shape)}")
    if erank_ref is None:
        raise ValueError(
            "erank_ref: required for the adaptive selector: pass the mean erank of a calibration set "
            "(visprune.instrument.image_stats.erank_batch(features).mean())"
        )
    erank_ref = _check_real("erank_ref", erank_ref, low=0.0, low_open=True)
    c = _check_real("c", c, low=0.0)
    tau_max = _check_real("tau_max", tau_max, low=0.0)
    work = _work_dtype(features)
    if image_erank is None:
        erank = erank_batch(features).to(work)  # (B,)
    else:
        if isinstance(image_erank, (list, tuple, numbers.Real)):
            image_erank = torch.tensor(image_erank, dtype=torch.float64)
        erank = _as_tensor(image_erank, "image_erank").to(device=features.device, dtype=work).reshape(-1)
        if erank.shape[0] != features.shape[0]:
            raise ValueError(f"image_erank: expected one value per image ({features.shape[0]}), got {erank.shape[0]}")
        if not bool(torch.isfinite(erank).all()) or bool((erank < 0).any()):
            raise ValueError("image_erank: expected finite non-negative values")
    return (c * erank / erank_ref).clamp(0.0, tau_max), erank


@register("adaptive", label="adaptive", color="#9467bd", inputs=("image_erank",), records=("tau",),
          measured=("erank_ref",), source="AgilePruner-style (Baek et al., ICLR 2026); this project's defaults",
          convention="K tokens enter the language model",
          selector_flops=lambda n, k, d: 2.0 * n * n * d + 2.0 * k * n)
def adaptive_select(
    features,
    saliency,
    k,
    *,
    erank_ref: float | None = None,
    c: float = ADAPTIVE_DEFAULT_C,
    tau_max: float = ADAPTIVE_DEFAULT_TAU_MAX,
    image_erank: Any = None,
):
    """Attention-first selection with an image-aware diversity threshold (ALGORITHMS.md,
    "Adaptive"; after AgilePruner, Baek et al., ICLR 2026).

    Walk the tokens in descending saliency (ties: lower index first); keep a token unless its
    cosine distance ``1 - S`` (clamped to [0, 2]) to an already-kept token is < tau; stop at K. If
    the walk ends with fewer than K, fill with the best remaining tokens by saliency. tau comes
    from ``adaptive_threshold`` (``erank_ref`` required; ``c`` >= 0, ``tau_max`` >= 0,
    ``image_erank`` optional precomputed (B,) erank). tau = 0 gives exactly saliency-only.
    The threshold does not change along the walk (the published method also scales it with the
    selection order; not done here).

    Rounding (ALGORITHMS.md, "SCOPE", "Numerics", applied here): a distance at or below
    ``delta = rounding_delta(dtype, d)`` counts as 0, so a duplicate of a kept token is blocked
    by every tau > 0 whatever its rounding noise, and accepted at tau = 0. Other distances are
    compared with tau exactly (``dist >= tau`` is compatible): tau is a continuous function of
    the image's erank, not a value that distances sit at by construction, so a distance within
    rounding of it is a generic near-tie, which no tolerance would remove (it would only move
    the boundary).

    Returns indices and ``info = {"tau": (B,), "erank": (B,), "n_walk": (B,)}``, n_walk being how
    many tokens the walk accepted before any filling.

    Vectorised form (no Python loop over the N tokens). Call a token *blocked* when its distance
    to some kept token is < tau. The loop runs over acceptances: each step accepts, per image,
    the first token in saliency order that is neither kept nor blocked, then blocks the tokens
    within tau of it. This equals the sequential walk. Proof, by induction over acceptances:
    suppose both have kept the same tokens so far, the last one at walk position q. The walk
    continues from q + 1 and accepts the first token that is not blocked. The loop instead scans
    from the start, but every not-kept token before q was rejected by the walk because it was
    blocked by the kept set at that time; the kept set only grows, so it is still blocked. And
    tokens after q are treated alike by both. So both accept the same next token, or both find
    none (the walk ends).
    """
    tau, erank = _threshold_and_erank(features, erank_ref, c, tau_max, image_erank)  # (B,), (B,)
    batch, n, d = features.shape
    rows = torch.arange(batch, device=features.device)
    order = _descending_order(saliency)  # (B, N): rank r -> token index
    # Work in rank order throughout: row/column r of these matrices is the r-th most salient token.
    ranked = features.gather(1, order.unsqueeze(-1).expand(batch, n, d))  # (B, N, d)
    dist = (1.0 - cosine_similarity_matrix(ranked)).clamp_(0.0, 2.0)  # (B, N, N) cosine distances
    F.threshold_(dist, rounding_delta(dist.dtype, d), 0.0)  # rounding noise around 0 -> exactly 0
    # compatible[b, r, s] = 1 when token s may still be kept next to kept token r (distance >= tau);
    # a token is never compatible with itself, so accepting it also takes it out of the walk.
    compatible = (dist >= tau.to(dist.dtype)[:, None, None]).to(torch.uint8)  # (B, N, N)
    compatible.diagonal(dim1=1, dim2=2).zero_()
    available = torch.ones(batch, n, dtype=torch.uint8, device=features.device)  # not kept, not blocked
    kept = torch.zeros(batch, n, dtype=torch.bool, device=features.device)  # by rank position
    n_walk = torch.zeros(batch, dtype=torch.long, device=features.device)
    for _ in range(k):
        pos = available.argmax(dim=1)  # (B,) first available rank position (0 if none)
        accepted = available[rows, pos].bool()  # (B,) False where the walk has ended
        if not bool(accepted.any()):
            break
        kept[rows, pos] |= accepted
        n_walk += accepted
        available &= compatible[rows, pos, :]  # block what is within tau of the new token
    # Fill: the first (k - n_walk) not-kept tokens in rank order.
    missing = (k - n_walk).unsqueeze(1)  # (B, 1)
    not_kept = ~kept
    kept |= not_kept & (torch.cumsum(not_kept.long(), dim=1) <= missing)
    indices = order[kept].view(batch, k)  # each row has exactly k kept positions
    info = {"tau": tau, "erank": erank, "n_walk": n_walk}
    return indices, info
