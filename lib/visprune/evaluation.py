"""The evaluation engine: runs, per-sample records, on-disk caches and grids (DESIGN.md section 4).

A *run* is one model, one data set and one method configuration. It produces one table of
per-sample records (one row per sample)::

    sample_id, image_id, order, status, error, label, answers, probs, confidence, prediction,
    pred_answer, correct, answer_mass, caption, tokens_kept, erank_kept, erank_image,
    attn_entropy, tau, + the sample's metadata (split, n_objects, scene, ...)

How a run is executed:

- samples are grouped by image (POPE asks six questions per image); the vision tower, the
  token selection and the image statistics are computed once per image and reused for every
  question on it;
- images are processed in *chunks* of whole images (about ``chunk_size`` samples); inside a
  chunk, images and prompts go through the model in padded batches of ``batch_size``;
- each finished chunk is written to disk atomically (temporary file, fsync, rename) with a
  footer that holds its checksum, under ``<results>/<dataset>/<run key>/``; the run's full
  configuration is stored beside it in ``config.json``;
- a run that finds its ``done.json`` loads the records instead of running; a run that was
  interrupted (even killed) finds the valid chunks, checks them (a corrupt or partial chunk is
  deleted and redone) and computes only the missing ones. Chunk boundaries depend only on the
  sample list and ``chunk_size`` (part of the key), so a resumed run computes exactly the same
  batches as an uninterrupted one and ends with the same table.

The run key is a fingerprint of the model (its config and weight files), the data set (its
files and sample ids), the method configuration, the prompt format and ``ENGINE_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from visprune import prompts
from visprune.profiles import POPE_SPLITS, Profile, resolve_profile

#: Bump when the meaning or layout of the records changes (invalidates every cache).
ENGINE_VERSION = "2"

DATASETS = tuple(f"pope-{s}" for s in POPE_SPLITS) + ("scienceqa", "chair")
PRE_LLM_METHODS = ("random", "saliency", "scope", "divprune", "adaptive")
METHODS = ("none",) + PRE_LLM_METHODS + ("fastv",)
FOOTER_KEY = "__chunk_footer__"
#: The per-sample record's own columns, in table order (metadata columns follow, sorted).
RECORD_COLUMNS = (
    "sample_id", "image_id", "order", "status", "error", "label", "answers", "probs", "confidence",
    "prediction", "pred_answer", "correct", "answer_mass", "caption", "tokens_kept", "erank_kept",
    "erank_image", "attn_entropy", "tau",
)


# ------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class RunConfig:
    """One method configuration on one data set.

    - ``dataset``: ``"pope-random"``, ``"pope-popular"``, ``"pope-adversarial"``, ``"scienceqa"``
      or ``"chair"``.
    - ``method``: ``"none"`` (all visual tokens), a pre-LLM selector (``"random"``,
      ``"saliency"``, ``"scope"``, ``"divprune"``, ``"adaptive"``) or ``"fastv"``.
    - ``k``: visual tokens kept (``None`` for ``"none"``).
    - ``params``: the method's parameters (``alpha``, ``gap_power``; ``seed``; ``layer`` for
      FastV; ``c``, ``tau_max``, ``erank_ref``; ``feature_space`` for selectors).
    - ``n_samples``: evaluate the first ``n_samples`` samples of the data set (None = all;
      for ``"chair"``, the number of images drawn with ``sample_seed``).
    - ``max_new_tokens``: caption length limit (``"chair"`` only).
    - ``chunk_size``: samples per cache chunk (whole images per chunk).
    """

    dataset: str
    method: str = "none"
    k: int | None = None
    params: dict = field(default_factory=dict)
    n_samples: int | None = None
    max_new_tokens: int = 64
    sample_seed: int = 0
    chunk_size: int = 96

    def key_dict(self) -> dict:
        """Everything about the configuration that can change a record."""
        d = asdict(self)
        d["params"] = {k: d["params"][k] for k in sorted(d["params"])}
        if self.dataset != "chair":
            d.pop("max_new_tokens")
            d.pop("sample_seed")
        return d

    def label(self) -> str:
        """A short readable name, e.g. ``scope-k16-alpha0.5`` (floats to 4 significant digits; the
        cache folder adds the configuration's full fingerprint, so rounding never merges runs)."""
        parts = [self.method] + ([f"k{self.k}"] if self.k is not None else [])
        parts += [f"{k}{v:.4g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(self.params.items())]
        return "-".join(str(p) for p in parts).replace("/", "_")


def validate_config(config: RunConfig, n_tokens: int | None = None, n_layers: int | None = None) -> None:
    """Reject a bad configuration before anything expensive happens (no model is loaded).

    ``n_tokens`` (N) and ``n_layers`` come from the checkpoint's ``config.json``; without them
    the range checks that need them are skipped. Pre-LLM selector parameters are checked by
    running the selector on a tiny dummy input, so the selector's own messages come through.
    """
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset: unknown data set {config.dataset!r}; choose one of {DATASETS}")
    if config.method not in METHODS:
        raise ValueError(f"method: unknown method {config.method!r}; choose one of {METHODS}")
    if config.n_samples is not None and (isinstance(config.n_samples, bool) or not isinstance(config.n_samples, int) or config.n_samples < 1):
        raise ValueError(f"n_samples: expected a positive int or None, got {config.n_samples!r}")
    if not isinstance(config.chunk_size, int) or config.chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {config.chunk_size!r}")
    if not isinstance(config.max_new_tokens, int) or config.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive int, got {config.max_new_tokens!r}")
    if not isinstance(config.params, dict):
        raise ValueError(f"params: expected a dict of method parameters, got {type(config.params).__name__}")
    if config.method == "none":
        if config.k is not None:
            raise ValueError(f"k: method 'none' keeps every visual token; leave k=None (got {config.k!r})")
        if config.params:
            raise ValueError(f"params: method 'none' takes no parameters, got {sorted(config.params)}")
        return
    k = config.k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: method {config.method!r} needs the number of kept tokens k >= 1, got {k!r}")
    if n_tokens is not None and k > n_tokens:
        raise ValueError(f"k: {k} is more than the model's {n_tokens} visual tokens per image")
    if config.method == "fastv":
        extra = set(config.params) - {"layer"}
        if extra:
            raise ValueError(f"params: FastV takes only 'layer', got {sorted(extra)}")
        layer = config.params.get("layer", 2)
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (n_layers is not None and layer >= n_layers):
            top = f"0..{n_layers - 1}" if n_layers is not None else ">= 0"
            raise ValueError(f"layer: FastV's layer must be an int in {top}, got {layer!r}")
        return
    import torch

    from visprune.pruning import select

    params = dict(config.params)
    feature_space = params.pop("feature_space", "vision")
    if feature_space not in ("vision", "projected"):
        raise ValueError(f"feature_space: expected 'vision' or 'projected', got {feature_space!r}")
    gen = torch.Generator().manual_seed(0)
    dummy_n = int(k)
    features = torch.randn(1, dummy_n, 4, generator=gen)
    saliency = torch.rand(1, dummy_n, generator=gen)
    select(config.method, features, saliency, int(k), **params)


# ------------------------------------------------------------------------------ data sets


def ensure_toy_world(profile: Profile) -> None:
    """Generate the toy world (seeded, idempotent) if the profile's files are not there yet."""
    if profile.name != "toy" or profile.world is None:
        return
    needed = [*profile.pope_files.values(), profile.scienceqa_root / "problems.json", profile.coco_instances]
    if all(Path(p).is_file() for p in needed):
        return
    from visprune.data.toyworld import generate_toyworld

    generate_toyworld(profile.world)


def load_samples(profile: Profile, config: RunConfig) -> list:
    """The data set's samples in their canonical order, limited to ``config.n_samples``."""
    from visprune.data import caption_samples, read_pope, read_scienceqa

    ensure_toy_world(profile)
    if config.dataset.startswith("pope-"):
        split = config.dataset.split("-", 1)[1]
        instances = profile.coco_instances if Path(profile.coco_instances).is_file() else None
        samples = read_pope(profile.pope_files[split], profile.pope_images, split, instances_file=instances)
    elif config.dataset == "scienceqa":
        samples = read_scienceqa(profile.scienceqa_root, split="test", img_only=True)
    else:
        samples = caption_samples(profile.coco_instances, profile.coco_images, n=config.n_samples, seed=config.sample_seed)
        return samples
    if config.n_samples is not None:
        samples = samples[: config.n_samples]
    return samples


def dataset_files(profile: Profile, dataset: str) -> list[Path]:
    """The files whose content defines a data set (hashed into the run key)."""
    if dataset.startswith("pope-"):
        return [Path(profile.pope_files[dataset.split("-", 1)[1]])]
    if dataset == "scienceqa":
        return [profile.scienceqa_root / "problems.json", profile.scienceqa_root / "pid_splits.json"]
    return [Path(profile.coco_instances)]


def chair_truth(profile: Profile) -> dict[str, set[str]]:
    """CHAIR ground truth of the profile's caption images (instances + reference captions)."""
    from visprune.data import chair_ground_truth

    captions = profile.coco_captions if Path(profile.coco_captions).is_file() else None
    return chair_ground_truth(profile.coco_instances, captions, synonyms=profile.chair_synonyms)


# ------------------------------------------------------------------------------ fingerprints


def _file_digest(path: Path, cache: dict) -> str:
    key = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()
    return cache[key]


def model_fingerprint(model_dir: Path) -> dict:
    """Identity of a checkpoint: its config, and the names and sizes of its weight files.

    Hashing the weights themselves would read 14 GB for LLaVA-1.5-7B; the config hash plus
    the weight files' names and sizes identify a checkpoint in practice.
    """
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"model checkpoint not found: {config} is missing. Point the profile's model at a "
            "llava-hf-layout directory (config.json, *.safetensors, tokenizer and processor files)."
        )
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {
        "name": model_dir.name,
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "weights": [[p.name, p.stat().st_size] for p in weights],
    }


def model_shape(model_dir: Path) -> tuple[int, int]:
    """(N visual tokens per image, language-model layers), read from ``config.json`` only."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    vision = cfg.get("vision_config", {})
    text = cfg.get("text_config", {})
    side = int(vision.get("image_size", 336)) // int(vision.get("patch_size", 14))
    return side * side, int(text.get("num_hidden_layers", 32))


# ------------------------------------------------------------------------------ cache files


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a record")


def write_chunk(path: Path, records: list[dict]) -> None:
    """Write one chunk: a JSON line per record, then a footer with the count and checksum."""
    body = "".join(json.dumps(r, default=_json_default, sort_keys=True) + "\n" for r in records)
    footer = {FOOTER_KEY: True, "n": len(records), "sha256": hashlib.sha256(body.encode()).hexdigest()}
    _write_atomic(path, body + json.dumps(footer) + "\n")


def read_chunk(path: Path, expected_ids: Sequence[str] | None = None) -> list[dict] | None:
    """The records of a chunk, or None if it is corrupt, partial or not the expected samples."""
    try:
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        footer = json.loads(lines[-1])
        body = "".join(lines[:-1])
        if not footer.get(FOOTER_KEY) or hashlib.sha256(body.encode()).hexdigest() != footer["sha256"]:
            return None
        records = [json.loads(line) for line in lines[:-1]]
    except (OSError, ValueError, IndexError, KeyError):
        return None
    if len(records) != footer["n"]:
        return None
    if expected_ids is not None and [r["sample_id"] for r in records] != list(expected_ids):
        return None
    return records


# ------------------------------------------------------------------------------ the engine


def plan_chunks(samples: Sequence, chunk_size: int) -> list[list[int]]:
    """Group sample positions by image (first-appearance order), then cut into chunks of whole
    images holding about ``chunk_size`` samples. Returns lists of sample positions."""
    groups: dict[str, list[int]] = {}
    for pos, sample in enumerate(samples):
        groups.setdefault(sample.image_id, []).append(pos)
    chunks: list[list[int]] = []
    current: list[int] = []
    for positions in groups.values():
        if current and len(current) + len(positions) > chunk_size:
            chunks.append(current)
            current = []
        current.extend(positions)
    if current:
        chunks.append(current)
    return chunks


class Processes:
    """Where this process stands among the processes of an ``accelerate launch``.

    Started by ``accelerate launch --num_processes P ...`` (which sets ``WORLD_SIZE``), each
    process computes the chunks whose index is its rank modulo P and writes them into the one
    shared cache folder; all then wait for each other and read the merged table. Started
    normally, there is one process and nothing to wait for.
    """

    def __init__(self) -> None:
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # without CUDA, accelerate needs cpu=True to join the processes (gloo backend)
            self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank = self.state.process_index if self.state is not None else 0
        self.world = self.state.num_processes if self.state is not None else 1

    @property
    def device(self) -> str | None:
        """The device accelerate assigned to this process (None: let the wrapper choose)."""
        if self.state is None or self.state.device.type == "cpu":
            return None
        return str(self.state.device)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


class Evaluator:
    """Runs configurations on one profile, loading the model once, on first need.

    ``Evaluator(profile="toy")`` or ``Evaluator(resolve_profile("llava-1.5-7b", model=...))``;
    ``device``/``dtype`` are passed to :class:`visprune.model.PrunedLlava` (CUDA and half
    precision when available, else CPU float32). ``batch_size`` is the number of images (and of
    prompts) per forward pass; it does not change the records beyond float rounding and is
    not part of the run key.
    """

    def __init__(
        self,
        profile: Profile | str = "toy",
        *,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int = 16,
        progress: bool = True,
        model: Any = None,
    ) -> None:
        self.profile = resolve_profile(profile) if isinstance(profile, str) else profile
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.progress = progress
        self._llava = model
        self._processes: Processes | None = None
        self._digests: dict = {}
        self._truth: dict | None = None

    @property
    def processes(self) -> "Processes":
        """This process's shard of the work (one process unless started by ``accelerate launch``)."""
        if self._processes is None:
            self._processes = Processes()
        return self._processes

    # -- the model, loaded lazily

    @property
    def llava(self):
        """The :class:`visprune.model.PrunedLlava` (loaded on first use)."""
        if self._llava is None:
            from visprune.model import PrunedLlava

            device = self.device if self.device is not None else self.processes.device
            self._llava = PrunedLlava.from_pretrained(self.profile.model, device=device, dtype=self.dtype)
        return self._llava

    def _dtype_name(self) -> str:
        if self._llava is not None:
            return str(self._llava.dtype).replace("torch.", "")
        if self.dtype is not None:
            return str(self.dtype).replace("torch.", "")
        import torch

        if self.device not in (None, "cpu") or (self.device is None and torch.cuda.is_available()):
            return "half"
        return "float32"

    # -- keys and folders

    def run_key(self, config: RunConfig, samples: Sequence) -> tuple[str, dict]:
        """(fingerprint, the full description it hashes) of a run."""
        files = [p for p in dataset_files(self.profile, config.dataset) if p.is_file()]
        description = {
            "engine_version": ENGINE_VERSION,
            "model": model_fingerprint(self.profile.model),
            "dtype": self._dtype_name(),
            "dataset": {
                "name": config.dataset,
                "profile": self.profile.name,
                "files": {p.name: _file_digest(p, self._digests) for p in files},
                "sample_ids_sha256": hashlib.sha256("\n".join(s.sample_id for s in samples).encode()).hexdigest(),
                "n_samples": len(samples),
            },
            "config": config.key_dict(),
            "prompt": {"system": prompts.LLAVA_SYSTEM, "pope_suffix": prompts.POPE_SUFFIX,
                       "scienceqa_suffix": prompts.SCIENCEQA_SUFFIX, "caption": prompts.CAPTION_PROMPT},
        }
        digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()
        return digest[:16], description

    def run_dir(self, config: RunConfig, key: str) -> Path:
        return Path(self.profile.results) / config.dataset / f"{config.label()}-{key}"

    def reference_erank(self, n_images: int = 64) -> float:
        """``erank_ref`` for the adaptive selector: the mean erank of the vision features of the
        first ``n_images`` caption images of the profile (ascending image id), cached on disk
        next to the runs (ALGORITHMS.md, "Adaptive")."""
        import torch

        from visprune.data import caption_samples
        from visprune.image_stats import erank_batch

        ensure_toy_world(self.profile)
        fp = model_fingerprint(self.profile.model)
        tag = hashlib.sha256(json.dumps([fp, self._dtype_name(), n_images, str(self.profile.coco_instances)],
                                        sort_keys=True).encode()).hexdigest()[:16]
        path = Path(self.profile.results) / "erank_ref" / f"{tag}.json"
        if path.is_file():
            return float(json.loads(path.read_text())["erank_ref"])
        samples = caption_samples(self.profile.coco_instances, self.profile.coco_images)[:n_images]
        values = []
        for start in range(0, len(samples), self.batch_size):
            batch = [s.load_image() for s in samples[start : start + self.batch_size]]
            with torch.inference_mode():
                values.append(erank_batch(self.llava.encode_images(batch).features.float()).cpu())
        value = float(torch.cat(values).double().mean())
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps({"erank_ref": value, "n_images": len(samples), "model": fp}))
        return value

    def validate(self, config: RunConfig) -> None:
        """Check a configuration against the checkpoint's shape, without loading weights."""
        n_tokens, n_layers = model_shape(self.profile.model) if (Path(self.profile.model) / "config.json").is_file() else (None, None)
        validate_config(config, n_tokens, n_layers)

    # -- running

    def run(self, config: RunConfig) -> pd.DataFrame:
        """The per-sample records of one run (from the cache when it is complete)."""
        self.validate(config)
        model_fingerprint(self.profile.model)  # a missing checkpoint fails here, before any work
        samples = load_samples(self.profile, config)
        if not samples:
            raise ValueError(f"dataset {config.dataset!r}: no samples to evaluate")
        key, description = self.run_key(config, samples)
        folder = self.run_dir(config, key)
        done = folder / "done.json"
        chunks = plan_chunks(samples, config.chunk_size)
        if done.is_file():
            records = self._load_records(folder, chunks, samples)
            if records is not None:
                return self._table(records, config)
        procs = self.processes
        if procs.rank == 0:  # one process prepares the folder while the others wait
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / "config.json", json.dumps(
                {"key": key, **description, "profile": self.profile.describe(), "run_config": asdict(config)},
                indent=2, sort_keys=True, default=str))
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            for index, positions in enumerate(chunks):
                path = folder / f"chunk-{index:05d}.jsonl"
                if path.is_file() and read_chunk(path, [samples[p].sample_id for p in positions]) is None:
                    path.unlink()  # corrupt or partial: redo it
        procs.barrier()

        todo = [i for i in range(len(chunks)) if not (folder / f"chunk-{i:05d}.jsonl").is_file()]
        mine = [i for i in todo if i % procs.world == procs.rank]  # this process's shard
        bar = self._progress_bar(config, total=sum(len(chunks[i]) for i in mine))
        try:
            for index in mine:
                records = self._compute(config, [samples[p] for p in chunks[index]], chunks[index])
                write_chunk(folder / f"chunk-{index:05d}.jsonl", records)
                if bar is not None:
                    bar.update(len(records))
        finally:
            if bar is not None:
                bar.close()
        procs.barrier()

        all_records = self._load_records(folder, chunks, samples)
        if all_records is None:
            raise RuntimeError(f"{folder}: some chunks are missing or corrupt after the run; run it again to redo them")
        if procs.rank == 0:
            _write_atomic(done, json.dumps({"key": key, "n_records": len(all_records), "n_chunks": len(chunks),
                                            "processes": procs.world,
                                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        return self._table(all_records, config)

    def grid(self, configs: Iterable[RunConfig]) -> pd.DataFrame:
        """Run every configuration (all validated first) and return one tidy table.

        The table has the records of every run with a column per run parameter: ``dataset``,
        ``method``, ``k``, ``run`` (the readable label) and one column per method parameter
        (``alpha``, ``gap_power``, ``layer``, ...; missing where a method lacks it).
        """
        configs = list(configs)
        for config in configs:
            self.validate(config)
        tables = [self.run(config) for config in configs]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()

    def _load_records(self, folder: Path, chunks: list[list[int]], samples: Sequence) -> list[dict] | None:
        records: list[dict] = []
        for index, positions in enumerate(chunks):
            found = read_chunk(folder / f"chunk-{index:05d}.jsonl", [samples[p].sample_id for p in positions])
            if found is None:
                return None
            records.extend(found)
        return records

    def _table(self, records: list[dict], config: RunConfig) -> pd.DataFrame:
        table = pd.DataFrame.from_records(records).sort_values("order", kind="stable").reset_index(drop=True)
        # a fixed column order, however the records were produced (fresh, cached or resumed)
        first = [c for c in RECORD_COLUMNS if c in table.columns]
        table = table[first + sorted(c for c in table.columns if c not in RECORD_COLUMNS)]
        table.insert(0, "dataset", config.dataset)
        table.insert(1, "method", config.method)
        table.insert(2, "k", config.k if config.k is not None else table["tokens_kept"].max())
        table.insert(3, "run", config.label())
        for name, value in sorted(config.params.items()):
            table[name] = value
        return table

    def _progress_bar(self, config: RunConfig, total: int):
        if not self.progress or total == 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"{config.dataset} {config.label()}", unit="sample",
                    dynamic_ncols=True, leave=False)

    # -- one chunk through the model

    def _compute(self, config: RunConfig, samples: list, positions: list[int]) -> list[dict]:
        """Records for the samples of one chunk (whole images), in the chunk's order."""
        import torch

        from visprune.data import ImageLoadError
        from visprune.image_stats import attention_entropy_batch, erank_batch

        llava = self.llava
        image_ids = list(dict.fromkeys(s.image_id for s in samples))
        first = {s.image_id: s for s in reversed(samples)}
        images, failed = {}, {}
        for image_id in image_ids:
            try:
                images[image_id] = first[image_id].load_image()
            except ImageLoadError as err:
                failed[image_id] = str(err)
        ok_ids = [i for i in image_ids if i in images]

        # vision tower + selection + image statistics, once per image, in batches of images
        per_image: dict[str, dict] = {}
        visions, selections, kept_erank = [], [], []
        for start in range(0, len(ok_ids), self.batch_size):
            batch_ids = ok_ids[start : start + self.batch_size]
            vision = llava.encode_images([images[i] for i in batch_ids])
            features = vision.features.float()
            erank_image = erank_batch(features)  # (B,), the image's diversity, reused by "adaptive"
            entropy = attention_entropy_batch(vision.cls_attention.float()).cpu()
            params = dict(config.params)
            if config.method == "random":
                # one seed per image, so an image's draw does not depend on its batch or chunk
                params["sample_seeds"] = [_stable_seed(i) for i in batch_ids]
            if config.method == "adaptive":
                params["image_erank"] = erank_image
            if config.method == "none":
                selection = llava.select_tokens(vision, "none")
            else:
                selection = llava.select_tokens(vision, config.method, config.k, **params)
            tau = None
            if config.method == "adaptive":
                from visprune.pruning import adaptive_threshold

                ada = {k: v for k, v in params.items() if k in ("c", "tau_max", "erank_ref", "image_erank")}
                tau = adaptive_threshold(features, **ada).cpu()
            if selection.method == "none":
                kept_erank.append(erank_image.cpu())  # all tokens kept: the image's own erank
            elif selection.keep is not None:
                kept_erank.append(erank_batch(vision.kept_features(selection.keep).float()).cpu())
            else:
                kept_erank.append(None)
            erank_image = erank_image.cpu()
            for row, image_id in enumerate(batch_ids):
                per_image[image_id] = {
                    "batch": len(visions), "row": row,
                    "erank_image": float(erank_image[row]), "attn_entropy": float(entropy[row]),
                    "tau": None if tau is None else float(tau[row]),
                }
            visions.append(vision)
            selections.append(selection)

        # prompts, in batches, each pointing at its image's row
        records = []
        for sample, position in zip(samples, positions):
            base = {
                "sample_id": sample.sample_id, "image_id": sample.image_id, "order": position,
                "label": sample.label, "answers": list(sample.answers), **_flat_meta(sample.meta),
            }
            if sample.image_id in failed:
                records.append({**base, "status": "failed", "error": failed[sample.image_id]})
            else:
                records.append({**base, "status": "ok", "error": None, **per_image[sample.image_id]})

        by_batch: dict[int, list[int]] = {}
        for i, rec in enumerate(records):
            if rec["status"] == "ok":
                by_batch.setdefault(rec["batch"], []).append(i)
        for b, record_rows in by_batch.items():
            vision, selection = visions[b], selections[b]
            for start in range(0, len(record_rows), self.batch_size):
                rows = record_rows[start : start + self.batch_size]
                batch_samples = [samples[i] for i in rows]
                image_index = [records[i]["row"] for i in rows]
                questions = [s.prompt for s in batch_samples]
                if config.dataset == "chair":
                    out = llava.generate(questions, vision, selection, image_index=image_index,
                                         max_new_tokens=config.max_new_tokens)
                    keep = out.keep
                    for j, i in enumerate(rows):
                        records[i]["caption"] = out.texts[j]
                else:
                    out = llava.score(questions, [s.answers for s in batch_samples], vision, selection,
                                      image_index=image_index)
                    keep = out.keep
                    for j, i in enumerate(rows):
                        probs = out.probs[j, : int(out.lengths[j])].double().numpy()
                        pred = int(np.argmax(probs))
                        records[i].update({
                            "probs": probs.tolist(), "confidence": float(probs[pred]), "prediction": pred,
                            "pred_answer": batch_samples[j].answers[pred],
                            "correct": bool(pred == batch_samples[j].label),
                            "answer_mass": float(out.answer_mass[j]),
                        })
                if selection.keep is not None:  # chosen per image: one erank per image, shared
                    erank_kept = kept_erank[b][torch.as_tensor(image_index)]
                else:  # FastV chooses per prompt
                    erank_kept = erank_batch(vision.kept_features(keep.to(vision.features.device), image_index).float()).cpu()
                for j, i in enumerate(rows):
                    records[i]["tokens_kept"] = int(keep.shape[1])
                    records[i]["erank_kept"] = float(erank_kept[j])
        for rec in records:
            rec.pop("batch", None)
            rec.pop("row", None)
        return records


def _stable_seed(image_id: str) -> int:
    """A seed derived from an image id, the same in every process and Python session."""
    return int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:4], "little")


