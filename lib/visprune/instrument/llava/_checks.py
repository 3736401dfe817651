"""Argument checks and the attention bias shared by the wrapper's parts."""

from __future__ import annotations

from typing import Any

import torch


def _to_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean "may attend" -> additive attention bias (0 or the dtype's most negative value)."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _as_str_list(values: Any, name: str) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{name}: expected a sequence of strings, got one string; wrap it in a list")
    values = list(values)
    if not values:
        raise ValueError(f"{name}: got an empty sequence")
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{name}: expected strings, got {type(v).__name__}")
    return values


def _answer_sets(answer_sets: Any, n_prompts: int) -> list[tuple[str, ...]]:
    """One answer set per prompt: a single set of strings is shared by all prompts."""
    if isinstance(answer_sets, str):
        raise ValueError("answer_sets: expected a set of answers such as ('yes', 'no'), got one string")
    sets = list(answer_sets)
    if sets and all(isinstance(a, str) for a in sets):
        return [tuple(sets)] * n_prompts
    if len(sets) != n_prompts:
        raise ValueError(f"answer_sets: expected one set per question ({n_prompts}), got {len(sets)}")
    out = []
    for s in sets:
        if isinstance(s, str) or not all(isinstance(a, str) for a in s):
            raise ValueError(f"answer_sets: each set must be a sequence of strings, got {s!r}")
        out.append(tuple(s))
    return out


def _image_rows(image_index: Any, n_prompts: int, n_images: int, device: torch.device) -> torch.Tensor:
    """``image_index`` as a (P,) LongTensor; default: prompt i uses image i (then P must equal B)."""
    if image_index is None:
        if n_prompts != n_images:
            raise ValueError(
                f"image_index: {n_prompts} questions but {n_images} images; pass image_index "
                "(the image row each question uses)"
            )
        return torch.arange(n_prompts, device=device)
    rows = torch.as_tensor(image_index, dtype=torch.long)
    if rows.dim() != 1 or rows.numel() != n_prompts:
        raise ValueError(f"image_index: expected {n_prompts} integers, got shape {tuple(rows.shape)}")
    if int(rows.min()) < 0 or int(rows.max()) >= n_images:
        raise ValueError(f"image_index: values must lie in 0..{n_images - 1}")
    return rows.to(device)
