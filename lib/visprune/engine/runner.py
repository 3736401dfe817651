"""The evaluation engine: runs, per-sample records, on-disk caches and grids (DESIGN.md section 4).

A *run* is one model, one data set and one method configuration. It produces one table of
per-sample records (one row per sample)::

    sample_id, image_id, order, status, error, label, answers, probs, confidence, prediction,
    pred_answer, correct, answer_mass, answer_token_ids, answer_logits, caption, tokens_kept, erank_kept,
    erank_image, attn_entropy, + the method's declared diagnostics (adaptive: tau), + the sample's metadata (split, n_objects, scene, ...)

How a run is executed:

- samples are grouped by image (POPE asks six questions per image); the vision tower, the
  token selection and the image statistics are computed once per image and reused for every
  question on it;
- images are processed in *chunks* of whole images (about ``chunk_size`` samples); inside a
  chunk, images and prompts go through the model in padded batches of ``batch_size``;
- each finished chunk is written to disk atomically with a footer that holds its checksum and
  the run key, under ``<results>/<dataset>/<label>-<run key>/``; the run's full description is
  stored beside it in ``config.json`` (``visprune.engine.cache`` has the file mechanics);
- a run that finds every chunk valid loads the records instead of running; a run that was
  interrupted (even killed) finds the valid chunks (a corrupt, partial or foreign chunk is
  redone) and computes only the missing ones. Chunk boundaries depend only on the sample list
  and ``chunk_size`` (part of the key), so a resumed run computes exactly the same batches as an
  uninterrupted one and ends with the same records, byte for byte;
- a chunk holding failed records (an image that could not be read) is computed again by the
  next run, so a repaired image is picked up; if it fails again it is reported again;
- several processes on one run (two commands started by hand, or ``accelerate launch``) share
  the work: a process computes a chunk only while holding that chunk's lock, skips chunks that
  another process holds, and waits for them at the end.

**The run key** is the SHA-256 of: the model's content fingerprint (the bytes of every file of
the checkpoint, :func:`visprune.engine.cache.model_fingerprint`), the resolved dtype, the data set
(its files' contents and sample ids), the configuration with every method parameter completed
with its default and normalised (``{}``, ``{"alpha": 1}`` and ``{"alpha": 1.0}`` are one key),
the image preprocessing, the model's prompt format and ``ENGINE_VERSION``. The batch size is
*not* part of the key: it changes which prompts share a padded batch, which moves probabilities
by float rounding only (up to about 5e-7 measured on the toy model in float32), never a record's
meaning; ``config.json`` records the batch size that computed each run.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from visprune.engine import cache as runcache
from visprune.engine.cache import read_chunk, write_chunk
from visprune.engine.profiles import Profile, resolve_profile
from visprune.pruning import spec as method_spec
from visprune.engine.config import ENGINE_VERSION, RunConfig, complete_params, validate_config, _positive_int
from visprune.engine.datasets import dataset_files, ensure_toy_world, load_samples, require
from visprune.engine.model_files import model_fingerprint, model_shape, prompt_format, resolve_device_dtype
from visprune.engine.compute import RECORD_COLUMNS, compute_records
from visprune.engine.sharding import Processes, plan_chunks
from visprune.engine.summary import LowAnswerMassWarning, answer_mass_warning


# ------------------------------------------------------------------------------ the engine


class Evaluator:
    """Runs configurations on one profile, loading the model once, on first need.

    ``Evaluator(profile="toy")`` or ``Evaluator(resolve_profile("llava-1.5-7b", model=...))``;
    ``device``/``dtype`` are passed to :class:`visprune.instrument.llava.PrunedLlava` (CUDA and half
    precision when available, else CPU float32; both checked and resolved before anything is
    loaded, and the resolved dtype is part of every run key). ``batch_size`` is the number of
    images (and of prompts) per forward pass; it moves records by float rounding only and is not
    part of the run key (see the module docstring).
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
        _positive_int("batch_size", batch_size)
        if device is not None or dtype is not None:
            resolve_device_dtype(device, dtype)  # a bad device fails here, before any work
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.progress = progress
        self._llava = model
        self._processes: Processes | None = None
        self._digests: runcache.DigestCache | None = None
        self._truth: dict | None = None
        self._resolved: tuple[str, str] | None = None
        self.last_computed: list[int] = []  # chunk indices this evaluator computed in its last run

    @property
    def processes(self) -> "Processes":
        """This process's shard of the work (one process unless started by ``accelerate launch``)."""
        if self._processes is None:
            self._processes = Processes()
        return self._processes

    @property
    def digests(self) -> runcache.DigestCache:
        """File digests, remembered in the results folder (each file is hashed once)."""
        if self._digests is None:
            results = Path(self.profile.results)
            self._digests = runcache.DigestCache(results if results.is_dir() else None)
        return self._digests

    # -- the model, loaded lazily

    def device_and_dtype(self) -> tuple[str, str]:
        """The resolved (device, dtype) names of this evaluator's model."""
        if self._llava is not None:
            return str(self._llava.device), str(self._llava.dtype).replace("torch.", "")
        if self._resolved is None:
            device = self.device if self.device is not None else self.processes.device
            self._resolved = resolve_device_dtype(device, self.dtype)
        return self._resolved

    @property
    def llava(self):
        """The :class:`visprune.instrument.llava.PrunedLlava` (loaded on first use)."""
        if self._llava is None:
            import torch

            from visprune.instrument.llava import PrunedLlava

            device, dtype = self.device_and_dtype()
            try:
                self._llava = PrunedLlava.from_pretrained(self.profile.model, device=device, dtype=getattr(torch, dtype))
            except (OSError, RuntimeError, KeyError) as err:
                if isinstance(err, FileNotFoundError):
                    raise
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(f"model checkpoint {self.profile.model} could not be loaded: {first}") from None
        return self._llava

    # -- keys and folders

    def resolve(self, config: RunConfig) -> RunConfig:
        """``config`` with every default filled in: method parameters (completed and normalised),
        and for CHAIR the profile's protocol (number of images, new tokens)."""
        params = complete_params(config.method, config.params)
        if config.dataset == "chair":
            n = config.n_samples if config.n_samples is not None else self.profile.chair_images
            tokens = config.max_new_tokens if config.max_new_tokens is not None else self.profile.caption_tokens
            return replace(config, params=params, n_samples=n, max_new_tokens=tokens)
        return replace(config, params=params)

    def run_key(self, config: RunConfig, samples: Sequence) -> tuple[str, dict]:
        """(fingerprint, the full description it hashes) of a run (``config`` resolved first)."""
        config = self.resolve(config)
        files = [p for p in dataset_files(self.profile, config.dataset) if p.is_file()]
        description = {
            "engine_version": ENGINE_VERSION,
            "model": model_fingerprint(self.profile.model, self.digests),
            "dtype": self.device_and_dtype()[1],
            "dataset": {
                "name": config.dataset,
                "profile": self.profile.name,
                "files": {p.name: self.digests.digest(p) for p in files},
                "sample_ids_sha256": hashlib.sha256("\n".join(s.sample_id for s in samples).encode()).hexdigest(),
                "n_samples": len(samples),
            },
            "config": config.key_dict(),
            "prompt": prompt_format(self.profile.model),
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

        from visprune.datasets import caption_samples
        from visprune.instrument.image_stats import erank_batch

        require(self.profile, "chair")
        ensure_toy_world(self.profile)
        runcache.check_writable_dir(self.profile.results)
        fp = model_fingerprint(self.profile.model, self.digests)
        tag = hashlib.sha256(json.dumps([fp, self.device_and_dtype()[1], n_images, str(self.profile.coco_instances)],
                                        sort_keys=True).encode()).hexdigest()[:16]
        path = Path(self.profile.results) / "erank_ref" / f"{tag}.json"
        if path.is_file():
            try:
                return float(json.loads(path.read_text())["erank_ref"])
            except (ValueError, KeyError, TypeError):
                pass  # damaged: measure again
        samples = caption_samples(self.profile.coco_instances, self.profile.coco_images)[:n_images]
        values = []
        for start in range(0, len(samples), self.batch_size):
            batch = [s.load_image() for s in samples[start : start + self.batch_size]]
            with torch.inference_mode():
                values.append(erank_batch(self.llava.encode_images(batch).features.float()).cpu())
        value = float(torch.cat(values).double().mean())
        path.parent.mkdir(parents=True, exist_ok=True)
        runcache.write_atomic(path, json.dumps({"erank_ref": value, "n_images": len(samples), "model": fp}))
        return value

    #: How the engine measures a method's ``measured`` parameters on this profile (MethodSpec.measured),
    #: and a placeholder that passes validation before the measurement is made.
    MEASURED = {"erank_ref": ("reference_erank", 1.0)}

    def with_measured(self, config: RunConfig, placeholder: bool = False) -> RunConfig:
        """``config`` with every parameter its method measures on the profile (adaptive's
        ``erank_ref``) filled in when left None: measured (and cached), or, with
        ``placeholder=True``, a stand-in for validating the other parameters first."""
        params = dict(config.params)
        for name in method_spec(config.method).measured:
            if params.get(name) is None:
                how, stand_in = self.MEASURED[name]
                params[name] = stand_in if placeholder else getattr(self, how)()
        return replace(config, params=params)

    def validate(self, config: RunConfig) -> None:
        """Check a configuration against the checkpoint's shape and the profile's paths, without
        loading weights."""
        validate_config(config)
        require(self.profile, config.dataset)
        n_tokens, n_layers = model_shape(self.profile.model) if (Path(self.profile.model) / "config.json").is_file() else (None, None)
        validate_config(config, n_tokens, n_layers)

    # -- running

    def run(self, config: RunConfig) -> pd.DataFrame:
        """The per-sample records of one run (from the cache when it is complete)."""
        self.validate(config)
        config = self.resolve(config)
        model_fingerprint(self.profile.model, self.digests)  # a missing or corrupt checkpoint fails here
        runcache.check_writable_dir(self.profile.results)
        self._digests = None  # the results folder exists now: remember digests there
        samples = load_samples(self.profile, config)
        if not samples:
            raise ValueError(f"dataset {config.dataset!r}: no samples to evaluate")
        key, description = self.run_key(config, samples)
        folder = self.run_dir(config, key)
        chunks = plan_chunks(samples, config.chunk_size)
        ids = [[samples[p].sample_id for p in positions] for positions in chunks]
        self.last_computed = []
        started = time.time_ns()

        def valid(index: int) -> bool:
            """Chunk ``index`` is on disk for this run and needs no retry in this call."""
            path = folder / f"chunk-{index:05d}.jsonl"
            records = read_chunk(path, ids[index], key)
            if records is None:
                return False
            if any(r.get("status") != "ok" for r in records):  # failed images: retry once per call
                try:
                    return path.stat().st_mtime_ns >= started
                except OSError:
                    return False
            return True

        if (folder / "done.json").is_file() and all(valid(i) for i in range(len(chunks))):
            return self._table(self._load_records(folder, chunks, samples, key), config)

        folder.mkdir(parents=True, exist_ok=True)
        locks = folder / ".locks"
        with runcache.file_lock(locks / "run.lock"):
            runcache.remove_stale_temporaries(folder, "config.json")
            runcache.write_atomic(folder / "config.json", json.dumps(
                {"key": key, **description, "profile": self.profile.describe(), "run_config": asdict(config),
                 "batch_size": self.batch_size}, indent=2, sort_keys=True, default=str))

        procs = self.processes
        order = sorted(range(len(chunks)), key=lambda i: (i % procs.world != procs.rank, i))  # own shard first
        todo = [i for i in order if not valid(i)]
        bar = self._progress_bar(config, total=sum(len(chunks[i]) for i in todo))
        try:
            waiting = []
            for index in todo:  # chunks nobody holds, without waiting
                if not self._compute_chunk(config, samples, chunks, index, key, folder, valid, bar, blocking=False):
                    waiting.append(index)
            for index in waiting:  # chunks another process was computing: wait, then check
                self._compute_chunk(config, samples, chunks, index, key, folder, valid, bar, blocking=True)
        finally:
            if bar is not None:
                bar.close()
        procs.barrier()

        all_records = self._load_records(folder, chunks, samples, key)
        if all_records is None:
            raise RuntimeError(f"{folder}: some chunks are missing or corrupt after the run; run it again to redo them")
        with runcache.file_lock(locks / "run.lock"):
            runcache.remove_stale_temporaries(folder, "done.json")
            runcache.write_atomic(folder / "done.json", json.dumps(
                {"key": key, "n_records": len(all_records), "n_chunks": len(chunks), "processes": procs.world,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        return self._table(all_records, config)

    def _compute_chunk(self, config, samples, chunks, index, key, folder, valid, bar, blocking: bool) -> bool:
        """Compute chunk ``index`` under its lock unless it is valid by then; False if the lock
        was busy (only when ``blocking`` is False)."""
        name = f"chunk-{index:05d}.jsonl"
        with runcache.file_lock(folder / ".locks" / f"{name}.lock", blocking=blocking) as held:
            if not held:
                return False
            if not valid(index):  # another process may have finished it meanwhile
                runcache.remove_stale_temporaries(folder, name)  # only ever this chunk's, under its lock
                records = self._compute(config, [samples[p] for p in chunks[index]], chunks[index])
                write_chunk(folder / name, records, key)
                self.last_computed.append(index)
            if bar is not None:
                bar.update(len(chunks[index]))
        return True

    def grid(self, configs: Iterable[RunConfig]) -> pd.DataFrame:
        """Run every configuration (all validated first) and return one tidy table.

        The table has the records of every run with a column per run parameter: ``dataset``,
        ``method``, ``k``, ``run`` (the readable label) and one column per method parameter
        (``alpha``, ``gap_power``, ``layer``, ...; missing where a method lacks it).
        A :class:`LowAnswerMassWarning` names every run whose mean answer-set mass is below 0.5.
        """
        configs = list(configs)
        for config in configs:
            self.validate(config)
        tables = [self.run(config) for config in configs]
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        message = answer_mass_warning(table)
        if message:
            warnings.warn(message, LowAnswerMassWarning, stacklevel=2)
        return table

    def _load_records(self, folder: Path, chunks: list[list[int]], samples: Sequence, key: str) -> list[dict] | None:
        records: list[dict] = []
        for index, positions in enumerate(chunks):
            found = read_chunk(folder / f"chunk-{index:05d}.jsonl", [samples[p].sample_id for p in positions], key)
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
            # a sequence-valued parameter (PyramidDrop's layers) is one value per row, not a column of values
            table[name] = [value] * len(table) if isinstance(value, (list, tuple)) else value
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
        return compute_records(self.llava, config, samples, positions, self.batch_size)
