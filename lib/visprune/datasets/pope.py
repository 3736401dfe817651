"""POPE: building question files from COCO-format annotations, and reading official ones.

DESIGN.md section 6. An official POPE file (``coco_pope_{random,popular,adversarial}.json``)
has one JSON object per line::

    {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?", "label": "yes"}

:func:`build_pope` makes such questions from any COCO instances annotations with POPE's rules:

1. eligible images have at least 3 annotated objects of distinct categories; with
   ``n_images`` (POPE: 500), that many are drawn at random (seeded); they are listed in
   ascending image id order;
2. an image's positives are its first 3 distinct categories in annotation order; each "yes"
   question is followed by one "no" question, so an image gives 6 alternating questions;
3. the negative after positive ``p`` is a category absent from the image, never used twice as
   a negative for the same image, chosen by strategy:

   - ``random``: uniformly at random among the remaining absent categories;
   - ``popular``: the most frequent remaining absent category, frequency = number of images of
     the whole annotation file that contain the category;
   - ``adversarial``: the remaining absent category that co-occurs with ``p`` in the most
     images of the whole annotation file.

   Ties in ``popular`` and ``adversarial`` go to the category listed first in the file's
   ``categories`` (this choice is ours; POPE's code leaves the order of equal counts to its sort);
4. text "Is there a {name} in the image?", with "an" before a vowel; question ids run from 1.

:func:`read_pope` reads official or generated files into :class:`~visprune.datasets.samples.Sample` s.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from visprune.instrument import prompts
from visprune.datasets.coco import COCO_IMAGES_WHERE, CocoIndex, load_instances
from visprune.datasets.samples import (
    Sample,
    check_images_exist,
    read_json_lines,
    require_dir,
    require_field,
    require_file,
    write_atomically,
)

STRATEGIES = ("random", "popular", "adversarial")
TEMPLATE = "Is there {article} {name} in the image?"
N_POSITIVE = 3
POPE_WHERE = (
    "The official files (coco_pope_random.json, coco_pope_popular.json, "
    "coco_pope_adversarial.json) are in the POPE GitHub repository (RUCAIBox/POPE), folder "
    "output/coco; toy-world files are written by `python -m visprune.toyworld` "
    "(data/toyworld/pope/)."
)
# POPE's question at the start of a text; group 1 is the object's name (built from TEMPLATE).
_QUESTION_START = re.compile(
    "^" + re.escape(TEMPLATE).replace(re.escape("{article}"), "(?:a|an)").replace(re.escape("{name}"), "(.+?)")
)


def question_text(name: str) -> str:
    """POPE's question for category ``name``: "Is there a/an {name} in the image?"."""
    return TEMPLATE.format(article="an" if name[:1].lower() in "aeiou" else "a", name=name)


def object_span(text: str, whole: bool = False) -> tuple[int, int] | None:
    """Where the object's name is in ``text`` if it starts with POPE's question (``question_text``,
    possibly followed by more, such as LLaVA's answer cue; with ``whole``, nothing may follow);
    None otherwise."""
    match = (_QUESTION_START.fullmatch if whole else _QUESTION_START.match)(text)
    return match.span(1) if match else None


def _as_index(instances) -> CocoIndex:
    return instances if isinstance(instances, CocoIndex) else load_instances(instances)


