"""Random: K tokens drawn uniformly without replacement (ALGORITHMS.md, "Random")."""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from visprune.pruning.registry import register


def _row_seed(seed: int, sample_seed: int) -> int:
    """A 64-bit generator seed mixed from (seed, sample_seed) by NumPy's SeedSequence.

    SeedSequence is a documented, version-stable hash, so nearby pairs give unrelated streams.
    """
    return int(np.random.SeedSequence([seed, sample_seed]).generate_state(1, dtype=np.uint64)[0])


@register("random", label="random", color="#7f7f7f", inputs=("sample_seeds",), source="(control) uniform draw",
          convention="K tokens enter the language model", selector_flops=lambda n, k, d: 0.0)
def random_select(features, saliency, k, *, seed: int = 0, sample_seeds: Sequence[int] | torch.Tensor | None = None):
    """K tokens drawn uniformly without replacement (ALGORITHMS.md, "Random").

    Each row gets its own CPU ``torch.Generator`` seeded from ``(seed, sample_seeds[row])``
    (mixed by NumPy's SeedSequence) and draws ``torch.randperm(N)[:K]``. With
    ``sample_seeds=None`` row r uses sample seed r, so a batch's rows differ from each other and
    the result is deterministic per (seed, batch position). To make a sample's draw independent
    of the batch it lands in, pass a stable per-sample integer (e.g. its dataset index) as
    ``sample_seeds`` (length B, non-negative). Draws happen on the CPU and are moved to the
    features' device, so CPU and CUDA inputs give the same indices.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    batch, n = features.shape[:2]
    if sample_seeds is None:
        row_seeds = list(range(batch))
    else:
        values = sample_seeds.tolist() if isinstance(sample_seeds, (torch.Tensor, np.ndarray)) else list(sample_seeds)
        if len(values) != batch:
            raise ValueError(f"sample_seeds: expected one integer per image ({batch}), got {len(values)}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"sample_seeds: expected non-negative integers, got {v!r}")
        row_seeds = [int(v) for v in values]
    rows = []
    for row_seed in row_seeds:
        gen = torch.Generator(device="cpu").manual_seed(_row_seed(int(seed), row_seed))
        rows.append(torch.randperm(n, generator=gen)[:k])
    indices = torch.stack(rows) if rows else torch.empty(0, k, dtype=torch.long)
    return indices.to(features.device)


# ----------------------------------------------------------------------------------------------
# Saliency-only
# ----------------------------------------------------------------------------------------------

