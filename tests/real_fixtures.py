"""Small data sets in the exact official formats (DESIGN.md section 6), for the real profile.

``write_real_fixtures(root)`` writes, under ``root``:

- ``coco/val2014/COCO_val2014_000000xxxxxx.jpg``: four JPEGs of non-square sizes (640 x 480,
  480 x 640, 500 x 375, 427 x 640), coloured boxes on a grey background; the first has a red
  box touching its left edge (cut away by a centre crop, kept by LLaVA's padding);
- ``coco/annotations/instances_val2014.json`` and ``captions_val2014.json``: standard COCO JSON
  (info, licenses, images, annotations with bbox / area / segmentation / iscrowd, categories
  with COCO's own ids and names);
- ``pope/coco_pope_{random,popular,adversarial}.json``: JSON lines ``{"question_id", "image",
  "text", "label"}``, per image the first three annotated objects as "yes" questions, each
  followed by a "no" on an object absent from the image, chosen per split as POPE does;
- ``scienceqa/problems.json``, ``pid_splits.json`` and ``test/<pid>/image.png`` (and
  ``train/<pid>/image.png``): five problems, one without an image, with and without hints,
  two to four choices.

Returns a dict of the folders: ``coco_images``, ``coco_annotations``, ``pope``, ``scienceqa``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

#: COCO's own ids, names and supercategories for the objects used here.
CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
    {"supercategory": "vehicle", "id": 3, "name": "car"},
    {"supercategory": "animal", "id": 17, "name": "cat"},
    {"supercategory": "animal", "id": 18, "name": "dog"},
    {"supercategory": "kitchen", "id": 44, "name": "bottle"},
    {"supercategory": "kitchen", "id": 47, "name": "cup"},
    {"supercategory": "furniture", "id": 62, "name": "chair"},
    {"supercategory": "furniture", "id": 67, "name": "dining table"},
    {"supercategory": "animal", "id": 25, "name": "giraffe"},
]
COLOURS = {1: (200, 30, 30), 2: (30, 160, 30), 3: (30, 30, 200), 17: (220, 160, 20), 18: (120, 60, 20),
           44: (20, 180, 180), 47: (180, 20, 180), 62: (90, 90, 20), 67: (240, 240, 240), 25: (250, 200, 120)}

#: (image id, width, height, [(category id, x, y, w, h)], two captions)
IMAGES = [
    (310196, 640, 480, [(1, 0, 150, 60, 200), (62, 250, 200, 120, 160), (67, 380, 260, 200, 140), (47, 420, 220, 40, 40)],
     ["A person standing beside a chair and a dining table.", "A cup on a table next to a chair."]),
    (42, 480, 640, [(18, 60, 400, 200, 160), (1, 200, 80, 120, 300), (3, 20, 20, 160, 90)],
     ["A dog and a person near a car.", "A man walking his dog by a parked car."]),
    (73, 500, 375, [(17, 40, 200, 140, 120), (62, 260, 120, 100, 180), (44, 400, 60, 30, 90), (47, 420, 200, 40, 40)],
     ["A cat sitting near a chair.", "A cat on the floor with a bottle and a cup."]),
    (139, 427, 640, [(2, 50, 300, 300, 200), (1, 120, 60, 100, 240), (3, 250, 520, 150, 100)],
     ["A person riding a bicycle on the street.", "A bicycle and a car on a road."]),
]


def coco_file_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


def _draw(width: int, height: int, boxes) -> Image.Image:
    canvas = np.full((height, width, 3), 128, dtype=np.uint8)
    for cat, x, y, w, h in boxes:
        canvas[y : y + h, x : x + w] = COLOURS[cat]
    return Image.fromarray(canvas)


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def _pope_lines(split: str) -> list[dict]:
    """POPE's construction on these images: three positives, each followed by one negative."""
    names = {c["id"]: c["name"] for c in CATEGORIES}
    frequency = Counter(cat for _, _, _, boxes, _ in IMAGES for cat, *_ in boxes)
    co = Counter()
    for _, _, _, boxes, _ in IMAGES:
        cats = {c for c, *_ in boxes}
        co.update((a, b) for a in cats for b in cats if a != b)
    lines, qid = [], 1
    for image_id, _, _, boxes, _ in IMAGES:
        present = [c for c, *_ in boxes]
        absent = [c["id"] for c in CATEGORIES if c["id"] not in present]
        used: list[int] = []
        for k, positive in enumerate(present[:3]):
            if split == "random":
                order = absent[k:] + absent[:k]
            elif split == "popular":
                order = sorted(absent, key=lambda c: (-frequency[c], c))
            else:  # adversarial: co-occurs most with the positive
                order = sorted(absent, key=lambda c: (-co[(positive, c)], c))
            negative = next(c for c in order if c not in used)
            used.append(negative)
            for cat, label in ((positive, "yes"), (negative, "no")):
                name = names[cat]
                lines.append({"question_id": qid, "image": coco_file_name(image_id),
                              "text": f"Is there {_article(name)} {name} in the image?", "label": label})
                qid += 1
    return lines


