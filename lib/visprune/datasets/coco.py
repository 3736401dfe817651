"""COCO annotations: reading instances and captions, CHAIR ground truth, captioning samples.

DESIGN.md section 6 (COCO ``instances_val2014.json`` / ``captions_val2014.json``, standard COCO
JSON) and ALGORITHMS.md "Metrics" -> CHAIR: the ground-truth objects of an image are its
annotated instance categories plus the objects named in its reference captions, all mapped to
canonical category names with the synonym table.

The same functions read the toy world's ``annotations/instances_{split}.json`` and
``captions_{split}.json``, which are in the same format (with an extra ``"scene"`` field per
image and ``"color"`` per annotation, which COCO JSON allows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from visprune.instrument import prompts
from visprune.datasets.samples import (
    Sample,
    check_images_exist,
    read_json,
    require_dir,
    require_field,
    require_file,
)

COCO_WHERE = (
    "The official COCO 2014 annotations (instances_val2014.json, captions_val2014.json) are in "
    "annotations_trainval2014.zip from cocodataset.org; for the toy world run "
    "`python -m visprune.toyworld`."
)
COCO_IMAGES_WHERE = (
    "It should hold the images named in the annotations' file_name fields (COCO val2014: "
    "val2014.zip from cocodataset.org; toy world: images/{split} written by "
    "`python -m visprune.toyworld`)."
)


@dataclass
class CocoIndex:
    """A parsed COCO instances file.

    - ``images``: image id -> image entry (``file_name``, ``width``, ``height``, extras), in file order;
    - ``categories``: category id -> name;
    - ``annotations``: image id -> that image's annotations, in file order (every image has a list);
    - ``source``: where it was read from (for messages).
    """

    images: dict[int, dict]
    categories: dict[int, str]
    annotations: dict[int, list[dict]]
    source: str = "<memory>"
    _by_file: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<memory>") -> "CocoIndex":
        """Validate and index a COCO instances dict; errors name ``source`` and the entry."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a COCO instances file is a JSON object, got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            require_field(data, key, source, list)
        categories: dict[int, str] = {}
        for i, cat in enumerate(data["categories"]):
            where = f"{source}, categories[{i}]"
            categories[require_field(cat, "id", where, int)] = require_field(cat, "name", where, str)
        images: dict[int, dict] = {}
        for i, img in enumerate(data["images"]):
            where = f"{source}, images[{i}]"
            require_field(img, "file_name", where, str)
            images[require_field(img, "id", where, int)] = img
        annotations: dict[int, list[dict]] = {i: [] for i in images}
        for i, ann in enumerate(data["annotations"]):
            where = f"{source}, annotations[{i}]"
            image_id = require_field(ann, "image_id", where, int)
            category_id = require_field(ann, "category_id", where, int)
            if image_id not in images:
                raise ValueError(f"{where}: image_id {image_id} is not in the file's images")
            if category_id not in categories:
                raise ValueError(f"{where}: category_id {category_id} is not in the file's categories")
            annotations[image_id].append(ann)
        by_file = {img["file_name"]: i for i, img in images.items()}
        return cls(images, categories, annotations, source, by_file)

    def image_categories(self, image_id: int) -> list[str]:
        """The image's distinct category names, in the order they first appear in its annotations."""
        names: list[str] = []
        for ann in self.annotations[image_id]:
            name = self.categories[ann["category_id"]]
            if name not in names:
                names.append(name)
        return names

    def image_id_of(self, file_name: str) -> int | None:
        """The id of the image with this ``file_name`` (None if not in the file)."""
        return self._by_file.get(file_name)

    def image_meta(self, image_id: int) -> dict:
        """Meta the chapters use: n_objects (instances), n_categories, scene (toy world; else None)."""
        img = self.images[image_id]
        return {
            "coco_image_id": image_id,
            "n_objects": len(self.annotations[image_id]),
            "n_categories": len(self.image_categories(image_id)),
            "scene": img.get("scene"),
        }


def load_instances(path: str | os.PathLike) -> CocoIndex:
    """Read a COCO instances JSON file (``instances_val2014.json`` or a toy ``instances_{split}.json``)."""
    path = require_file(path, "COCO instances file (standard COCO JSON with images, annotations, categories)", COCO_WHERE)
    return CocoIndex.from_dict(read_json(path), source=str(path))


