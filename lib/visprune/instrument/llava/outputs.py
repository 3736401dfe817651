"""What the wrapper returns: vision outputs, selections, language-model inputs, scores, captions
(DESIGN.md section 4)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dataclasses import dataclass, field


@dataclass
class VisionOutput:
    """What the vision tower gives for a batch of B images (one run of the tower per image).

    - ``features`` (B, N, d_vision): patch features at the model's feature layer
      (``config.vision_feature_layer``), CLS dropped, in the model's dtype: the ``X`` of
      ALGORITHMS.md and the projector's input.
    - ``cls_attention`` (B, N) float32: the CLS token's attention to each patch in the encoder
      layer that produced those features, summed over heads (the ``a`` of ALGORITHMS.md; the
      values sum to H minus the CLS self-attention mass).
    - ``grid_size``: patches per side (N = grid_size ** 2), to draw maps of kept tokens.
    - ``cls_feature`` (B, d_vision): the CLS token's hidden state at the feature layer (VisionZip
      keeps it); None when not computed.
    - ``keys`` (B, 1 + N, d_head) float32: the keys of the encoder layer that produced the
      features, averaged over heads, CLS first (VisionZip's merge metric); None when not computed.
    """

    features: torch.Tensor
    cls_attention: torch.Tensor
    grid_size: int
    cls_feature: torch.Tensor | None = None
    keys: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def num_tokens(self) -> int:
        """N, the number of visual tokens per image."""
        return self.features.shape[1]

    def rows(self, index: Sequence[int] | torch.Tensor) -> "VisionOutput":
        """The images at ``index`` (a list or LongTensor of row numbers), as a new VisionOutput."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.features.device)
        pick = lambda t: None if t is None else t[idx.to(t.device)]  # noqa: E731
        return VisionOutput(self.features[idx], pick(self.cls_attention), self.grid_size, pick(self.cls_feature),
                            pick(self.keys))

    def kept_features(
        self, keep: torch.Tensor, image_index: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Features of the kept tokens: (P, K, d_vision) for ``keep`` (P, K) and each row's image.

        ``keep`` is per image (``Selection.keep``, P = B) or per prompt (``ScoreOutput.keep``),
        with ``image_index[i]`` the image of row i (default: row i); e.g. for the erank of the
        kept tokens.
        """
        feats = self.features
        if image_index is not None:
            feats = feats[torch.as_tensor(image_index, dtype=torch.long, device=feats.device)]
        keep = keep.to(device=feats.device, dtype=torch.long)
        if keep.dim() != 2 or keep.shape[0] != feats.shape[0]:
            raise ValueError(f"keep: expected shape ({feats.shape[0]}, K), got {tuple(keep.shape)}")
        return feats.gather(1, keep[..., None].expand(-1, -1, feats.shape[-1]))


@dataclass(frozen=True, eq=False)
class Selection:
    """Which visual tokens the language model sees, for B images.

    - ``method``: a registered method's name ("none", "fastv", a pre-LLM selector), or
      "indices" (explicit keep).
    - ``k``: visual tokens kept per image (N for "none").
    - ``keep`` (B, K) LongTensor, ascending indices into 0..N-1; ``None`` for an in-LLM method
      (FastV), whose choice depends on the prompt and is made inside the language model, for a
      text-conditioned selector (CDPruner), chosen per prompt when the prompts are known, and
      for a merger (the indices chosen come back in ``ScoreOutput.keep`` /
      ``GenerationOutput.keep``).
    - ``params``: the method's parameters (completed, for an in-LLM method; as passed for a
      selector), recorded with the run.
    - ``info``: the selector's per-image diagnostics when ``return_info=True`` was passed.
    - ``tokens`` (B, M, d_vision): a merger's output vectors (VisionZip, downsampling, no visual
      tokens: M = 0), which the projector gets instead of kept patches; ``sources`` (B, M) the
      patch each stands for (-1: the CLS token). None for every other method.
    - ``per_prompt``: True for a text-conditioned selector (its ``keep`` is None until prompts
      are known).
    """

    method: str
    k: int
    keep: torch.Tensor | None
    params: dict = field(default_factory=dict)
    info: dict | None = None
    tokens: torch.Tensor | None = None
    sources: torch.Tensor | None = None
    per_prompt: bool = False

    @property
    def in_llm(self) -> bool:
        """True when the language model chooses the tokens (an in-LLM method such as FastV)."""
        return self.keep is None and self.tokens is None and not self.per_prompt


@dataclass
class LMInputs:
    """A left-padded batch of P prompts, each with M visual-token slots, ready for the decoder.

    - ``inputs_embeds`` (P, T, d_text): text embeddings around the visual tokens.
    - ``attention_mask`` (P, T) long: 1 for real tokens, 0 for left padding.
    - ``position_ids`` (P, T) long: 0, 1, ... over real tokens (padding gets 0).
    - ``input_ids`` (P, T) long: token ids, the image token id in visual slots, the pad id in padding.
    - ``image_start`` (P,) long: sequence index of each prompt's first visual slot.
    - ``num_visual``: M, the visual slots per prompt (consecutive from ``image_start``).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    input_ids: torch.Tensor
    image_start: torch.Tensor
    num_visual: int


