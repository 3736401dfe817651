"""ScienceQA: reading the official release (IMG subset) and files in its schema.

DESIGN.md section 6. The official release has, in one folder:

- ``problems.json``: ``{pid: {"question", "choices", "answer" (index), "hint", "image" (file
  name or null), "task", "grade", "subject", "topic", "category", "skill", "lecture",
  "solution", "split"}}``;
- ``pid_splits.json``: ``{"train": [pid, ...], "val": [...], "test": [...], "minival": [...], ...}``;
- images at ``{split}/{pid}/image.png`` (beside the JSON files, or under ``images/``).

ScienceQA-IMG is the problems of a split that have an image (2,017 in the real test split).
:func:`read_scienceqa` yields them as samples with LLaVA-1.5's prompt
(:func:`visprune.instrument.prompts.scienceqa_question`). The toy world writes its problems in
the same schema (:mod:`visprune.toyworld.problems`), with an extra ``toy_meta`` field per
problem that this reader copies into the samples' meta.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from visprune.instrument import prompts
from visprune.datasets.samples import (
    Sample,
    check_images_exist,
    read_json,
    require_dir,
    require_field,
    require_file,
)

SQA_WHERE = (
    "The official files come from the ScienceQA release (GitHub lupantech/ScienceQA: "
    "problems.json and pid_splits.json in data/scienceqa, images from its download script, "
    "unpacked as {split}/{pid}/image.png); toy-world files are written by "
    "`python -m visprune.toyworld` (data/toyworld/scienceqa/)."
)


def _image_root(root: Path, image_root: str | os.PathLike | None) -> Path:
    if image_root is not None:
        return require_dir(image_root, "ScienceQA image folder ({split}/{pid}/image.png)", SQA_WHERE)
    return root / "images" if (root / "images").is_dir() else root


def read_scienceqa(
    root: str | os.PathLike,
    split: str = "test",
    img_only: bool = True,
    *,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """The problems of ``split`` (in ``pid_splits.json`` order) as samples.

    ``img_only`` (default) keeps only problems with an image: ScienceQA-IMG. Images are looked
    up at ``{image_root}/{problem's split}/{pid}/{image}``; ``image_root`` defaults to
    ``root/images`` if that folder exists, else ``root``. With ``img_only=False`` the problems
    without an image are included with ``image_path=None`` (``load_image`` then raises).

    Each sample: ``sample_id`` = ``image_id`` = pid, ``prompt`` =
    :func:`visprune.instrument.prompts.scienceqa_question` (question, choices, hint), ``answers`` = the
    option letters, ``label`` = the answer index; meta has dataset, task, split, pid,
    n_choices, grade, subject, topic, category, skill, has_hint, has_image, and for toy-world
    problems the extras of their ``toy_meta`` field (scene, n_objects, question_type, ...).
    """
    root = require_dir(root, "ScienceQA folder (problems.json, pid_splits.json, {split}/{pid}/image.png)", SQA_WHERE)
    problems_path = require_file(root / "problems.json", "ScienceQA problems file (problems.json)", SQA_WHERE)
    splits_path = require_file(root / "pid_splits.json", "ScienceQA split file (pid_splits.json)", SQA_WHERE)
    problems = read_json(problems_path)
    pid_splits = read_json(splits_path)
    if not isinstance(problems, Mapping):
        raise ValueError(f"{problems_path}: expected a JSON object {{pid: problem}}, got {type(problems).__name__}")
    if not isinstance(pid_splits, Mapping):
        raise ValueError(f"{splits_path}: expected a JSON object {{split: [pid, ...]}}, got {type(pid_splits).__name__}")
    if split not in pid_splits:
        raise ValueError(f"split: {split!r} is not in {splits_path}; it has {sorted(pid_splits)}")
    if not isinstance(pid_splits[split], list):
        raise ValueError(f"{splits_path}: split {split!r} should be a list of pids, got {type(pid_splits[split]).__name__}")
    images = _image_root(root, image_root)

    samples: list[Sample] = []
    for pid in pid_splits[split]:
        pid = str(pid)
        if pid not in problems:
            raise ValueError(f"{splits_path}: pid {pid!r} of split {split!r} is not in {problems_path}")
        prob = problems[pid]
        where = f"{problems_path}, problem {pid!r}"
        if not isinstance(prob, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(prob).__name__}")
        question = require_field(prob, "question", where, str)
        choices = require_field(prob, "choices", where, list)
        answer = require_field(prob, "answer", where, int)
        image = prob.get("image")
        hint = prob.get("hint") or ""
        if not isinstance(hint, str):
            raise ValueError(f"{where}: field 'hint' should be str or null, got {type(hint).__name__}")
        if image is not None and not isinstance(image, str):
            raise ValueError(f"{where}: field 'image' should be a file name or null, got {image!r}")
        if not 2 <= len(choices) <= len(prompts.OPTION_LETTERS) or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{where}: field 'choices' should be 2 to {len(prompts.OPTION_LETTERS)} strings, got {choices!r}")
        if not 0 <= answer < len(choices):
            raise ValueError(f"{where}: field 'answer' = {answer} is out of range for {len(choices)} choices")
        if img_only and image is None:
            continue
        problem_split = prob.get("split") or split
        meta = {
            "dataset": "scienceqa", "task": "scienceqa", "split": split, "pid": pid,
            "n_choices": len(choices), "has_hint": bool(hint.strip()), "has_image": image is not None,
        }
        for key in ("grade", "subject", "topic", "category", "skill"):
            meta[key] = prob.get(key)
        extra = prob.get("toy_meta")
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                meta.setdefault(key, value)
        samples.append(Sample(
            sample_id=pid,
            image_id=pid,
            image_path=(images / problem_split / pid / image) if image is not None else None,  # type: ignore[arg-type]
            prompt=prompts.scienceqa_question(question, choices, hint),
            answers=prompts.option_letters(len(choices)),
            label=answer,
            meta=meta,
        ))
    if check_images:
        with_image = [s for s in samples if s.image_path is not None]
        check_images_exist(with_image, f"ScienceQA images of split {split!r}", f"Looked under {images}. {SQA_WHERE}")
    return samples
