"""The :class:`PrunedLlava` wrapper: construction and loading (its parts live in vision.py,
language.py and answers.py)."""

from __future__ import annotations

from typing import Any
from pathlib import Path

import torch
from torch import nn

from visprune.instrument.llava.answers import AnswersMixin
from visprune.instrument.llava.checkpoint import _cast_model, check_checkpoint_dir, default_device, default_dtype
from visprune.instrument.llava.language import LanguageMixin
from visprune.instrument.llava.vision import VisionMixin
from visprune.instrument.prompts import DEFAULT_PROMPT_FORMAT, IMAGE_TOKEN, PromptFormat, read_prompt_format


class PrunedLlava(VisionMixin, LanguageMixin, AnswersMixin):
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
                f"prompt_format: expected a visprune.instrument.prompts.PromptFormat (e.g. prompts.VICUNA_V1), "
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
    def lm_widths(self) -> dict[str, int]:
        """The language model's widths for the FLOPs formula (``visprune.metrics.prefill_flops``):
        ``hidden`` d, ``kv_width`` (key/value heads x head width) and ``mlp_width`` m."""
        text = self.config.text_config
        heads = int(text.num_attention_heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        return {"hidden": int(text.hidden_size), "kv_width": kv_heads * head_dim, "mlp_width": int(text.intermediate_size)}

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

