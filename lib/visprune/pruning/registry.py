"""The method registry: every pruning method declared once (ALGORITHMS.md, "Pruning methods";
DESIGN.md section 8).

A method is one function in its own module, registered with :func:`register`; its
:class:`MethodSpec` is what the model wrapper, the engine (configurations, run keys, per-image
inputs, records), the command line, the tables, the plots and the chapters read. Nothing else
lists methods.

Two stages:

- ``"pre-llm"``: a *selector* ``fn(features, saliency, k, *, params...)`` that picks K of the N
  visual tokens from the vision tower's patch features (B, N, d) and CLS attention (B, N) before
  the language model; it returns a LongTensor (B, K) or ``(indices, info)`` with per-image
  diagnostics. :func:`select` validates the inputs and calls it.
- ``"in-llm"``: ``fn(*, params..., n_layers)`` validates and completes the method's parameters
  (returning the dict a run records), and ``pruner(params, k)`` builds a :class:`LayerPruner`
  that the language-model loop consults before each decoder layer (FastV:
  :mod:`visprune.pruning.fastv`).

A method's parameters and defaults are read from ``fn``'s keyword-only arguments, minus its
``inputs`` (what the engine fills per image: ``sample_seeds``, ``image_erank``; per model:
``n_layers``). ``measured`` names parameters whose default (None) the engine measures on the
profile before a run (adaptive's ``erank_ref``). ``records`` names per-image diagnostics of
``info`` that each record keeps (adaptive's ``tau``).

Adding a method::

    # lib/visprune/pruning/my_method.py (imported by the package on its own)
    @register("my_method", label="My method", color="#8c564b")
    def my_method(features, saliency, k, *, my_param: float = 1.0):
        ...  # return LongTensor (B, k)

or, from outside the package (a notebook, a test), the same decorator: the method is then in
the engine, the command line and the plots of that process.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch

from visprune.pruning._numerics import _check_inputs, _check_k

__all__ = ["STAGES", "FEATURE_SPACES", "ENGINE_INPUTS", "MethodSpec", "LayerPruner", "METHODS", "register",
           "unregister", "spec", "available_methods", "pre_llm_methods", "select"]

STAGES = ("none", "pre-llm", "in-llm")
#: The features a pre-LLM selector may rank: the vision features X, or the projector's outputs.
FEATURE_SPACES = ("vision", "projected")
#: Keywords the engine fills: per image (seeds from image ids, the image's erank) or per model.
ENGINE_INPUTS = ("sample_seeds", "image_erank", "n_layers")
_POSITIONAL = ("features", "saliency", "k")


class LayerPruner(Protocol):
    """What an in-LLM method gives the language-model loop for one batch of prompts.

    ``before_layer(i, layer, state)`` is called before decoder layer ``i`` runs, with
    ``state`` holding ``hidden`` (P, T, d), ``rope`` (cos, sin), ``valid`` (P, T) bool,
    ``image_start`` (P,) and ``num_visual`` (the visual tokens currently in the sequence). It
    returns None, or the (P, K') ascending indices (among the current visual tokens) of those to
    keep from layer ``i`` on; the loop drops the others.
    """

    def before_layer(self, i: int, layer: torch.nn.Module, state: Mapping[str, Any]) -> torch.Tensor | None: ...


@dataclass(frozen=True)
class MethodSpec:
    """One pruning method, as every part of the library sees it (see the module docstring)."""

    name: str
    stage: str
    function: Callable[..., Any] | None
    label: str
    color: str
    inputs: tuple[str, ...] = ()
    measured: tuple[str, ...] = ()
    records: tuple[str, ...] = ()
    feature_space: str = "vision"
    pruner: Callable[[dict, int], LayerPruner] | None = None
    describe: Callable[[dict], str] | None = field(default=None, compare=False)

    @property
    def parameters(self) -> dict[str, Any]:
        """The user parameters and their defaults: keyword-only arguments of ``function`` minus
        ``inputs``, plus ``feature_space`` for a pre-LLM selector."""
        if self.function is None:
            return {}
        params = {p.name: p.default for p in inspect.signature(self.function).parameters.values()
                  if p.kind is p.KEYWORD_ONLY and p.name not in self.inputs}
        if self.stage == "pre-llm":
            params["feature_space"] = self.feature_space
        return params

    def display(self, params: Mapping[str, Any] | None = None) -> str:
        """A readable name for tables and legends (``SCOPE α=0.5``, ``FastV``, ``unpruned``)."""
        if self.describe is None:
            return self.label
        defaults = self.parameters
        given = {k: _like(defaults.get(k), v) for k, v in dict(params or {}).items() if v is not None and v == v}
        return self.describe({**defaults, **given})


def _like(default: Any, value: Any) -> Any:
    """``value`` in the type of an int default (a table column may hold 2.0 for layer 2)."""
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


METHODS: dict[str, MethodSpec] = {}


def _check_signature(name: str, stage: str, fn: Callable[..., Any]) -> None:
    params = list(inspect.signature(fn).parameters.values())
    if stage == "pre-llm":
        head = [p.name for p in params[: len(_POSITIONAL)]]
        rest = params[len(_POSITIONAL):]
        if head != list(_POSITIONAL) or any(p.kind is not p.KEYWORD_ONLY for p in rest):
            raise ValueError(f"method {name!r}: a selector's signature must be (features, saliency, k, *, params...), "
                             f"got {inspect.signature(fn)}")
    elif any(p.kind is not p.KEYWORD_ONLY for p in params):
        raise ValueError(f"method {name!r}: an in-LLM method's parameter function takes keyword-only arguments, "
                         f"got {inspect.signature(fn)}")


def register(
    name: str,
    *,
    label: str,
    color: str,
    stage: str = "pre-llm",
    inputs: tuple[str, ...] = (),
    measured: tuple[str, ...] = (),
    records: tuple[str, ...] = (),
    feature_space: str = "vision",
    pruner: Callable[[dict, int], LayerPruner] | None = None,
    describe: Callable[[dict], str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator declaring a method (see the module docstring); returns the function unchanged."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name: a method needs a name of letters, digits, '-' or '_', got {name!r}")
    if stage not in STAGES[1:]:
        raise ValueError(f"stage: expected 'pre-llm' or 'in-llm', got {stage!r}")
    if feature_space not in FEATURE_SPACES:
        raise ValueError(f"feature_space: expected one of {FEATURE_SPACES}, got {feature_space!r}")
    unknown = sorted(set(inputs) - set(ENGINE_INPUTS))
    if unknown:
        raise ValueError(f"inputs: the engine fills only {', '.join(ENGINE_INPUTS)}, got {unknown}")
    if stage == "in-llm" and pruner is None:
        raise ValueError(f"method {name!r}: an in-LLM method needs pruner=(params, k) -> LayerPruner")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in METHODS:
            raise ValueError(f"name: a method called {name!r} is already registered")
        _check_signature(name, stage, fn)
        spec_ = MethodSpec(name, stage, fn, label, color, tuple(inputs), tuple(measured), tuple(records),
                           feature_space, pruner, describe)
        missing = [p for p in measured if p not in spec_.parameters]
        if missing:
            raise ValueError(f"measured: {missing} are not parameters of method {name!r}")
        METHODS[name] = spec_
        return fn

    return decorator


def unregister(name: str) -> None:
    """Remove a method registered in this process (tests and notebooks that add their own)."""
    if name == "none" or name not in METHODS:
        raise ValueError(f"name: no registered method {name!r} to remove")
    del METHODS[name]


METHODS["none"] = MethodSpec("none", "none", None, "unpruned", "#000000")


def available_methods() -> tuple[str, ...]:
    """Every method name, "none" (all tokens) first, then in registration order."""
    return tuple(METHODS)


def pre_llm_methods() -> tuple[str, ...]:
    """The selectors that prune before the language model."""
    return tuple(n for n, s in METHODS.items() if s.stage == "pre-llm")


def spec(name: str) -> MethodSpec:
    """The spec of method ``name``; ValueError naming the known methods otherwise."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def select(method: str, features: Any, saliency: Any, k: int, *, return_info: bool = False, **params: Any):
    """Indices of the K visual tokens to keep, per image, for a pre-LLM selector.

    ``features`` (B, N, d) float tensor (or NumPy array): the patch features the selector ranks;
    ``saliency`` (B, N) non-negative: CLS-to-patch attention summed over heads; ``k`` in 1..N;
    ``params``: the selector's keyword parameters (and any engine inputs it declares).
    Returns a LongTensor (B, K) on the features' device, rows ascending (the kept tokens keep
    their spatial order), or ``(indices, info)`` with ``return_info=True`` (``info``: per-image
    diagnostics, {} for most methods). Raises ValueError naming the offending argument.
    """
    if not isinstance(method, str) or method not in METHODS or METHODS[method].stage != "pre-llm":
        raise ValueError(f"method: unknown selector {method!r}; available: {', '.join(sorted(pre_llm_methods()))}")
    fn = METHODS[method].function
    allowed = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for name in params:
        if name not in allowed:
            accepted = ", ".join(allowed) if allowed else "none"
            raise ValueError(f"{name}: not a parameter of method {method!r} (its parameters: {accepted})")
    features, saliency = _check_inputs(features, saliency)
    batch, n = features.shape[:2]
    k = _check_k(k, n)
    with torch.no_grad():  # selection is not differentiable; never build a graph
        out = fn(features, saliency, k, **params)
    indices, info = out if isinstance(out, tuple) else (out, {})
    indices = torch.sort(indices.to(device=features.device, dtype=torch.long), dim=-1).values  # (B, K)
    if indices.shape != (batch, k):  # a broken selector must not pass silently
        raise RuntimeError(f"selector {method!r} returned shape {tuple(indices.shape)}, expected {(batch, k)}")
    return (indices, info) if return_info else indices
