"""A LLaVA wrapper that prunes visual tokens, before the language model or inside it (FastV).

This implements the data flow of DESIGN.md section 4 for any llava-hf checkpoint
(``LlavaForConditionalGeneration`` with a CLIP vision tower and a Llama language model)::

    images -> encode_images -> VisionOutput (patch features + CLS attention at the feature layer)
           -> select_tokens -> Selection (K kept visual tokens, or FastV's layer and K)
           -> score     -> first-token distribution over each prompt's answer set (section 5)
           -> generate  -> greedy captions with a KV cache

The vision tower runs once per image; one ``Selection`` serves every prompt on that image
(``image_index`` maps prompts to images: POPE asks six questions about each image).

Conventions (ALGORITHMS.md, "Pruning methods"):

- N visual tokens per image = the patch tokens at ``config.vision_feature_layer``; the CLS token
  is dropped. For ``vision_feature_select_strategy == "full"`` it is dropped too, so every method
  (the unpruned one included) chooses among the same N patch tokens; transformers itself would
  feed N + 1 tokens for such a checkpoint. LLaVA-1.5 uses "default".
- Pre-LLM pruning ("random", "saliency", "scope", "divprune", "adaptive", or explicit indices):
  only the kept patch features go through the projector (it acts per token, so this equals
  projecting all and indexing), and the prompt holds exactly K visual tokens at consecutive
  positions: the sequence simply is K tokens shorter than the unpruned one.
- "none": all N tokens through the same code path.
- "fastv" (ALGORITHMS.md, "FastV", as the released code does it): all N tokens enter and
  layers 0..L-1 see them all; inside layer L-1 the last prompt token's attention (the
  probabilities layer L-1 computes, mean over heads) picks K, and the others are dropped from
  layer L on (default L = 2; ``ranking="same"`` ranks with layer L's own attention instead, the
  only ranking that allows L = 0). Parameters: ``visprune.fastv.fastv_params``. The kept tokens
  and everything after them keep their original position ids, and during generation the caches
  of layers >= L only ever hold the kept tokens.
- Batches are left-padded (every prompt's last token sits at the last position) with an
  explicit 4-D causal + padding attention bias and position ids counted over real tokens only,
  so a prompt scores the same alone or in a padded batch.
- The language model's decoder layers are driven here, one by one (``_run_prompt``,
  ``_decode_step``), with the model's own attention kernel (SDPA or eager) left in place;
  the two attention rows the methods need (CLS -> patches in the vision tower, last prompt
  token -> visual tokens in the language model) are recomputed explicitly.
- Probabilities are computed in float32 from the logits, whatever the model's dtype.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from visprune import fastv as _fastv
from visprune.prompts import DEFAULT_PROMPT_FORMAT, IMAGE_TOKEN, PromptFormat, answer_variants, read_prompt_format

PRE_LLM_METHODS = ("random", "saliency", "scope", "divprune", "adaptive")
#: Image preprocessing (DESIGN.md section 5): "pad" = LLaVA-1.5's evaluation (``image_aspect_ratio:
#: pad``: expand to a square with the processor's mean colour, then the processor); "crop" = the
#: processor alone (resize the shortest edge, centre crop).
PREPROCESS = ("pad", "crop")
METHODS = ("none", "fastv", *PRE_LLM_METHODS)
FASTV_DEFAULT_LAYER = _fastv.DEFAULT_LAYER  # declared with FastV's other defaults in fastv.fastv_params
#: The feature space each pre-LLM selector ranks in by default (ALGORITHMS.md, "DivPrune": the
#: released DivPrune code measures distances on the projected tokens); any other: "vision".
DEFAULT_FEATURE_SPACE = {"divprune": "projected"}
FEATURE_SPACES = ("vision", "projected")
ANSWER_CONTEXT = "ASSISTANT:"  # the prompt's last words: answer variants are tokenised after them

# What a llava-hf checkpoint directory must hold; each entry: (what it is, accepted file names).
CHECKPOINT_FILES = (
    ("model config", ("config.json",)),
    ("weights", ("model.safetensors", "model.safetensors.index.json")),
    ("tokenizer", ("tokenizer.json", "tokenizer.model")),
    ("tokenizer config", ("tokenizer_config.json",)),
    ("image processor config", ("preprocessor_config.json", "processor_config.json")),
)


# --------------------------------------------------------------------------------------------
# Devices and dtypes
# --------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on a CUDA device that supports it, else float16 on CUDA; float32 on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _cast_model(model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move ``model`` in place, keeping rotary ``inv_freq`` buffers in float32 (as from_pretrained does)."""
    fp32_buffers = {
        name: buf.detach().clone()
        for name, buf in model.named_buffers()
        if "inv_freq" in name and buf.dtype == torch.float32
    }
    model.to(device=device, dtype=dtype)
    for name, buf in fp32_buffers.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, attr, buf.to(device))


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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
    """

    features: torch.Tensor
    cls_attention: torch.Tensor
    grid_size: int

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def num_tokens(self) -> int:
        """N, the number of visual tokens per image."""
        return self.features.shape[1]

    def rows(self, index: Sequence[int] | torch.Tensor) -> "VisionOutput":
        """The images at ``index`` (a list or LongTensor of row numbers), as a new VisionOutput."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.features.device)
        return VisionOutput(self.features[idx], self.cls_attention[idx.to(self.cls_attention.device)], self.grid_size)

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

    - ``method``: "none", "fastv", a pre-LLM selector name, or "indices" (explicit keep).
    - ``k``: visual tokens kept per image (N for "none").
    - ``keep`` (B, K) LongTensor, ascending indices into 0..N-1; ``None`` for FastV, whose
      choice depends on the prompt and is made inside the language model (the indices it chose
      come back in ``ScoreOutput.keep`` / ``GenerationOutput.keep``).
    - ``fastv_layer``: L for FastV, else None.
    - ``params``: the selector's parameters, as passed (for the run's records).
    - ``info``: the selector's per-image diagnostics when ``return_info=True`` was passed.
    """

    method: str
    k: int
    keep: torch.Tensor | None
    fastv_layer: int | None = None
    params: dict = field(default_factory=dict)
    info: dict | None = None


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
    """

    probs: torch.Tensor
    lengths: torch.Tensor
    answer_mass: torch.Tensor
    keep: torch.Tensor
    answer_sets: list[tuple[str, ...]]
    answer_ids: list[list[list[int]]] = field(default_factory=list)

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
    """

    texts: list[str]
    token_ids: list[list[int]]
    keep: torch.Tensor


# --------------------------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------------------------


class PrunedLlava:
    """A llava-hf ``LlavaForConditionalGeneration`` with visual-token pruning.

    ``PrunedLlava(model, processor, device=None, dtype=None, prompt_format=None)`` wraps a built
    model (moved and cast in place, put in eval mode); ``PrunedLlava.from_pretrained(path)`` loads
    a local checkpoint directory. ``device`` defaults to CUDA when available, else CPU; ``dtype``
    to bfloat16 on CUDA (float16 where bfloat16 is unsupported) and float32 on CPU.
    ``prompt_format`` (``self.prompt_format``) is the conversation format the model was trained
    with (DESIGN.md section 5): LLaVA-1.5's ``prompts.VICUNA_V1`` by default; ``from_pretrained``
    reads the checkpoint's declaration (``prompts.read_prompt_format``).

    Typical use (one image, several questions)::

        vision = llava.encode_images(images)                 # (B images)
        sel = llava.select_tokens(vision, "scope", k=64, alpha=0.0)
        out = llava.score(questions, [("yes", "no")] * P, vision, sel, image_index=idx)
        caps = llava.generate([CAPTION_PROMPT] * B, vision, sel, max_new_tokens=512)

    ``encode_images``, ``select_tokens``, ``first_token_logits``, ``score`` and ``generate`` run
    under ``torch.inference_mode``; ``visual_embeddings``, ``build_inputs`` and ``lm_logits``
    keep autograd (for training).
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        prompt_format: PromptFormat | None = None,
    ):
        for attr in ("vision_tower", "multi_modal_projector", "language_model"):
            if not hasattr(getattr(model, "model", None), attr) or not hasattr(model, "lm_head"):
                raise ValueError(
                    "model: expected a transformers LlavaForConditionalGeneration (with .model."
                    f"{attr} and .lm_head), got {type(model).__name__}"
                )
        config = model.config
        text_type = getattr(config.text_config, "model_type", None)
        if text_type != "llama":
            raise ValueError(
                f"model: only Llama language models are supported (LLaVA-1.5 uses Vicuna), got {text_type!r}"
            )
        if not isinstance(config.vision_feature_layer, int):
            raise ValueError(
                "model: config.vision_feature_layer must be one int (LLaVA-1.5 uses -2); a list of "
                f"layers ({config.vision_feature_layer}) is not supported: selectors need one feature layer"
            )
        attn_impl = getattr(config.text_config, "_attn_implementation", None) or "sdpa"
        if attn_impl not in ("sdpa", "eager"):
            raise ValueError(
                f"model: the language model uses attention {attn_impl!r}; this wrapper passes 4-D "
                "attention masks, which need 'sdpa' or 'eager'. Load it with attn_implementation='sdpa'."
            )
        if processor is None or not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise ValueError("processor: expected a LlavaProcessor (with .tokenizer and .image_processor)")
        if prompt_format is not None and not isinstance(prompt_format, PromptFormat):
            raise ValueError(
                f"prompt_format: expected a visprune.prompts.PromptFormat (e.g. prompts.VICUNA_V1), "
                f"got {type(prompt_format).__name__}"
            )

        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype if dtype is not None else default_dtype(self.device)
        _cast_model(model, self.device, self.dtype)
        model.eval()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.config = config
        self.prompt_format = prompt_format if prompt_format is not None else DEFAULT_PROMPT_FORMAT

        self.image_token = getattr(processor, "image_token", None) or IMAGE_TOKEN
        self.image_token_id = int(config.image_token_id)
        token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        if token_id != self.image_token_id:
            raise ValueError(
                f"processor: the tokenizer maps {self.image_token!r} to {token_id}, the model config "
                f"expects image_token_id={self.image_token_id}"
            )
        self.pad_token_id = self._pick_pad_id()
        self.eos_token_ids = self._pick_eos_ids()

        vision_config = config.vision_config
        self.grid_size = vision_config.image_size // vision_config.patch_size
        self.num_visual_tokens = self.grid_size**2
        self._answer_ids_cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        prompt_format: PromptFormat | None = None,
    ) -> "PrunedLlava":
        """Load a llava-hf layout checkpoint from a local directory; nothing is ever downloaded.

        The directory must hold ``config.json``, safetensors weights (``model.safetensors``, or
        ``model.safetensors.index.json`` and its shards, with the transformers 4.x names of the
        hub's llava-hf repositories or the current ones), the tokenizer (``tokenizer.json`` or
        ``tokenizer.model``, with ``tokenizer_config.json``) and the image processor config
        (``preprocessor_config.json`` or ``processor_config.json``). A missing directory or
        file raises FileNotFoundError naming the path and what belongs there.
        ``prompt_format`` defaults to the checkpoint's declaration (``prompt_format.json``, read
        by ``prompts.read_prompt_format``; LLaVA-1.5's format when there is none).
        """
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        root = check_checkpoint_dir(path)
        if prompt_format is None:
            prompt_format = read_prompt_format(root)  # before the weights: a malformed file fails fast
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype if dtype is not None else default_dtype(device)
        model, loading = LlavaForConditionalGeneration.from_pretrained(
            str(root),
            dtype=dtype,
            device_map={"": str(device)},  # weights go straight to the device
            local_files_only=True,
            attn_implementation="sdpa",
            output_loading_info=True,
        )
        missing = sorted(loading.get("missing_keys") or [])
        if missing:
            raise ValueError(
                f"LLaVA checkpoint {root}: its weights lack {len(missing)} parameters the model needs "
                f"(e.g. {', '.join(missing[:3])}); they would be random. Use a complete llava-hf checkpoint."
            )
        processor = AutoProcessor.from_pretrained(str(root), local_files_only=True)
        return cls(model, processor, device=device, dtype=dtype, prompt_format=prompt_format)

    # ---------------------------------------------------------------- small helpers

    @property
    def _decoder(self) -> nn.Module:
        return self.model.model.language_model  # LlamaModel: embed_tokens, layers, norm, rotary_emb

    @property
    def num_layers(self) -> int:
        """Decoder layers of the language model (FastV's L must be below this)."""
        return len(self._decoder.layers)

    def _pick_pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def _pick_eos_ids(self) -> list[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    def build_prompt(self, question: str) -> str:
        """The model's conversation around ``question`` (``self.prompt_format``, DESIGN.md section 5).

        LLaVA-1.5: ``"{system} USER: <image>\\n{question} ASSISTANT:"`` with ``conv_vicuna_v1``'s
        system sentence.
        """
        if not isinstance(question, str):
            raise ValueError(f"questions: expected strings, got {type(question).__name__}")
        if self.image_token in question:
            raise ValueError(
                f"questions: pass the question only; {self.image_token!r} is placed by the prompt format"
            )
        return self.prompt_format.conversation(question, image_token=self.image_token)

    @property
    def pad_colour(self) -> tuple[int, ...]:
        """The square canvas colour of ``preprocess="pad"``: the processor's mean, in 0..255.

        As LLaVA's ``tuple(int(x * 255) for x in image_processor.image_mean)`` (truncated, not rounded).
        """
        mean = getattr(self.processor.image_processor, "image_mean", None)
        if mean is None:
            raise ValueError("processor: the image processor has no image_mean; use preprocess='crop'")
        mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
        return tuple(int(x * 255) for x in mean)

    def pixel_values(self, images: Any, preprocess: str = "pad") -> torch.Tensor:
        """Images -> (B, 3, H, W) pixel values on the model's device (DESIGN.md section 5).

        ``images``: a PIL image, an (H, W, 3) uint8 array, or a list of them; a (B, 3, H, W)
        tensor is taken as pixel values already. ``preprocess``:

        - ``"pad"`` (default; LLaVA-1.5's evaluation, ``image_aspect_ratio: pad``): each image
          in RGB is pasted centred on a square of side max(w, h) filled with ``pad_colour``
          (:func:`expand_to_square`), then goes through the checkpoint's image processor, whose
          resize and centre crop then keep the whole image;
        - ``"crop"``: the image processor alone (shortest edge resized, centre crop: the parts
          of a non-square image beyond the central square are cut away).
        """
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess: expected one of {', '.join(PREPROCESS)}, got {preprocess!r}")
        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise ValueError(f"images: a pixel tensor must be (B, 3, H, W), got shape {tuple(images.shape)}")
            pixels = images
        else:
            batch = list(images) if isinstance(images, (list, tuple)) else [images]
            if not batch:
                raise ValueError("images: got an empty list")
            if preprocess == "pad":
                colour = self.pad_colour
                batch = [expand_to_square(_as_rgb(im), colour) for im in batch]
            pixels = self.processor.image_processor(images=batch, return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- vision

    def _encoder_layers(self) -> nn.ModuleList:
        tower = self.model.model.vision_tower
        body = getattr(tower, "vision_model", tower)  # CLIPVisionModel or its inner transformer
        return body.encoder.layers

    @torch.inference_mode()
    def encode_images(self, images: Any, preprocess: str = "pad") -> VisionOutput:
        """Run the vision tower once per image: patch features and CLS attention at the feature layer.

        ``images``: PIL images / arrays (prepared by ``pixel_values(images, preprocess)``:
        ``"pad"``, LLaVA-1.5's square padding, by default, or ``"crop"``) or a (B, 3, H, W)
        pixel tensor. The features are ``hidden_states[vision_feature_layer]``
        without CLS (as LLaVA feeds its projector). The CLS attention belongs to the encoder
        layer that produced them (``hidden_states[l]`` is the output of layer l-1): its input
        ``hidden_states[l-1]`` goes through that layer's first LayerNorm and q/k projections,
        and only the CLS query's softmax row is formed (summed over heads), so the tower keeps
        its fast attention kernel.
        """
        pixels = self.pixel_values(images, preprocess)
        tower = self.model.model.vision_tower
        out = tower(pixels, output_hidden_states=True)
        hidden = out.hidden_states  # n_layers + 1 tensors (B, 1 + N, d): embeddings, then each layer
        n = len(hidden)
        layer = int(self.config.vision_feature_layer)
        if not -n <= layer < n:
            raise ValueError(f"config.vision_feature_layer={layer} is out of range for {n - 1} vision layers")
        index = layer % n
        if index == 0:
            raise ValueError(
                "config.vision_feature_layer selects the embedding output, which no attention layer "
                "produced; CLS attention needs a layer >= 1 (LLaVA-1.5 uses -2)"
            )
        features = hidden[index][:, 1:]  # (B, N, d) CLS dropped
        encoder_layer = self._encoder_layers()[index - 1]
        cls_attention = _cls_attention(encoder_layer, hidden[index - 1])  # (B, N)
        if features.shape[1] != self.num_visual_tokens:
            raise ValueError(
                f"images: got {features.shape[1]} patches, the config implies {self.num_visual_tokens}; "
                "use the checkpoint's image processor"
            )
        return VisionOutput(features=features, cls_attention=cls_attention, grid_size=self.grid_size)

    def _as_vision(self, vision: Any) -> VisionOutput:
        if isinstance(vision, VisionOutput):
            if vision.num_tokens != self.num_visual_tokens:
                raise ValueError(
                    f"vision: has {vision.num_tokens} tokens per image, the model uses {self.num_visual_tokens}"
                )
            return vision
        return self.encode_images(vision)

    # ---------------------------------------------------------------- selection

    @torch.inference_mode()
    def select_tokens(
        self,
        vision: VisionOutput,
        method: str,
        k: int | None = None,
        feature_space: str | None = None,
        **params: Any,
    ) -> Selection:
        """Choose the visual tokens to keep for each image (ALGORITHMS.md, "Pruning methods").

        - ``"none"``: all N tokens (``k`` must be None or N).
        - ``"fastv"``: nothing is chosen here; returns FastV's parameters (``layer`` L, default
          2, and ``ranking``, default "previous"; ``visprune.fastv.fastv_params``) and ``k``
          for the language model to use per prompt.
        - ``"random"``, ``"saliency"``, ``"scope"``, ``"divprune"``, ``"adaptive"``:
          ``visprune.pruning.select(method, features, cls_attention, k, **params)`` on float32
          copies (``return_info=True`` keeps the selector's diagnostics in ``Selection.info``).
          ``feature_space`` picks the features the selector sees: ``"vision"`` (the vision
          features X) or ``"projected"`` (the projector's outputs, the language model's
          inputs); the default is ``feature_space_default(method)``: "projected" for DivPrune
          (ALGORITHMS.md, "DivPrune", as its released code does), "vision" for the others.
          ``Selection.params`` records the feature space used.
        """
        if method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
        if method in ("none", "fastv") and feature_space is not None:
            raise ValueError(
                f"feature_space: applies to the pre-LLM selectors only, not to method {method!r}; leave it unset"
            )
        n = vision.num_tokens
        if method == "none":
            if params:
                raise ValueError(f"params: method 'none' takes no parameters, got {sorted(params)}")
            if k is not None and k != n:
                raise ValueError(f"k: method 'none' keeps all {n} tokens; pass k=None (got {k})")
            keep = torch.arange(n, device=vision.features.device).expand(len(vision), n).clone()
            return Selection("none", n, keep)
        if k is None or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n:
            raise ValueError(f"k: the number of kept tokens must be an int in 1..{n}, got {k!r}")
        k = int(k)
        if method == "fastv":
            unknown = sorted(set(params) - set(_fastv.param_names()))
            if unknown:
                raise ValueError(f"params: FastV takes only {', '.join(_fastv.param_names())}, got {unknown}")
            settings = _fastv.fastv_params(**params, n_layers=self.num_layers)
            return Selection("fastv", k, None, settings["layer"], settings)

        from visprune.pruning import select  # written beside this module; imported when first needed

        if feature_space is None:
            feature_space = feature_space_default(method)
        if feature_space not in FEATURE_SPACES:
            raise ValueError(f"feature_space: expected 'vision' or 'projected', got {feature_space!r}")
        return_info = bool(params.pop("return_info", False))
        features = vision.features
        if feature_space == "projected":
            features = self.model.model.multi_modal_projector(features)
        result = select(method, features.float(), vision.cls_attention.float(), k, return_info=return_info, **params)
        keep, info = result if return_info else (result, None)
        keep = torch.as_tensor(keep, dtype=torch.long, device=vision.features.device)
        self._check_keep(keep, len(vision), n)
        return Selection(method, k, keep, None, {**params, "feature_space": feature_space}, info)

    def _check_keep(self, keep: torch.Tensor, n_images: int, n: int) -> None:
        if keep.dim() != 2 or keep.shape[0] != n_images:
            raise ValueError(f"keep: expected shape ({n_images}, K), got {tuple(keep.shape)}")
        if keep.shape[1] < 1 or keep.shape[1] > n:
            raise ValueError(f"keep: K must be in 1..{n}, got {keep.shape[1]}")
        if keep.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"keep: expected integer indices, got {keep.dtype}")
        if int(keep.min()) < 0 or int(keep.max()) >= n:
            raise ValueError(f"keep: indices must lie in 0..{n - 1}")
        if keep.shape[1] > 1 and not bool((keep[:, 1:] > keep[:, :-1]).all()):
            raise ValueError("keep: each row must be strictly ascending (distinct tokens in their original order)")

    def _as_selection(self, selection: Selection | torch.Tensor | None, vision: VisionOutput) -> Selection:
        if selection is None:
            return self.select_tokens(vision, "none")
        if isinstance(selection, torch.Tensor):
            keep = selection.to(device=vision.features.device, dtype=torch.long)
            self._check_keep(keep, len(vision), vision.num_tokens)
            return Selection("indices", keep.shape[1], keep)
        if not isinstance(selection, Selection):
            raise ValueError(
                "selection: expected a Selection (from select_tokens), a (B, K) LongTensor or None, "
                f"got {type(selection).__name__}"
            )
        if selection.method == "fastv":
            params = dict(selection.params)
            if params.get("layer", selection.fastv_layer) != selection.fastv_layer:
                raise ValueError(
                    f"selection: FastV's fastv_layer ({selection.fastv_layer}) and params['layer'] "
                    f"({params['layer']}) disagree; build the selection with select_tokens"
                )
            unknown = sorted(set(params) - set(_fastv.param_names()))
            if unknown:
                raise ValueError(f"selection: FastV takes only {', '.join(_fastv.param_names())}, got {unknown}")
            params["layer"] = selection.fastv_layer
            return replace(selection, params=_fastv.fastv_params(**params, n_layers=self.num_layers))
        keep = selection.keep.to(vision.features.device)
        self._check_keep(keep, len(vision), vision.num_tokens)
        return replace(selection, keep=keep)

    # ---------------------------------------------------------------- building inputs

    def visual_embeddings(
        self, vision: VisionOutput, keep: torch.Tensor | None = None, image_index: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Projected visual tokens: (P, K, d_text) for ``keep`` (B, K), or all N when ``keep`` is None.

        Only the kept features are projected (the projector is per token). ``image_index[i]``
        is the image row prompt i uses (default: row i).
        """
        features = vision.features  # (B, N, d_v)
        if keep is not None:
            features = features.gather(1, keep[..., None].expand(-1, -1, features.shape[-1]))  # (B, K, d_v)
        tokens = self.model.model.multi_modal_projector(features)  # (B, K, d_text)
        if image_index is None:
            return tokens
        return tokens[torch.as_tensor(image_index, dtype=torch.long, device=tokens.device)]

    def prompt_token_ids(self, question: str) -> list[int]:
        """Token ids of ``build_prompt(question)`` with one ``image_token_id`` where the image goes.

        As LLaVA's ``tokenizer_image_token(prompt, tokenizer)``: the prompt is split on the image
        token; each chunk is tokenised on its own with the tokenizer's special tokens (so a Llama
        tokenizer gives each chunk its BOS and its own leading "\u2581", e.g. ``"\\n..."`` after
        the image becomes "\u2581", "<0x0A>", ... as in LLaVA-1.5's training); the first chunk's
        BOS is kept, the later chunks' BOS dropped, and the image id put between the chunks.
        (Tokenising the whole prompt with ``<image>`` as an added token differs for a
        non-legacy Llama tokenizer: no "\u2581" after the image.)
        """
        prompt = self.build_prompt(question)
        chunks = [self.tokenizer(c)["input_ids"] for c in prompt.split(self.image_token)]
        if len(chunks) != 2:
            raise ValueError(
                f"prompt_format: the prompt must hold the image token once, got {len(chunks) - 1}: {prompt!r}"
            )
        bos = self.tokenizer.bos_token_id
        offset = 1 if chunks[0] and bos is not None and chunks[0][0] == bos else 0
        ids = list(chunks[0])
        for chunk in chunks[1:]:
            if offset and chunk[:1] != [bos]:
                raise ValueError(f"questions: a prompt chunk did not tokenise with a leading BOS: {question!r}")
            ids += [self.image_token_id] + list(chunk[offset:])
        if ids.count(self.image_token_id) != 1:
            raise ValueError(
                f"questions: the prompt must tokenise to exactly one image token, got "
                f"{ids.count(self.image_token_id)}: {question!r}"
            )
        return ids

    def build_inputs(self, questions: Sequence[str], visual_tokens: torch.Tensor) -> LMInputs:
        """Tokenise the prompts and put ``visual_tokens`` (P, M, d_text) in their image slot.

        Each prompt is ``build_prompt(question)`` tokenised as LLaVA's ``tokenizer_image_token``
        does (``llava/mm_utils.py``, :meth:`prompt_token_ids`): split on the image token, each
        chunk tokenised on its own, one BOS kept; the image's place becomes M consecutive
        embedding slots. Prompts are left-padded to a common length.
        """
        questions = _as_str_list(questions, "questions")
        if visual_tokens.dim() != 3 or visual_tokens.shape[0] != len(questions):
            raise ValueError(
                f"visual_tokens: expected shape ({len(questions)}, M, d), got {tuple(visual_tokens.shape)}"
            )
        m = visual_tokens.shape[1]
        pieces = []  # (ids before the image, ids after it) per prompt
        for q in questions:
            ids = self.prompt_token_ids(q)
            slot = ids.index(self.image_token_id)
            pieces.append((ids[:slot], ids[slot + 1 :]))
        lengths = [len(a) + m + len(b) for a, b in pieces]
        seq_len = max(lengths)

        p = len(questions)
        input_ids = torch.full((p, seq_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((p, seq_len), dtype=torch.long)
        image_start = torch.zeros(p, dtype=torch.long)
        for i, ((before, after), length) in enumerate(zip(pieces, lengths)):
            start = seq_len - length  # left padding
            row = before + [self.image_token_id] * m + after
            input_ids[i, start:] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, start:] = 1
            image_start[i] = start + len(before)
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        image_start = image_start.to(self.device)

        is_visual = torch.zeros_like(attention_mask, dtype=torch.bool)  # (P, T)
        slot = image_start[:, None] + torch.arange(m, device=self.device)  # (P, M)
        is_visual.scatter_(1, slot, True)
        text_ids = input_ids.masked_fill(is_visual, self.pad_token_id)
        embeds = self._decoder.embed_tokens(text_ids)  # (P, T, d)
        visual = visual_tokens.to(device=embeds.device, dtype=embeds.dtype)
        embeds = embeds.masked_scatter(is_visual[..., None], visual)  # row-major: slot j of row i <- visual[i, j]
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
        return LMInputs(embeds, attention_mask, position_ids, input_ids, image_start, m)

    def _prepare(
        self, questions: Sequence[str], vision: Any, selection: Any, image_index: Sequence[int] | None
    ) -> tuple[LMInputs, Selection, torch.Tensor]:
        """Vision -> selection -> projected tokens -> LM inputs; returns (inputs, selection, image rows)."""
        questions = _as_str_list(questions, "questions")
        vision = self._as_vision(vision)
        selection = self._as_selection(selection, vision)
        rows = _image_rows(image_index, len(questions), len(vision), self.device)
        keep = None if selection.method == "fastv" else selection.keep
        tokens = self.visual_embeddings(vision, keep, rows)  # (P, K or N, d_text)
        return self.build_inputs(questions, tokens), selection, rows

    # ---------------------------------------------------------------- the language model

    def _causal_bias(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(P, 1, T, T) additive bias: 0 where query i may see key j (j <= i, j real), else dtype's min.

        A padding query may see itself, so no row is fully masked (its output is never used).
        """
        t = valid.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
        allowed = (causal[None] & valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=valid.device)[None]
        return _to_bias(allowed[:, None], dtype)

    def _run_prompt(
        self,
        inputs: LMInputs,
        fastv: Selection | None = None,
        cache: Any = None,
        select_row: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor], torch.Tensor]:
        """Run every decoder layer over a prompt batch (with FastV's drop before layer L when given).

        FastV (ALGORITHMS.md, "FastV"): the ranking row is the attention of the query row over
        the unpruned sequence at layer ``fastv.ranking_layer(params)``, i.e. inside layer L-1
        (from layer L-1's input, with its weights: what layer L-1 itself computes) for
        ``ranking="previous"``, or at layer L for ``"same"``; the tokens are dropped before layer
        L. ``select_row`` is FastV's query row (default: the last position, the last prompt
        token). Returns (hidden (P, T', d) before the final norm, FastV keep (P, K) or None,
        per-layer key validity (P, T_l) bool for decoding, position ids (P, T') of the output).
        """
        lm = self._decoder
        hidden = inputs.inputs_embeds
        valid = inputs.attention_mask.bool()
        positions = inputs.position_ids
        bias = self._causal_bias(valid, hidden.dtype)
        rope = lm.rotary_emb(hidden, position_ids=positions)  # (cos, sin), each (P, T, head_dim)
        keep = None
        drop_at = rank_at = -1  # no FastV: no layer ranks or drops
        if fastv is not None:
            settings = _fastv.fastv_params(**{**fastv.params, "layer": fastv.fastv_layer}, n_layers=len(lm.layers))
            drop_at, rank_at = settings["layer"], _fastv.ranking_layer(settings)
        layer_valid: list[torch.Tensor] = []
        for i, layer in enumerate(lm.layers):
            if i == rank_at:  # layer L-1 ("previous") or L ("same"), on all N visual tokens
                row = hidden.shape[1] - 1 if select_row is None else select_row
                attention = _fastv.last_token_attention(layer, hidden, rope, valid, row)  # (P, row + 1)
                keep = _fastv.top_visual_tokens(attention, inputs.image_start, inputs.num_visual, fastv.k)
            if i == drop_at:  # layers L and above see only the kept visual tokens
                index = _fastv.kept_sequence_index(hidden.shape[1], inputs.image_start, inputs.num_visual, keep)
                hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # (P, T', d)
                positions = positions.gather(1, index)  # original position ids of the kept tokens
                valid = valid.gather(1, index)
                bias = self._causal_bias(valid, hidden.dtype)
                rope = lm.rotary_emb(hidden, position_ids=positions)
            layer_valid.append(valid)
            hidden = layer(
                hidden,
                attention_mask=bias,
                position_ids=positions,
                position_embeddings=rope,
                cache=cache,
                use_cache=cache is not None,
            )
        return hidden, keep, layer_valid, positions

    def _decode_step(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: Any, layer_valid: list[torch.Tensor]
    ) -> torch.Tensor:
        """One cached step: ``tokens`` (P,) at ``positions`` (P,); updates ``layer_valid`` in place.

        Returns the final-norm hidden state (P, d) of the new token.
        """
        lm = self._decoder
        hidden = lm.embed_tokens(tokens[:, None])  # (P, 1, d)
        pos = positions[:, None]
        rope = lm.rotary_emb(hidden, position_ids=pos)
        grown: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layers sharing a validity tensor share its update
        for i, layer in enumerate(lm.layers):
            key = id(layer_valid[i])
            if key not in grown:
                new_valid = torch.cat([layer_valid[i], torch.ones_like(layer_valid[i][:, :1])], dim=1)  # (P, S + 1)
                grown[key] = (new_valid, _to_bias(new_valid[:, None, None, :], hidden.dtype))  # (P, 1, 1, S + 1)
            layer_valid[i], bias = grown[key]
            hidden = layer(
                hidden, attention_mask=bias, position_ids=pos, position_embeddings=rope, cache=cache, use_cache=True
            )
        return lm.norm(hidden[:, -1])

    def lm_logits(self, inputs: LMInputs, selection: Selection | None = None) -> torch.Tensor:
        """Logits (P, T', V) at every position of ``inputs`` (autograd kept; for training and checks).

        With a FastV ``selection``, T' = T - N + K (the dropped visual positions are gone).
        """
        fastv = selection if selection is not None and selection.method == "fastv" else None
        hidden, _, _, _ = self._run_prompt(inputs, fastv)
        return self.model.lm_head(self._decoder.norm(hidden))

    @torch.inference_mode()
    def first_token_logits(
        self,
        questions: Sequence[str],
        vision: Any,
        selection: Selection | torch.Tensor | None = None,
        image_index: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits after each prompt: ((P, V) float32, keep (P, K) long), both on CPU.

        ``vision``: a VisionOutput (or images, encoded here); ``selection``: from
        ``select_tokens``, a (B, K) keep tensor, or None (all tokens); ``image_index[i]``: the
        image row prompt i uses (default i).
        """
        inputs, selection, rows = self._prepare(questions, vision, selection, image_index)
        fastv = selection if selection.method == "fastv" else None
        hidden, fastv_keep, _, _ = self._run_prompt(inputs, fastv)
        logits = self.model.lm_head(self._decoder.norm(hidden[:, -1])).float()  # (P, V)
        keep = fastv_keep if fastv is not None else selection.keep[rows]
        return logits.cpu(), keep.cpu()

    # ---------------------------------------------------------------- answers and scores

    def answer_token_ids(self, answer: str) -> list[int]:
        """Token ids whose first-token mass counts toward ``answer`` (DESIGN.md section 5).

        Each variant of ``prompts.answer_variants(answer)`` is tokenised right after
        ``"ASSISTANT:"`` (the end of the prompt), so a SentencePiece tokenizer sees the leading
        space as it would in the answer. A variant counts only if it adds *exactly one* token
        there (and that token is not the unknown token): a variant that splits into pieces
        (``Y`` + ``es`` for "Yes" without the space in Llama's vocabulary) is left out rather
        than counted by its first piece, which other words share. Returns the distinct ids in
        variant order; raises ValueError naming the answer and the tokenizer if no variant is
        a single token.
        """
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"answer_sets: answers must be non-empty strings, got {answer!r}")
        if answer in self._answer_ids_cache:
            return list(self._answer_ids_cache[answer])
        context = self.tokenizer(ANSWER_CONTEXT, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        ids: list[int] = []
        for variant in answer_variants(answer):
            full = self.tokenizer(ANSWER_CONTEXT + variant, add_special_tokens=False)["input_ids"]
            if full[: len(context)] != context or len(full) != len(context) + 1:
                continue  # merges with the context, or several tokens: not a single-token answer
            token = int(full[-1])
            if token != unk and token not in ids:
                ids.append(token)
        if not ids:
            name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
            raise ValueError(
                f"answer_sets: no variant of {answer!r} ({', '.join(map(repr, answer_variants(answer)))}) is a "
                f"single token after {ANSWER_CONTEXT!r} with the tokenizer {name!r}; "
                "use answers that are words of its vocabulary"
            )
        self._answer_ids_cache[answer] = ids
        return list(ids)

    def _answer_set_ids(self, answers: tuple[str, ...]) -> list[list[int]]:
        if len(answers) < 2 or len(set(answers)) != len(answers):
            raise ValueError(f"answer_sets: each set needs at least two distinct answers, got {answers!r}")
        ids = [self.answer_token_ids(a) for a in answers]
        owner: dict[int, str] = {}
        for a, a_ids in zip(answers, ids):
            for t in a_ids:
                if t in owner:
                    raise ValueError(
                        f"answer_sets: answers {owner[t]!r} and {a!r} share the first token "
                        f"{self.tokenizer.convert_ids_to_tokens(t)!r} (id {t}); their mass cannot be told apart"
                    )
                owner[t] = a
        return ids

    @torch.inference_mode()
    def score(
        self,
        questions: Sequence[str],
        answer_sets: Sequence[Sequence[str]] | Sequence[str],
        vision: Any,
        selection: Selection | torch.Tensor | None = None,
        image_index: Sequence[int] | None = None,
    ) -> ScoreOutput:
        """First-token distribution over each prompt's answer set (DESIGN.md section 5).

        Softmax over the full vocabulary in float32; an answer's mass is the sum over the
        distinct first tokens of its variants; the set's masses are renormalised to sum to 1.
        ``answer_sets``: one set per question, or a single set (a sequence of strings) for all.
        Answer sets may differ in size (ScienceQA); see ``ScoreOutput`` for the padded layout.
        The ids each answer used (its single-token variants) come back in ``answer_ids``.
        """
        questions = _as_str_list(questions, "questions")
        sets = _answer_sets(answer_sets, len(questions))
        set_ids = {answers: self._answer_set_ids(answers) for answers in dict.fromkeys(sets)}  # before the model runs
        logits, keep = self.first_token_logits(questions, vision, selection, image_index)  # (P, V) float32
        log_total = torch.logsumexp(logits, dim=-1)  # (P,)
        width = max(len(s) for s in sets)
        probs = torch.zeros(len(sets), width, dtype=torch.float32)
        mass = torch.zeros(len(sets), dtype=torch.float32)
        for i, answers in enumerate(sets):
            per_answer = torch.stack(
                [torch.logsumexp(logits[i, ids], dim=0) for ids in set_ids[answers]]
            )  # (A,) log of each answer's unnormalised mass
            probs[i, : len(answers)] = torch.softmax(per_answer, dim=0)
            mass[i] = torch.exp(torch.logsumexp(per_answer, dim=0) - log_total[i])
        lengths = torch.tensor([len(s) for s in sets], dtype=torch.long)
        answer_ids = [[list(ids) for ids in set_ids[answers]] for answers in sets]
        return ScoreOutput(
            probs=probs, lengths=lengths, answer_mass=mass, keep=keep, answer_sets=sets, answer_ids=answer_ids
        )

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(
        self,
        questions: Sequence[str],
        vision: Any,
        selection: Selection | torch.Tensor | None = None,
        image_index: Sequence[int] | None = None,
        max_new_tokens: int = 64,
        eos_token_id: int | Sequence[int] | None = None,
        use_cache: bool = True,
    ) -> GenerationOutput:
        """Greedy continuation of each prompt, stopping at end-of-sequence or ``max_new_tokens``.

        With ``use_cache`` (the default) the prompt runs once and each new token runs against a
        ``DynamicCache``; under FastV the layers >= L cache only the kept visual tokens.
        ``use_cache=False`` recomputes the whole sequence at every step (a slow reference: FastV
        then re-chooses from the last *prompt* token's attention, which the new tokens cannot
        change). ``eos_token_id`` defaults to the checkpoint's generation config; an empty list
        never stops early.
        """
        from transformers import DynamicCache

        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}")
        if eos_token_id is None:
            eos_ids = self.eos_token_ids
        else:
            eos_ids = [int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])]
        inputs, selection, rows = self._prepare(questions, vision, selection, image_index)
        fastv = selection if selection.method == "fastv" else None
        p, prompt_len = inputs.attention_mask.shape
        eos = torch.tensor(eos_ids, dtype=torch.long, device=self.device)
        filler = eos_ids[0] if eos_ids else self.pad_token_id  # fed after a prompt has finished

        cache = DynamicCache(config=self.model.config.text_config) if use_cache else None
        hidden, fastv_keep, layer_valid, positions = self._run_prompt(inputs, fastv, cache)
        last_position = positions[:, -1]  # (P,) original position of each prompt's last token
        next_hidden = self._decoder.norm(hidden[:, -1])  # (P, d)
        keep = fastv_keep if fastv is not None else selection.keep[rows]

        generated: list[torch.Tensor] = []
        finished = torch.zeros(p, dtype=torch.bool, device=self.device)
        for step in range(int(max_new_tokens)):
            logits = self.model.lm_head(next_hidden).float()  # (P, V)
            token = logits.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, filler), token)
            generated.append(token)
            finished |= torch.isin(token, eos)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            if use_cache:
                next_hidden = self._decode_step(token, last_position + 1 + step, cache, layer_valid)
            else:
                so_far = torch.stack(generated, dim=1)  # (P, step + 1)
                next_hidden = self._recompute_last(inputs, so_far, last_position, fastv, prompt_len)

        tokens = torch.stack(generated, dim=1).cpu()  # (P, steps)
        token_ids: list[list[int]] = []
        for row in tokens.tolist():
            out: list[int] = []
            for t in row:
                if t in eos_ids:
                    break
                out.append(t)
            token_ids.append(out)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]
        return GenerationOutput(texts=texts, token_ids=token_ids, keep=keep.cpu())

    def _recompute_last(
        self,
        inputs: LMInputs,
        generated: torch.Tensor,
        last_position: torch.Tensor,
        fastv: Selection | None,
        prompt_len: int,
    ) -> torch.Tensor:
        """Final-norm hidden state (P, d) at the end of prompt + ``generated`` (P, G), no cache."""
        g = generated.shape[1]
        new_embeds = self._decoder.embed_tokens(generated)  # (P, G, d)
        steps = torch.arange(1, g + 1, device=self.device)
        full = LMInputs(
            inputs_embeds=torch.cat([inputs.inputs_embeds, new_embeds], dim=1),
            attention_mask=torch.cat([inputs.attention_mask, torch.ones_like(generated)], dim=1),
            position_ids=torch.cat([inputs.position_ids, last_position[:, None] + steps], dim=1),
            input_ids=torch.cat([inputs.input_ids, generated], dim=1),
            image_start=inputs.image_start,
            num_visual=inputs.num_visual,
        )
        hidden, _, _, _ = self._run_prompt(full, fastv, None, select_row=prompt_len - 1)
        return self._decoder.norm(hidden[:, -1])


# --------------------------------------------------------------------------------------------
# Module-level helpers
# --------------------------------------------------------------------------------------------


def expand_to_square(image: Any, background: Sequence[int]) -> Any:
    """LLaVA's ``expand2square`` (``llava/mm_utils.py``; DESIGN.md section 5): pad to a square.

    ``image``: a PIL image (or an (H, W, 3) uint8 array, taken as RGB). A square image is
    returned as is; otherwise it is pasted on a canvas of side max(w, h) filled with
    ``background`` (one int 0..255 per band, e.g. the processor's mean colour), at offset
    (0, (w - h) // 2) when w > h and ((h - w) // 2, 0) when h > w: centred, the odd pixel of
    spare room going below / to the right. Returns a PIL image of the input's mode.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = _as_rgb(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"image: expected a PIL image or an (H, W, 3) uint8 array, got {type(image).__name__}")
    bands = len(image.getbands())
    if isinstance(background, (bool, np.bool_)) or not isinstance(background, (list, tuple)) or len(background) != bands:
        raise ValueError(f"background: expected {bands} ints in 0..255 (one per band of a {image.mode} image), got {background!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in background):
        raise ValueError(f"background: expected ints in 0..255, got {background!r}")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    fill = tuple(int(v) for v in background)
    canvas = Image.new(image.mode, (side, side), fill if bands > 1 else fill[0])
    canvas.paste(image, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return canvas


def _as_rgb(image: Any) -> Any:
    """A PIL image in RGB (LLaVA opens every image with ``.convert("RGB")``)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                "images: preprocess='pad' takes PIL images or (H, W, 3) uint8 arrays, got an array of "
                f"shape {image.shape} and dtype {image.dtype}; convert it, or use preprocess='crop'"
            )
        return Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"images: expected PIL images, arrays or a pixel tensor, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def check_checkpoint_dir(path: str | Path) -> Path:
    """Check that ``path`` is a llava-hf layout directory; return it as an absolute Path.

    Raises FileNotFoundError naming the path and every expected file that is missing.
    """
    root = Path(path).expanduser().resolve()
    expected = "; ".join(f"{what}: {' or '.join(names)}" for what, names in CHECKPOINT_FILES)
    if not root.is_dir():
        raise FileNotFoundError(
            f"LLaVA checkpoint directory not found: {root}. Expected a llava-hf layout directory "
            f"(as saved by save_pretrained) holding {expected}."
        )
    missing = [
        f"{what} ({' or '.join(names)})"
        for what, names in CHECKPOINT_FILES
        if not any((root / name).is_file() for name in names)
    ]
    index = root / "model.safetensors.index.json"
    if not (root / "model.safetensors").is_file() and index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [
            f"weight shard {s} (listed in model.safetensors.index.json)" for s in shards if not (root / s).is_file()
        ]
    if missing:
        raise FileNotFoundError(
            f"LLaVA checkpoint {root} is missing: {', '.join(missing)}. A llava-hf layout directory holds {expected}."
        )
    return root


def _cls_attention(layer: nn.Module, hidden_in: torch.Tensor) -> torch.Tensor:
    """CLS-query attention of a CLIP encoder ``layer`` over its patches, summed over heads.

    ``hidden_in`` (B, 1 + N, d) is the layer's input. Recomputes LayerNorm -> q (CLS only), k
    (all tokens) -> softmax(q k^T * scale) in float32. Returns (B, N) float32.
    """
    attn = layer.self_attn
    x = layer.layer_norm1(hidden_in)  # (B, S, d)
    batch, seq_len, _ = x.shape
    q = attn.q_proj(x[:, :1]).view(batch, 1, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, 1, D)
    k = attn.k_proj(x).view(batch, seq_len, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, S, D)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.scale  # (B, H, 1, S)
    probs = torch.softmax(scores, dim=-1)[:, :, 0, 1:]  # (B, H, N): drop the CLS key
    return probs.sum(dim=1)


def _to_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean "may attend" -> additive attention bias (0 or the dtype's most negative value)."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def feature_space_default(method: str) -> str:
    """The feature space a pre-LLM selector ranks in by default: ``DEFAULT_FEATURE_SPACE`` or "vision".

    "projected" for DivPrune (ALGORITHMS.md, "DivPrune": the released code's distances are on
    the projected tokens), "vision" (the vision features X) for every other selector.
    """
    if not isinstance(method, str) or method in ("none", "fastv"):
        raise ValueError(f"method: a feature space belongs to the pre-LLM selectors only, got {method!r}")
    return DEFAULT_FEATURE_SPACE.get(method, "vision")


def _as_str_list(values: Any, name: str) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{name}: expected a sequence of strings, got one string; wrap it in a list")
    values = list(values)
    if not values:
        raise ValueError(f"{name}: got an empty sequence")
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{name}: expected strings, got {type(v).__name__}")
    return values


def _answer_sets(answer_sets: Any, n_prompts: int) -> list[tuple[str, ...]]:
    """One answer set per prompt: a single set of strings is shared by all prompts."""
    if isinstance(answer_sets, str):
        raise ValueError("answer_sets: expected a set of answers such as ('yes', 'no'), got one string")
    sets = list(answer_sets)
    if sets and all(isinstance(a, str) for a in sets):
        return [tuple(sets)] * n_prompts
    if len(sets) != n_prompts:
        raise ValueError(f"answer_sets: expected one set per question ({n_prompts}), got {len(sets)}")
    out = []
    for s in sets:
        if isinstance(s, str) or not all(isinstance(a, str) for a in s):
            raise ValueError(f"answer_sets: each set must be a sequence of strings, got {s!r}")
        out.append(tuple(s))
    return out


def _image_rows(image_index: Any, n_prompts: int, n_images: int, device: torch.device) -> torch.Tensor:
    """``image_index`` as a (P,) LongTensor; default: prompt i uses image i (then P must equal B)."""
    if image_index is None:
        if n_prompts != n_images:
            raise ValueError(
                f"image_index: {n_prompts} questions but {n_images} images; pass image_index "
                "(the image row each question uses)"
            )
        return torch.arange(n_prompts, device=device)
    rows = torch.as_tensor(image_index, dtype=torch.long)
    if rows.dim() != 1 or rows.numel() != n_prompts:
        raise ValueError(f"image_index: expected {n_prompts} integers, got shape {tuple(rows.shape)}")
    if int(rows.min()) < 0 or int(rows.max()) >= n_images:
        raise ValueError(f"image_index: values must lie in 0..{n_images - 1}")
    return rows.to(device)
