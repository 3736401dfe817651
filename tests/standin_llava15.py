"""A stand-in of ``llava-hf/llava-1.5-7b-hf``, built locally: its exact layout, tiny widths.

``build_llava15_standin(path)`` writes a directory laid out as the hub repository is, so the
``llava-1.5-7b`` profile meets the files a real checkpoint has (nothing is downloaded):

- ``config.json``: ``LlavaConfig`` as llava-hf ships it (transformers 4.x keys): CLIP vision tower
  at 336 px with 14 px patches (N = 576 visual tokens, CLS dropped), ``vision_feature_layer``
  -2, strategy ``"default"``, GELU projector, ``image_token_index`` 32000, ``pad_token_id``
  32001, vocabulary 32064; the widths are tiny (vision 32 x 3 layers, text 64 x 4 layers).
- weights in float16 with the **transformers 4.x names** of the hub repository
  (``language_model.model.layers.0...``, ``language_model.lm_head.weight``,
  ``vision_tower.vision_model...``, ``multi_modal_projector.linear_1...``; transformers 5
  renames them on load, ``conversion_mapping.py``), sharded into three
  ``model-0000i-of-00003.safetensors`` files with ``model.safetensors.index.json``.
- a Llama tokenizer: ``tokenizer.json`` as llava-hf's (BPE with byte fallback, the legacy
  ``Prepend("\u2581")`` + ``Replace(" ", "\u2581")`` normaliser, no pre-tokeniser, the
  SentencePiece-style decoder), ids ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<0x00>``..``<0xFF>``
  3..258, word pieces (``\u2581Yes``, ``\u2581No``, ``\u2581yes``, ``\u2581A``, ...) and filler up
  to 32000, then ``<image>`` 32000 and ``<pad>`` 32001 as added tokens; ``tokenizer_config.json``
  (``LlamaTokenizer``, ``add_bos_token`` true, ``legacy`` false) and ``special_tokens_map.json``.
- ``preprocessor_config.json`` (``CLIPImageProcessor``: shortest edge 336, crop 336, CLIP mean
  and std, bicubic), ``processor_config.json``, ``chat_template.json`` (llava-hf's template,
  "USER: <image>\\n... ASSISTANT:"), ``generation_config.json``.

No ``prompt_format.json``: like the hub repository, the checkpoint declares nothing, so it gets
LLaVA-1.5's ``vicuna_v1`` format. Weights are random (seeded).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from visprune.instrument import prompts

IMAGE_SIZE = 336
PATCH_SIZE = 14
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 576
BASE_VOCAB = 32000  # Llama's SentencePiece vocabulary
IMAGE_TOKEN_ID = 32000
PAD_TOKEN_ID = 32001
VOCAB_SIZE = 32064  # the model's embedding rows (padded to a multiple of 64, as llava-hf's)
N_SHARDS = 3
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SPIECE = "\u2581"

#: llava-hf's chat template (renders "USER: <image>\n{text} ASSISTANT:"; no system sentence).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: Text the word pieces are learnt from: the prompts the tests send and the answers they score.
EXTRA_TEXT = (
    "USER ASSISTANT Yes No yes no YES NO A B C D E Is there a an in the image person dog cat car chair "
    "cup bicycle dining table Which which of these is animal colour color shape red blue green Context "
    "Options a photo picture man woman sitting standing on with and street room USER: ASSISTANT: image? "
    "Context: it? (a) 1 2 3 ; - !"
)


def _corpus() -> list[str]:
    text = " ".join([
        prompts.VICUNA_V1_SYSTEM, prompts.VICUNA_V0_SYSTEM, prompts.POPE_SUFFIX, prompts.SCIENCEQA_SUFFIX,
        prompts.CAPTION_PROMPT, EXTRA_TEXT,
    ])
    # words and single punctuation marks (so pieces do not glue punctuation to words, and there
    # is no "\n" piece: Llama spells it <0x0A>)
    return re.findall(r"\w+|[^\w\s]", text)


TOKENIZER_STYLES = ("legacy", "metaspace")


def build_tokenizer_json(style: str = "legacy") -> dict:
    """The ``tokenizer.json`` of a Llama-layout BPE tokenizer (as a dict).

    ``style="legacy"``: llava-hf's setup, a ``Prepend("\u2581")`` + ``Replace`` normaliser and
    no pre-tokeniser (every text span between special tokens gets a leading "\u2581", as each
    SentencePiece call does). ``style="metaspace"``: the later conversion (no normaliser, a
    ``Metaspace(prepend_scheme="first", split=False)`` pre-tokeniser: only the text's first
    span gets it), so a prompt tokenised whole differs from LLaVA's chunk-wise tokenisation.

    Word pieces come from a small BPE training run (on "\u2581word" units, so merges stay
    inside words as SentencePiece's do); the vocabulary is then laid out as Llama's: three
    special tokens, the 256 byte-fallback tokens, the pieces, filler pieces up to 32000.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=1, show_progress=False)
    words = _corpus()
    trainer_tok.train_from_iterator(words * 3, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = [t for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1])]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    for token in ("\u2581Yes", "\u2581No", "\u2581yes", "\u2581no", *(SPIECE + c for c in "ABCDE")):
        if token not in vocab:
            raise AssertionError(f"stand-in tokenizer: {token!r} was not learnt")
    i = 0
    while len(vocab) < BASE_VOCAB:
        vocab[f"\u2581filler{i}"] = len(vocab)  # never produced: no merge leads to it
        i += 1

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if style == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    elif style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False)
    else:
        raise ValueError(f"style: expected one of {TOKENIZER_STYLES}, got {style!r}")
    tok.decoder = decoders.Sequence([
        decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)
    ])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken("<image>", normalized=False, special=True)])
    tok.add_special_tokens([AddedToken("<pad>", normalized=False, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    data = json.loads(tok.to_str())
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    assert ids["<image>"] == IMAGE_TOKEN_ID and ids["<pad>"] == PAD_TOKEN_ID, ids
    return data


def _added(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


def tokenizer_config(legacy: bool = False) -> dict:
    """llava-hf's ``tokenizer_config.json`` (LlamaTokenizer, BOS added, ``legacy`` as given)."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): _added(t) for i, t in
                                 ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (IMAGE_TOKEN_ID, "<image>"),
                                  (PAD_TOKEN_ID, "<pad>"))},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": legacy,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "left",
        "processor_class": "LlavaProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "trust_remote_code": False,
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


def config_json(text_layers: int = 4, vision_layers: int = 3) -> dict:
    """llava-hf's ``config.json`` (transformers 4.x layout) with tiny widths."""
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": IMAGE_TOKEN_ID,
        "model_type": "llava",
        "pad_token_id": PAD_TOKEN_ID,
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "intermediate_size": 128,
            "initializer_range": 0.1,
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "num_attention_heads": 4,
            "num_hidden_layers": text_layers,
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": VOCAB_SIZE,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.36.0.dev0",
        "vision_config": {
            "hidden_size": 32,
            "image_size": IMAGE_SIZE,
            "intermediate_size": 64,
            "model_type": "clip_vision_model",
            "num_attention_heads": 2,
            "num_hidden_layers": vision_layers,
            "patch_size": PATCH_SIZE,
            "projection_dim": 32,
            "vocab_size": 32000,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": VOCAB_SIZE,
    }


#: transformers 5 parameter names -> the hub repository's transformers 4.x names.
LEGACY_NAMES = (
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.vision_tower\.", "vision_tower.vision_model."),  # transformers 4.x CLIPVisionModel.vision_model
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
)


def legacy_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's parameters in float16 under the transformers 4.x names."""
    out = {}
    for name, tensor in model.state_dict().items():
        legacy = name
        for pattern, repl in LEGACY_NAMES:
            legacy, n = re.subn(pattern, repl, legacy)
            if n:
                break
        else:
            raise AssertionError(f"unexpected parameter name {name}")
        out[legacy] = tensor.detach().to(torch.float16).contiguous()
    return out


def build_llava15_standin(path, seed: int = 0, tokenizer_style: str = "legacy") -> Path:
    """Write the stand-in checkpoint to ``path`` (created); returns it as a Path.

    ``tokenizer_style``: see :func:`build_tokenizer_json` (llava-hf's is "legacy").
    (transformers 5 loads a ``llava`` checkpoint's ``tokenizer.json`` as is, with
    ``TokenizersBackend``: the ``tokenizer_class`` and ``legacy`` of its config are not used.)
    """
    from safetensors.torch import save_file
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_json()
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(LlavaConfig(**{k: v for k, v in cfg.items() if k != "architectures"}))
    weights = legacy_state_dict(model)
    names = sorted(weights)
    per = -(-len(names) // N_SHARDS)
    weight_map, total = {}, 0
    for s in range(N_SHARDS):
        shard = f"model-{s + 1:05d}-of-{N_SHARDS:05d}.safetensors"
        part = {n: weights[n] for n in names[s * per : (s + 1) * per]}
        save_file(part, str(out / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )

    (out / "tokenizer.json").write_text(json.dumps(build_tokenizer_json(tokenizer_style), ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": _added("<s>"), "eos_token": _added("</s>"), "pad_token": _added("<pad>"),
        "unk_token": _added("<unk>"),
    }, indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": IMAGE_SIZE},
    }, indent=2) + "\n")
    (out / "processor_config.json").write_text(json.dumps({
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
        "patch_size": PATCH_SIZE,
        "processor_class": "LlavaProcessor",
        "vision_feature_select_strategy": "default",
    }, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({
        "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": PAD_TOKEN_ID,
        "transformers_version": "4.36.0.dev0",
    }, indent=2) + "\n")
    return out
