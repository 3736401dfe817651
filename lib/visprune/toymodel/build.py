"""Build the toy LLaVA: tokenizer, processor, configuration and model (DESIGN.md section 3).

The toy model is a real ``transformers`` LLaVA, in the llava-hf layout:

- a CLIP vision tower with a CLS token (96 px images, 8 px patches: a 12 x 12 grid of 144
  patch tokens plus CLS), features taken from the second-to-last layer with the CLS dropped
  (``vision_feature_layer=-2``, strategy ``"default"``, as in LLaVA-1.5);
- LLaVA's two-layer projector (linear, GELU, linear);
- a small Llama language model;
- a byte-level BPE tokenizer trained on the toy world's text plus LLaVA's system sentence, with
  ``<s>``, ``</s>``, ``<pad>``, ``<unk>`` and ``<image>`` as special tokens;
- a ``CLIPImageProcessor`` (CLIP mean and std) and a ``LlavaProcessor`` that expands ``<image>``
  to 144 tokens, with a chat template that renders the toy model's conversation format,
  :data:`PROMPT_FORMAT` (``prompts.VICUNA_V0``: ``conv_vicuna_v0``'s system sentence in
  LLaVA-1.5's USER/ASSISTANT layout), which :func:`save_pretrained` declares in
  ``prompt_format.json`` (DESIGN.md section 5: the prompt format belongs to the model).

After ``save_pretrained`` the directory loads with ``AutoProcessor.from_pretrained`` and
``LlavaForConditionalGeneration.from_pretrained`` like any llava-hf checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from visprune.instrument import prompts

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD, prompts.IMAGE_TOKEN)

# OpenAI CLIP's normalisation, as in every llava-hf image processor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The conversation format the toy model is trained with (and declares in its directory).
PROMPT_FORMAT = prompts.VICUNA_V0

# Renders "{system} USER: <image>\n{question} ASSISTANT:" (PROMPT_FORMAT.conversation). A
# conversation without a system message gets PROMPT_FORMAT's system sentence.
CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% set turns = messages[1:] %}"
    "{% else %}{% set system = '" + PROMPT_FORMAT.system.replace("'", "\\'") + "' %}"
    "{% set turns = messages %}{% endif %}"
    "{{ system }}"
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}{{ ' USER: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ASSISTANT: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{% endif %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class ToyLlavaSize:
    """Sizes of the toy LLaVA. ``FULL`` is the shipped model, ``SMALL`` the one the tests train."""

    image_size: int = 96
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 6
    vision_heads: int = 4
    vision_intermediate: int = 512
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 8
    text_kv_heads: int = 4
    text_intermediate: int = 768
    vocab_size: int = 1024
    max_positions: int = 512

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.vision_layers < 2:
            raise ValueError("vision_layers must be at least 2 (features come from the second-to-last layer)")
        if self.vision_hidden % self.vision_heads or self.text_hidden % self.text_heads:
            raise ValueError("hidden sizes must be multiples of the head counts")
        if self.text_heads % self.text_kv_heads:
            raise ValueError("text_heads must be a multiple of text_kv_heads")

    @property
    def grid(self) -> int:
        """Patches per side (12 for 96 px images and 8 px patches)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Visual tokens per image after dropping CLS (144 for the full model)."""
        return self.grid**2


FULL = ToyLlavaSize()
SMALL = ToyLlavaSize(
    image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2, vision_intermediate=64,
    text_hidden=32, text_layers=2, text_heads=2, text_kv_heads=1, text_intermediate=64, vocab_size=400,
    max_positions=512,
)


def answer_words() -> list[str]:
    """Words that must be single tokens right after ``"ASSISTANT:"``, with and without a space.

    Lower, capitalised and upper case of "yes", "no" and the letters A to E, in that order, so
    every surface variant that counts (``prompts.answer_variants``) is one token and no two
    answers share a first token (DESIGN.md section 5). The lower-case letters ``a`` to ``e`` stay
    although they no longer count as answers (upper case only, as LLaVA scores them): the shipped
    tokenizer was trained with this list, and retraining must reproduce it.
    """
    words: list[str] = []
    for answer in (*prompts.POPE_ANSWERS, *prompts.OPTION_LETTERS[:5]):
        for form in (answer.lower(), answer.capitalize(), answer.upper()):
            if form not in words:
                words.append(form)
    assert all(v.strip() in words for a in (*prompts.POPE_ANSWERS, *prompts.OPTION_LETTERS[:5])
               for v in prompts.answer_variants(a))
    return words


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    The corpus is extended with the toy format's conversation and, many times over, each answer word
    after ``"ASSISTANT:"``, so "Yes", " Yes", "no", " A", ... are single tokens whatever the
    toy world's text looks like (:func:`check_answer_tokens` raises otherwise). The post-processor prepends ``<s>`` (as Llama tokenizers do).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("texts: the tokenizer needs a non-empty corpus (captions and questions of the toy world)")
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 2 * len(answer_words()):
        raise ValueError(f"vocab_size ({vocab_size}) is too small for byte-level BPE; use at least 300")
    answers = []
    for word in answer_words():
        answers += [f"ASSISTANT: {word}", f"ASSISTANT:{word}"]
    corpus = texts + [PROMPT_FORMAT.conversation(prompts.CAPTION_PROMPT)] * 50 + answers * 1000

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens={"image_token": prompts.IMAGE_TOKEN},
        padding_side="left",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    check_answer_tokens(wrapped)
    return wrapped


def check_answer_tokens(tokenizer) -> None:
    """Raise ValueError unless each answer word is one token after ``"ASSISTANT:"``."""
    prefix = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    for word in answer_words():
        for text in (f"ASSISTANT: {word}", f"ASSISTANT:{word}"):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if ids[: len(prefix)] != prefix or len(ids) != len(prefix) + 1:
                pieces = tokenizer.convert_ids_to_tokens(ids)
                raise ValueError(f"tokenizer: {text!r} does not end in a single answer token: {pieces}")


def build_processor(tokenizer, size: ToyLlavaSize = FULL) -> LlavaProcessor:
    """CLIP image processor (resize and centre crop to ``size.image_size``) plus LLaVA processor."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, size: ToyLlavaSize = FULL) -> LlavaConfig:
    """LLaVA-1.5-style configuration: CLIP vision tower, feature layer -2, GELU projector, Llama."""
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_intermediate,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=size.image_size,
        patch_size=size.patch_size,
        projection_dim=size.vision_hidden,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=size.text_intermediate,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=size.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(prompts.IMAGE_TOKEN),
        image_seq_length=size.num_patches,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )


def build_model(config: LlavaConfig, seed: int) -> LlavaForConditionalGeneration:
    """A freshly initialised LLaVA in fp32, seeded."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.config.text_config.use_cache = True
    generation = model.generation_config
    generation.bos_token_id = config.text_config.bos_token_id
    generation.eos_token_id = config.text_config.eos_token_id
    generation.pad_token_id = config.text_config.pad_token_id
    generation.do_sample = False
    return model.float()


def save_pretrained(model, processor, out_dir: str | Path) -> Path:
    """Save model (safetensors, fp32) and processor in the llava-hf layout, and declare the
    prompt format the model was trained with (``prompt_format.json``, :data:`PROMPT_FORMAT`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    prompts.write_prompt_format(out, PROMPT_FORMAT)
    # Name the tokenizer class by its long-standing alias so older transformers releases load it too.
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return out


def directory_size_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (the shipped checkpoint's size budget)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model directory not found: {root}")
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