def category_statistics(index: CocoIndex) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Category names (file order), image frequency (C,) and co-occurrence counts (C, C).

    ``freq[c]`` = number of images containing category c; ``co[a, b]`` = number of images
    containing both a and b (a != b; the diagonal equals ``freq``).
    """
    names = list(index.categories.values())
    col = {cid: i for i, cid in enumerate(index.categories)}
    present = np.zeros((len(index.images), len(names)), dtype=np.int64)  # (images, C)
    for row, image_id in enumerate(index.images):
        for ann in index.annotations[image_id]:
            present[row, col[ann["category_id"]]] = 1
    freq = present.sum(axis=0)  # (C,)
    co = present.T @ present  # (C, C)
    return names, freq, co


def build_pope(
    instances: "str | os.PathLike | CocoIndex",
    strategy: str,
    *,
    n_images: int | None = 500,
    seed: int = 0,
    n_positive: int = N_POSITIVE,
) -> list[dict]:
    """POPE questions for one strategy, as dicts in the official format (see the module doc).

    The same ``instances`` and ``seed`` give the same images for every strategy. Returns
    ``[{"question_id", "image", "text", "label"}, ...]``; write them with :func:`write_pope`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"build_pope: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1):
        raise ValueError(f"build_pope: n_images must be a positive integer or None, got {n_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"build_pope: seed must be an integer >= 0, got {seed!r}")
    if isinstance(n_positive, bool) or not isinstance(n_positive, (int, np.integer)) or n_positive < 1:
        raise ValueError(f"build_pope: n_positive must be a positive integer, got {n_positive!r}")
    index = _as_index(instances)
    names, freq, co = category_statistics(index)
    pos = {name: i for i, name in enumerate(names)}
    n_cat = len(names)

    eligible = sorted(i for i in index.images if len(index.image_categories(i)) >= n_positive)
    if not eligible:
        raise ValueError(f"build_pope: no image in {index.source} has {n_positive} or more object categories")
    if n_images is not None and n_images < len(eligible):
        pick = np.random.default_rng(seed).choice(len(eligible), size=n_images, replace=False)
        eligible = [eligible[i] for i in sorted(pick)]
    negative_rng = np.random.default_rng([seed, 1])

    questions: list[dict] = []
    for image_id in eligible:
        present = index.image_categories(image_id)
        positives = present[:n_positive]
        used = {pos[n] for n in present}  # present categories and negatives already asked
        if n_cat - len(used) < n_positive:
            raise ValueError(
                f"build_pope: image {image_id} of {index.source} leaves fewer than {n_positive} absent categories"
            )
        file_name = index.images[image_id]["file_name"]
        for p in positives:
            candidates = [c for c in range(n_cat) if c not in used]  # file order
            if strategy == "random":
                neg = candidates[int(negative_rng.integers(len(candidates)))]
            elif strategy == "popular":
                neg = max(candidates, key=lambda c: (freq[c], -c))
            else:
                neg = max(candidates, key=lambda c: (co[pos[p], c], -c))
            used.add(neg)
            for name, label in ((p, "yes"), (names[neg], "no")):
                questions.append({
                    "question_id": len(questions) + 1,
                    "image": file_name,
                    "text": question_text(name),
                    "label": label,
                })
    return questions


def pope_lines(questions: list[dict]) -> str:
    """Questions as JSON lines, keys in the official order, one question per line."""
    keys = ("question_id", "image", "text", "label")
    return "".join(json.dumps({k: q[k] for k in keys}) + "\n" for q in questions)


def write_pope(questions: list[dict], path: str | os.PathLike) -> Path:
    """Write questions as an official-format POPE file (JSON lines), atomically.

    The file appears complete or not at all (:func:`~visprune.datasets.samples.write_atomically`);
    an ``OSError`` such as a full disk names the path.
    """
    return write_atomically(path, pope_lines(questions))


def _strategy_from_name(path: Path) -> str | None:
    found = [s for s in STRATEGIES if s in path.stem]
    return found[0] if len(found) == 1 else None


def read_pope(
    question_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    split_name: str | None = None,
    *,
    instances_file: "str | os.PathLike | CocoIndex | None" = None,
    check_images: bool = True,
) -> list[Sample]:
    """Read a POPE question file (official format) into samples.

    - ``image_dir``: the folder with the images the lines name (COCO val2014 jpgs, toy pngs);
    - ``split_name``: "random", "popular" or "adversarial" (default: found in the file name);
    - ``instances_file``: optional COCO instances annotations of those images; with it each
      sample's meta gets ``n_objects``, ``n_categories``, ``scene`` and ``coco_image_id``.

    Each sample: ``sample_id`` = the question_id, ``image_id`` = the image file name,
    ``prompt`` = :func:`visprune.instrument.prompts.pope_question` (text), ``answers`` = ("yes", "no"),
    ``label`` = 0 for yes and 1 for no; meta has dataset, task, split, question_id, image,
    category (the object asked about) and the question text.
    """
    question_file = require_file(
        question_file,
        'POPE question file (JSON lines {"question_id", "image", "text", "label"})',
        POPE_WHERE,
    )
    image_dir = require_dir(image_dir, "POPE image folder", COCO_IMAGES_WHERE)
    split = split_name if split_name is not None else _strategy_from_name(question_file)
    index = _as_index(instances_file) if instances_file is not None else None
    samples: list[Sample] = []
    seen: set[str] = set()
    for lineno, obj in read_json_lines(question_file):
        where = f"{question_file}, line {lineno}"
        qid = require_field(obj, "question_id", where, (int, str))
        image = require_field(obj, "image", where, str)
        text = require_field(obj, "text", where, str)
        label = require_field(obj, "label", where, str).strip().lower()
        if label not in prompts.POPE_ANSWERS:
            raise ValueError(f"{where}: field 'label' should be 'yes' or 'no', got {obj['label']!r}")
        sample_id = str(qid)
        if sample_id in seen:
            raise ValueError(f"{where}: question_id {qid!r} appears twice")
        seen.add(sample_id)
        question = text.strip()
        span = object_span(question, whole=True)
        meta = {
            "dataset": "pope", "task": "pope", "split": split, "question_id": qid, "image": image,
            "category": question[span[0] : span[1]] if span else None, "text": text,
        }
        if index is not None:
            image_id = index.image_id_of(image)
            if image_id is None:
                raise ValueError(f"{where}: image {image!r} is not in the instances file {index.source}")
            meta.update(index.image_meta(image_id))
        samples.append(Sample(
            sample_id=sample_id,
            image_id=image,
            image_path=image_dir / image,
            prompt=prompts.pope_question(text),
            answers=prompts.POPE_ANSWERS,
            label=prompts.POPE_ANSWERS.index(label),
            meta=meta,
        ))
    if not samples:
        raise ValueError(f"{question_file}: no questions in the file")
    if check_images:
        check_images_exist(samples, f"images named in {question_file}", f"Looked in {image_dir}. {COCO_IMAGES_WHERE}")
    return samples
