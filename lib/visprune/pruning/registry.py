"""The method registry: every pruning method declared once (ALGORITHMS.md, "Pruning methods";
DESIGN.md section 8).

A method is one function in its own module, registered with :func:`register`; its
:class:`MethodSpec` is what the model wrapper, the engine (configurations, run keys, per-image
inputs, records), the command line, the tables, the plots and the chapters read. Nothing else
lists methods.

Two stages:

- ``"pre-llm"``: ``fn(features, saliency, k, *, params...)`` works on the vision tower's patch
  features (B, N, d) and CLS attention (B, N) before the language model. With ``output="indices"``
  (a *selector*) it picks K of the N visual tokens: a LongTensor (B, K) or ``(indices, info)``
  with per-image diagnostics; :func:`select` validates the inputs and calls it. With
  ``output="tokens"`` (a *merger*: VisionZip, plain downsampling, no visual tokens) it returns
  :class:`MergedTokens`, the M <= K feature vectors the projector gets (which need not be
  patches); :func:`merge` calls it.
- ``"in-llm"``: ``fn(*, params..., n_layers)`` validates and completes the method's parameters
  (returning the dict a run records), and ``pruner(params, k)`` builds a :class:`LayerPruner`
  that the language-model loop consults before each decoder layer (FastV:
  :mod:`visprune.pruning.fastv`).

``budget=False`` marks a method that takes no budget (the "no visual tokens" control): its runs
have ``k=None``, as the unpruned one.

Inputs a method may declare (``inputs``), filled for it, never given by a user:

- by the engine (``ENGINE_INPUTS``): ``sample_seeds`` and ``image_erank`` per image,
  ``n_layers`` per model;
- by the model wrapper from the vision tower (``VISION_INPUTS``): ``cls_feature`` (B, d_v), the
  CLS token's hidden state at the feature layer; ``vision_keys`` (B, 1 + N, d_head), that layer's
  attention keys averaged over heads (CLS first); ``vision_features`` (B, N, d_v), the vision
  features X (for a selector that ranks the projected tokens); ``grid_size``, patches per side;
- per prompt (``PROMPT_INPUTS``): ``questions`` (P strings) and ``question_embeddings`` (P
  tensors (T_i, d_text), the language model's input embeddings of each question's tokens). A
  method that declares one is *text-conditioned*: the wrapper calls it once per prompt, with the
  rows of ``features`` and ``saliency`` being the prompts' images.

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

__all__ = ["STAGES", "OUTPUTS", "FEATURE_SPACES", "ENGINE_INPUTS", "VISION_INPUTS", "PROMPT_INPUTS", "MethodSpec",
           "MergedTokens", "LayerDrop", "LayerPruner", "METHODS", "register", "unregister", "spec", "available_methods",
           "pre_llm_methods", "select", "merge"]

STAGES = ("none", "pre-llm", "in-llm")
#: The features a pre-LLM selector may rank: the vision features X, or the projector's outputs.
FEATURE_SPACES = ("vision", "projected")
#: Keywords the engine fills: per image (seeds from image ids, the image's erank) or per model.
ENGINE_INPUTS = ("sample_seeds", "image_erank", "n_layers")
#: Keywords the model wrapper fills from the vision tower's outputs (see the module docstring).
VISION_INPUTS = ("cls_feature", "vision_keys", "vision_features", "grid_size")
#: Keywords filled per prompt; a method declaring one chooses its tokens per prompt.
PROMPT_INPUTS = ("questions", "question_embeddings")
#: What a pre-LLM method returns: indices of kept patches, or the merged feature vectors themselves.
OUTPUTS = ("indices", "tokens")
_POSITIONAL = ("features", "saliency", "k")


@dataclass
class MergedTokens:
    """What a merger (``output="tokens"``) returns for B images.

    - ``tokens`` (B, M, d): the vectors the projector gets, in the order the language model sees
      them (M <= K; M = 0 for "no visual tokens").
    - ``sources`` (B, M) long: the patch each vector stands for (a dominant patch, a merge target,
      a pooled cell's first patch), -1 for the CLS token; for maps of what was kept.
    - ``info``: per-image diagnostics, as a selector's.
    """

    tokens: torch.Tensor
    sources: torch.Tensor
    info: dict = field(default_factory=dict)


@dataclass
class LayerDrop:
    """A drop an in-LLM method asks for before a layer: keep the visual tokens ``keep`` (P, K')
    (ascending indices among the current visual tokens) and insert ``insert`` (P, E, d) hidden
    states (or None) right after them, as extra visual tokens (SparseVLM's recycled tokens)."""

    keep: torch.Tensor
    insert: torch.Tensor | None = None


class LayerPruner(Protocol):
    """What an in-LLM method gives the language-model loop for one batch of prompts.

    ``before_layer(i, layer, state)`` is called before decoder layer ``i`` runs, with
    ``state`` holding ``hidden`` (P, T, d) (layer i's input), ``rope`` (cos, sin), ``valid``
    (P, T) bool, ``positions`` (P, T), ``input_ids`` (P, T) (the image token id in every visual
    slot, inserted ones too), ``image_start`` (P,), ``num_visual`` (the visual tokens currently in
    the sequence), ``query_row`` (the last prompt token's row in the current sequence; tokens
    after it are generated ones, which a method must not read) and ``final_norm`` (the language
    model's final norm). It returns None, the (P, K') ascending indices (among the current visual
    tokens) of those to keep from layer ``i`` on, or a :class:`LayerDrop`; the loop drops the
    others. A pruner whose ``renumber`` attribute is True has the positions renumbered
    contiguously after each drop (PyramidDrop, SparseVLM); otherwise the kept tokens keep their
    original position ids (FastV, DART).
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
    output: str = "indices"
    budget: bool = True
    source: str = ""
    convention: str = ""
    selector_flops: Callable[..., float] | None = field(default=None, compare=False)
    check: Callable[..., Any] | None = field(default=None, compare=False)

    @property
    def per_prompt(self) -> bool:
        """True for a text-conditioned pre-LLM method (it declares a per-prompt input)."""
        return any(name in PROMPT_INPUTS for name in self.inputs)

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
    output: str = "indices",
    budget: bool = True,
    source: str = "",
    convention: str = "",
    selector_flops: Callable[..., float] | None = None,
    check: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator declaring a method (see the module docstring); returns the function unchanged.

    ``source``: where the released code is (for the README's method table); ``convention``: what
    the budget K means for this method (e.g. "K tokens enter the language model"), printed
    beside every table that compares methods at a budget; ``selector_flops(n, k, d)``: the
    analytic cost of the selection itself (multiply-adds x 2), for the cost tables;
    ``check(params, k, n_tokens, n_layers)``: raises ValueError when the run cannot work, so the
    engine rejects it before computing anything. An in-LLM method's receives its completed layer
    parameters and says whether the budget can be met on a model with N visual tokens and D layers
    (PyramidDrop's smallest reachable average). A pre-LLM method's receives its user parameters
    (``n_tokens``, ``n_layers`` may be None), checks what the tiny dummy input of
    :func:`visprune.engine.validate_config` cannot (a local checkpoint the method loads: CDPruner's
    ``text_tower``) and returns the parameters to run that dummy input with.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name: a method needs a name of letters, digits, '-' or '_', got {name!r}")
    if stage not in STAGES[1:]:
        raise ValueError(f"stage: expected 'pre-llm' or 'in-llm', got {stage!r}")
    if feature_space not in FEATURE_SPACES:
        raise ValueError(f"feature_space: expected one of {FEATURE_SPACES}, got {feature_space!r}")
    known = ENGINE_INPUTS + VISION_INPUTS + PROMPT_INPUTS
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise ValueError(f"inputs: only {', '.join(known)} are filled for a method, got {unknown}")
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {OUTPUTS}, got {output!r}")
    if stage == "in-llm" and (output != "indices" or not budget or set(inputs) - set(ENGINE_INPUTS)):
        raise ValueError(f"method {name!r}: an in-LLM method takes a budget, returns indices and only engine inputs")
    if stage == "in-llm" and pruner is None:
        raise ValueError(f"method {name!r}: an in-LLM method needs pruner=(params, k) -> LayerPruner")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in METHODS:
            raise ValueError(f"name: a method called {name!r} is already registered")
        _check_signature(name, stage, fn)
        spec_ = MethodSpec(name, stage, fn, label, color, tuple(inputs), tuple(measured), tuple(records),
                           feature_space, pruner, describe, output, bool(budget), source, convention, selector_flops,
                           check)
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
    """The methods that prune before the language model (selectors and mergers)."""
    return tuple(n for n, s in METHODS.items() if s.stage == "pre-llm")


def _check_params(method: str, fn: Callable[..., Any], params: Mapping[str, Any]) -> None:
    allowed = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for name in params:
        if name not in allowed:
            accepted = ", ".join(allowed) if allowed else "none"
            raise ValueError(f"{name}: not a parameter of method {method!r} (its parameters: {accepted})")


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
    selectors = [n for n in pre_llm_methods() if METHODS[n].output == "indices"]
    if not isinstance(method, str) or method not in selectors:
        raise ValueError(f"method: unknown selector {method!r}; available: {', '.join(sorted(selectors))}")
    fn = METHODS[method].function
    _check_params(method, fn, params)
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


def merge(method: str, features: Any, saliency: Any, k: int | None, **params: Any) -> MergedTokens:
    """The merged visual tokens of a merger (``output="tokens"``) for B images.

    As :func:`select`, but the method returns :class:`MergedTokens` (M <= K vectors per image,
    M = 0 allowed); ``k`` is None for a method without a budget. Raises ValueError naming the
    offending argument, RuntimeError for a merger that breaks its contract.
    """
    mergers = [n for n in pre_llm_methods() if METHODS[n].output == "tokens"]
    if not isinstance(method, str) or method not in mergers:
        raise ValueError(f"method: unknown merger {method!r}; available: {', '.join(sorted(mergers))}")
    spec_ = METHODS[method]
    _check_params(method, spec_.function, params)
    features, saliency = _check_inputs(features, saliency)
    batch, n, d = features.shape
    if spec_.budget:
        k = _check_k(k, n)
    elif k is not None:
        raise ValueError(f"k: method {method!r} takes no token budget; pass k=None (got {k!r})")
    with torch.no_grad():
        out = spec_.function(features, saliency, k, **params)
    if not isinstance(out, MergedTokens):
        raise RuntimeError(f"merger {method!r} returned {type(out).__name__}, expected MergedTokens")
    m = out.tokens.shape[1] if out.tokens.dim() == 3 else -1
    if out.tokens.dim() != 3 or out.tokens.shape[0] != batch or out.tokens.shape[2] != d or (k is not None and m > k):
        raise RuntimeError(f"merger {method!r} returned tokens of shape {tuple(out.tokens.shape)}, expected ({batch}, M <= {k}, {d})")
    if tuple(out.sources.shape) != (batch, m):
        raise RuntimeError(f"merger {method!r} returned sources of shape {tuple(out.sources.shape)}, expected {(batch, m)}")
    return out
