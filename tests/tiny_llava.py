"""Tiny random LLaVA models for tests (a real ``transformers`` LlavaForConditionalGeneration).

``build_tiny_llava()`` returns ``(model, processor)``: a CLIP vision tower (32 px images, 8 px
patches, so N = 16 patch tokens, hidden 32), the two-layer MLP projector and a Llama language
model (hidden 64, 4 layers, 4 query heads over 2 key/value heads, so grouped-query attention is
exercised), with a small word-level tokenizer (``<s>`` prepended like Llama's, ``<image>`` as a
special token) and a ``LlavaProcessor`` that expands ``<image>`` into N placeholders exactly as
for llava-hf checkpoints. Weights are random (seeded); nothing is downloaded.

Other test files import it: ``from tiny_llava import build_tiny_llava, tiny_images``
(``tests/conftest.py`` puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from visprune.instrument.prompts import CAPTION_PROMPT, LLAVA_SYSTEM, POPE_SUFFIX, SCIENCEQA_SUFFIX

IMAGE_SIZE = 32
PATCH_SIZE = 8
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16
VOCAB_SIZE = 320  # the model's embedding rows (>= the tokenizer's size)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# Words seen in the test prompts (the LLaVA system sentence, POPE / ScienceQA / caption prompts)
# plus answers in several cases, so "yes"/"Yes"/"YES" are distinct tokens as in real vocabularies.
EXTRA_WORDS = (
    "USER ASSISTANT : . , ' ? ! yes Yes YES no No NO A B C D E is there a an in the image "
    "Is there cat dog car tree person ball table chair red blue green small big on of and "
    "with picture photo sky grass Which which color shape what What Context Options"
).split()


def _word_list() -> list[str]:
    """The tokenizer's vocabulary after the special tokens: every word of the fixed prompts."""
    import re

    text = " ".join([LLAVA_SYSTEM, POPE_SUFFIX, SCIENCEQA_SUFFIX, CAPTION_PROMPT, " ".join(EXTRA_WORDS)])
    words: list[str] = []
    for w in re.findall(r"\w+|[^\w\s]+", text):
        if w not in words:
            words.append(w)
    return words


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: whitespace/punctuation split, ``<s>`` prepended, ``<image>`` special.

    Words not in the vocabulary become ``<unk>``. A leading space carries no information here
    (so "yes" and " yes" are the same token), unlike SentencePiece's "\u2581yes".
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in _word_list():
        vocab.setdefault(w, len(vocab))
    if len(vocab) > VOCAB_SIZE:
        raise ValueError(f"tiny vocabulary has {len(vocab)} words, more than VOCAB_SIZE={VOCAB_SIZE}")
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": "<image>"},
    )
    return tok


def build_processor(strategy: str = "default") -> LlavaProcessor:
    """``LlavaProcessor`` with a CLIP image processor (resize + centre crop to 32 px, CLIP norm)."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token, as in llava-hf/llava-1.5-7b-hf
    )


def build_tiny_llava(
    vision_feature_layer: int | list[int] = -2,
    strategy: str = "default",
    seed: int = 0,
    attn_implementation: str = "sdpa",
    text_layers: int = 4,
    vision_layers: int = 3,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A tiny random LLaVA (float32, eval mode, on CPU) and its processor.

    ``vision_feature_layer`` and ``strategy`` set ``config.vision_feature_layer`` and
    ``config.vision_feature_select_strategy``. The same ``seed`` gives the same weights whatever
    ``attn_implementation`` is, so an "eager" copy can serve as a reference for an "sdpa" one.
    """
    processor = build_processor(strategy)
    tok = processor.tokenizer
    vision_config = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        projection_dim=32,
    )
    text_config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.15,  # larger than the default 0.02: peakier logits, no near-ties in argmax
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=NUM_PATCHES,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
    )
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model, processor


def tiny_images(n: int, seed: int = 0, size: int = 40) -> list[Image.Image]:
    """``n`` random RGB images (``size`` px, resized by the processor to 32 px), seeded."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)) for _ in range(n)]


def engine_assets(folder, n_images: int, seed: int):
    """``folder`` holding a small toy world (``world/``) and a tiny LLaVA saved in the llava-hf
    layout (``model/``): what the engine tests run a toy profile on."""
    from visprune.toyworld import generate_toyworld

    generate_toyworld(folder / "world", n_images=n_images, pope_images=None, seed=seed)
    model, processor = build_tiny_llava()
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder
