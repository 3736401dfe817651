"""Tests of the toy LLaVA (visprune.toymodel): a small training run and the shipped checkpoint.

The small run trains a tiny model (32 px images, 4 x 4 patches) on a tiny generated toy world
in a temporary folder; the checks compare it with plain ``transformers`` calls (loading,
processor expansion of ``<image>``, the model's own forward), with hand-computed patch
targets, and with brute-force answers for the question sampler.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visprune.instrument import prompts
from visprune.datasets import coco
from visprune.toymodel import build, corpus, train

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "lib" / "visprune" / "assets" / "toy-llava"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Train the SMALL model on a 40-image toy world; returns (model dir, world dir, training log)."""
    root = tmp_path_factory.mktemp("toymodel")
    world, out = root / "world", root / "model"
    record = train.train_toy_llava(
        world, out, seed=0, size=build.SMALL, schedule=train.SMALL_SCHEDULE,
        world_params=train.SMALL_WORLD, log=lambda message: None,
    )
    return out, world, record


def _image(world: Path) -> Image.Image:
    first = sorted((world / "images" / "test").glob("*.png"))[0]
    return Image.open(first).convert("RGB")


# --------------------------------------------------------------------------- the small run


def test_small_run_writes_llava_hf_layout_loadable_with_plain_transformers(small_run):
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    out, world, _ = small_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        assert (out / name).is_file(), name
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(out, local_files_only=True)
    assert isinstance(processor, LlavaProcessor)
    assert model.dtype == torch.float32
    assert model.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default"
    assert model.config.projector_hidden_act == "gelu"
    assert model.config.vision_config.model_type == "clip_vision_model"
    assert model.config.text_config.model_type == "llama"

    inputs = processor(text=build.PROMPT_FORMAT.conversation("Is there a cup in the image?"), images=_image(world), return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == build.SMALL.num_patches == (32 // 8) ** 2
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(processor.tokenizer))
    assert torch.isfinite(logits).all()


def test_small_run_losses_decrease(small_run):
    _, _, record = small_run
    vision = [r["loss"] for r in record["vision"]]
    language = [r["train_loss"] for r in record["language"]]
    assert len(vision) == train.SMALL_SCHEDULE.vision_epochs and len(language) >= 2
    assert vision[-1] < vision[0]
    assert language[-1] < language[0]
    assert json.loads((small_run[0] / "training_log.json").read_text())["language"] == record["language"]


def test_training_forward_equals_transformers_forward(small_run):
    """Prompt ids and logits of the training path equal the processor's and the model's own."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    out, world, _ = small_run
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    question = prompts.pope_question("Is there a kite in the image?")
    inputs = processor(text=build.PROMPT_FORMAT.conversation(question), images=_image(world), return_tensors="pt")

    encoder = train.ConversationEncoder(processor.tokenizer, model.config.image_token_id, build.SMALL.num_patches)
    assert encoder.prompt(question) == inputs["input_ids"][0].tolist()

    with torch.no_grad():
        expected = model(**inputs).logits  # (1, T, V)
        features = train.feature_layer_outputs(model, inputs["pixel_values"])
        hidden = train.lm_hidden(model, inputs["input_ids"], inputs["attention_mask"], features)
        got = model.lm_head(hidden)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_chat_template_renders_the_llava_conversation(small_run):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(small_run[0], local_files_only=True)
    question = "What color is the cup?"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == build.PROMPT_FORMAT.conversation(question)
    with_system = [{"role": "system", "content": "Be brief."}, *messages, {"role": "assistant", "content": "Blue"}]
    assert processor.apply_chat_template(with_system) == "Be brief. USER: <image>\n" + question + " ASSISTANT: Blue</s>"


def test_answers_are_single_tokens_after_assistant(small_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_run[0], local_files_only=True)
    prefix = tokenizer("ASSISTANT:", add_special_tokens=False)["input_ids"]
    first_tokens: dict[int, str] = {}
    for answer in ("yes", "no", "A", "B", "C", "D", "E"):
        for form in prompts.answer_variants(answer):
            ids = tokenizer("ASSISTANT:" + form, add_special_tokens=False)["input_ids"]
            assert ids[: len(prefix)] == prefix and len(ids) == len(prefix) + 1, (form, tokenizer.convert_ids_to_tokens(ids))
            assert first_tokens.setdefault(ids[-1], answer) == answer  # no token shared by two answers
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id


# --------------------------------------------------------------------------- training data


def _tiny_split(objects_by_image, categories=("cup", "plate", "apple", "kite")) -> corpus.WorldSplit:
    """A WorldSplit built from hand-written boxes: [[(category name, colour, x, y, w, h), ...], ...]."""
    cats = [{"id": i + 1, "name": n, "supercategory": "x"} for i, n in enumerate(categories)]
    images, anns = [], []
    for i, objects in enumerate(objects_by_image, start=1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 96, "height": 96})
        for k, (name, colour, x, y, w, h) in enumerate(objects):
            anns.append({"id": 100 * i + k, "image_id": i, "category_id": categories.index(name) + 1,
                         "bbox": [x, y, w, h], "color": colour})
    index = coco.CocoIndex.from_dict({"images": images, "annotations": anns, "categories": cats})
    present = np.zeros((len(images), len(categories)), dtype=bool)
    objects = []
    for i, objs in enumerate(objects_by_image):
        rows = []
        for name, colour, x, y, w, h in objs:
            present[i, categories.index(name)] = True
            rows.append((categories.index(name), corpus.COLOUR_NAMES.index(colour), x, y, w, h))
        objects.append(rows)
    return corpus.WorldSplit([im["id"] for im in images], [Path(im["file_name"]) for im in images],
                             list(categories), present, objects, [[] for _ in images], index)


def test_patch_targets_match_a_hand_computed_grid():
    # cup: box x 8..24, y 8..24 -> patches (rows 1-2, cols 1-2) fully covered; centre (16, 16) -> patch (2, 2)
    # plate drawn later: x 20..28, y 0..8 -> covers half of patch (0, 2) and (0, 3): 0.5 >= 0.3;
    # its box also covers (1, 2)? no: y 0..8 is row 0 only. Centre (24, 4) -> patch (0, 3).
    split = _tiny_split([[("cup", "red", 8, 8, 16, 16), ("plate", "blue", 20, 0, 8, 8)]])
    t = corpus.patch_targets(split, grid=12)
    category = t.category[0].reshape(12, 12)
    background = len(split.categories)
    expected = np.full((12, 12), background)
    expected[1:3, 1:3] = 0
    expected[0, 2:4] = 1
    np.testing.assert_array_equal(category, expected)
    colour = t.colour[0].reshape(12, 12)
    assert colour[1, 1] == corpus.COLOUR_NAMES.index("red") and colour[0, 3] == corpus.COLOUR_NAMES.index("blue")
    assert colour[5, 5] == -1
    centre = t.centre[0].reshape(12, 12)
    assert set(zip(*np.nonzero(centre))) == {(2, 2), (0, 3)}
    # a box covering a quarter of a patch's width is below the 0.3 threshold
    small = corpus.patch_targets(_tiny_split([[("kite", "red", 6, 0, 2, 8)]]), grid=12)
    assert (small.category == background).all()


def test_question_sampler_follows_pope_rules():
    # image 0 holds cup and plate; across the split apple is more frequent than kite (3 vs 2
    # images) but kite co-occurs with cup (twice) and apple never does
    split = _tiny_split([
        [("cup", "red", 0, 0, 10, 10), ("plate", "red", 20, 20, 10, 10)],
        [("cup", "red", 0, 0, 10, 10), ("kite", "red", 20, 20, 10, 10)],
        [("cup", "red", 0, 0, 10, 10), ("kite", "red", 20, 20, 10, 10)],
        [("apple", "red", 0, 0, 10, 10)],
        [("apple", "red", 0, 0, 10, 10)],
        [("apple", "red", 0, 0, 10, 10), ("plate", "red", 20, 20, 10, 10)],
    ])
    sampler = corpus.QuestionSampler(split, top=1)
    rng = np.random.default_rng(0)
    names = split.categories
    assert names[sampler.negative(rng, 0, names.index("cup"), "popular", set())] == "apple"
    assert names[sampler.negative(rng, 0, names.index("cup"), "adversarial", set())] == "kite"
    assert names[sampler.negative(rng, 0, names.index("cup"), "popular", {names.index("apple")})] == "kite"
    assert sampler.negative(rng, 0, 0, "random", {names.index("apple"), names.index("kite")}) is None
    turns = sampler.questions(np.random.default_rng(1), 0, n_pairs=3)
    yes = {q for q, a in turns if a == corpus.YES}
    no = {q for q, a in turns if a == corpus.NO}
    assert yes == {prompts.pope_question(f"Is there a {n} in the image?") for n in ("cup", "plate")}
    assert no == {prompts.pope_question(f"Is there {n} in the image?") for n in ("an apple", "a kite")}
    assert all(q.endswith(prompts.POPE_SUFFIX) for q, _ in turns)


def test_conversation_encoding_marks_answer_tokens(small_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_run[0], local_files_only=True)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    encoder = train.ConversationEncoder(tokenizer, image_id, num_patches=16)
    conv = corpus.Conversation(0, [("Is there a cup in the image?", "Yes"), ("How many cups?", "A two cups answer")], "qa")
    ids, weights, probes = encoder.encode(conv)
    assert ids.count(image_id) == 16
    assert ids[0] == tokenizer.bos_token_id
    n_answer_tokens = sum(len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) + 1 for _, a in conv.turns)
    assert sum(weights) == n_answer_tokens  # every answer token (and each EOS) weighs 1
    text = tokenizer.decode(ids)
    assert text.count("</s>") == 2 and "</s>USER: How many cups? ASSISTANT: A two cups answer</s>" in text
    answer_ids = [t for t, w in zip(ids, weights) if w > 0]
    assert tokenizer.decode(answer_ids) == " Yes</s> A two cups answer</s>"


def test_choice_weight_scales_only_multiple_choice_answer_tokens(small_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_run[0], local_files_only=True)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    pope_q = prompts.pope_question("Is there a cup in the image?")
    sqa_q = prompts.scienceqa_question("What color is the cup?", ["red", "blue"], "")
    conv = corpus.Conversation(0, [(pope_q, corpus.YES), (sqa_q, "B")], "qa")
    plain = train.ConversationEncoder(tokenizer, image_id, num_patches=16).encode(conv)
    heavy = train.ConversationEncoder(tokenizer, image_id, num_patches=16, choice_weight=3.0).encode(conv)
    assert heavy[0] == plain[0] and heavy[2] == plain[2]  # same ids, same probes
    # " Yes</s>" keeps weight 1; " B</s>" (the second answer) gets 3 on each of its tokens
    n_yes = len(tokenizer(" Yes", add_special_tokens=False)["input_ids"]) + 1
    n_letter = len(tokenizer(" B", add_special_tokens=False)["input_ids"]) + 1
    answer_weights = [w for w in heavy[1] if w > 0]
    assert answer_weights == [1.0] * n_yes + [3.0] * n_letter
    assert [w > 0 for w in heavy[1]] == [w > 0 for w in plain[1]]


def test_caption_fraction_drops_caption_conversations_only(small_run):
    _, world, _ = small_run
    split = corpus.load_split(world, "train")
    sampler = corpus.QuestionSampler(split)

    def draw(**kw):
        return corpus.epoch_conversations(split, sampler, np.random.default_rng(5), sqa_seed=1, yes_no_pairs=1,
                                          sqa_per_image=1, **kw)

    full = draw(caption_fraction=1.0)
    n_captioned = sum(1 for i in range(len(split)) if split.captions[i])
    assert sum(c.kind == "caption" for c in full) == n_captioned
    half = draw(caption_fraction=0.5)
    assert 0 < sum(c.kind == "caption" for c in half) < n_captioned
    assert sum(c.kind == "qa" for c in half) == sum(c.kind == "qa" for c in full)
    none = draw(caption_fraction=0.0)
    assert all(c.kind == "qa" for c in none)
    assert sorted(c.image for c in none) == sorted(c.image for c in full if c.kind == "qa")
    with pytest.raises(ValueError, match="caption_fraction"):
        draw(caption_fraction=1.5)


def test_probe_positions_point_at_the_object_word_and_each_option(small_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_run[0], local_files_only=True)
    encoder = train.ConversationEncoder(tokenizer, tokenizer.convert_tokens_to_ids("<image>"), num_patches=16)
    pope_q = prompts.pope_question("Is there a traffic cone in the image?")
    sqa_q = prompts.scienceqa_question("Which object is closest to the top?", ["cup", "traffic cone"], "")
    conv = corpus.Conversation(0, [(pope_q, corpus.NO), (sqa_q, "B"), (pope_q, corpus.YES)], "qa")
    ids, _, probes = encoder.encode(conv)
    # Decoding the ids up to each probe position must end exactly where the probe reads.
    ends = [tokenizer.decode(ids[: pos + 1]) for pos, _, _ in probes]
    assert [(label, kind) for _, label, kind in probes] == [(0.0, 0), (0.0, 1), (1.0, 1), (1.0, 0)]
    assert ends[0].endswith("Is there a traffic cone") and "USER:" not in ends[0].split("<image>")[-1]
    assert ends[1].endswith("A. cup") and ends[2].endswith("B. traffic cone")
    assert ends[3].endswith("</s>USER: Is there a traffic cone")
    # A question of neither kind has no probes.
    assert encoder.probe_positions(prompts.CAPTION_PROMPT, "A cup.", first=True) == []


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="patch_size"):
        build.ToyLlavaSize(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="texts"):
        build.train_tokenizer([], 500)
    with pytest.raises(ValueError, match="lm_batch"):
        train.Schedule(lm_batch=0)
    with pytest.raises(ValueError, match="caption_fraction"):
        train.Schedule(caption_fraction=1.2)
    with pytest.raises(ValueError, match="choice_weight"):
        train.Schedule(choice_weight=0.0)
    with pytest.raises(FileNotFoundError, match="model directory"):
        build.directory_size_bytes(tmp_path / "missing")


# --------------------------------------------------------------------------- the shipped model


def _require_shipped():
    if not (SHIPPED / "model.safetensors").is_file():
        pytest.skip(f"the shipped toy model is not produced yet ({SHIPPED}); run "
                    "`python -m visprune.toymodel train` and `python -m visprune.toymodel card`")


def test_shipped_model_loads_with_plain_transformers_and_has_a_12x12_grid():
    _require_shipped()
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(SHIPPED, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(SHIPPED, local_files_only=True)
    vision = model.config.vision_config
    assert (vision.image_size, vision.patch_size) == (96, 8)
    assert vision.image_size // vision.patch_size == 12
    assert model.config.image_seq_length == 144
    assert model.dtype == torch.float32
    image = Image.new("RGB", (96, 96), (120, 200, 120))
    inputs = processor(text=build.PROMPT_FORMAT.conversation("Is there a tree in the image?"), images=image, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 144
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()


def test_shipped_model_is_under_25_mb_and_has_a_card():
    _require_shipped()
    total = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert total < 25_000_000, f"{total / 1e6:.1f} MB"
    card = SHIPPED / "README.md"
    assert card.is_file(), "model card missing: run `python -m visprune.toymodel card`"
    text = card.read_text()
    for needle in ("POPE", "ScienceQA", "CHAIR", "random K=16", "python -m visprune.toymodel train"):
        assert needle in text
