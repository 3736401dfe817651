"""The toy world's annotations in COCO format: instances and captions (DESIGN.md section 6).

Standard COCO JSON, read by :mod:`visprune.datasets.coco` and by pycocotools, with two extras
COCO JSON allows: ``"scene"`` (and ``"n_clutter"``) per image and ``"color"`` per annotation.
"""

from __future__ import annotations

from typing import Sequence

from visprune.toyworld.categories import CATEGORIES, CATEGORY_BY_NAME
from visprune.toyworld.scenes import GENERATOR_VERSION, ToyScene
from visprune.toyworld.sizes import IMAGE_SIZE


def coco_instances(scenes: Sequence[ToyScene], split: str) -> dict:
    """COCO instances JSON for ``scenes`` (standard fields; extra "scene" per image and "color"
    per annotation). Segmentations are the box outlines as polygons; areas are box areas."""
    images, annotations = [], []
    for s in scenes:
        images.append({
            "id": s.image_id, "file_name": s.file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE,
            "license": 0, "scene": s.scene, "n_clutter": s.n_clutter,
        })
        for k, obj in enumerate(s.objects):
            x, y, w, h = obj.bbox
            annotations.append({
                "id": _annotation_id(s.image_id, k), "image_id": s.image_id, "category_id": CATEGORY_BY_NAME[obj.category].id,
                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0,
                "segmentation": [[float(x), float(y), float(x + w), float(y), float(x + w), float(y + h), float(x), float(y + h)]],
                "color": obj.colour,
            })
    return {
        "info": {"description": f"visprune toy world, {split} split", "version": str(GENERATOR_VERSION), "year": 2026},
        "licenses": [{"id": 0, "name": "generated data, no restrictions", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CATEGORIES],
    }


def _annotation_id(image_id: int, k: int) -> int:
    return image_id * 100 + k + 1  # unique: at most 8 objects per image


def coco_captions(scenes: Sequence[ToyScene], split: str) -> dict:
    """COCO captions JSON for ``scenes``."""
    images = [{"id": s.image_id, "file_name": s.file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE, "license": 0} for s in scenes]
    annotations = [
        {"image_id": s.image_id, "id": s.image_id * 100 + k + 1, "caption": cap}
        for s in scenes for k, cap in enumerate(s.captions)
    ]
    return {
        "info": {"description": f"visprune toy world captions, {split} split", "version": str(GENERATOR_VERSION), "year": 2026},
        "licenses": [{"id": 0, "name": "generated data, no restrictions", "url": ""}],
        "images": images,
        "annotations": annotations,
    }
