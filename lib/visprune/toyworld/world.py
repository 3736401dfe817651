"""The whole toy world: its folder layout, the generator, and its manifest (DESIGN.md section 3).

The toy world is a seeded generator of synthetic scenes (:mod:`visprune.toyworld.scenes`,
objects and scene types from :mod:`visprune.toyworld.categories`) written in the formats of the
real data sets, so the readers of :mod:`visprune.datasets` serve both: COCO instances and
captions (:mod:`visprune.toyworld.annotations`), POPE question files built by POPE's rules
(:func:`visprune.datasets.pope.build_pope`) and ScienceQA-format problems
(:mod:`visprune.toyworld.problems`). It is built to make the studied effects *possible* without
forcing them.

:func:`generate_toyworld` renders the world in memory and writes it under one folder,
atomically, only where files are missing or changed, and never touching files in that folder
that it did not write itself (:mod:`visprune.toyworld.sync`); ``python -m visprune.toyworld``
is the command line for it. ``manifest.json`` records the parameters (with
:data:`~visprune.toyworld.scenes.GENERATOR_VERSION`), the file list and a content hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from visprune import _paths
from visprune import _validation as v
from visprune.datasets import pope
from visprune.datasets.coco import CocoIndex
from visprune.toyworld.annotations import coco_captions, coco_instances
from visprune.toyworld.problems import toy_problems
from visprune.toyworld.scenes import GENERATOR_VERSION, render_scene
from visprune.toyworld.sizes import IMAGE_SIZE, PATCH_SIZE
from visprune.toyworld.sync import json_bytes, sync_world

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ToyPaths:
    """Where the toy world's files are (layout written by :func:`generate_toyworld`)."""

    root: Path

    def images(self, split: str = "test") -> Path:
        return self.root / "images" / split

    def instances(self, split: str = "test") -> Path:
        return self.root / "annotations" / f"instances_{split}.json"

    def captions(self, split: str = "test") -> Path:
        return self.root / "annotations" / f"captions_{split}.json"

    def pope(self, strategy: str = "random", split: str = "test") -> Path:
        """``pope/toy_pope_{strategy}.json`` (test images) or ``pope/toy_pope_val_{strategy}.json``."""
        if strategy not in pope.STRATEGIES:
            raise ValueError(f"strategy: expected one of {pope.STRATEGIES}, got {strategy!r}")
        if split == "test":
            return self.root / "pope" / f"toy_pope_{strategy}.json"
        return self.root / "pope" / f"toy_pope_{split}_{strategy}.json"

    @property
    def scienceqa(self) -> Path:
        return self.root / "scienceqa"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def synonyms(self) -> Path:
        """The toy CHAIR synonym table (shipped: ``visprune/assets/chair/toy_synonyms.txt``)."""
        return _paths.asset(_paths.TOY_SYNONYMS)


def toy_paths(root: str | os.PathLike | None = None) -> ToyPaths:
    """The standard file locations of a toy world; by default ``toyworld/`` under
    :func:`visprune._paths.data_root` (``$VISPRUNE_DATA``, a checkout's ``data/``, or the user cache)."""
    return ToyPaths(Path(root) if root is not None else _paths.data_root() / "toyworld")


def split_sizes(n_images: int, fractions: Sequence[float]) -> dict[str, int]:
    """Images per split: ``fractions`` (train, val, test) of ``n_images``, rounded, summing up."""
    want = "three fractions (train, val, test), each a number in [0, 1], summing to 1"
    try:
        fractions = tuple(fractions)
    except TypeError:
        raise ValueError(f"split_fractions: {want}, got {fractions!r}") from None
    if len(fractions) != 3 or not all(_is_real(f) for f in fractions):
        raise ValueError(f"split_fractions: {want}, got {fractions!r}")
    if any(not 0.0 <= f <= 1.0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split_fractions: {want}, got {tuple(float(f) for f in fractions)} (sum {sum(fractions):g})")
    n_train = int(round(n_images * fractions[0]))
    n_val = int(round(n_images * fractions[1]))
    return {"train": n_train, "val": n_val, "test": n_images - n_train - n_val}


def _is_real(x) -> bool:
    """A finite real number that is not a bool."""
    return (not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, float, np.integer, np.floating))
            and math.isfinite(x))


