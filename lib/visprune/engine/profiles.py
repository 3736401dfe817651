"""Profiles: where the model and the data sets of a run live (DESIGN.md section 3).

Two profiles run the same code:

- ``toy`` (the default): the shipped toy LLaVA (package data, ``visprune/assets/toy-llava``) and
  the toy world generated under ``<data>/toyworld`` (generated on first use; seeded, so identical
  everywhere; ``<data>`` is ``visprune._paths.data_root()``: ``data/`` in a checkout).
- ``llava-1.5-7b``: a llava-hf checkpoint and the real data sets, from paths given as arguments
  or environment variables. Any llava-hf-layout checkpoint directory works.

Environment variables for the real profile (arguments win over them):

================================  ============================================================
``VISPRUNE_MODEL``                checkpoint directory (``llava-hf/llava-1.5-7b-hf`` layout)
``VISPRUNE_COCO_IMAGES``          folder with COCO val2014 images (``COCO_val2014_*.jpg``)
``VISPRUNE_COCO_ANNOTATIONS``     folder with ``instances_val2014.json`` and ``captions_val2014.json``
``VISPRUNE_POPE``                 folder with ``coco_pope_{random,popular,adversarial}.json``
``VISPRUNE_SCIENCEQA``            folder with ``problems.json``, ``pid_splits.json``, ``test/<pid>/image.png``
``VISPRUNE_RESULTS``              where run caches are written (default ``<data>/results``)
================================  ============================================================
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from visprune import _paths
from visprune.datasets.pope import STRATEGIES

PROFILES = ("toy", "llava-1.5-7b")
POPE_SPLITS = STRATEGIES  # the POPE splits, as the POPE reader declares them


def repo_root() -> Path:
    """The repository root (the folder holding ``lib/visprune``); the current folder when the
    package is installed from a wheel."""
    return _paths.repo_root() or Path.cwd()


#: CHAIR protocol on a real profile (DESIGN.md section 6): 500 seeded images, up to 512 new tokens.
REAL_CHAIR_IMAGES = 500
REAL_CAPTION_TOKENS = 512
#: The toy profile captions every test image with up to 64 new tokens (its captions are short).
TOY_CAPTION_TOKENS = 64


@dataclass(frozen=True)
class Profile:
    """Every path a run needs. Build one with :func:`resolve_profile`.

    Data paths may be None on a real profile when they were not given;
    ``visprune.engine.datasets.require`` names the missing one when a data set needs it. ``chair_images`` (None = every caption image) and
    ``caption_tokens`` are the profile's CHAIR protocol defaults (overridable per run).
    """

    name: str
    model: Path
    pope_dir: Path | None
    coco_images: Path | None
    coco_annotations: Path | None
    scienceqa_root: Path | None
    chair_synonyms: Path
    results: Path
    world: Path | None = None  # the toy world root (toy profile only)
    pope_pattern: str = "coco_pope_{split}.json"
    pope_val_pattern: str | None = None  # POPE questions on validation images (toy world); None: none
    pope_val_images: Path | None = None
    instances_name: str = "instances_val2014.json"
    captions_name: str = "captions_val2014.json"
    chair_images: int | None = REAL_CHAIR_IMAGES
    caption_tokens: int = REAL_CAPTION_TOKENS

    @property
    def pope_files(self) -> dict:
        """split -> POPE question file (JSON lines, the official format); {} when no folder is set."""
        if self.pope_dir is None:
            return {}
        return {s: Path(self.pope_dir) / self.pope_pattern.format(split=s) for s in POPE_SPLITS}

    @property
    def pope_val_files(self) -> dict:
        """split -> POPE validation question file; {} when the profile has none (a real profile:
        recalibration then fits on held-out images, ``visprune.engine.datasets.fitting_image``)."""
        if self.pope_dir is None or self.pope_val_pattern is None:
            return {}
        return {s: Path(self.pope_dir) / self.pope_val_pattern.format(split=s) for s in POPE_SPLITS}

    @property
    def pope_images(self) -> Path | None:
        return self.coco_images

    @property
    def coco_instances(self) -> Path | None:
        return None if self.coco_annotations is None else Path(self.coco_annotations) / self.instances_name

    @property
    def coco_captions(self) -> Path | None:
        return None if self.coco_annotations is None else Path(self.coco_annotations) / self.captions_name

    def describe(self) -> dict:
        """The profile as plain strings (recorded with every run)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _path(value: str | os.PathLike | None, env: str) -> Path | None:
    chosen = value if value is not None else os.environ.get(env)
    return None if chosen in (None, "") else Path(chosen).expanduser()


def resolve_profile(
    name: str = "toy",
    *,
    model: str | os.PathLike | None = None,
    coco_images: str | os.PathLike | None = None,
    coco_annotations: str | os.PathLike | None = None,
    pope: str | os.PathLike | None = None,
    scienceqa: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    world: str | os.PathLike | None = None,
) -> Profile:
    """Resolve a profile's paths. Nothing is read or loaded here; readers check the files.

    ``toy`` accepts ``model`` (another checkpoint on the toy world), ``world`` and ``results``
    overrides; ``llava-1.5-7b`` needs the model (argument or ``VISPRUNE_MODEL``) and, per data
    set, only the paths that data set reads (``DatasetSpec.needs``).
    """
    data = _paths.data_root()
    results_dir = Path(results or os.environ.get("VISPRUNE_RESULTS") or data / "results")
    if name == "toy":
        world_dir = Path(world) if world is not None else data / "toyworld"
        return Profile(
            name="toy",
            model=Path(model) if model is not None else _paths.asset(_paths.TOY_MODEL),
            pope_dir=world_dir / "pope",
            coco_images=world_dir / "images" / "test",
            coco_annotations=world_dir / "annotations",
            scienceqa_root=world_dir / "scienceqa",
            chair_synonyms=_paths.asset(_paths.TOY_SYNONYMS),
            results=results_dir,
            world=world_dir,
            pope_pattern="toy_pope_{split}.json",
            pope_val_pattern="toy_pope_val_{split}.json",
            pope_val_images=world_dir / "images" / "val",
            instances_name="instances_test.json",
            captions_name="captions_test.json",
            chair_images=None,
            caption_tokens=TOY_CAPTION_TOKENS,
        )
    if name == "llava-1.5-7b":
        if world is not None:
            raise ValueError("world=... applies to the toy profile only")
        model_dir = _path(model, "VISPRUNE_MODEL")
        if model_dir is None:
            raise ValueError(
                f"profile {name!r}: the model checkpoint directory is not set. Pass --model (Python: model=...) "
                "or set the environment variable VISPRUNE_MODEL."
            )
        return Profile(
            name=name,
            model=model_dir,
            pope_dir=_path(pope, "VISPRUNE_POPE"),
            coco_images=_path(coco_images, "VISPRUNE_COCO_IMAGES"),
            coco_annotations=_path(coco_annotations, "VISPRUNE_COCO_ANNOTATIONS"),
            scienceqa_root=_path(scienceqa, "VISPRUNE_SCIENCEQA"),
            chair_synonyms=_paths.asset(_paths.COCO_SYNONYMS),
            results=results_dir,
        )
    raise ValueError(f"profile: unknown profile {name!r}; choose one of {PROFILES}")


def with_results(profile: Profile, results: str | os.PathLike) -> Profile:
    """The same profile writing its caches elsewhere (tests, scratch runs)."""
    return replace(profile, results=Path(results))
