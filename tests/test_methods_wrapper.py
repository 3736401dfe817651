"""Every family of pre-LLM method through the LLaVA wrapper and the engine (ALGORITHMS.md,
"VisionZip", "CDPruner", "Controls", "Metrics": flip rate and prefill FLOPs).

The references are independent of the wrapper's code path: transformers' own vision tower and
language-model forward on hand-built inputs, hand-computed FLOPs and Wilson intervals.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_llava import build_tiny_llava, tiny_images

from visprune.instrument.llava import PrunedLlava
from visprune.instrument.prompts import POPE_SUFFIX, pope_question, strip_answer_format
from visprune.metrics import flip_rate, layer_macs, prefill_flops, wilson_interval
from visprune.pruning import merge, select

QUESTIONS = [pope_question("Is there a cat in the image?"), pope_question("Is there a red ball on the big table?"),
             "What color is the sky?"]
IMAGE_INDEX = [0, 1, 1]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_llava(vision_feature_layer=-2, seed=7)
    return model, processor, PrunedLlava(model, processor, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def images():
    return tiny_images(2, seed=11)


def _hf_logits(model, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' own language model + head on hand-built inputs, last position: (P, V)."""
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        out = model.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        return model.lm_head(out.last_hidden_state[:, -1]).float()


def _hand_inputs(w, questions, visual):
    """Left-padded embeddings with ``visual[i]`` (M_i, d) in prompt i's image slot, built by hand."""
    rows = []
    for q, vis in zip(questions, visual):
        ids = w.prompt_token_ids(q)
        slot = ids.index(w.image_token_id)
        emb = w._decoder.embed_tokens
        before = emb(torch.tensor(ids[:slot]))
        after = emb(torch.tensor(ids[slot + 1:]))
        rows.append(torch.cat([before, vis, after]).detach())
    t = max(r.shape[0] for r in rows)
    embeds = torch.zeros(len(rows), t, rows[0].shape[1])
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        embeds[i, t - r.shape[0]:] = r
        mask[i, t - r.shape[0]:] = 1
    return embeds, mask


def test_vision_output_has_cls_feature_and_head_averaged_keys(tiny, images):
    model, processor, w = tiny
    vision = w.encode_images(images)
    pixels = w.pixel_values(images)
    captured = {}
    layer_index = model.config.vision_feature_layer % (model.config.vision_config.num_hidden_layers + 1) - 1
    tower = model.model.vision_tower
    layer = getattr(tower, "vision_model", tower).encoder.layers[layer_index]
    hook = layer.self_attn.k_proj.register_forward_hook(lambda mod, inp, out: captured.setdefault("k", out))
    with torch.no_grad():
        out = model.model.vision_tower(pixels, output_hidden_states=True)
    hook.remove()
    hidden = out.hidden_states[model.config.vision_feature_layer]
    torch.testing.assert_close(vision.cls_feature, hidden[:, 0], atol=1e-6, rtol=0)
    heads = model.config.vision_config.num_attention_heads
    k = captured["k"]  # (B, 1 + N, d): the tower's own key projection
    ref = k.view(k.shape[0], k.shape[1], heads, -1).mean(dim=2)
    torch.testing.assert_close(vision.keys, ref, atol=1e-6, rtol=0)
    sub = vision.rows([1, 0])
    assert torch.equal(sub.cls_feature, vision.cls_feature[[1, 0]]) and torch.equal(sub.keys, vision.keys[[1, 0]])


