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
"""

from visprune.toymodel.build import FULL, SMALL, ToyLlavaSize, directory_size_bytes
from visprune.toymodel.train import FULL_SCHEDULE, SMALL_SCHEDULE, SMALL_WORLD, Schedule, train_toy_llava

__all__ = [
    "FULL", "FULL_SCHEDULE", "SMALL", "SMALL_SCHEDULE", "SMALL_WORLD", "Schedule", "ToyLlavaSize",
    "directory_size_bytes", "train_toy_llava",
]
