"""Data-set specs: every data set a run can use, declared once (DESIGN.md sections 5 and 6).

A :class:`DatasetSpec` names the reader that turns a profile's files into samples (each sample
carries its prompt, built by the reader's prompt builder, and its answer set), the task kind
(``binary`` yes/no questions, ``multiple-choice`` questions, ``captioning``), the headline
metrics :func:`visprune.engine.summary.summarize` reports for it, the files whose content
defines it (hashed into the run key) and the profile paths it needs. The engine, the command
line and the chapters read :data:`DATASETS` and :func:`dataset_spec`; nothing else lists data
sets.

Fitting splits. Recalibration (``visprune.book.recalibration``) fits on a split that shares no
sample with the evaluated one, named by the test set's ``validation`` field:

- ``pope-<split>-val``: on the toy profile, the toy world's validation POPE files (questions
  on the validation images); on a real profile, which has no POPE validation file, the POPE
  questions of the *fitting images*: the images whose name hashes into one fifth of the hash
  space (:func:`fitting_image`, SHA-256, so the choice is fixed, documented and independent of
  order). The recalibration chapter evaluates only test samples whose image was not fitted on.
- ``scienceqa-val``: ScienceQA's official ``val`` split (IMG subset), on every profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from visprune.engine.profiles import POPE_SPLITS, Profile

__all__ = ["TASKS", "DatasetSpec", "DATASET_SPECS", "DATASETS", "dataset_spec", "require", "ensure_toy_world",
           "load_samples", "dataset_files", "chair_truth", "fitting_image", "FIT_SHARE"]

TASKS = ("binary", "multiple-choice", "captioning")
_QA_METRICS = ("accuracy", "ece", "mce", "brier", "aurc", "eaurc", "answer_mass")

# The profile paths, as (profile field, what it is, command-line option, environment variable).
_POPE_FILES = ("pope_dir", "the POPE question folder", "--pope", "VISPRUNE_POPE")
_COCO_IMAGES = ("coco_images", "the COCO val2014 image folder", "--coco-images", "VISPRUNE_COCO_IMAGES")
_COCO_ANNOTATIONS = ("coco_annotations", "the COCO annotations folder", "--coco-annotations",
                     "VISPRUNE_COCO_ANNOTATIONS")
_SCIENCEQA = ("scienceqa_root", "the ScienceQA folder", "--scienceqa", "VISPRUNE_SCIENCEQA")


@dataclass(frozen=True)
class DatasetSpec:
    """One data set (see the module docstring). ``read(profile, config)`` returns the samples in
    their canonical order (before ``n_samples`` is applied, except for CHAIR, which draws
    ``n_samples`` images with ``sample_seed``); ``files(profile)`` the files that define it."""

    name: str
    task: str
    label: str
    read: Callable[[Profile, Any], list]
    files: Callable[[Profile], list[Path]]
    needs: tuple[tuple[str, str, str, str], ...]
    metrics: tuple[str, ...]
    prompt: str  # the reader's prompt builder, for the record (visprune.instrument.prompts)
    answers: tuple[str, ...] | None = None  # the answer set when fixed; None: per sample
    draws_samples: bool = False  # n_samples draws images with sample_seed (CHAIR) instead of a prefix
    validation: str | None = None  # the data set recalibration fits on for this one (module docstring)


def _pope_reader(split: str) -> Callable[[Profile, Any], list]:
    def read(profile: Profile, config: Any) -> list:
        from visprune.datasets import read_pope

        instances = profile.coco_instances
        instances = instances if instances is not None and Path(instances).is_file() else None
        return read_pope(profile.pope_files[split], profile.pope_images, split, instances_file=instances)

    return read


def _pope_files(split: str) -> Callable[[Profile], list[Path]]:
    return lambda profile: [Path(profile.pope_files[split])]


#: One image in FIT_SHARE is a fitting image on a profile without a POPE validation file.
FIT_SHARE = 5


def fitting_image(image_id: str) -> bool:
    """Whether an image belongs to the fitting images of a real profile's POPE (module docstring):
    the first 8 bytes of SHA-256 of its name, as an integer, are divisible by :data:`FIT_SHARE`."""
    import hashlib

    return int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:8], "little") % FIT_SHARE == 0


def _pope_val_reader(split: str) -> Callable[[Profile, Any], list]:
    def read(profile: Profile, config: Any) -> list:
        from visprune.datasets import read_pope

        if profile.pope_val_files:
            return read_pope(profile.pope_val_files[split], profile.pope_val_images, split)
        return [s for s in _pope_reader(split)(profile, config) if fitting_image(s.image_id)]

    return read


def _pope_val_files(split: str) -> Callable[[Profile], list[Path]]:
    return lambda profile: [Path((profile.pope_val_files or profile.pope_files)[split])]


def _scienceqa_reader(split: str) -> Callable[[Profile, Any], list]:
    def read(profile: Profile, config: Any) -> list:
        from visprune.datasets import read_scienceqa

        return read_scienceqa(profile.scienceqa_root, split=split, img_only=True)

    return read


def _read_captions(profile: Profile, config: Any) -> list:
    from visprune.datasets import caption_samples

    return caption_samples(profile.coco_instances, profile.coco_images, n=config.n_samples, seed=config.sample_seed)


def _specs() -> dict[str, DatasetSpec]:
    specs = {}
    pope_metrics = _QA_METRICS + ("precision", "recall", "f1", "yes_ratio")
    for split in POPE_SPLITS:
        specs[f"pope-{split}"] = DatasetSpec(
            f"pope-{split}", "binary", f"POPE ({split})", _pope_reader(split), _pope_files(split),
            (_POPE_FILES, _COCO_IMAGES), pope_metrics, "prompts.pope_question", ("yes", "no"),
            validation=f"pope-{split}-val")
        specs[f"pope-{split}-val"] = DatasetSpec(
            f"pope-{split}-val", "binary", f"POPE ({split}), fitting split", _pope_val_reader(split),
            _pope_val_files(split), (_POPE_FILES, _COCO_IMAGES), pope_metrics, "prompts.pope_question", ("yes", "no"))
    sqa_files = lambda p: [p.scienceqa_root / "problems.json", p.scienceqa_root / "pid_splits.json"]  # noqa: E731
    specs["scienceqa"] = DatasetSpec(
        "scienceqa", "multiple-choice", "ScienceQA-IMG", _scienceqa_reader("test"), sqa_files,
        (_SCIENCEQA,), _QA_METRICS, "prompts.scienceqa_question", validation="scienceqa-val")
    specs["scienceqa-val"] = DatasetSpec(
        "scienceqa-val", "multiple-choice", "ScienceQA-IMG, validation split", _scienceqa_reader("val"), sqa_files,
        (_SCIENCEQA,), _QA_METRICS, "prompts.scienceqa_question")
    specs["chair"] = DatasetSpec(
        "chair", "captioning", "CHAIR (COCO captions)", _read_captions, lambda p: [Path(p.coco_instances)],
        (_COCO_ANNOTATIONS, _COCO_IMAGES), ("chair_s", "chair_i", "recall", "length"), "prompts.CAPTION_PROMPT",
        draws_samples=True)
    return specs


DATASET_SPECS: dict[str, DatasetSpec] = _specs()
DATASETS = tuple(DATASET_SPECS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of data set ``name``; ValueError naming the known data sets otherwise."""
    if not isinstance(name, str) or name not in DATASET_SPECS:
        raise ValueError(f"dataset: unknown data set {name!r}; choose one of {DATASETS}")
    return DATASET_SPECS[name]


def require(profile: Profile, dataset: str) -> None:
    """Raise ValueError naming the first path that ``dataset`` needs and ``profile`` lacks."""
    for attr, what, option, env in dataset_spec(dataset).needs:
        if getattr(profile, attr) is None:
            raise ValueError(
                f"profile {profile.name!r}: data set {dataset!r} needs {what}: pass {option} "
                f"(Python: {attr.replace('_root', '').replace('_dir', '')}=...) or set {env}"
            )


def ensure_toy_world(profile: Profile) -> None:
    """Generate the toy world (seeded, idempotent) if the profile's files are not there yet."""
    if profile.name != "toy" or profile.world is None:
        return
    needed = [*profile.pope_files.values(), *profile.pope_val_files.values(), profile.scienceqa_root / "problems.json",
              profile.coco_instances]
    if all(Path(p).is_file() for p in needed):
        return
    from visprune.toyworld import generate_toyworld

    generate_toyworld(profile.world)


def load_samples(profile: Profile, config: Any) -> list:
    """The data set's samples in their canonical order, limited to ``config.n_samples``."""
    spec = dataset_spec(config.dataset)
    require(profile, config.dataset)
    ensure_toy_world(profile)
    samples = spec.read(profile, config)
    if config.n_samples is not None and not spec.draws_samples:
        samples = samples[: config.n_samples]
    return samples


def dataset_files(profile: Profile, dataset: str) -> list[Path]:
    """The files whose content defines a data set (hashed into the run key)."""
    return dataset_spec(dataset).files(profile)


def chair_truth(profile: Profile) -> dict[str, set[str]]:
    """CHAIR ground truth of the profile's caption images (instances + reference captions)."""
    from visprune.datasets import chair_ground_truth

    require(profile, "chair")
    captions = profile.coco_captions if Path(profile.coco_captions).is_file() else None
    return chair_ground_truth(profile.coco_instances, captions, synonyms=profile.chair_synonyms)
