"""DivPrune: greedy max-min diversity on cosine distance (ALGORITHMS.md, "DivPrune")."""

from __future__ import annotations

import math

import torch

from visprune.pruning._numerics import _first_within, cosine_similarity_matrix, rounding_delta
from visprune.pruning.registry import register


@register("divprune", label="DivPrune", color="#2ca02c", feature_space="projected",
          source="https://github.com/vbdi/divprune", convention="K tokens enter the language model",
          selector_flops=lambda n, k, d: 2.0 * n * n * d + 2.0 * k * n)  # distances, then k min-updates
def divprune_select(features, saliency, k):
    """Greedy max-min (farthest point) selection on cosine distance (ALGORITHMS.md, "DivPrune";
    Alvar et al., CVPR 2025).

    ``D = 1 - S``. The first token is the one whose nearest other token (self excluded) is
    farthest; then, K - 1 times, the unpicked token with the largest minimum distance to the
    picked set. Saliency is not used. With N = 1 the single token is picked. The features used
    are whatever is passed (the vision features by default; pass the projected tokens for the
    released code's variant).

    Ties (ALGORITHMS.md, "SCOPE", "Numerics", applied here): distances come from the same GEMM
    as SCOPE's similarities, and near-duplicate rows give distances that differ by rounding
    noise only, so values within ``delta = rounding_delta(dtype, d)`` of the largest tie and
    the lowest index among them is picked (every argmax below, the first pick included). Once
    every remaining token duplicates a picked one, all their min-distances are noise around 0
    and the lowest remaining indices follow.
    """
    dist = 1.0 - cosine_similarity_matrix(features)  # (B, N, N)
    batch, n, _ = dist.shape
    delta = rounding_delta(dist.dtype, features.shape[-1])
    rows = torch.arange(batch, device=dist.device)
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    nearest_other = dist.masked_fill(eye, math.inf).amin(dim=2)  # (B, N); +inf when N = 1
    picks = torch.empty(batch, k, dtype=torch.long, device=dist.device)
    pick = _first_within(nearest_other, delta)  # (B,)
    picks[:, 0] = pick
    selected = torch.zeros(batch, n, dtype=torch.bool, device=dist.device)
    selected[rows, pick] = True
    min_dist = dist[rows, pick, :].clone()  # (B, N): distance of every token to the picked set
    for step in range(1, k):
        pick = _first_within(min_dist.masked_fill(selected, -math.inf), delta)
        picks[:, step] = pick
        selected[rows, pick] = True
        torch.minimum(min_dist, dist[rows, pick, :], out=min_dist)
    return picks


# ----------------------------------------------------------------------------------------------
# Adaptive (AgilePruner-style)
# ----------------------------------------------------------------------------------------------

# Defaults: a convention of this project, not published values; calibrate them on real features
# (the chapters record tau per image). Cosine distances lie in [0, 2], and near-duplicate patches
# (sky, wall) are much closer than 1. With c = 0.1 an image of average complexity
# (erank = erank_ref) gets tau = 0.1, which skips near-duplicates of kept tokens but little