@pytest.mark.parametrize("method,k", [("downsample", 4), ("visionzip", 6)])
def test_merger_tokens_reach_the_language_model(tiny, images, method, k):
    model, _, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, method, k)
    assert sel.keep is None and sel.tokens is not None and not sel.in_llm
    extra = {"grid_size": vision.grid_size} if method == "downsample" else \
        {"cls_feature": vision.cls_feature, "vision_keys": vision.keys}
    merged = merge(method, vision.features, vision.cls_attention, k, **extra)
    torch.testing.assert_close(sel.tokens, merged.tokens)
    if method == "downsample":  # 4x4 grid -> 2x2 block means, by hand
        grid = vision.features.view(2, 2, 2, 2, 2, -1)  # (B, gy, y, gx, x, d)
        torch.testing.assert_close(sel.tokens, grid.mean(dim=(2, 4)).reshape(2, 4, -1), atol=1e-6, rtol=0)
    else:  # the CLS feature is the first token, counted in the budget
        torch.testing.assert_close(sel.tokens[:, 0], vision.cls_feature, atol=1e-6, rtol=0)
        assert sel.tokens.shape[1] == k and (sel.sources[:, 0] == -1).all()
    out = w.score(QUESTIONS, [("yes", "no")] * 3, vision, sel, image_index=IMAGE_INDEX)
    with torch.no_grad():
        projected = model.model.multi_modal_projector(merged.tokens.clone())
    embeds, mask = _hand_inputs(w, QUESTIONS, [projected[i] for i in IMAGE_INDEX])
    ref = torch.softmax(_hf_logits(model, embeds, mask), dim=-1)
    logits, keep = w.first_token_logits(QUESTIONS, vision, sel, image_index=IMAGE_INDEX)
    torch.testing.assert_close(torch.softmax(logits, dim=-1), ref, atol=1e-5, rtol=0)
    assert torch.equal(keep, merged.sources[IMAGE_INDEX]) and torch.equal(out.keep, keep)
    assert (out.visual_per_layer == merged.tokens.shape[1]).all()


def test_no_visual_tokens_is_the_prompt_without_its_image(tiny, images):
    model, _, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "no_image")
    assert sel.tokens.shape[1] == 0 and sel.k == 0
    with pytest.raises(ValueError, match="^k: method 'no_image' takes no token budget"):
        w.select_tokens(vision, "no_image", 4)
    logits, keep = w.first_token_logits(QUESTIONS, vision, sel, image_index=IMAGE_INDEX)
    assert keep.shape == (3, 0)
    # the reference: LLaVA's text-only prompt, tokenised whole, through transformers' forward
    texts = [w.prompt_format.conversation_without_image(q) for q in QUESTIONS]
    assert all("<image>" not in t and "USER: Is there" in t or "USER: What" in t for t in texts)
    ids = [w.tokenizer(t)["input_ids"] for t in texts]
    t = max(map(len, ids))
    input_ids = torch.full((3, t), w.pad_token_id)
    mask = torch.zeros(3, t, dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, t - len(row):] = torch.tensor(row)
        mask[i, t - len(row):] = 1
    with torch.no_grad():
        embeds = w._decoder.embed_tokens(input_ids)
    torch.testing.assert_close(logits, _hf_logits(model, embeds, mask), atol=1e-4, rtol=1e-5)
    gen = w.generate(QUESTIONS[:2], vision, sel, max_new_tokens=3, eos_token_id=[])
    ref = w.generate(QUESTIONS[:2], vision, sel, max_new_tokens=3, eos_token_id=[], use_cache=False)
    assert gen.token_ids == ref.token_ids and (gen.visual_per_layer == 0).all()


