"""The toy world: a seeded generator of synthetic scenes written in the real data sets' formats.

DESIGN.md section 3 (the ``toy`` profile). Modules, in the order they build on each other:

- :mod:`~visprune.toyworld.sizes`: image and patch sizes, the toy token budgets;
- :mod:`~visprune.toyworld.glyphs`: one drawing per object category, the colour names;
- :mod:`~visprune.toyworld.categories`: the categories (synonyms, colours) and scene types;
- :mod:`~visprune.toyworld.language`: articles, plurals, number words, reference captions;
- :mod:`~visprune.toyworld.scenes`: placing objects and rendering one image;
- :mod:`~visprune.toyworld.annotations`: COCO-format instances and captions;
- :mod:`~visprune.toyworld.problems`: ScienceQA-style problems about the images;
- :mod:`~visprune.toyworld.sync` and :mod:`~visprune.toyworld.world`: the folder layout, the
  generator and its manifest.

The toy world uses the readers' formats and builders (:mod:`visprune.datasets`: COCO index,
POPE builder); the readers never import the toy world.

>>> from visprune.toyworld import toy_paths, generate_toyworld
>>> paths = toy_paths()                      # toyworld/ under visprune._paths.data_root()
>>> generate_toyworld(paths.root, seed=0)    # doctest: +SKIP

``python -m visprune.toyworld --out data/toyworld --seed 0`` generates it;
``python -m visprune.toyworld synonyms`` rewrites the shipped CHAIR synonym table.
"""

from visprune.toyworld.categories import CATEGORIES, CATEGORY_BY_NAME, SCENES, toy_synonyms_text
from visprune.toyworld.glyphs import COLOURS
from visprune.toyworld.problems import toy_problems
from visprune.toyworld.scenes import GENERATOR_VERSION, render_scene
from visprune.toyworld.sizes import IMAGE_SIZE, N_TOKENS, PATCH_SIZE, TOY_BUDGETS, toy_budget
from visprune.toyworld.world import ToyPaths, check_world_folder, generate_toyworld, toy_paths

__all__ = [
    "CATEGORIES", "CATEGORY_BY_NAME", "COLOURS", "GENERATOR_VERSION", "IMAGE_SIZE", "N_TOKENS", "PATCH_SIZE",
    "SCENES", "TOY_BUDGETS", "ToyPaths",
    "check_world_folder", "generate_toyworld", "render_scene", "toy_budget", "toy_paths", "toy_problems",
    "toy_synonyms_text",
]