SCIENCEQA = {
    "11": dict(question="Which animal is shown in the picture?", choices=["dog", "cat"], answer=1,
               hint="The picture shows a pet.", image="image.png", split="test", size=(300, 200)),
    "12": dict(question="Which colour is the largest box?", choices=["red", "blue", "green"], answer=0,
               hint="", image="image.png", split="test", size=(200, 300)),
    "13": dict(question="Which word is a noun?", choices=["run", "table"], answer=1, hint="", image=None,
               split="test", size=None),
    "14": dict(question="Which of these is a vehicle?", choices=["car", "cup", "chair", "bottle"], answer=0,
               hint="Look at the objects.", image="image.png", split="test", size=(320, 240)),
    "15": dict(question="Which animal is shown?", choices=["giraffe", "dog"], answer=0, hint="", image="image.png",
               split="train", size=(240, 240)),
    "16": dict(question="Which object is red?", choices=["the box", "the sky", "the grass"], answer=0, hint="",
               image="image.png", split="val", size=(256, 192)),  # the validation split recalibration fits on
}


def write_real_fixtures(root) -> dict:
    """Write the fixtures under ``root`` (created); returns the folders by profile option."""
    root = Path(root)
    images_dir = root / "coco" / "val2014"
    ann_dir = root / "coco" / "annotations"
    pope_dir = root / "pope"
    sqa_dir = root / "scienceqa"
    for d in (images_dir, ann_dir, pope_dir, sqa_dir):
        d.mkdir(parents=True, exist_ok=True)

    info = {"description": "COCO 2014 Dataset (test fixture)", "version": "1.0", "year": 2014}
    licenses = [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 1, "name": "Attribution License"}]
    images, instances, captions = [], [], []
    ann_id, cap_id = 1000, 5000
    for image_id, width, height, boxes, caps in IMAGES:
        name = coco_file_name(image_id)
        _draw(width, height, boxes).save(images_dir / name, quality=95)
        images.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/val2014/{name}",
                       "height": height, "width": width, "date_captured": "2013-11-14 16:28:13",
                       "flickr_url": "", "id": image_id})
        for cat, x, y, w, h in boxes:
            instances.append({"segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "area": float(w * h),
                              "iscrowd": 0, "image_id": image_id, "bbox": [float(x), float(y), float(w), float(h)],
                              "category_id": cat, "id": ann_id})
            ann_id += 1
        for text in caps:
            captions.append({"image_id": image_id, "id": cap_id, "caption": text})
            cap_id += 1
    (ann_dir / "instances_val2014.json").write_text(json.dumps(
        {"info": info, "images": images, "licenses": licenses, "annotations": instances, "categories": CATEGORIES}))
    (ann_dir / "captions_val2014.json").write_text(json.dumps(
        {"info": info, "images": images, "licenses": licenses, "annotations": captions}))

    for split in ("random", "popular", "adversarial"):
        lines = _pope_lines(split)
        (pope_dir / f"coco_pope_{split}.json").write_text("".join(json.dumps(l) + "\n" for l in lines))

    problems, splits = {}, {"train": [], "val": [], "test": [], "trainval": [], "minitrain": [], "minival": [],
                            "minitest": []}
    rng = np.random.default_rng(0)
    for pid, p in SCIENCEQA.items():
        problems[pid] = {
            "question": p["question"], "choices": p["choices"], "answer": p["answer"], "hint": p["hint"],
            "image": p["image"], "task": "closed choice", "grade": "grade4", "subject": "natural science",
            "topic": "biology", "category": "Classification", "skill": "Identify animals", "lecture": "",
            "solution": "", "split": p["split"],
        }
        splits[p["split"]].append(pid)
        if p["image"]:
            folder = sqa_dir / p["split"] / pid
            folder.mkdir(parents=True, exist_ok=True)
            w, h = p["size"]
            Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / "image.png")
    splits["trainval"] = splits["train"] + splits["val"]
    (sqa_dir / "problems.json").write_text(json.dumps(problems, indent=1))
    (sqa_dir / "pid_splits.json").write_text(json.dumps(splits, indent=1))
    return {"coco_images": images_dir, "coco_annotations": ann_dir, "pope": pope_dir, "scienceqa": sqa_dir}