def test_text_conditioned_selector_chooses_per_prompt(tiny, images):
    model, _, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "cdpruner", 5)
    assert sel.per_prompt and sel.keep is None and not sel.in_llm
    with pytest.raises(ValueError, match="^params: questions"):
        w.select_tokens(vision, "cdpruner", 5, questions=["x"])
    _, keep = w.first_token_logits(QUESTIONS, vision, sel, image_index=IMAGE_INDEX)
    assert keep.shape == (3, 5)
    # the reference: the selector called on each prompt's image with its stripped question
    for i, (q, image) in enumerate(zip(QUESTIONS, IMAGE_INDEX)):
        stripped = strip_answer_format(q)
        assert POPE_SUFFIX.strip() not in stripped
        ids = w.tokenizer(stripped, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            emb = w._decoder.embed_tokens(torch.tensor(ids)).float()
            feats = model.model.multi_modal_projector(vision.features[image:image + 1].clone()).float()
        ref = select("cdpruner", feats, vision.cls_attention[image:image + 1], 5, questions=[stripped],
                     question_embeddings=[emb], vision_features=vision.features[image:image + 1].float())
        assert torch.equal(keep[i], ref[0])
    gen = w.generate(QUESTIONS, vision, sel, image_index=IMAGE_INDEX, max_new_tokens=3, eos_token_id=[])
    assert torch.equal(gen.keep, keep)


def test_strip_answer_format():
    assert strip_answer_format(pope_question("Is there a dog?")) == "Is there a dog?"
    assert strip_answer_format("Q?\nA. x\nAnswer with the option's letter from the given choices directly.") == "Q?\nA. x"
    assert strip_answer_format(" Describe. ") == "Describe."


def test_prefill_flops_by_hand():
    # one layer, n = 3, d = 4, d_kv = 2, m = 5: 2*3*16 + 2*3*4*2 + 2*9*4 + 3*3*4*5 = 96 + 48 + 72 + 180 = 396 MACs
    assert layer_macs(3, 4, 2, 5) == 396.0
    assert prefill_flops([3], 4, 2, 5) == 792.0
    # per-layer counts (an in-LLM drop): the layers add up, each with its own n
    got = prefill_flops([[3, 1], [0, 0]], 4, 2, 5)
    one = 2 * 4 * 4 + 2 * 4 * 2 + 2 * 1 * 4 + 3 * 4 * 5
    assert got.tolist() == [2 * (396 + one), 0.0]
    with pytest.raises(ValueError, match="^hidden"):
        prefill_flops([3], 0, 2, 5)


def test_flip_rate_and_wilson_interval():
    rate, low, high = flip_rate([0, 1, 1, 0], [0, 0, 1, 1])
    assert rate == 0.5
    # Wilson 95% for 5 of 20 (z = 1.959964): centre (0.25 + 0.096040) / 1.192073, half-width by hand
    z = 1.959963984540054
    low, high = wilson_interval(5, 20)
    centre, half = 0.25 + z * z / 40, z * math.sqrt(0.25 * 0.75 / 20 + z * z / 1600)
    assert low == pytest.approx((centre - half) / (1 + z * z / 20), abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.1119, 0.4687)  # the published value for 5/20
    assert wilson_interval(0, 300)[0] == 0.0 and wilson_interval(0, 300)[1] == pytest.approx(0.01264, abs=1e-5)
    assert flip_rate(["a cat", "a dog"], ["a cat", "a dog"])[0] == 0.0
    with pytest.raises(ValueError, match="^predictions"):
        flip_rate([0, 1], [0])


def test_engine_records_cost_and_rejects_unreachable_budgets(tmp_path):
    from visprune.engine import Evaluator, RunConfig
    from visprune.engine.profiles import resolve_profile

    ev = Evaluator(resolve_profile("toy", results=tmp_path), progress=False)
    widths = ev.llava.lm_widths
    for method, k in (("none", None), ("no_image", None), ("visionzip", 16), ("fastv", 16)):
        table = ev.run(RunConfig("pope-random", method, k, {}, n_samples=6))
        assert {"lm_tokens", "visual_tokens", "visual_per_layer", "prefill_flops"} <= set(table.columns)
        layers = ev.llava.num_layers
        # without an in-LLM method every layer sees the same tokens
        if method != "fastv":
            expected = prefill_flops(table["lm_tokens"].to_numpy()[:, None].repeat(layers, 1), **widths)
            assert table["prefill_flops"].tolist() == pytest.approx(expected.tolist(), rel=1e-12)
        assert (table["visual_tokens"] == {"none": 144, "no_image": 0, "visionzip": 16, "fastv": 144}[method]).all()
    fastv = ev.run(RunConfig("pope-random", "fastv", 16, {}, n_samples=6))
    assert (fastv["visual_per_layer"] < 144).all() and (fastv["tokens_kept"] == 16).all()
    with pytest.raises(ValueError, match="^k: PyramidDrop cannot average 16"):
        ev.validate(RunConfig("pope-random", "pdrop", 16, {}, n_samples=6))
    with pytest.raises(ValueError, match="^k: method 'no_image' takes no token budget"):
        ev.validate(RunConfig("pope-random", "no_image", 16, {}, n_samples=6))
    with pytest.raises(ValueError, match="^dominant"):
        ev.validate(RunConfig("pope-random", "visionzip", 16, {"dominant": 40}, n_samples=6))
