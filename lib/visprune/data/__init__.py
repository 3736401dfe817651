"""Data sets as samples: the toy world, POPE, ScienceQA-IMG and COCO captioning for CHAIR.

DESIGN.md sections 3, 4 and 6. Every reader returns a ``list[Sample]``
(:class:`~visprune.data.samples.Sample`: id, image path loaded lazily, prompt, answer set,
label, meta), the same for the real files and for the toy world, which is written in the real
formats:

>>> from visprune.data import read_pope, read_scienceqa, caption_samples, chair_ground_truth, toy_paths
>>> paths = toy_paths()                                   # data/toyworld
>>> pope = read_pope(paths.pope("adversarial"), paths.images("test"),
...                  instances_file=paths.instances("test"))          # doctest: +SKIP
>>> sqa = read_scienceqa(paths.scienceqa, "test")         # ScienceQA-IMG  # doctest: +SKIP

``python -m visprune.data toyworld`` generates the toy world (see :mod:`visprune.data.toyworld`).
"""

from visprune.data.coco import CocoIndex, caption_samples, chair_ground_truth, load_captions, load_instances
from visprune.data.pope import build_pope, question_text, read_pope, write_pope
from visprune.data.samples import ImageLoadError, Sample, load_rgb
from visprune.data.scienceqa import read_scienceqa, toy_problems
from visprune.data.toyworld import (
    CATEGORIES,
    IMAGE_SIZE,
    N_TOKENS,
    PATCH_SIZE,
    SCENES,
    TOY_BUDGETS,
    ToyPaths,
    default_data_dir,
    generate_toyworld,
    toy_budget,
    toy_paths,
    toy_synonyms,
)

__all__ = [
    "CATEGORIES", "IMAGE_SIZE", "N_TOKENS", "PATCH_SIZE", "SCENES", "TOY_BUDGETS",
    "CocoIndex", "ImageLoadError", "Sample", "ToyPaths",
    "build_pope", "caption_samples", "chair_ground_truth", "default_data_dir", "generate_toyworld",
    "load_captions", "load_instances", "load_rgb", "question_text", "read_pope", "read_scienceqa",
    "toy_budget", "toy_paths", "toy_problems", "toy_synonyms", "write_pope",
]