def _is_count(x, low: int) -> bool:
    """An int (not a bool) >= ``low``."""
    return not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, np.integer)) and x >= low


def generate_toyworld(
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    n_images: int = 2000,
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
    pope_images: int | None = 500,
    sqa_per_image: int = 1,
    sqa_text_only: float = 0.08,
    force: bool = False,
) -> dict:
    """Write the toy world under ``out`` (default ``data/toyworld``); return its manifest.

    Layout (see :class:`ToyPaths`)::

        images/{split}/toy_{split}_{image_id:012d}.png
        annotations/instances_{split}.json, captions_{split}.json      (COCO format)
        pope/toy_pope_{random,popular,adversarial}.json                 (test images, official format)
        pope/toy_pope_val_{random,popular,adversarial}.json             (validation images)
        scienceqa/problems.json, pid_splits.json, {split}/{pid}/image.png (ScienceQA format)
        manifest.json                                                   (parameters, file list, content hash)

    Image ids run from 1 over train, then val, then test. POPE files follow POPE's rules
    (:func:`visprune.datasets.pope.build_pope`) with at most ``pope_images`` images each.
    ScienceQA problems (:func:`visprune.toyworld.problems.toy_problems`): ``sqa_per_image`` per
    image plus a ``sqa_text_only`` fraction without an image.

    The folder may hold other files: they are the user's and are never replaced or removed.

    - **Up to date**: if ``manifest.json`` records the same parameters and the files it lists
      still hash to its content hash, nothing is written (``force=True`` skips this check).
    - **Completed or repaired**: otherwise the world is rendered in memory and compared with
      the folder file by file; only the generator's missing or different files are written,
      and files of an earlier world that the new one does not have are removed, where the
      manifest lists them as the generator's. A folder whose ``manifest.json`` is missing is
      completed the same way, provided that each file already at one of the world's paths is
      identical to the one the generator would write there.
    - **Never the user's files**: a file at one of the world's paths that the manifest does not
      list and that differs stops the call (ValueError naming it) before anything is written,
      as does a non-empty folder that holds no toy world.
    - **Atomic**: each file is written to a temporary name and renamed into place, and the
      manifest is marked incomplete until the last file is in place, so a run that is killed
      leaves a world that never passes as complete; the next call completes it.

    An ``OSError`` while writing (a full disk) names the file; the world is left marked
    incomplete.
    """
    for name, value, low in (("seed", seed, 0), ("n_images", n_images, 1), ("sqa_per_image", sqa_per_image, 0)):
        if not _is_count(value, low):
            raise ValueError(f"generate_toyworld: {name} must be an integer >= {low}, got {value!r}")
    if pope_images is not None and not _is_count(pope_images, 1):
        raise ValueError(f"generate_toyworld: pope_images must be a positive integer or None, got {pope_images!r}")
    if not _is_real(sqa_text_only) or not 0.0 <= sqa_text_only < 1.0:
        raise ValueError(f"generate_toyworld: sqa_text_only must be a number in [0, 1), got {sqa_text_only!r}")
    if not isinstance(force, (bool, np.bool_)):
        raise ValueError(f"generate_toyworld: force must be True or False, got {force!r}")
    sizes = split_sizes(n_images, split_fractions)
    paths = toy_paths(out)
    current, on_disk = _check_world_folder(paths, "out")
    params = {
        "generator_version": GENERATOR_VERSION, "seed": int(seed), "n_images": int(n_images),
        "split_fractions": [float(f) for f in split_fractions], "split_sizes": sizes,
        "pope_images": None if pope_images is None else int(pope_images), "sqa_per_image": int(sqa_per_image),
        "sqa_text_only": float(sqa_text_only), "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
    }

    owned = _owned_files(current, on_disk)
    if (not force and current is not None and current.get("complete", True)
            and current.get("params") == params and _intact(paths.root, current, owned)):
        return current

    files, links, manifest = _render_world(params)
    sync_world(paths.root, paths.manifest, files, links, manifest, owned)
    return manifest


