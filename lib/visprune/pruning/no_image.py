"""The "no visual tokens" control (ALGORITHMS.md, "Controls"): the prompt with the image removed.

How much an answer needs the image at all. The method takes no budget (its runs have k=None,
like the unpruned one); it returns zero visual tokens, and the model wrapper then builds the
prompt without its image slot (``PromptFormat.conversation_without_image``: LLaVA-1.5's
text-only ``"{system} USER: {question} ASSISTANT:"``), so the language model sees the question
alone, not an image slot left empty.
"""

from __future__ import annotations

import torch

from visprune.pruning.registry import MergedTokens, register


@register("no_image", label="no visual tokens", color="#c7c7c7", output="tokens", budget=False,
          source="(control) the prompt without its image", convention="no visual token enters the language model",
          selector_flops=lambda n, k, d: 0.0)
def no_image(features, saliency, k):
    """Zero visual tokens per image: ``MergedTokens`` with M = 0 (ALGORITHMS.md, "Controls")."""
    batch = features.shape[0]
    return MergedTokens(features[:, :0], torch.empty(batch, 0, dtype=torch.long, device=features.device))
