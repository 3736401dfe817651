"""The evaluation engine: runs, per-sample records, on-disk caches and grids (DESIGN.md section 4).

A *run* is one model, one data set and one method configuration. It produces one table of
per-sample records (one row per sample)::

    sample_id, image_id, order, status, error, label, answers, probs, confidence, prediction,
    pred_answer, correct, answer_mass, answer_token_ids, caption, tokens_kept, erank_kept,
    erank_image, attn_entropy, tau, + the sample's metadata (split, n_objects, scene, ...)

How a run is executed:

- samples are grouped by image (POPE asks six questions per image); the vision tower, the
  token selection and the image statistics are computed once per image and reused for every
  question on it;
- images are processed in *chunks* of whole images (about ``chunk_size`` samples); inside a
  chunk, images and prompts go through the model in padded batches of ``batch_size``;
- each finished chunk is written to disk atomically with a footer that holds its checksum and
  the run key, under ``<results>/<dataset>/<label>-<run key>/``; the run's full description is
  stored beside it in ``config.json`` (``visprune.runcache`` has the file mechanics);
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
the checkpoint, :func:`visprune.runcache.model_fingerprint`), the resolved dtype, the data set
(its files' contents and sample ids), the configuration with every method parameter completed
with its default and normalised (``{}``, ``{"alpha": 1}`` and ``{"alpha": 1.0}`` are one key),
the image preprocessing, the model's prompt format and ``ENGINE_VERSION``. The batch size is
*not* part of the key: it changes which prompts share a padded batch, which moves probabilities
by float rounding only (up to about 5e-7 measured on the toy model in float32), never a record's
meaning; ``config.json`` records the batch size that computed each run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from visprune import runcache
from visprune.profiles import POPE_SPLITS, Profile, resolve_profile
from visprune.runcache import FOOTER_KEY, CacheWriteError, read_chunk, write_chunk  # noqa: F401 (re-exported)

#: Bump when the meaning or layout of the records changes (invalidates every cache).
ENGINE_VERSION = "3"

DATASETS = tuple(f"pope-{s}" for s in POPE_SPLITS) + ("scienceqa", "chair")
PRE_LLM_METHODS = ("random", "saliency", "scope", "divprune", "adaptive")
METHODS = ("none",) + PRE_LLM_METHODS + ("fastv",)
PREPROCESS = ("pad", "crop")
#: Selector keywords that the engine fills per image; they are not user parameters.
ENGINE_INPUTS = frozenset({"sample_seeds", "image_erank", "n_layers"})
#: A mean answer-set mass below this suggests a prompt or tokenizer mismatch (DESIGN.md section 5).
LOW_ANSWER_MASS = 0.5
#: The per-sample record's own columns, in table order (metadata columns follow, sorted).
RECORD_COLUMNS = (
    "sample_id", "image_id", "order", "status", "error", "label", "answers", "probs", "confidence",
    "prediction", "pred_answer", "correct", "answer_mass", "answer_token_ids", "caption", "tokens_kept",
    "erank_kept", "erank_image", "attn_entropy", "tau",
)


# ------------------------------------------------------------------------------ method parameters


def method_parameters(method: str) -> dict[str, Any]:
    """The parameters a method takes and their defaults, read from the method's own code.

    Pre-LLM selectors: the keyword-only parameters of ``visprune.pruning.METHODS[method]``
    (minus the per-image inputs the engine fills, ``ENGINE_INPUTS``) plus ``feature_space``
    (default ``visprune.model.feature_space_default(method)``); FastV: the keyword-only
    parameters of ``visprune.fastv.fastv_params``; ``"none"``: none.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; choose one of {METHODS}")
    if method == "none":
        return {}
    if method == "fastv":
        from visprune import fastv

        fn = fastv.fastv_params
    else:
        from visprune.pruning import METHODS as SELECTORS

        fn = SELECTORS[method]
    params = {p.name: p.default for p in inspect.signature(fn).parameters.values()
              if p.kind is p.KEYWORD_ONLY and p.name not in ENGINE_INPUTS}
    if method != "fastv":
        from visprune.model import feature_space_default

        params["feature_space"] = feature_space_default(method)
    return params