def check_world_folder(out: str | os.PathLike | None = None, name: str = "out") -> Path:
    """Check, before any work, that a toy world may be written at ``out``; return its folder.

    ValueError naming ``name`` (an argument, or a command-line option such as ``--world``) when
    ``out`` is a file or cannot be written, when its ``manifest.json`` is not a toy world's, or
    when it is a non-empty folder that holds no toy world. Nothing is written.
    """
    paths = toy_paths(out)
    _check_world_folder(paths, name)
    return paths.root


def _check_world_folder(paths: ToyPaths, name: str) -> tuple[dict | None, set[str]]:
    """:func:`check_world_folder`; returns the manifest (or None) and the files on disk."""
    v.output_folder(paths.root, name)
    current = _read_manifest(paths, name)
    on_disk = _files_on_disk(paths)
    if current is None and on_disk and not any(_LAYOUT.fullmatch(rel) for rel in on_disk):
        raise ValueError(
            f"{name}: {paths.root} is a non-empty folder that holds no toy world (no manifest.json, none of its files); "
            "refusing to write into it. Pass an empty or new folder"
        )
    return current, on_disk


def _render_world(params: dict) -> tuple[dict[str, bytes], dict[str, str], dict]:
    """Every file of the world described by ``params``, in memory: (files, links, manifest).

    ``files`` maps relative path -> content; ``links`` maps the ScienceQA image paths to the
    image under ``images/`` with the same content (written as hard links).
    """
    seed, sizes, pope_images = params["seed"], params["split_sizes"], params["pope_images"]
    files: dict[str, bytes] = {}  # relative path -> content
    indexes: dict[str, CocoIndex] = {}
    image_path: dict[str, str] = {}  # file name -> relative path under images/
    next_id = 1
    for split in SPLITS:
        scenes = []
        for image_id in range(next_id, next_id + sizes[split]):
            desc, png = render_scene(seed, image_id, split)
            scenes.append(desc)
            files[f"images/{split}/{desc.file_name}"] = png
            image_path[desc.file_name] = f"images/{split}/{desc.file_name}"
        next_id += sizes[split]
        instances = coco_instances(scenes, split)
        files[f"annotations/instances_{split}.json"] = json_bytes(instances)
        files[f"annotations/captions_{split}.json"] = json_bytes(coco_captions(scenes, split))
        indexes[split] = CocoIndex.from_dict(instances, source=f"instances_{split}.json")

    for split, prefix in (("test", "toy_pope_"), ("val", "toy_pope_val_")):
        index = indexes[split]
        if not any(len(index.image_categories(i)) >= pope.N_POSITIVE for i in index.images):
            raise ValueError(
                f"generate_toyworld: the {split} split ({sizes[split]} images) has no image with "
                f"{pope.N_POSITIVE} or more object categories, so POPE has no questions for it; "
                "use more images (n_images) or a larger share for that split (split_fractions)"
            )
        for strategy in pope.STRATEGIES:
            questions = pope.build_pope(index, strategy, n_images=pope_images, seed=seed)
            files[f"pope/{prefix}{strategy}.json"] = pope.pope_lines(questions).encode()

    problems, pid_splits, pid_image = toy_problems(
        indexes, seed=seed, per_image=params["sqa_per_image"], text_only_fraction=params["sqa_text_only"]
    )
    files["scienceqa/problems.json"] = json_bytes(problems)
    files["scienceqa/pid_splits.json"] = json_bytes(pid_splits)
    links: dict[str, str] = {}  # ScienceQA image -> the same image under images/ (hard link, else copy)
    for pid, file_name in pid_image.items():
        links[f"scienceqa/{problems[pid]['split']}/{pid}/image.png"] = image_path[file_name]

    manifest = {
        "generator": GENERATOR, "params": params,
        "n_files": len(files) + len(links),
        "content_sha256": _content_hash([*files.items(), *((rel, files[src]) for rel, src in links.items())]),
        "counts": {
            "images": sizes,
            "pope_questions": {
                name.split("/")[-1]: data.count(b"\n") for name, data in files.items() if name.startswith("pope/")
            },
            "scienceqa_problems": {s: len(pid_splits[s]) for s in SPLITS},
        },
        "complete": True,
        "files": sorted([*files, *links]),  # every file the generator wrote here, manifest.json aside
    }
    return files, links, manifest


