"""Plain downsampling, a control (ALGORITHMS.md, "Controls"): average-pool the patch grid.

What any pruning method should beat: no scores, no similarities, just a coarser image. The
G x G patch grid (row-major, G = sqrt(N) = 24 for LLaVA-1.5) is average-pooled to the largest
square grid with at most K cells, g = floor(sqrt(K)) (64 -> 8 x 8, 128 -> 11 x 11 = 121,
192 -> 13 x 13 = 169), before the projector. Fewer than K tokens enter the language model when
K is not a square; the run records how many did.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from visprune.pruning._numerics import _work_dtype
from visprune.pruning.registry import MergedTokens, register

__all__ = ["downsample_merge", "pooled_grid", "cell_starts"]


def pooled_grid(k: int, grid_size: int) -> int:
    """The side g of the pooled grid: floor(sqrt(K)), at most the patch grid's side G."""
    return min(math.isqrt(int(k)), int(grid_size))


def cell_starts(grid_size: int, g: int) -> list[int]:
    """First row (or column) of each of the g cells of adaptive average pooling over G = ``grid_size``
    rows: ``floor(i * G / g)`` (PyTorch's ``adaptive_avg_pool2d``; cell i ends at ceil((i + 1) G / g),
    so neighbouring cells overlap by a row when g does not divide G)."""
    return [(i * grid_size) // g for i in range(g)]


def _grid_side(n: int, grid_size) -> int:
    if grid_size is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"grid_size: N = {n} visual tokens is not a square grid; pass grid_size=... (patches per side)")
        return side
    if isinstance(grid_size, bool) or not isinstance(grid_size, numbers.Integral) or grid_size < 1:
        raise ValueError(f"grid_size: expected a positive int (patches per side), got {grid_size!r}")
    if int(grid_size) ** 2 != n:
        raise ValueError(f"grid_size: a {grid_size} x {grid_size} grid has {int(grid_size) ** 2} patches, "
                         f"but there are N = {n} visual tokens")
    return int(grid_size)


def _flops(n: int, k: int, d: int) -> float:
    """One add per feature entry (N d) for the cell sums; the g^2 d divisions are left out."""
    return float(n * d)


@register("downsample", label="downsampling", color="#8c8c8c", output="tokens", inputs=("grid_size",),
          source="(control) average pooling of the patch grid",
          convention="floor(sqrt(K))^2 <= K pooled tokens enter the language model", selector_flops=_flops)
def downsample_merge(features, saliency, k, *, grid_size: int | None = None):
    """Average-pool the patch grid to floor(sqrt(K)) x floor(sqrt(K)) cells (ALGORITHMS.md, "Controls").

    ``features`` (B, N, d): the patches in row-major order of a G x G grid, G = ``grid_size``
    (filled by the model wrapper; None: sqrt(N), which must then be an integer). ``saliency`` is
    not used. The grid is pooled with ``torch.nn.functional.adaptive_avg_pool2d`` to g x g,
    g = floor(sqrt(K)) (K = N gives g = G, every patch as it is).

    Returns :class:`MergedTokens`: ``tokens`` (B, g^2, d), the cell means in row-major order, in
    the features' dtype (averaged in float32, or float64 for float64 features); ``sources``
    (B, g^2): each cell's top-left patch, ``floor(i G / g) * G + floor(j G / g)`` for cell (i, j).

        >>> import torch
        >>> x = torch.arange(16.0).reshape(1, 16, 1)   # a 4 x 4 grid, one channel
        >>> out = downsample_merge(x, torch.ones(1, 16), 4)
        >>> out.tokens.flatten().tolist(), out.sources.tolist()
        ([2.5, 4.5, 10.5, 12.5], [[0, 2, 8, 10]])
    """
    batch, n, d = features.shape
    side = _grid_side(n, grid_size)
    g = pooled_grid(k, side)
    grid = features.to(_work_dtype(features)).reshape(batch, side, side, d).permute(0, 3, 1, 2)  # (B, d, G, G)
    pooled = F.adaptive_avg_pool2d(grid, (g, g))  # (B, d, g, g)
    tokens = pooled.permute(0, 2, 3, 1).reshape(batch, g * g, d).to(features.dtype)  # (B, g^2, d), row-major
    starts = torch.tensor(cell_starts(side, g), dtype=torch.long, device=features.device)
    sources = (starts[:, None] * side + starts[None, :]).reshape(1, g * g).expand(batch, -1)
    return MergedTokens(tokens, sources.contiguous(), {})