def load_captions(path: str | os.PathLike) -> dict[int, list[str]]:
    """Read a COCO captions JSON file: image id -> its reference captions, in file order."""
    path = require_file(path, "COCO captions file (standard COCO JSON with images and caption annotations)", COCO_WHERE)
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a COCO captions file is a JSON object, got {type(data).__name__}")
    require_field(data, "annotations", str(path), list)
    captions: dict[int, list[str]] = {}
    for img in data.get("images", []):
        if isinstance(img, Mapping) and isinstance(img.get("id"), int):
            captions.setdefault(img["id"], [])
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}, annotations[{i}]"
        image_id = require_field(ann, "image_id", where, int)
        captions.setdefault(image_id, []).append(require_field(ann, "caption", where, str))
    return captions


def _as_index(instances: "str | os.PathLike | CocoIndex") -> CocoIndex:
    return instances if isinstance(instances, CocoIndex) else load_instances(instances)


def chair_ground_truth(
    instances_file: "str | os.PathLike | CocoIndex",
    captions_file: str | os.PathLike | None = None,
    synonyms=None,
    *,
    image_ids=None,
) -> dict[str, set[str]]:
    """CHAIR ground truth: image id (as a string) -> set of canonical category names.

    ALGORITHMS.md "Metrics" -> CHAIR: the image's annotated instance categories (each mapped to
    its canonical name through the synonym table, kept as is if the table lacks it) together
    with every object that :func:`visprune.metrics.caption_objects` finds in its reference
    captions (when ``captions_file`` is given). ``synonyms`` is passed to
    :func:`visprune.metrics.load_synonyms`: None for the COCO table
    (``lib/visprune/assets/chair/coco_synonyms.txt``), a path (e.g. ``lib/visprune/assets/chair/toy_synonyms.txt``), or a
    mapping canonical -> synonyms. ``image_ids`` (optional, ints or strings) limits the result
    to those images, which saves parsing all of COCO's captions when only 500 images are scored.
    """
    from visprune import metrics

    index = _as_index(instances_file)
    table = metrics.load_synonyms(synonyms)  # word or phrase -> canonical
    # one caption parser for all captions (caption_objects accepts it in place of a table)
    parser = metrics.object_parser(table)
    wanted = list(index.images) if image_ids is None else [int(i) for i in image_ids]
    unknown = [i for i in wanted if i not in index.images]
    if unknown:
        raise ValueError(f"image_ids: {unknown[:3]} (of {len(unknown)}) are not in {index.source}")
    truth: dict[str, set[str]] = {}
    for image_id in wanted:
        truth[str(image_id)] = {table.get(name, name) for name in index.image_categories(image_id)}
    if captions_file is not None:
        for image_id, caps in load_captions(captions_file).items():
            if str(image_id) not in truth:
                continue  # captions of images outside the instances file (or image_ids) are not scored
            found = truth[str(image_id)]
            for cap in caps:
                found.update(metrics.caption_objects(cap, parser))
    return truth


def caption_samples(
    instances_file: "str | os.PathLike | CocoIndex",
    image_dir: str | os.PathLike,
    n: int | None = None,
    seed: int = 0,
    split_name: str | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """Captioning samples for CHAIR: one per image of the instances file (prompt ``CAPTION_PROMPT``).

    With ``n``, ``n`` images drawn at random without replacement (seeded), as in CHAIR's usual
    protocol (500 COCO val2014 images); the samples are in ascending image id order either way.
    ``sample_id`` = ``image_id`` = the COCO image id as a string (the keys of
    :func:`chair_ground_truth`). ``answers`` is empty and ``label`` None.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"caption_samples: seed must be an integer >= 0, got {seed!r}")
    index = _as_index(instances_file)
    image_dir = require_dir(image_dir, "image folder", COCO_IMAGES_WHERE)
    ids = sorted(index.images)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"caption_samples: n must be a positive integer or None, got {n!r}")
        if n > len(ids):
            raise ValueError(f"caption_samples: n={n} but {index.source} has only {len(ids)} images")
        rng = np.random.default_rng(seed)
        ids = sorted(int(i) for i in rng.choice(ids, size=n, replace=False))
    split = split_name if split_name is not None else Path(str(index.source)).stem
    samples = []
    for image_id in ids:
        meta = {"dataset": "captions", "task": "caption", "split": split, **index.image_meta(image_id)}
        samples.append(Sample(
            sample_id=str(image_id),
            image_id=str(image_id),
            image_path=image_dir / index.images[image_id]["file_name"],
            prompt=prompts.CAPTION_PROMPT,
            answers=(),
            label=None,
            meta=meta,
        ))
    if check_images:
        check_images_exist(samples, f"images of {index.source}", f"Looked in {image_dir}. {COCO_IMAGES_WHERE}")
    return samples