@dataclass
class ScoreOutput:
    """First-token answer distributions for P prompts (DESIGN.md section 5). All on CPU.

    - ``probs`` (P, A_max) float32: row i holds P(answer_j | prompt i) for
      j < lengths[i] (renormalised over the answer set, so it sums to 1), and 0 beyond.
    - ``lengths`` (P,) long: size of each prompt's answer set.
    - ``answer_mass`` (P,) float32: the full-vocabulary softmax mass on the answer set's tokens
      before renormalising (in [0, 1]).
    - ``keep`` (P, K) long: the visual tokens each prompt's image kept (indices into 0..N-1).
    - ``answer_sets``: each prompt's answers, in the order of ``probs``' columns.
    - ``answer_ids``: per prompt, per answer (same order), the token ids whose mass was summed
      for it (``PrunedLlava.answer_token_ids``: the single-token variants), for the run's records.
    - ``answer_logits``: per prompt, per answer, the first-token logits of those ids (float32
      values as Python floats), so a run's records can be recalibrated (temperature scaling,
      ``visprune.metrics.temperature``) without running the model again.
    - ``tokens_per_layer`` (P, D) long: the real (unpadded) tokens each decoder layer saw for each
      prompt; ``visual_per_layer`` (P, D) long: how many of them were visual (the cost
      accounting of ALGORITHMS.md, "Conventions": the prefill FLOPs are computed from them).
    """

    probs: torch.Tensor
    lengths: torch.Tensor
    answer_mass: torch.Tensor
    keep: torch.Tensor
    answer_sets: list[tuple[str, ...]]
    answer_ids: list[list[list[int]]] = field(default_factory=list)
    answer_logits: list[list[list[float]]] = field(default_factory=list)
    tokens_per_layer: torch.Tensor | None = None
    visual_per_layer: torch.Tensor | None = None

    def probs_list(self) -> list[np.ndarray]:
        """One float32 array per prompt, over its own answer set (no padding)."""
        return [self.probs[i, : int(n)].numpy().copy() for i, n in enumerate(self.lengths)]

    def predictions(self) -> list[str]:
        """The most probable answer of each prompt."""
        return [answers[int(self.probs[i, : len(answers)].argmax())] for i, answers in enumerate(self.answer_sets)]


@dataclass
class GenerationOutput:
    """Greedy continuations of P prompts.

    - ``texts``: decoded continuations (special tokens skipped, surrounding space stripped).
    - ``token_ids``: generated token ids per prompt, up to and excluding the end-of-sequence token.
    - ``keep`` (P, K) long on CPU: the visual tokens each prompt kept.
    - ``tokens_per_layer``, ``visual_per_layer`` (P, D): the prompt's tokens per layer, as in
      :class:`ScoreOutput`.
    """

    texts: list[str]
    token_ids: list[list[int]]
    keep: torch.Tensor
    tokens_per_layer: torch.Tensor | None = None
    visual_per_layer: torch.Tensor | None = None


@dataclass
class PromptRun:
    """What one pass of the decoder over a prompt batch leaves (``LanguageMixin._run_prompt``).

    - ``hidden`` (P, T', d): the last layer's output, before the final norm.
    - ``keep`` (P, K) long: the visual tokens that reached the last layer, as indices 0..N-1
      into the prompt's visual tokens (-1 for a token an in-LLM method inserted), or None
      without an in-LLM method.
    - ``layer_valid``: per layer, the (P, T_l) key validity, for cached decoding.
    - ``layer_last``: per layer, the (P,) position id of the last prompt token as that layer saw
      it (differs between layers when a method renumbers positions).
    - ``positions`` (P, T'): position ids of the last layer's sequence.
    - ``tokens_per_layer``, ``visual_per_layer`` (P, D) long: real tokens and visual tokens per layer.
    """

    hidden: torch.Tensor
    keep: torch.Tensor | None
    layer_valid: list
    layer_last: list
    positions: torch.Tensor
    tokens_per_layer: torch.Tensor
    visual_per_layer: torch.Tensor

