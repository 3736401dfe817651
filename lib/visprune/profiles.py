"""Profiles: where the model and the data sets of a run live (DESIGN.md section 3).

Two profiles run the same code:

- ``toy`` (the default): the shipped toy LLaVA under ``data/models/toy-llava`` and the toy world
  generated under ``data/toyworld`` (generated on first use; seeded, so identical everywhere).
- ``llava-1.5-7b``: a llava-hf checkpoint and the real data sets, from paths given as arguments
  or environment variables. Any llava-hf-layout checkpoint directory works.

Environment variables for the real profile (arguments win over them):

================================  ============================================================
``VISPRUNE_MODEL``                checkpoint directory (``llava-hf/llava-1.5-7b-hf`` layout)
``VISPRUNE_COCO_IMAGES``          folder with COCO val2014 images (``COCO_val2014_*.jpg``)
``VISPRUNE_COCO_ANNOTATIONS``     folder with ``instances_val2014.json`` and ``captions_val2014.json``
``VISPRUNE_POPE``                 folder with ``coco_pope_{random,popular,adversarial}.json``
``VISPRUNE_SCIENCEQA``            folder with ``problems.json``, ``pid_splits.json``, ``test/<pid>/image.png``
``VISPRUNE_RESULTS``              where run caches are written (default ``data/results``)
================================  ============================================================
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PROFILES = ("toy", "llava-1.5-7b")
POPE_SPLITS = ("random", "popular", "adversarial")


def repo_root() -> Path:
    """The repository root (the folder holding ``lib/visprune``)."""
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Profile:
    """Every path a run needs. Build one with :func:`resolve_profile`."""

    name: str
    model: Path
    pope_files: dict  # split -> question file (JSON lines, the official format)
    pope_images: Path
    scienceqa_root: Path
    coco_instances: Path
    coco_captions: Path
    coco_images: Path
    chair_synonyms: Path
    results: Path
    world: Path | None = None  # the toy world root (toy profile only)

    def describe(self) -> dict:
        """The profile as plain strings (recorded with every run)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _path(value: str | os.PathLike | None, env: str, what: str, profile: str) -> Path:
    chosen = value if value is not None else os.environ.get(env)
    if chosen is None:
        raise ValueError(
            f"profile {profile!r}: {what} is not set. Pass it as an argument or set the environment "
            f"variable {env}."
        )
    return Path(chosen).expanduser()


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
    overrides; ``llava-1.5-7b`` needs every path (arguments or environment variables).
    """
    root = repo_root()
    results_dir = Path(results or os.environ.get("VISPRUNE_RESULTS") or root / "data" / "results")
    synonyms = root / "data" / "chair" / "coco_synonyms.txt"
    if name == "toy":
        world_dir = Path(world) if world is not None else root / "data" / "toyworld"
        return Profile(
            name="toy",
            model=Path(model) if model is not None else root / "data" / "models" / "toy-llava",
            pope_files={s: world_dir / "pope" / f"toy_pope_{s}.json" for s in POPE_SPLITS},
            pope_images=world_dir / "images" / "test",
            scienceqa_root=world_dir / "scienceqa",
            coco_instances=world_dir / "annotations" / "instances_test.json",
            coco_captions=world_dir / "annotations" / "captions_test.json",
            coco_images=world_dir / "images" / "test",
            chair_synonyms=root / "data" / "chair" / "toy_synonyms.txt",
            results=results_dir,
            world=world_dir,
        )
    if name == "llava-1.5-7b":
        if world is not None:
            raise ValueError("world=... applies to the toy profile only")
        annotations = _path(coco_annotations, "VISPRUNE_COCO_ANNOTATIONS", "the COCO annotations folder", name)
        pope_dir = _path(pope, "VISPRUNE_POPE", "the POPE question folder", name)
        images = _path(coco_images, "VISPRUNE_COCO_IMAGES", "the COCO val2014 image folder", name)
        return Profile(
            name=name,
            model=_path(model, "VISPRUNE_MODEL", "the model checkpoint directory", name),
            pope_files={s: pope_dir / f"coco_pope_{s}.json" for s in POPE_SPLITS},
            pope_images=images,
            scienceqa_root=_path(scienceqa, "VISPRUNE_SCIENCEQA", "the ScienceQA folder", name),
            coco_instances=annotations / "instances_val2014.json",
            coco_captions=annotations / "captions_val2014.json",
            coco_images=images,
            chair_synonyms=synonyms,
            results=results_dir,
        )
    raise ValueError(f"profile: unknown profile {name!r}; choose one of {PROFILES}")


def with_results(profile: Profile, results: str | os.PathLike) -> Profile:
    """The same profile writing its caches elsewhere (tests, scratch runs)."""
    return replace(profile, results=Path(results))
