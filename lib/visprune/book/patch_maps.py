"""Pictures of which visual tokens a pruning method keeps (Study B's qualitative figures).

Visual token ``i`` of a LLaVA-style model is the image patch in row ``i // g`` and column
``i % g`` of the ``g x g`` patch grid (``g`` = ``VisionOutput.grid_size``; row-major, as the
CLIP patch embedding flattens it). These helpers map kept indices to that grid and draw them
over the image *as the model saw it* (after its image processor's resize and crop):

- :func:`kept_mask`: (g, g) boolean grid of the kept cells;
- :func:`overlay`: the image with the pruned patches darkened;
- :func:`model_view`: the processed image (the model's input) as an (H, W, 3) array in [0, 1];
- :func:`select_for_images`: run the vision tower once and several selectors on a few images;
- :func:`draw_kept`, :func:`kept_patch_figure`: the figures.

Nothing here runs the language model: the vision tower and the selectors are cheap, and the
kept indices are not part of the cached records.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["kept_mask", "overlay", "model_view", "select_for_images", "draw_kept", "kept_patch_figure"]


def kept_mask(keep: Any, grid_size: int) -> np.ndarray:
    """(grid_size, grid_size) bool array, True at the cells of the kept token indices.

    ``keep``: 1-D kept indices into ``0 .. grid_size**2 - 1`` (one image); token ``i`` is cell
    ``(i // grid_size, i % grid_size)``.
    """
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise ValueError(f"grid_size: expected a positive int (patches per side), got {grid_size!r}")
    idx = np.asarray(keep.cpu() if hasattr(keep, "cpu") else keep)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"keep: expected a 1-D array of token indices for one image, got shape {idx.shape}")
    n = int(grid_size) ** 2
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"keep: indices must lie in 0..{n - 1} for a {grid_size}x{grid_size} grid")
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask.reshape(int(grid_size), int(grid_size))


def overlay(image: Any, keep: Any, grid_size: int, dim: float = 0.25) -> np.ndarray:
    """The image with pruned patches darkened: kept cells unchanged, the others times ``dim``.

    ``image``: (H, W, 3) array in [0, 1] with H and W multiples of ``grid_size`` (the model's
    input size). Returns a new float array of the same shape.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image: expected an (H, W, 3) array, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if h % grid_size or w % grid_size:
        raise ValueError(f"image: its size {h}x{w} is not a multiple of grid_size {grid_size}; pass model_view(...)")
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim: expected a factor in [0, 1], got {dim!r}")
    mask = kept_mask(keep, grid_size)  # (g, g)
    pixel_mask = np.kron(mask, np.ones((h // grid_size, w // grid_size), dtype=bool))  # (H, W)
    out = arr.copy()
    out[~pixel_mask] *= dim
    return out


def model_view(llava: Any, images: Sequence[Any]) -> list[np.ndarray]:
    """The images as the model sees them: its processor's resize and crop, normalisation undone.

    Returns one (H, W, 3) float array in [0, 1] per image (H = W = the vision tower's image size).
    """
    pixels = llava.pixel_values(list(images)).float().cpu()  # (B, 3, H, W), normalised
    processor = llava.processor.image_processor
    mean = np.asarray(getattr(processor, "image_mean", [0.0, 0.0, 0.0]), dtype=np.float64)
    std = np.asarray(getattr(processor, "image_std", [1.0, 1.0, 1.0]), dtype=np.float64)
    arr = pixels.numpy().transpose(0, 2, 3, 1) * std + mean  # (B, H, W, 3)
    return [np.clip(a, 0.0, 1.0) for a in arr]


def select_for_images(llava: Any, images: Sequence[Any], specs: Mapping[str, tuple[str, int | None, dict]]):
    """Run the vision tower once and each selector of ``specs`` on the images.

    ``specs`` maps a label to ``(method, k, params)`` as in :class:`visprune.engine.RunConfig`
    (``"none"`` takes ``k=None``). Returns ``(vision, keeps)``: the
    :class:`visprune.instrument.llava.VisionOutput` and a dict label -> (B, K) int array of kept indices.
    """
    import torch

    if not specs:
        raise ValueError("specs: give at least one (method, k, params) to draw")
    with torch.inference_mode():
        vision = llava.encode_images(list(images))
        keeps = {}
        for label, (method, k, params) in specs.items():
            selection = llava.select_tokens(vision, method, k, **dict(params or {}))
            keeps[label] = selection.keep.cpu().numpy()
    return vision, keeps


def draw_kept(ax, image: Any, keep: Any, grid_size: int, title: str | None = None, dim: float = 0.25,
              outline: bool = True) -> None:
    """Draw ``image`` on ``ax`` with the pruned patches darkened and the kept ones outlined."""
    import matplotlib.patches as mpatches

    arr = np.asarray(image, dtype=np.float64)
    ax.imshow(overlay(arr, keep, grid_size, dim=dim), interpolation="nearest")
    if outline:
        h, w = arr.shape[:2]
        ch, cw = h / grid_size, w / grid_size
        for r, c in zip(*np.nonzero(kept_mask(keep, grid_size))):
            ax.add_patch(mpatches.Rectangle((c * cw - 0.5, r * ch - 0.5), cw, ch, fill=False,
                                            edgecolor="yellow", lw=0.6))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def kept_patch_figure(images: Sequence[Any], keeps: Mapping[str, Any], grid_size: int,
                      attention: Any = None, row_titles: Sequence[str] | None = None,
                      cell_titles: Mapping[str, Sequence[str]] | None = None):
    """A grid of pictures: one row per image, one column per method (plus the CLS attention).

    ``images``: (H, W, 3) arrays in [0, 1] (see :func:`model_view`); ``keeps``: label -> (B, K)
    kept indices; ``attention``: optional (B, N) CLS attention, drawn as a heat map over the
    image in the first column; ``row_titles``: one label per image (left margin);
    ``cell_titles``: label -> one title per image (default: the label). Returns the Figure.
    """
    import matplotlib.pyplot as plt

    images = list(images)
    if not images:
        raise ValueError("images: give at least one image")
    labels = list(keeps)
    n_cols = len(labels) + (1 if attention is not None else 0)
    fig, axes = plt.subplots(len(images), n_cols, figsize=(2.1 * n_cols, 2.25 * len(images)), squeeze=False)
    for row, image in enumerate(images):
        col = 0
        if attention is not None:
            att = np.asarray(attention[row].cpu() if hasattr(attention[row], "cpu") else attention[row], dtype=float)
            ax = axes[row][0]
            ax.imshow(image, interpolation="nearest")
            h, w = np.asarray(image).shape[:2]
            ax.imshow(att.reshape(grid_size, grid_size), cmap="magma", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("CLS attention", fontsize=9)
            col = 1
        for j, label in enumerate(labels):
            titles = (cell_titles or {}).get(label)
            title = titles[row] if titles is not None else (label if row == 0 else None)
            draw_kept(axes[row][col + j], image, np.asarray(keeps[label])[row], grid_size, title=title)
        if row_titles is not None:
            axes[row][0].set_ylabel(row_titles[row], fontsize=9)
    fig.tight_layout()
    return fig
