"""Images into the vision tower: LLaVA-1.5's pad-to-square preprocessing and the CLS attention row
(DESIGN.md section 5; ALGORITHMS.md, "Pruning methods")."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

#: Image preprocessing (DESIGN.md section 5): "pad" = LLaVA-1.5's evaluation (``image_aspect_ratio:
#: pad``: expand to a square with the processor's mean colour, then the processor); "crop" = the
#: processor alone (resize the shortest edge, centre crop).
PREPROCESS = ("pad", "crop")


def expand_to_square(image: Any, background: Sequence[int]) -> Any:
    """LLaVA's ``expand2square`` (``llava/mm_utils.py``; DESIGN.md section 5): pad to a square.

    ``image``: a PIL image (or an (H, W, 3) uint8 array, taken as RGB). A square image is
    returned as is; otherwise it is pasted on a canvas of side max(w, h) filled with
    ``background`` (one int 0..255 per band, e.g. the processor's mean colour), at offset
    (0, (w - h) // 2) when w > h and ((h - w) // 2, 0) when h > w: centred, the odd pixel of
    spare room going below / to the right. Returns a PIL image of the input's mode.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = _as_rgb(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL image or an (H, W, 3) uint8 array, got {type(image).__name__}")
    bands = len(image.getbands())
    if isinstance(background, (bool, np.bool_)) or not isinstance(background, (list, tuple)) or len(background) != bands:
        raise ValueError(f"background: expected {bands} ints in 0..255 (one per band of a {image.mode} image), got {background!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in background):
        raise ValueError(f"background: expected ints in 0..255, got {background!r}")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    fill = tuple(int(v) for v in background)
    canvas = Image.new(image.mode, (side, side), fill if bands > 1 else fill[0])
    canvas.paste(image, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return canvas


def _as_rgb(image: Any) -> Any:
    """A PIL image in RGB (LLaVA opens every image with ``.convert("RGB")``)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                "images: preprocess='pad' takes PIL images or (H, W, 3) uint8 arrays, got an array of "
                f"shape {image.shape} and dtype {image.dtype}; convert it, or use preprocess='crop'"
            )
        return Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"images: expected PIL images, arrays or a pixel tensor, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def _cls_attention(layer: nn.Module, hidden_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS-query attention of a CLIP encoder ``layer`` over its patches, summed over heads, and
    the layer's keys averaged over heads.

    ``hidden_in`` (B, 1 + N, d) is the layer's input. Recomputes LayerNorm -> q (CLS only), k
    (all tokens) -> softmax(q k^T * scale) in float32. Returns the attention (B, N) float32 and
    the head-averaged keys (B, 1 + N, head_dim) float32, CLS first (VisionZip's merge metric:
    the released code's ``key_states`` averaged over heads; ALGORITHMS.md, "VisionZip").
    """
    attn = layer.self_attn
    x = layer.layer_norm1(hidden_in)  # (B, S, d)
    batch, seq_len, _ = x.shape
    q = attn.q_proj(x[:, :1]).view(batch, 1, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, 1, D)
    k = attn.k_proj(x).view(batch, seq_len, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, S, D)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.scale  # (B, H, 1, S)
    probs = torch.softmax(scores, dim=-1)[:, :, 0, 1:]  # (B, H, N): drop the CLS key
    return probs.sum(dim=1), k.float().mean(dim=1)
