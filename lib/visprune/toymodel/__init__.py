"""The toy LLaVA: a real ``transformers`` LLaVA trained on the toy world (DESIGN.md section 3).

- :mod:`~visprune.toymodel.build`: tokenizer, processor, configuration and model in the
  llava-hf layout (CLIP vision tower with CLS, two-layer GELU projector, Llama);
- :mod:`~visprune.toymodel.corpus`: training data from the toy world's train split;
- :mod:`~visprune.toymodel.train`: the two-stage recipe (vision pretraining, then projector
  and language model on conversations);
- :mod:`~visprune.toymodel.card`: measurements on the test split and the model card.

Command line::

    python -m visprune.toymodel train --world data/toyworld --out lib/visprune/assets/toy-llava --seed 0
    python -m visprune.toymodel card --model lib/visprune/assets/toy-llava --world data/toyworld

The shipped checkpoint lives in ``lib/visprune/assets/toy-llava`` (package data) and loads with
``AutoProcessor.from_pretrained`` and ``LlavaForConditionalGeneration.from_pretrained``.

The names below are imported on first use (PEP 562), so ``import visprune.toymodel`` (and its
command line's ``--help``) does not load torch and transformers.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "FULL": "build", "SMALL": "build", "ToyLlavaSize": "build", "directory_size_bytes": "build",
    "FULL_SCHEDULE": "train", "SMALL_SCHEDULE": "train", "SMALL_WORLD": "train", "Schedule": "train",
    "train_toy_llava": "train",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"visprune.toymodel.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'visprune.toymodel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
