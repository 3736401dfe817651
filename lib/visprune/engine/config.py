"""Run configurations: a method, its parameters completed from the registry, a data set, a
budget (DESIGN.md section 4). Everything about a configuration that can change a record is
part of its key (:meth:`RunConfig.key_dict`)."""

from __future__ import annotations

import math

import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from visprune.instrument.llava.images import PREPROCESS
from visprune.pruning import spec as method_spec
from visprune.engine.datasets import DATASETS

#: Bump when the meaning or layout of the records changes (invalidates every cache).
ENGINE_VERSION = "6"


# ------------------------------------------------------------------------------ method parameters


def method_parameters(method: str) -> dict[str, Any]:
    """The parameters a method takes and their defaults, read from the method's own code:
    ``visprune.pruning.spec(method).parameters`` (the keyword-only parameters of its
    function minus the inputs the engine fills, plus ``feature_space`` for a selector)."""
    return method_spec(method).parameters


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
    - ``method``: any registered method (``visprune.pruning.available_methods()``):
      ``"none"`` (all visual tokens), a pre-LLM selector (``"random"``, ``"saliency"``,
      ``"scope"``, ``"divprune"``, ``"adaptive"``, ...) or an in-LLM one (``"fastv"``).
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
    method_spec(config.method)  # an unknown method: ValueError naming the registered ones
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
    if method_spec(config.method).stage == "none":
        if config.k is not None:
            raise ValueError(f"k: method 'none' keeps every visual token; leave k=None (got {config.k!r})")
        if config.params:
            raise ValueError(f"params: method 'none' takes no parameters, got {sorted(config.params)}")
        return
    method = method_spec(config.method)
    k = config.k
    if not method.budget:
        if k is not None:
            raise ValueError(f"k: method {config.method!r} takes no token budget; leave k=None (got {k!r})")
    else:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k: method {config.method!r} needs the number of kept tokens k >= 1, got {k!r}")
        if n_tokens is not None and k > n_tokens:
            raise ValueError(f"k: {k} is more than the model's {n_tokens} visual tokens per image")
    params = complete_params(config.method, config.params)
    if method.stage == "in-llm":
        completed = method.function(**params, **({"n_layers": n_layers} if "n_layers" in method.inputs else {}))
        if method.check is not None and n_tokens is not None and n_layers is not None:
            method.check(completed, int(k), int(n_tokens), int(n_layers))
        return
    import torch

    from visprune.pruning import FEATURE_SPACES, merge, select

    if method.check is not None:  # what the dummy input below cannot check (a local checkpoint)
        params = dict(method.check(params, k, n_tokens, n_layers))
    feature_space = params.pop("feature_space")
    if feature_space not in FEATURE_SPACES:
        raise ValueError(f"feature_space: expected one of {FEATURE_SPACES}, got {feature_space!r}")
    # a tiny dummy input (a square grid of at least k patches), so the method's own messages come through
    side = max(1, math.isqrt(int(k or 1) - 1) + 1)
    n, width = side * side, 4
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(1, n, width, generator=gen)
    saliency = torch.rand(1, n, generator=gen)
    dummy = {"cls_feature": torch.randn(1, width, generator=gen), "vision_keys": torch.randn(1, 1 + n, width, generator=gen),
             "vision_features": features, "grid_size": side, "questions": ["What is in the image?"],
             "question_embeddings": [torch.randn(3, width, generator=gen)]}
    params.update({name: dummy[name] for name in method.inputs if name in dummy})
    if method.output == "tokens":
        merge(config.method, features, saliency, None if k is None else int(k), **params)
    else:
        select(config.method, features, saliency, int(k), **params)
