"""Tests for visprune.instrument.llava (the pruning LLaVA wrapper) and visprune.pruning.fastv.

References are independent of the wrapper: transformers' own LlavaForConditionalGeneration
forward (with the processor's expanded image tokens, or with hand-built inputs_embeds holding
only the kept visual tokens), an eager-attention copy of the same weights reporting attention
probabilities, and hand-computed answer masses. Tiny random models, float32 on CPU.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from tiny_llava import NUM_PATCHES, build_tiny_llava, tiny_images
from visprune.pruning import fastv
from visprune.instrument.llava import PrunedLlava, Selection, check_checkpoint_dir, default_dtype
from visprune.instrument.prompts import conversation, pope_question, scienceqa_question

ATOL = 1e-4
N = NUM_PATCHES
QUESTIONS = [
    pope_question("Is there a cat in the image?"),
    pope_question("Is there a red ball on the big table in the picture?"),
    "What color is the sky?",
]
IMAGE_INDEX = [0, 1, 1]  # three prompts on two images (prompts 1 and 2 share an image)
CONFIGS = [(-2, "default"), (-1, "default")]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"layer{c[0]}-{c[1]}")
def tiny(request):
    """(hf_model, processor, wrapper) for one tiny config; the wrapper shares the model."""
    layer, strategy = request.param
    model, processor = build_tiny_llava(vision_feature_layer=layer, strategy=strategy, seed=1)
    return model, processor, PrunedLlava(model, processor, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def images():
    return tiny_images(2, seed=3)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(1) - 1).clamp_min(0)


def _hf_image_tokens(model, processor, images) -> torch.Tensor:
    """Projected visual tokens (B, N, d_text) from transformers' own get_image_features."""
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return torch.stack(list(model.model.get_image_features(pixel_values=pixels).pooler_output))


def _hf_literal_logits(model, processor, images, questions, image_index, keep, generated=None, positions=None):
    """transformers' forward on prompts that literally hold only image tokens ``keep[image]``.

    Builds ``"<image>" * K`` into each prompt, left-pads with the tokenizer, writes the kept
    projected tokens into those slots, and appends ``generated`` tokens (P, G) if given.
    ``positions``: optional ((P, K) position ids of the visual slots, (P,) position id of the
    first token after them); default: consecutive positions.
    Returns the logits (P, V) at the last position.
    """
    tok = processor.tokenizer
    k = keep.shape[1]
    texts = [conversation(q).replace("<image>", "<image>" * k) for q in questions]
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if generated is not None:
        ids = torch.cat([ids, generated], dim=1)
        mask = torch.cat([mask, torch.ones_like(generated)], dim=1)
    tokens = _hf_image_tokens(model, processor, images)  # (B, N, d)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).clone()
        for i, r in enumerate(image_index):
            slots = (ids[i] == model.config.image_token_id).nonzero()[:, 0]
            assert len(slots) == k
            embeds[i, slots] = tokens[r, keep[r]]
        pos = _positions(mask)
        if positions is not None:
            visual_pos, after_pos = positions
            pos = pos.clone()
            for i in range(len(questions)):
                slots = (ids[i] == model.config.image_token_id).nonzero()[:, 0]
                pos[i, slots] = visual_pos[i]
                pos[i, slots[-1] + 1 :] = after_pos[i] + torch.arange(ids.shape[1] - slots[-1] - 1)
        return model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits[:, -1]