def _normalise(method: str, name: str, value: Any, default: Any) -> Any:
    """One parameter value in canonical form: 1 and 1.0 alike for a real parameter, ints for an
    integer one, booleans never taken for numbers."""
    if isinstance(value, (bool, np.bool_)) and not isinstance(default, bool):
        raise ValueError(f"{name}: method {method!r} expects a number or string here, got the boolean {value!r}")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: method {method!r} expects True or False, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, numbers.Real):
        return float(value)
    if isinstance(default, int) and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if not float(value).is_integer():
            raise ValueError(f"{name}: method {method!r} expects an integer, got {value!r}")
        return int(value)
    if default is None and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value)
    if default is None and isinstance(value, numbers.Integral):
        return float(value) if name == "erank_ref" else int(value)
    return value


def complete_params(method: str, params: dict) -> dict:
    """``params`` completed with the method's defaults and normalised (sorted by name).

    Raises ValueError naming a parameter the method does not take.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict of method parameters, got {type(params).__name__}")
    defaults = method_parameters(method)
    for name in params:
        if name not in defaults:
            takes = ", ".join(sorted(defaults)) or "none"
            raise ValueError(f"{name}: not a parameter of method {method!r} (its parameters: {takes})")
    out = {name: _normalise(method, name, params.get(name, default), default) for name, default in defaults.items()}
    return dict(sorted(out.items()))


def _label_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class RunConfig:
    """One method configuration on one data set.

    - ``dataset``: ``"pope-random"``, ``"pope-popular"``, ``"pope-adversarial"``, ``"scienceqa"``
      or ``"chair"``.
    - ``method``: ``"none"`` (all visual tokens), a pre-LLM selector (``"random"``,
      ``"saliency"``, ``"scope"``, ``"divprune"``, ``"adaptive"``) or ``"fastv"``.
    - ``k``: visual tokens kept (``None`` for ``"none"``).
    - ``params``: the method's parameters (:func:`method_parameters`; missing ones take their
      defaults, and the run records them all).
    - ``n_samples``: evaluate the first ``n_samples`` samples of the data set (None = all;
      for ``"chair"``, the number of images drawn with ``sample_seed``; None = the profile's
      protocol: 500 on a real profile, every test image on the toy one).
    - ``max_new_tokens``: caption length limit (``"chair"`` only; None = the profile's: 512 on a
      real profile, 64 on the toy one).
    - ``preprocess``: ``"pad"`` (LLaVA-1.5's evaluation: expand to a square with the processor's
      mean colour, then resize; the default) or ``"crop"`` (the processor's centre crop).
    - ``chunk_size``: samples per cache chunk (whole images per chunk).
    """

    dataset: str
    method: str = "none"
    k: int | None = None
    params: dict = field(default_factory=dict)
    n_samples: int | None = None
    max_new_tokens: int | None = None
    sample_seed: int = 0
    chunk_size: int = 96
    preprocess: str = "pad"

    def key_dict(self) -> dict:
        """Everything about the configuration that can change a record."""
        d = asdict(self)
        d["params"] = {k: d["params"][k] for k in sorted(d["params"])}
        if self.dataset != "chair":
            d.pop("max_new_tokens")
            d.pop("sample_seed")
        return d

    def label(self) -> str:
        """A short readable name, e.g. ``scope-k16-alpha0.5``: the method, the budget and the
        parameters that differ from the method's defaults (floats to 4 significant digits; the
        cache folder adds the configuration's full fingerprint, so rounding never merges runs)."""
        parts = [self.method] + ([f"k{self.k}"] if self.k is not None else [])
        try:
            defaults = method_parameters(self.method)
        except ValueError:
            defaults = {}
        for name, value in sorted(self.params.items()):
            default = defaults.get(name, object())
            try:
                same = _normalise(self.method, name, value, default) == default
            except ValueError:
                same = False
            if not same:
                parts.append(f"{name}{_label_value(value)}")
        return "-".join(str(p) for p in parts).replace("/", "_")


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name}: expected a positive integer{extra}, got {value!r}")


