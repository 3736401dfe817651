"""Readers of the real data sets: POPE, ScienceQA-IMG and COCO captioning for CHAIR.

DESIGN.md sections 4 and 6. Every reader returns a ``list[Sample]``
(:class:`~visprune.datasets.samples.Sample`: id, image path loaded lazily, prompt, answer set,
label, meta). The toy world (:mod:`visprune.toyworld`) writes its files in the same formats, so
the same readers serve both:

>>> from visprune.datasets import read_pope, read_scienceqa, caption_samples, chair_ground_truth
>>> pope = read_pope("coco_pope_adversarial.json", "val2014",
...                  instances_file="instances_val2014.json")           # doctest: +SKIP
>>> sqa = read_scienceqa("ScienceQA/data/scienceqa", "test")              # ScienceQA-IMG  # doctest: +SKIP

``python -m visprune.datasets pope`` builds POPE question files from COCO instances
annotations (:func:`build_pope`). This layer imports only the instrument's prompts and the
metrics below it, never the toy world.
"""

from visprune.datasets.coco import CocoIndex, caption_samples, chair_ground_truth, load_captions, load_instances
from visprune.datasets.pope import build_pope, question_text, read_pope, write_pope
from visprune.datasets.samples import ImageLoadError, Sample, load_rgb, write_atomically
from visprune.datasets.scienceqa import read_scienceqa

__all__ = [
    "CocoIndex", "ImageLoadError", "Sample",
    "build_pope", "caption_samples", "chair_ground_truth", "load_captions", "load_instances", "load_rgb",
    "question_text", "read_pope", "read_scienceqa", "write_atomically", "write_pope",
]