#: Who wrote a manifest. The value is the generator's module path when worlds were first written
#: (``visprune.data.toyworld``); it is kept so that worlds generated before the move stay valid
#: and every file, the manifest included, stays byte-identical.
GENERATOR = "visprune.data.toyworld"
MANIFEST = "manifest.json"
#: Paths a toy world's files have (for manifests written before they listed their files, and to
#: recognise a toy world whose manifest.json is missing).
_LAYOUT = re.compile(
    r"images/(train|val|test)/toy_(train|val|test)_\d{12}\.png"
    r"|annotations/(instances|captions)_(train|val|test)\.json"
    r"|pope/toy_pope_(val_)?(random|popular|adversarial)\.json"
    r"|scienceqa/(problems|pid_splits)\.json"
    r"|scienceqa/(train|val|test)/\d+/image\.png"
)


def _content_hash(items) -> str:
    """SHA-256 over (relative path, SHA-256 of content) pairs in path order."""
    return _digest_hash((rel, hashlib.sha256(data).hexdigest()) for rel, data in items)


def _digest_hash(items) -> str:
    """:func:`_content_hash` from (relative path, SHA-256 hex digest of content) pairs."""
    h = hashlib.sha256()
    for rel, digest in sorted(items):
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()


def _read_manifest(paths: ToyPaths, name: str = "out") -> dict | None:
    """The world's manifest; None if there is no ``manifest.json``.

    A ``manifest.json`` that is not a toy world's (unreadable, or written by something else) is
    not ours to replace: ValueError naming it.
    """
    path = paths.manifest
    if not path.exists():
        return None
    problem = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("generator") != GENERATOR:
            problem = "it was not written by the visprune toy-world generator"
    except (OSError, ValueError) as err:
        problem = f"it cannot be read: {v.error_line(err)}"
    if problem is None:
        return data
    raise ValueError(
        f"{name}: {path} is not a toy-world manifest ({problem}); the generator writes only into a folder whose files it "
        "can account for. Move it away if it is yours, or delete it if it is a damaged toy-world manifest, and rerun"
    )


def _files_on_disk(paths: ToyPaths) -> set[str]:
    """Relative paths of the files under the world's folder, ``manifest.json`` aside."""
    root = paths.root
    if not root.is_dir():
        return set()
    found = set()
    for folder, _, names in os.walk(root):
        base = Path(folder)
        for name in names:
            rel = (base / name).relative_to(root).as_posix()
            if rel != MANIFEST:
                found.add(rel)
    return found


def _owned_files(manifest: dict | None, on_disk: set[str]) -> set[str]:
    """The files the generator wrote: those the manifest lists (older manifests, which list
    none: the files at the world's paths). None without a manifest."""
    if manifest is None:
        return set()
    listed = manifest.get("files")
    if isinstance(listed, list) and all(isinstance(rel, str) for rel in listed):
        return set(listed)
    return {rel for rel in on_disk if _LAYOUT.fullmatch(rel)}


def _intact(root: Path, manifest: dict, owned: set[str]) -> bool:
    """Whether the generator's files are all there and hash to the manifest's content hash."""
    digests = []
    for rel in owned:
        try:
            digests.append((rel, hashlib.sha256((root / rel).read_bytes()).hexdigest()))
        except OSError:
            return False
    return len(digests) == manifest.get("n_files", -1) and _digest_hash(digests) == manifest.get("content_sha256")