def validate_config(config: RunConfig, n_tokens: int | None = None, n_layers: int | None = None) -> None:
    """Reject a bad configuration before anything expensive happens (no model is loaded).

    ``n_tokens`` (N) and ``n_layers`` come from the checkpoint's ``config.json``; without them
    the range checks that need them are skipped. Pre-LLM selector parameters are checked by
    running the selector on a tiny dummy input, so the selector's own messages come through.
    """
    if not isinstance(config, RunConfig):
        raise ValueError(f"config: expected a RunConfig, got {type(config).__name__}")
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset: unknown data set {config.dataset!r}; choose one of {DATASETS}")
    if config.method not in METHODS:
        raise ValueError(f"method: unknown method {config.method!r}; choose one of {METHODS}")
    _positive_int("n_samples", config.n_samples, allow_none=True)
    _positive_int("chunk_size", config.chunk_size)
    _positive_int("max_new_tokens", config.max_new_tokens, allow_none=True)
    if isinstance(config.sample_seed, (bool, np.bool_)) or not isinstance(config.sample_seed, (int, np.integer)) \
            or config.sample_seed < 0:
        raise ValueError(f"sample_seed: expected a non-negative integer, got {config.sample_seed!r}")
    if config.preprocess not in PREPROCESS:
        raise ValueError(f"preprocess: expected one of {PREPROCESS}, got {config.preprocess!r}")
    if not isinstance(config.params, dict):
        raise ValueError(f"params: expected a dict of method parameters, got {type(config.params).__name__}")
    if config.method == "none":
        if config.k is not None:
            raise ValueError(f"k: method 'none' keeps every visual token; leave k=None (got {config.k!r})")
        if config.params:
            raise ValueError(f"params: method 'none' takes no parameters, got {sorted(config.params)}")
        return
    k = config.k
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: method {config.method!r} needs the number of kept tokens k >= 1, got {k!r}")
    if n_tokens is not None and k > n_tokens:
        raise ValueError(f"k: {k} is more than the model's {n_tokens} visual tokens per image")
    params = complete_params(config.method, config.params)
    if config.method == "fastv":
        from visprune import fastv

        fastv.fastv_params(**params, **({"n_layers": n_layers} if _takes_n_layers() else {}))
        layer = params.get("layer")
        if n_layers is not None and isinstance(layer, int) and not 0 <= layer < n_layers:
            raise ValueError(f"layer: FastV's layer must be an int in 0..{n_layers - 1}, got {layer!r}")
        return
    import torch

    from visprune.pruning import select

    feature_space = params.pop("feature_space")
    if feature_space not in ("vision", "projected"):
        raise ValueError(f"feature_space: expected 'vision' or 'projected', got {feature_space!r}")
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(1, int(k), 4, generator=gen)
    saliency = torch.rand(1, int(k), generator=gen)
    select(config.method, features, saliency, int(k), **params)


def _takes_n_layers() -> bool:
    from visprune import fastv

    return "n_layers" in inspect.signature(fastv.fastv_params).parameters


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

    profile.require(config.dataset)
    ensure_toy_world(profile)
    if config.dataset.startswith("pope-"):
        split = config.dataset.split("-", 1)[1]
        instances = profile.coco_instances if profile.coco_instances is not None and Path(profile.coco_instances).is_file() else None
        samples = read_pope(profile.pope_files[split], profile.pope_images, split, instances_file=instances)
    elif config.dataset == "scienceqa":
        samples = read_scienceqa(profile.scienceqa_root, split="test", img_only=True)
    else:
        return caption_samples(profile.coco_instances, profile.coco_images, n=config.n_samples, seed=config.sample_seed)
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

    profile.require("chair")
    captions = profile.coco_captions if Path(profile.coco_captions).is_file() else None
    return chair_ground_truth(profile.coco_instances, captions, synonyms=profile.chair_synonyms)


# ------------------------------------------------------------------------------ model files


def model_fingerprint(model_dir: Path, digests: runcache.DigestCache | None = None) -> dict:
    """The checkpoint's identity by content (:func:`visprune.runcache.model_fingerprint`)."""
    return runcache.model_fingerprint(model_dir, digests)


