"""Sizes of the toy world's images and the token budgets they imply (DESIGN.md section 3).

Images are 96 x 96 RGB and the toy vision tower uses 8 px patches, so an image gives a 12 x 12
grid of N = 144 visual tokens. LLaVA-1.5's budgets (64, 128, 192 of 576 tokens) map by the same
fractions onto 16, 32 and 48 of 144 (:func:`toy_budget`, :data:`TOY_BUDGETS`).
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 96  # pixels per side
PATCH_SIZE = 8  # the toy vision tower's patch size
GRID = IMAGE_SIZE // PATCH_SIZE  # 12 patches per side
N_TOKENS = GRID * GRID  # 144 visual tokens per image
N_TOKENS_LLAVA = 576  # LLaVA-1.5: 336 px images, 14 px patches, 24 x 24 tokens


def toy_budget(k_real: int, n_real: int = N_TOKENS_LLAVA, n_toy: int = N_TOKENS) -> int:
    """The toy-world token budget that keeps the same fraction as ``k_real`` of ``n_real``.

    ``round(k_real * n_toy / n_real)``, at least 1. With the defaults (576 real tokens, 144 toy
    tokens) the papers' budgets map as 64 -> 16, 128 -> 32, 192 -> 48 (1/9, 2/9, 1/3 of the
    tokens kept).

    >>> [toy_budget(k) for k in (64, 128, 192, 576)]
    [16, 32, 48, 144]
    """
    for name, value in (("k_real", k_real), ("n_real", n_real), ("n_toy", n_toy)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"toy_budget: {name} must be a positive integer, got {value!r}")
    if k_real > n_real:
        raise ValueError(f"toy_budget: k_real={k_real} is more than n_real={n_real} tokens")
    return max(1, int(round(k_real * n_toy / n_real)))


#: The papers' budgets (of 576 tokens) and their toy-world equivalents (of 144).
TOY_BUDGETS = {k: toy_budget(k) for k in (64, 128, 192)}
