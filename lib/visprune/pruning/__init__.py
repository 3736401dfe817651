"""Pruning methods, one module per method, and the registry that declares them
(ALGORITHMS.md, "Pruning methods"; DESIGN.md section 8).

    >>> import torch
    >>> from visprune.pruning import select, spec
    >>> feats, sal = torch.randn(2, 576, 1024), torch.rand(2, 576)
    >>> select("scope", feats, sal, 64, alpha=0.5).shape   # LongTensor (2, 64), ascending rows
    torch.Size([2, 64])
    >>> spec("divprune").label, spec("fastv").stage
    ('DivPrune', 'in-llm')

Built in: ``random``, ``saliency``, ``scope``, ``divprune``, ``adaptive`` (before the language
model) and ``fastv`` (inside it); ``none`` keeps every token. Adding one is one new module in this
folder that calls :func:`register` (see :mod:`.registry`); it is imported here automatically.
"""

import importlib
import pkgutil

from visprune.pruning._numerics import ROUNDING_C, cosine_similarity_matrix, rounding_delta
from visprune.pruning.registry import (
    ENGINE_INPUTS, FEATURE_SPACES, METHODS, OUTPUTS, PROMPT_INPUTS, STAGES, VISION_INPUTS, LayerDrop, LayerPruner,
    MergedTokens, MethodSpec, available_methods, merge, pre_llm_methods, register, select, spec, unregister,
)

# Every module of this folder is a method that registers itself on import: the built-in ones
# first, in this order (the order of tables and legends), then any other module, by name. So a
# new method is one new file here, and nothing else changes.
_BUILT_IN = ("random", "downsample", "no_image", "saliency", "scope", "divprune", "adaptive", "visionzip", "vispruner",
             "cdpruner", "fastv", "pyramiddrop", "sparsevlm", "dart")
_FOUND = {m.name for m in pkgutil.iter_modules(__path__) if m.name != "registry" and not m.name.startswith("_")}
for _module in (*[m for m in _BUILT_IN if m in _FOUND], *sorted(_FOUND - set(_BUILT_IN))):
    importlib.import_module(f"{__name__}.{_module}")
from visprune.pruning.adaptive import (  # noqa: E402
    ADAPTIVE_DEFAULT_C, ADAPTIVE_DEFAULT_TAU_MAX, adaptive_select, adaptive_threshold,
)
from visprune.pruning.divprune import divprune_select  # noqa: E402
from visprune.pruning.random import random_select  # noqa: E402
from visprune.pruning.saliency import saliency_select  # noqa: E402
from visprune.pruning.scope import scope_select  # noqa: E402

__all__ = [
    "ADAPTIVE_DEFAULT_C", "ADAPTIVE_DEFAULT_TAU_MAX", "ENGINE_INPUTS", "FEATURE_SPACES", "METHODS", "OUTPUTS",
    "PROMPT_INPUTS", "ROUNDING_C", "STAGES", "VISION_INPUTS", "LayerDrop", "LayerPruner", "MergedTokens", "MethodSpec",
    "merge", "adaptive_select", "adaptive_threshold", "available_methods",
    "cosine_similarity_matrix", "divprune_select", "pre_llm_methods", "random_select", "register", "rounding_delta",
    "saliency_select", "scope_select", "select", "spec", "unregister",
]