def model_shape(model_dir: Path) -> tuple[int, int]:
    """(N visual tokens per image, language-model layers), read from ``config.json`` only."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
        vision = cfg.get("vision_config", {})
        text = cfg.get("text_config", {})
        side = int(vision.get("image_size", 336)) // int(vision.get("patch_size", 14))
        return side * side, int(text.get("num_hidden_layers", 32))
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"model config {path} is not a valid llava-hf config.json ({err}); restore it") from None


def prompt_format(model_dir: Path) -> dict:
    """The prompt format the checkpoint declares, as a plain dict (part of every run key)."""
    from visprune import prompts

    return prompts.read_prompt_format(model_dir).describe()


def resolve_device_dtype(device: Any, dtype: Any) -> tuple[str, str]:
    """(device, dtype) names as the model wrapper will use them, checked before any model loads.

    ``device``: None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
    ``dtype``: None (bfloat16 on CUDA where supported, float16 on other CUDA devices, float32 on
    CPU), a torch dtype or its name. Raises ValueError naming the parameter.
    """
    import torch

    from visprune.model import default_device, default_dtype

    if device is None:
        dev = default_device()
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device: {device!r} is not a device; use cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device: {device!r} is not supported; use cpu, cuda or cuda:N")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device: {device!r} was asked for but no CUDA device is available here; use --device cpu")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ValueError(f"device: {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dtype is None:
        dt = default_dtype(dev)
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        dt = getattr(torch, str(dtype).replace("torch.", ""), None)
        if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
            raise ValueError(f"dtype: {dtype!r} is not a floating-point torch dtype; use float32, float16 or bfloat16")
    return str(dev), str(dt).replace("torch.", "")


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
    process starts with the chunks whose index is its rank modulo P (then helps with any others
    still free) and writes them into the one shared cache folder; all then wait for each other
    and read the merged table. Started normally, there is one process and nothing to wait for.
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
        """The :class:`visprune.model.PrunedLlava` (loaded on first use)."""
        if self._llava is None:
            import torch

            from visprune.model import PrunedLlava

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
        params = complete_params(config.method, config.params) if config.method != "none" else {}
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

        from visprune.data import caption_samples
        from visprune.image_stats import erank_batch

        self.profile.require("chair")
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

    def validate(self, config: RunConfig) -> None:
        """Check a configuration against the checkpoint's shape and the profile's paths, without
        loading weights."""
        validate_config(config)
        self.profile.require(config.dataset)
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
            vision = llava.encode_images([images[i] for i in batch_ids], preprocess=config.preprocess)
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
                            "answer_token_ids": [list(map(int, ids)) for ids in out.answer_ids[j]],
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
        message = answer_mass_warning(records)
        if message:
            warnings.warn(message, LowAnswerMassWarning, stacklevel=2)
        if list(ok["answers"].iloc[0]) == ["yes", "no"]:
            preds = ok["prediction"].to_numpy(dtype=int)
            out.update(metrics.pope_scores(preds, labels))
    return out


class LowAnswerMassWarning(UserWarning):
    """The model puts little first-token probability on the answer set (DESIGN.md section 5)."""


def answer_mass_warning(records: pd.DataFrame, threshold: float = LOW_ANSWER_MASS) -> str | None:
    """A one-line warning per run whose mean answer-set mass is below ``threshold``, else None.

    The answer-set mass is the full-vocabulary probability of the answer tokens before
    renormalising; a mean below 0.5 means the model mostly wants to say something else first,
    which points to a prompt-format or tokenizer mismatch: the renormalised probabilities then
    describe a small corner of the model's distribution. Runs are named by their ``run`` column
    (and data set) when the records have one.
    """
    if "answer_mass" not in records or records.empty:
        return None
    ok = records[(records["status"] == "ok") & records["answer_mass"].notna()]
    if ok.empty:
        return None
    keys = [c for c in ("dataset", "run") if c in ok.columns]
    groups = ok.groupby(keys, sort=False) if keys else [((), ok)]
    low = []
    for key, group in groups:
        mass = float(group["answer_mass"].mean())
        if mass < threshold:
            name = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))) or "this run"
            low.append(f"{name} ({mass:.2f})")
    if not low:
        return None
    return (f"low answer-set mass in {', '.join(low)}: the mean first-token probability of the answers is "
            f"below {threshold}; the prompt format or tokenizer may not match the model")


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