def _eager_copy(model, layer, strategy):
    eager, _ = build_tiny_llava(vision_feature_layer=layer, strategy=strategy, attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    return eager


# ------------------------------------------------------------------ unpruned path vs transformers


def test_unpruned_matches_transformers_with_padding(tiny, images):
    model, processor, w = tiny
    imgs = [images[r] for r in IMAGE_INDEX]
    inp = processor(images=imgs, text=[conversation(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    assert (inp["attention_mask"] == 0).any(), "the test batch must contain padding"
    assert int((inp["input_ids"][0] == model.config.image_token_id).sum()) == N
    with torch.no_grad():
        ref = model(**inp, position_ids=_positions(inp["attention_mask"])).logits[:, -1]
    vision = w.encode_images(images)
    logits, keep = w.first_token_logits(QUESTIONS, vision, None, IMAGE_INDEX)
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    assert torch.equal(keep, torch.arange(N).expand(3, N))
    # images passed directly (encoded inside, prompt i on image i) against hand-built inputs_embeds
    logits2, _ = w.first_token_logits(QUESTIONS[:2], images, w.select_tokens(vision, "none"))
    ref2 = _hf_literal_logits(model, processor, images, QUESTIONS[:2], [0, 1], torch.arange(N).expand(2, N))
    torch.testing.assert_close(logits2, ref2, atol=ATOL, rtol=0)


def test_build_inputs_matches_processor_token_ids(tiny, images):
    model, processor, w = tiny
    texts = [conversation(q) for q in QUESTIONS]
    inp = processor(images=[images[0]] * 3, text=texts, return_tensors="pt", padding=True)
    built = w.build_inputs(QUESTIONS, torch.zeros(3, N, model.config.text_config.hidden_size))
    assert torch.equal(built.input_ids, inp["input_ids"])
    assert torch.equal(built.attention_mask, inp["attention_mask"])
    starts = [int((row == model.config.image_token_id).nonzero()[0]) for row in inp["input_ids"]]
    assert built.image_start.tolist() == starts


def test_visual_tokens_and_cls_attention_match_transformers(tiny, images):
    model, processor, w = tiny
    layer, strategy = model.config.vision_feature_layer, model.config.vision_feature_select_strategy
    vision = w.encode_images(images)
    assert vision.features.shape == (2, N, model.config.vision_config.hidden_size)
    assert vision.grid_size**2 == N
    # the projected features are what transformers feeds the language model
    hf_tokens = _hf_image_tokens(model, processor, images)
    torch.testing.assert_close(w.visual_embeddings(vision), hf_tokens, atol=1e-5, rtol=0)
    # the CLS attention equals the eager tower's reported attention probabilities
    eager = _eager_copy(model, layer, strategy)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = eager.model.vision_tower(pixels, output_attentions=True)
    n_layers = len(out.attentions)
    producing_layer = layer % (n_layers + 1) - 1  # hidden_states[l] is the output of layer l - 1
    ref = out.attentions[producing_layer][:, :, 0, 1:].sum(dim=1)  # (B, N)
    torch.testing.assert_close(vision.cls_attention, ref, atol=1e-5, rtol=0)
    # and it differs from the other layers' attention (the layer choice matters)
    other = out.attentions[(producing_layer + 1) % n_layers][:, :, 0, 1:].sum(dim=1)
    assert (vision.cls_attention - other).abs().max() > 1e-3


def test_full_strategy_drops_cls_for_selection():
    model, processor = build_tiny_llava(vision_feature_layer=-2, strategy="full", seed=2)
    w = PrunedLlava(model, processor, device="cpu")
    imgs = tiny_images(2, seed=5)
    hf = _hf_image_tokens(model, processor, imgs)  # (B, 1 + N, d): transformers keeps CLS for "full"
    assert hf.shape[1] == N + 1
    vision = w.encode_images(imgs)
    torch.testing.assert_close(w.visual_embeddings(vision), hf[:, 1:], atol=1e-5, rtol=0)


def test_list_feature_layer_is_rejected():
    model, processor = build_tiny_llava(vision_feature_layer=[-2, -1])
    with pytest.raises(ValueError, match="vision_feature_layer"):
        PrunedLlava(model, processor, device="cpu")


# ------------------------------------------------------------------ pre-LLM pruning


def test_pre_llm_pruning_equals_literal_short_sequence(tiny, images):
    model, processor, w = tiny
    keep = torch.tensor([[0, 3, 4, 9, 15], [1, 2, 7, 8, 12]])
    vision = w.encode_images(images)
    logits, kept = w.first_token_logits(QUESTIONS, vision, keep, IMAGE_INDEX)
    ref = _hf_literal_logits(model, processor, images, QUESTIONS, IMAGE_INDEX, keep)
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    assert torch.equal(kept, keep[IMAGE_INDEX])
    kept_features = vision.kept_features(kept, IMAGE_INDEX)  # (P, K, d) rows of the right images
    assert torch.equal(kept_features[2], vision.features[1, keep[1]])
    unpruned, _ = w.first_token_logits(QUESTIONS, vision, None, IMAGE_INDEX)
    assert (logits - unpruned).abs().max() > 1e-3  # pruning changed the answer distribution


def test_selectors_plug_in(tiny, images):
    pytest.importorskip("visprune.pruning")
    _, _, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "saliency", k=5)
    expected = vision.cls_attention.topk(5, dim=1).indices.sort(dim=1).values  # ALGORITHMS.md: top-K of a
    assert torch.equal(sel.keep, expected)
    assert sel.method == "saliency" and sel.k == 5 and sel.keep is not None
    out = w.score(QUESTIONS, ("yes", "no"), vision, sel, IMAGE_INDEX)
    assert torch.equal(out.keep, expected[IMAGE_INDEX])


# ------------------------------------------------------------------ FastV


@pytest.mark.parametrize("layer, ranking", [(0, "same"), (2, "same"), (1, "previous"), (2, "previous")])
def test_fastv_keeping_all_tokens_is_unpruned(tiny, images, layer, ranking):
    _, _, w = tiny
    vision = w.encode_images(images)
    unpruned, _ = w.first_token_logits(QUESTIONS, vision, None, IMAGE_INDEX)
    sel = w.select_tokens(vision, "fastv", k=N, layer=layer, ranking=ranking)
    logits, keep = w.first_token_logits(QUESTIONS, vision, sel, IMAGE_INDEX)
    torch.testing.assert_close(logits, unpruned, atol=1e-5, rtol=0)
    assert torch.equal(keep, torch.arange(N).expand(3, N))


@pytest.mark.parametrize("layer, ranking", [(1, "same"), (2, "same"), (1, "previous"), (2, "previous")])
def test_fastv_choice_matches_eager_attention(tiny, images, layer, ranking):
    """The kept tokens are the top-K of the last token's head-mean attention inside layer L-1
    ("previous", the released code) or layer L ("same"), from the eager model on the unpruned sequence."""
    model, processor, w = tiny
    k = 6
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "fastv", k=k, layer=layer, ranking=ranking)
    _, keep = w.first_token_logits(QUESTIONS, vision, sel, IMAGE_INDEX)
    eager = _eager_copy(model, model.config.vision_feature_layer, model.config.vision_feature_select_strategy)
    imgs = [images[r] for r in IMAGE_INDEX]
    inp = processor(images=imgs, text=[conversation(q) for q in QUESTIONS], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = eager(**inp, position_ids=_positions(inp["attention_mask"]), output_attentions=True)
    ranked_at = layer - 1 if ranking == "previous" else layer
    row = out.attentions[ranked_at][:, :, -1, :].mean(dim=1)  # (P, T) last token, mean over heads
    is_image = inp["input_ids"] == model.config.image_token_id
    visual = torch.stack([row[i, is_image[i]] for i in range(len(QUESTIONS))])  # (P, N)
    expected = visual.topk(k, dim=1).indices.sort(dim=1).values
    assert torch.equal(keep, expected)


def test_fastv_at_layer0_equals_literal_sequence_with_original_positions(tiny, images):
    """With L = 0 nothing sees the dropped tokens: the model on the kept tokens at their original positions."""
    model, processor, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "fastv", k=5, layer=0, ranking="same")  # "previous" has no layer -1
    logits, keep = w.first_token_logits(QUESTIONS, vision, sel, IMAGE_INDEX)
    # hand the per-prompt keep to the reference as a per-"image" keep (one row per prompt)
    imgs = [images[r] for r in IMAGE_INDEX]
    prefix = [len(processor.tokenizer(conversation(q).split("<image>")[0])["input_ids"]) for q in QUESTIONS]
    visual_pos = torch.stack([prefix[i] + keep[i] for i in range(3)])  # original positions of kept tokens
    after_pos = torch.tensor(prefix) + N  # the text after the image keeps its unpruned positions too
    ref = _hf_literal_logits(model, processor, imgs, QUESTIONS, [0, 1, 2], keep, positions=(visual_pos, after_pos))
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    consecutive = _hf_literal_logits(model, processor, imgs, QUESTIONS, [0, 1, 2], keep)
    assert (consecutive - ref).abs().max() > 1e-4  # positions matter, so the check above has teeth


def test_fastv_helpers_on_hand_built_case():
    attention = torch.tensor([[0.1, 0.0, 0.5, 0.2, 0.3, 0.9, 0.05], [0.0, 0.4, 0.1, 0.6, 0.3, 0.2, 0.7]])
    image_start = torch.tensor([2, 1])
    keep = fastv.top_visual_tokens(attention, image_start, num_visual=4, k=2)
    # row 0: visual slots 2..5 hold [0.5, 0.2, 0.3, 0.9] -> tokens 0 and 3
    # row 1: visual slots 1..4 hold [0.4, 0.1, 0.6, 0.3] -> tokens 0 and 2
    assert keep.tolist() == [[0, 3], [0, 2]]
    index = fastv.kept_sequence_index(7, image_start, 4, keep)
    assert index.tolist() == [[0, 1, 2, 5, 6], [0, 1, 3, 5, 6]]
    with pytest.raises(ValueError, match="k"):
        fastv.top_visual_tokens(attention, image_start, num_visual=4, k=5)


# ------------------------------------------------------------------ batching


@pytest.mark.parametrize("method", ["none", "indices", "fastv"])
def test_alone_equals_in_padded_batch(tiny, images, method):
    _, _, w = tiny
    vision = w.encode_images(images)
    if method == "none":
        sel = None
    elif method == "indices":
        sel = torch.tensor([[2, 5, 6, 11], [0, 1, 9, 13]])
    else:
        sel = w.select_tokens(vision, "fastv", k=4, layer=1)
    batch = w.score(QUESTIONS, ("yes", "no"), vision, sel, IMAGE_INDEX)
    batch_logits, _ = w.first_token_logits(QUESTIONS, vision, sel, IMAGE_INDEX)
    for i, q in enumerate(QUESTIONS):
        alone = w.score([q], ("yes", "no"), vision, sel, [IMAGE_INDEX[i]])
        alone_logits, _ = w.first_token_logits([q], vision, sel, [IMAGE_INDEX[i]])
        torch.testing.assert_close(alone.probs[0], batch.probs[i], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone_logits[0], batch_logits[i], atol=ATOL, rtol=0)
        assert torch.equal(alone.keep[0], batch.keep[i])


# ------------------------------------------------------------------ generation


def _selections(w, vision):
    return {
        "none": None,
        "indices": torch.tensor([[0, 3, 4, 9, 15], [1, 2, 7, 8, 12]]),
        "fastv-L1": w.select_tokens(vision, "fastv", k=5, layer=1),
        "fastv-L2": w.select_tokens(vision, "fastv", k=3, layer=2),
    }


@pytest.mark.parametrize("name", ["none", "indices", "fastv-L1", "fastv-L2"])
def test_cached_generation_equals_recomputation(tiny, images, name):
    _, _, w = tiny
    vision = w.encode_images(images)
    sel = _selections(w, vision)[name]
    cached = w.generate(QUESTIONS, vision, sel, IMAGE_INDEX, max_new_tokens=6, eos_token_id=[])
    scratch = w.generate(QUESTIONS, vision, sel, IMAGE_INDEX, max_new_tokens=6, eos_token_id=[], use_cache=False)
    assert all(len(t) == 6 for t in cached.token_ids)
    assert cached.token_ids == scratch.token_ids
    assert torch.equal(cached.keep, scratch.keep)


@pytest.mark.parametrize("name", ["none", "indices"])
def test_generation_equals_transformers_greedy_from_scratch(tiny, images, name):
    """Greedy decoding recomputed by transformers' full forward at every step (no cache)."""
    model, processor, w = tiny
    vision = w.encode_images(images)
    sel = _selections(w, vision)[name]
    keep = torch.arange(N).expand(2, N) if sel is None else sel
    steps = 5
    out = w.generate(QUESTIONS, vision, sel, IMAGE_INDEX, max_new_tokens=steps, eos_token_id=[])
    generated = torch.zeros(len(QUESTIONS), 0, dtype=torch.long)
    for _ in range(steps):
        logits = _hf_literal_logits(model, processor, images, QUESTIONS, IMAGE_INDEX, keep, generated=generated)
        generated = torch.cat([generated, logits.argmax(dim=-1, keepdim=True)], dim=1)
    assert out.token_ids == generated.tolist()


def test_pruned_generation_differs_and_stops_at_eos(tiny, images):
    _, _, w = tiny
    vision = w.encode_images(images)
    free = w.generate(QUESTIONS, vision, None, IMAGE_INDEX, max_new_tokens=6, eos_token_id=[])
    stop = free.token_ids[0][2]
    stopped = w.generate(QUESTIONS, vision, None, IMAGE_INDEX, max_new_tokens=6, eos_token_id=stop)
    for full, short in zip(free.token_ids, stopped.token_ids):
        expected = full[: full.index(stop)] if stop in full else full
        assert short == expected
    assert len(stopped.token_ids[0]) <= 2
    assert isinstance(stopped.texts[0], str)
    sel = w.select_tokens(vision, "fastv", k=2, layer=1)
    pruned = w.generate(QUESTIONS, vision, sel, IMAGE_INDEX, max_new_tokens=6, eos_token_id=[])
    assert pruned.token_ids != free.token_ids


# ------------------------------------------------------------------ scores


def test_score_hand_computed_answer_mass(tiny, images):
    _, processor, w = tiny
    tok = processor.tokenizer
    vision = w.encode_images(images)
    sel = torch.tensor([[1, 4, 6], [0, 2, 3]])
    out = w.score(QUESTIONS, ("yes", "no"), vision, sel, IMAGE_INDEX)
    logits, _ = w.first_token_logits(QUESTIONS, vision, sel, IMAGE_INDEX)
    # variants yes/ yes/Yes/ Yes/YES/ YES: this word-level tokenizer ignores the leading space,
    # so three distinct tokens per answer, each counted once
    yes_ids = tok.convert_tokens_to_ids(["yes", "Yes", "YES"])
    no_ids = tok.convert_tokens_to_ids(["no", "No", "NO"])
    assert sorted(w.answer_token_ids("yes")) == sorted(yes_ids)
    assert sorted(w.answer_token_ids("no")) == sorted(no_ids)
    p = torch.softmax(logits.double(), dim=-1)
    m_yes, m_no = p[:, yes_ids].sum(1), p[:, no_ids].sum(1)
    torch.testing.assert_close(out.probs[:, 0].double(), m_yes / (m_yes + m_no), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.answer_mass.double(), m_yes + m_no, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(3), atol=1e-6, rtol=0)
    assert ((out.answer_mass > 0) & (out.answer_mass <= 1)).all()
    assert out.predictions() == [("yes", "no")[int(i)] for i in (m_no > m_yes).long()]


def test_score_with_answer_sets_of_different_sizes(tiny, images):
    _, processor, w = tiny
    tok = processor.tokenizer
    vision = w.encode_images(images)
    questions = [
        scienceqa_question("Which color?", ["red", "blue"]),
        scienceqa_question("Which shape?", ["ball", "table", "chair", "tree"], hint="a small picture"),
        pope_question("Is there a dog in the image?"),
    ]
    sets = [("A", "B"), ("A", "B", "C", "D"), ("yes", "no")]
    out = w.score(questions, sets, vision, None, IMAGE_INDEX)
    assert out.lengths.tolist() == [2, 4, 2]
    assert out.probs.shape == (3, 4)
    assert (out.probs[[0, 2], 2:] == 0).all()
    for row in out.probs_list():
        assert abs(float(row.sum()) - 1.0) < 1e-5
    # option letters count in upper case only ("a" is the article here, a word of this vocabulary)
    assert w.answer_token_ids("A") == [tok.convert_tokens_to_ids("A")]
    assert w.answer_token_ids("B") == [tok.convert_tokens_to_ids("B")]


def test_answer_sets_that_cannot_be_scored(tiny, images):
    _, _, w = tiny
    vision = w.encode_images(images)
    with pytest.raises(ValueError, match="share the first token"):
        w.score(QUESTIONS, ("yes", "YES"), vision, None, IMAGE_INDEX)
    with pytest.raises(ValueError, match="zebra"):
        w.score(QUESTIONS, ("zebra", "no"), vision, None, IMAGE_INDEX)
    with pytest.raises(ValueError, match="one set per question"):
        w.score(QUESTIONS, [("yes", "no")] * 2, vision, None, IMAGE_INDEX)
    with pytest.raises(ValueError, match="answer_sets"):
        w.score(QUESTIONS, "yes", vision, None, IMAGE_INDEX)


# ------------------------------------------------------------------ input validation


def test_bad_inputs_raise_clear_errors(tiny, images):
    _, _, w = tiny
    vision = w.encode_images(images)
    with pytest.raises(ValueError, match="method"):
        w.select_tokens(vision, "magic", k=3)
    for k in (0, N + 1, None, 2.5):
        with pytest.raises(ValueError, match="k"):
            w.select_tokens(vision, "fastv", k=k)
    with pytest.raises(ValueError, match="k"):
        w.select_tokens(vision, "none", k=3)
    with pytest.raises(ValueError, match="params"):
        w.select_tokens(vision, "none", alpha=0.5)
    with pytest.raises(ValueError, match="layer"):
        w.select_tokens(vision, "fastv", k=3, layer=w.num_layers)
    with pytest.raises(ValueError, match="ascending"):
        w.score(QUESTIONS, ("yes", "no"), vision, torch.tensor([[3, 1], [0, 2]]), IMAGE_INDEX)
    with pytest.raises(ValueError, match="keep"):
        w.score(QUESTIONS, ("yes", "no"), vision, torch.tensor([[0, N]] * 2), IMAGE_INDEX)
    with pytest.raises(ValueError, match="image_index"):
        w.score(QUESTIONS, ("yes", "no"), vision, None, [0, 1, 2])
    with pytest.raises(ValueError, match="image_index"):
        w.score(QUESTIONS, ("yes", "no"), vision)  # 3 questions, 2 images
    with pytest.raises(ValueError, match="<image>"):
        w.score(["<image> what?"], ("yes", "no"), vision.rows([0]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        w.generate(QUESTIONS, vision, None, IMAGE_INDEX, max_new_tokens=0)
    assert isinstance(w.select_tokens(vision, "fastv", k=3), Selection)
    assert w.select_tokens(vision, "fastv", k=3).params["layer"] == 2  # the default L


def test_default_dtype():
    assert default_dtype("cpu") == torch.float32


# ------------------------------------------------------------------ loading from disk


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    model, processor = build_tiny_llava(vision_feature_layer=-2, seed=4)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-llava"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, model, processor


def test_from_pretrained_round_trip_offline(saved_checkpoint, images, monkeypatch):
    path, model, processor = saved_checkpoint
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = PrunedLlava.from_pretrained(path, device="cpu")
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    direct = PrunedLlava(model, processor, device="cpu")
    a, _ = loaded.first_token_logits(QUESTIONS[:2], images)
    b, _ = direct.first_token_logits(QUESTIONS[:2], images)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_missing_checkpoint_files_are_named(saved_checkpoint, tmp_path):
    path, _, _ = saved_checkpoint
    missing_dir = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        PrunedLlava.from_pretrained(missing_dir)
    assert str(missing_dir) in str(err.value) and "config.json" in str(err.value)

    for removed, expected_word in [("model.safetensors", "model.safetensors"), ("tokenizer.json", "tokenizer.json")]:
        copy = tmp_path / f"without-{removed}"
        shutil.copytree(path, copy)
        (copy / removed).unlink()
        with pytest.raises(FileNotFoundError) as err:
            PrunedLlava.from_pretrained(copy)
        message = str(err.value)
        assert str(copy) in message and expected_word in message and "missing" in message
    assert check_checkpoint_dir(path) == path.resolve()