def _flat_meta(meta: dict) -> dict:
    """Sample metadata as record columns (JSON scalars and lists only; reserved names prefixed)."""
    reserved = set(RECORD_COLUMNS) | {"dataset", "method", "k", "run"}
    out = {}
    for name, value in meta.items():
        out[f"meta_{name}" if name in reserved else name] = value
    return out


# ------------------------------------------------------------------------------ summaries


def summarize(records: pd.DataFrame, n_bins: int = 15, ground_truth: dict | None = None,
              synonyms: Any = None) -> dict:
    """Headline metrics of one run's records (failed samples are counted, not scored).

    Question answering: n, n_failed, accuracy, ece, mce, brier, aurc, eaurc, mean answer mass;
    POPE adds precision, recall, f1 and yes_ratio (yes = answer index 0). Captions (when
    ``ground_truth`` is given, with the ``synonyms`` table used to build it): chair_s,
    chair_i, recall, length.
    """
    from visprune import metrics

    ok = records[records["status"] == "ok"]
    out: dict[str, Any] = {"n": int(len(records)), "n_failed": int((records["status"] != "ok").sum())}
    if ok.empty:
        return out
    if "caption" in ok and ok["caption"].notna().any():
        if ground_truth is None:
            raise ValueError("ground_truth: CHAIR needs the ground-truth objects of each image")
        captions = dict(zip(ok["sample_id"].astype(str), ok["caption"]))
        scores = metrics.chair(captions, {i: ground_truth[i] for i in captions}, synonyms=synonyms)
        out.update({k: scores[k] for k in ("chair_s", "chair_i", "recall", "length")})
    else:
        labels = ok["label"].to_numpy(dtype=int)
        widths = ok["probs"].map(len)
        if widths.nunique() == 1:
            probs = np.stack(ok["probs"].map(np.asarray).to_list())
            out["ece"] = metrics.ece(probs, labels, n_bins=n_bins)
            out["mce"] = metrics.mce(probs, labels, n_bins=n_bins)
            out["brier"] = metrics.brier(probs, labels)
        else:
            out.update(_ragged_calibration(ok, labels, n_bins))
        correct = ok["correct"].to_numpy(dtype=bool)
        confidence = ok["confidence"].to_numpy(dtype=float)
        out["accuracy"] = float(correct.mean())
        out["aurc"] = metrics.aurc(confidence, correct)
        out["eaurc"] = metrics.eaurc(confidence, correct)
        out["answer_mass"] = float(ok["answer_mass"].mean())
        if list(ok["answers"].iloc[0]) == ["yes", "no"]:
            preds = ok["prediction"].to_numpy(dtype=int)
            out.update(metrics.pope_scores(preds, labels))
    return out


def _ragged_calibration(ok: pd.DataFrame, labels: np.ndarray, n_bins: int) -> dict:
    """ECE/MCE/Brier when answer sets differ in size (ScienceQA): pad each probability vector
    with zeros to the widest set. Top-label ECE and MCE only see the largest probability, and
    padded classes carry no probability and are never the label, so both are unchanged by the
    padding; so is the Brier score (a padded class adds (0 - 0)^2)."""
    from visprune import metrics

    width = int(ok["probs"].map(len).max())
    probs = np.zeros((len(ok), width))
    for i, p in enumerate(ok["probs"]):
        probs[i, : len(p)] = p
    return {"ece": metrics.ece(probs, labels, n_bins=n_bins), "mce": metrics.mce(probs, labels, n_bins=n_bins),
            "brier": metrics.brier(probs, labels)}
