"""FastV as released, single-token answer sets, DivPrune on the projected tokens (issue 16).

References are independent of the wrapper:

- FastV: transformers' own eager LLaVA forward with ``output_attentions=True`` on the unpruned
  sequence gives the ranking row (last prompt token, inside layer L-1, mean over heads); the
  pruned logits come from transformers' own forward again, with forward pre-hooks on decoder
  layers L.. that drop the unkept visual positions from the hidden states, the mask and the
  rotary embeddings (so the kept tokens keep their original positions);
- answers: a SentencePiece-like tokenizer built by hand with the ``tokenizers`` library (BPE,
  Metaspace pre-tokenizer with prepend_scheme "first", byte fallback) whose words are "▁Yes",
  "▁no", ..., so "Yes" without the space is "Y" + "es"; expected ids are read off its vocabulary;
- DivPrune: ``visprune.pruning.select`` on transformers' own projected tokens
  (``get_image_features``).

Tiny random models (tests/tiny_llava.py), float32 on CPU.
"""

from __future__ import annotations

import inspect
import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlavaProcessor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from tiny_llava import IMAGE_SIZE, NUM_PATCHES, PATCH_SIZE, build_tiny_llava, tiny_images
from visprune.pruning import fastv
from visprune.instrument.llava import PrunedLlava, Selection
from visprune.pruning import spec as method_spec
from visprune.instrument.prompts import answer_variants, conversation, pope_question, scienceqa_question

N = NUM_PATCHES
ATOL = 1e-4
QUESTIONS = [
    pope_question("Is there a cat in the image?"),
    pope_question("Is there a red ball on the big table in the picture?"),
    "What color is the sky?",
]
IMAGE_INDEX = [0, 1, 1]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_llava(vision_feature_layer=-2, seed=1)
    eager, _ = build_tiny_llava(vision_feature_layer=-2, attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    return model, processor, eager, PrunedLlava(model, processor, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def images():
    return tiny_images(2, seed=3)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(1) - 1).clamp_min(0)


def _hf_inputs(processor, images, questions, image_index, generated=None):
    imgs = [images[r] for r in image_index]
    inp = processor(images=imgs, text=[conversation(q) for q in questions], return_tensors="pt", padding=True)
    ids, mask = inp["input_ids"], inp["attention_mask"]
    if generated is not None:
        ids = torch.cat([ids, generated], dim=1)
        mask = torch.cat([mask, torch.ones_like(generated)], dim=1)
    return ids, mask, inp["pixel_values"]


def _hf_ranking_row(eager, processor, images, layer):
    """transformers' own attention probabilities inside decoder ``layer`` (eager), unpruned sequence:
    the last prompt token's row over the visual tokens, mean over heads. (P, N)."""
    ids, mask, pixels = _hf_inputs(processor, images, QUESTIONS, IMAGE_INDEX)
    with torch.no_grad():
        out = eager(input_ids=ids, attention_mask=mask, pixel_values=pixels, position_ids=_positions(mask),
                    output_attentions=True)
    row = out.attentions[layer][:, :, -1, :].mean(dim=1)  # (P, T)
    is_image = ids == eager.config.image_token_id
    return torch.stack([row[i, is_image[i]] for i in range(len(QUESTIONS))])


def _top_k_with_margin(values: torch.Tensor, k: int) -> torch.Tensor:
    """Plain top-K (ascending), after checking that no near-tie sits at the K-th place."""
    ordered = values.sort(dim=1, descending=True).values
    gap = (ordered[:, k - 1] - ordered[:, k]) / ordered[:, k - 1]
    assert bool((gap > 1e-3).all()), "the reference ranking has a near-tie at K; pick another K"
    return values.topk(k, dim=1).indices.sort(dim=1).values


def _hf_fastv_logits(eager, processor, images, keep, layer, generated=None):
    """transformers' forward with the unkept visual positions dropped before decoder ``layer``.

    Pre-hooks on layers >= ``layer`` gather the kept positions of the hidden states (once, at
    ``layer``), of the 4-D mask and of the rotary (cos, sin): the kept tokens keep their
    original positions. Returns the logits (P, V) at the last position.
    """
    ids, mask, pixels = _hf_inputs(processor, images, QUESTIONS, IMAGE_INDEX, generated)
    t = ids.shape[1]
    index = []
    for i in range(len(QUESTIONS)):
        visual = (ids[i] == eager.config.image_token_id).nonzero()[:, 0]
        dropped = visual[~torch.isin(torch.arange(N), keep[i])]
        index.append(torch.tensor([j for j in range(t) if j not in set(dropped.tolist())]))
    index = torch.stack(index)  # (P, T')

    def rows(x):  # gather the sequence axis (dim 1) of a (P, T, ...) tensor
        return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        if hidden.shape[1] == t:
            hidden = rows(hidden)
        bias = kwargs["attention_mask"]  # (P, 1, T, T)
        assert bias is not None and bias.shape[-1] == t
        bias = rows(bias.transpose(1, 2)).transpose(1, 2)  # query rows
        bias = bias.gather(3, index[:, None, None, :].expand(-1, bias.shape[1], bias.shape[2], -1))  # key columns
        kwargs["attention_mask"] = bias
        kwargs["position_embeddings"] = tuple(rows(x) for x in kwargs["position_embeddings"])
        kwargs["position_ids"] = rows(kwargs["position_ids"])
        return (hidden, *args[1:]), kwargs

    handles = [
        eager.model.language_model.layers[i].register_forward_pre_hook(hook, with_kwargs=True)
        for i in range(layer, len(eager.model.language_model.layers))
    ]
    try:
        with torch.no_grad():
            out = eager(input_ids=ids, attention_mask=mask, pixel_values=pixels, position_ids=_positions(mask))
    finally:
        for h in handles:
            h.remove()
    return out.logits[:, -1]


# ------------------------------------------------------------------ FastV as released


@pytest.mark.parametrize("layer, k", [(1, 5), (2, 6), (3, 3)])
def test_fastv_ranks_inside_previous_layer_and_drops_before_layer_l(tiny, images, layer, k):
    model, processor, eager, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "fastv", k=k, layer=layer)  # the default ranking: "previous"
    assert sel.params == {"layer": layer, "ranking": "previous"}
    logits, keep = w.first_token_logits(QUESTIONS, vision, sel, IMAGE_INDEX)
    expected = _top_k_with_margin(_hf_ranking_row(eager, processor, images, layer - 1), k)
    assert torch.equal(keep, expected)
    ref = _hf_fastv_logits(eager, processor, images, expected, layer)
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    unpruned, _ = w.first_token_logits(QUESTIONS, vision, None, IMAGE_INDEX)
    assert (logits - unpruned).abs().max() > 1e-3  # the drop changed the logits: the check has teeth


def test_previous_and_same_rankings_differ(tiny, images):
    """On random weights the released ranking (layer L-1) and the same-layer one choose differently."""
    _, processor, eager, w = tiny
    vision = w.encode_images(images)
    k, layer = 6, 2
    prev = w.first_token_logits(QUESTIONS, vision, w.select_tokens(vision, "fastv", k=k, layer=layer), IMAGE_INDEX)
    same_sel = w.select_tokens(vision, "fastv", k=k, layer=layer, ranking="same")
    same = w.first_token_logits(QUESTIONS, vision, same_sel, IMAGE_INDEX)
    assert torch.equal(same[1], _top_k_with_margin(_hf_ranking_row(eager, processor, images, layer), k))
    assert not torch.equal(prev[1], same[1])
    assert (prev[0] - same[0]).abs().max() > 1e-3


@pytest.mark.parametrize("layer, k", [(1, 5), (3, 4)])
def test_fastv_generation_equals_hooked_transformers_greedy(tiny, images, layer, k):
    """Cached greedy decoding under FastV equals transformers' full forward at every step with the
    prompt's kept tokens dropped before layer L (and equals the wrapper's own recomputation)."""
    _, processor, eager, w = tiny
    vision = w.encode_images(images)
    sel = w.select_tokens(vision, "fastv", k=k, layer=layer)
    steps = 4
    out = w.generate(QUESTIONS, vision, sel, IMAGE_INDEX, max_new_tokens=steps, eos_token_id=[])
    scratch = w.generate(QUESTIONS, vision, sel, IMAGE_INDEX, max_new_tokens=steps, eos_token_id=[], use_cache=False)
    assert out.token_ids == scratch.token_ids and torch.equal(out.keep, scratch.keep)
    keep = _top_k_with_margin(_hf_ranking_row(eager, processor, images, layer - 1), k)
    assert torch.equal(out.keep, keep)
    generated = torch.zeros(len(QUESTIONS), 0, dtype=torch.long)
    for _ in range(steps):
        logits = _hf_fastv_logits(eager, processor, images, keep, layer, generated=generated)
        top2 = logits.topk(2, dim=-1).values
        assert bool(((top2[:, 0] - top2[:, 1]) > 1e-3).all()), "near-tie in the greedy reference"
        generated = torch.cat([generated, logits.argmax(dim=-1, keepdim=True)], dim=1)
    assert out.token_ids == generated.tolist()


def test_fastv_params_declares_and_validates():
    signature = inspect.signature(fastv.fastv_params)
    declared = {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert declared == {"layer": 2, "ranking": "previous", "n_layers": None}
    assert fastv.param_names() == ("layer", "ranking")
    assert fastv.fastv_params() == {"layer": 2, "ranking": "previous"}
    assert fastv.fastv_params(layer=0, ranking="same", n_layers=4) == {"layer": 0, "ranking": "same"}
    assert fastv.fastv_params(layer=3, n_layers=4) == {"layer": 3, "ranking": "previous"}
    with pytest.raises(ValueError, match=r"layer.*ranking='same'"):
        fastv.fastv_params(layer=0)  # "previous" has no layer -1
    for bad in (True, 1.0, "2"):
        with pytest.raises(ValueError, match="layer"):
            fastv.fastv_params(layer=bad)
    with pytest.raises(ValueError, match="layer"):
        fastv.fastv_params(layer=4, n_layers=4)
    with pytest.raises(ValueError, match="ranking"):
        fastv.fastv_params(ranking="next")
    with pytest.raises(ValueError, match="n_layers"):
        fastv.fastv_params(n_layers=True)


def test_wrapper_goes_through_fastv_params(tiny, images):
    _, _, _, w = tiny
    vision = w.encode_images(images)
    assert w.select_tokens(vision, "fastv", k=3).params == fastv.fastv_params()
    with pytest.raises(ValueError, match="layer"):
        w.select_tokens(vision, "fastv", k=3, layer=True)
    with pytest.raises(ValueError, match="layer"):
        w.select_tokens(vision, "fastv", k=3, layer=0)
    with pytest.raises(ValueError, match="params"):
        w.select_tokens(vision, "fastv", k=3, heads=2)
    with pytest.raises(ValueError, match="feature_space"):
        w.select_tokens(vision, "fastv", k=3, feature_space="vision")
    # a hand-built Selection is completed with the defaults; a contradictory one is rejected
    by_hand = w.score(QUESTIONS, ("yes", "no"), vision, Selection("fastv", 4, None, {"layer": 2}), IMAGE_INDEX)
    built = w.score(QUESTIONS, ("yes", "no"), vision, w.select_tokens(vision, "fastv", k=4), IMAGE_INDEX)
    assert torch.equal(by_hand.keep, built.keep) and torch.equal(by_hand.probs, built.probs)
    with pytest.raises(ValueError, match="layer"):  # a hand-built selection is checked like select_tokens' own
        w.score(QUESTIONS, ("yes", "no"), vision, Selection("fastv", 4, None, {"layer": 0}), IMAGE_INDEX)
    with pytest.raises(ValueError, match="params"):
        w.score(QUESTIONS, ("yes", "no"), vision, Selection("fastv", 4, None, {"heads": 2}), IMAGE_INDEX)


# ------------------------------------------------------------------ the tie rule


def _ulps(x: float, n: int) -> float:
    """``x`` moved by ``n`` float32 ulps."""
    t = torch.tensor(x, dtype=torch.float32)
    step = torch.tensor(float("inf") if n > 0 else float("-inf"), dtype=torch.float32)
    for _ in range(abs(n)):
        t = torch.nextafter(t, step)
    return float(t)


def test_near_ties_go_to_the_lower_index_hand_built():
    start = torch.tensor([1])
    # slots 1..4 are the visual tokens: [0.2, 0.5, 0.5 + 3 ulps, 0.1]; K = 1
    row = torch.tensor([[0.9, 0.2, 0.5, _ulps(0.5, 3), 0.1]])
    assert fastv.top_visual_tokens(row, start, 4, 1).tolist() == [[1]]  # lower index wins the near-tie
    assert row[0, 1:].topk(1).indices.tolist() == [2]  # plain top-K would take the 3-ulp larger one
    row[0, 3] = 0.5 * (1 + 1e-3)  # a real difference decides
    assert fastv.top_visual_tokens(row, start, 4, 1).tolist() == [[2]]
    exact = torch.tensor([[0.3, 0.3, 0.3, 0.1]])
    assert fastv.top_visual_tokens(exact, torch.tensor([0]), 4, 2).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="k"):
        fastv.top_visual_tokens(exact, torch.tensor([0]), 4, True)


def test_tie_rule_against_clustered_reference():
    """Clusters of values a few ulps apart, clusters far apart: the choice is cluster order first,
    lower index within a cluster, whatever the ulps (an independent statement of the rule)."""
    gen = torch.Generator().manual_seed(0)
    n, k = 40, 13
    for trial in range(20):
        cluster = torch.randint(0, 6, (n,), generator=gen)
        base = 0.01 * 1.5 ** cluster.double()  # clusters differ by 50%
        shift = torch.randint(-8, 9, (n,), generator=gen)
        values = torch.tensor([_ulps(float(b), int(s)) for b, s in zip(base, shift)], dtype=torch.float32)
        order = sorted(range(n), key=lambda i: (-int(cluster[i]), i))
        expected = sorted(order[:k])
        got = fastv.top_visual_tokens(values[None], torch.tensor([0]), n, k)
        assert got.tolist() == [expected], trial


# ------------------------------------------------------------------ answer sets


def _sentencepiece_like_tokenizer() -> PreTrainedTokenizerFast:
    """BPE + Metaspace (prepend_scheme "first", as Llama's): words "▁Yes", "▁yes", "▁no", "▁No",
    "▁A", "▁B", "▁C", "▁a" and the piece "es"; any other text falls apart into characters.

    The special tokens take the same ids as tests/tiny_llava.py's, so the tiny model accepts it.
    """
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "<image>"])}
    for c in ["▁", *(c for c in string.printable if c not in " \t\r\x0b\x0c")]:
        vocab.setdefault(c, len(vocab))
    merges = []
    for word in ["▁Yes", "▁yes", "▁no", "▁No", "▁A", "▁B", "▁C", "▁a", "es"]:
        piece = word[0]
        for ch in word[1:]:
            merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        padding_side="left", extra_special_tokens={"image_token": "<image>"},
    )


@pytest.fixture(scope="module")
def sp_llava(tiny):
    model = tiny[0]
    tok = _sentencepiece_like_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return tok, PrunedLlava(model, processor, device="cpu", dtype=torch.float32)


def test_sentencepiece_like_tokenizer_splits_as_designed(sp_llava):
    tok, _ = sp_llava
    pieces = lambda text: tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert pieces("ASSISTANT:Yes")[-2:] == ["Y", "es"]
    assert pieces("ASSISTANT: Yes")[-1] == "▁Yes"
    assert pieces("ASSISTANT:No")[-2:] == ["N", "o"]
    assert pieces("ASSISTANT: a")[-1] == "▁a"
    assert len(tok) <= 320  # fits the tiny model's embedding


def test_only_single_token_variants_count(sp_llava):
    tok, w = sp_llava
    ids = tok.convert_tokens_to_ids
    # "yes": only " yes" and " Yes" are single tokens; "Yes" -> "Y" + "es" must not count "Y"
    assert w.answer_token_ids("yes") == ids(["▁yes", "▁Yes"])
    assert w.answer_token_ids("no") == ids(["▁no", "▁No"])
    for first_piece in ("Y", "y", "N", "n", "▁"):
        assert ids(first_piece) not in w.answer_token_ids("yes") + w.answer_token_ids("no")
    # letters: "A" and " A" only; the article "▁a" and "a" never count toward "A"
    assert answer_variants("A") == ["A", " A"]
    assert w.answer_token_ids("A") == ids(["A", "▁A"])
    assert ids("▁a") not in w.answer_token_ids("A") and ids("a") not in w.answer_token_ids("A")
    assert w.answer_token_ids("D") == ids(["D"])  # " D" is "▁" + "D": two tokens, left out


def test_score_records_answer_ids_and_sums_their_mass(sp_llava, images):
    tok, w = sp_llava
    vision = w.encode_images(images)
    questions = [QUESTIONS[0], scienceqa_question("Which color?", ["red", "blue", "green"])]
    sets = [("yes", "no"), ("A", "B", "C")]
    out = w.score(questions, sets, vision, None, [0, 1])
    ids = tok.convert_tokens_to_ids
    expected = [
        [ids(["▁yes", "▁Yes"]), ids(["▁no", "▁No"])],
        [ids(["A", "▁A"]), ids(["B", "▁B"]), ids(["C", "▁C"])],
    ]
    assert out.answer_ids == expected
    logits, _ = w.first_token_logits(questions, vision, None, [0, 1])
    p = torch.softmax(logits.double(), dim=-1)
    for i, per_answer in enumerate(expected):
        mass = torch.stack([p[i, a].sum() for a in per_answer])
        torch.testing.assert_close(out.probs[i, : len(mass)].double(), mass / mass.sum(), atol=1e-6, rtol=0)
        torch.testing.assert_close(out.answer_mass[i].double(), mass.sum(), atol=1e-7, rtol=1e-5)
    # counting the first piece of split variants ("Y", "y", "N", "n") would have changed the mass
    split = p[0, ids(["Y", "y", "N", "n"])].sum()
    assert float(split) > 1e-4


def test_answer_without_single_token_variant_is_rejected(sp_llava, images):
    _, w = sp_llava
    vision = w.encode_images(images)
    with pytest.raises(ValueError, match=r"'maybe'.*tokenizer"):
        w.score([QUESTIONS[0]], ("yes", "maybe"), vision.rows([0]))


def test_word_level_letters_record_upper_case_only(tiny, images):
    _, processor, _, w = tiny
    tok = processor.tokenizer
    vision = w.encode_images(images)
    out = w.score([scienceqa_question("Which shape?", ["ball", "tree"])], ("A", "B"), vision.rows([0]))
    assert out.answer_ids == [[[tok.convert_tokens_to_ids("A")], [tok.convert_tokens_to_ids("B")]]]
    assert tok.convert_tokens_to_ids("a") != tok.unk_token_id  # "a" is a word here, and still not counted


# ------------------------------------------------------------------ DivPrune's feature space


def test_feature_space_defaults():
    assert method_spec("divprune").feature_space == "projected"
    assert method_spec("divprune").parameters["feature_space"] == "projected"
    for method in ("random", "saliency", "scope", "adaptive"):
        assert method_spec(method).feature_space == "vision"
    for method in ("fastv", "none"):
        assert "feature_space" not in method_spec(method).parameters


def test_divprune_defaults_to_the_projected_tokens(tiny, images, monkeypatch):
    from visprune import pruning

    model, processor, _, w = tiny
    vision = w.encode_images(images)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        projected = torch.stack(list(model.model.get_image_features(pixel_values=pixels).pooler_output))  # (B, N, d)
    k = 5
    seen = []
    real_select = pruning.select
    def spy(method, features, *args, **kwargs):
        seen.append(features)
        return real_select(method, features, *args, **kwargs)

    monkeypatch.setattr(pruning, "select", spy)
    sel = w.select_tokens(vision, "divprune", k=k)
    monkeypatch.undo()
    assert sel.params["feature_space"] == "projected"
    assert len(seen) == 1 and seen[0].shape == projected.shape
    torch.testing.assert_close(seen[0], projected, atol=1e-5, rtol=0)
    assert torch.equal(sel.keep, pruning.select("divprune", projected, vision.cls_attention, k))
    on_vision = w.select_tokens(vision, "divprune", k=k, feature_space="vision")
    assert on_vision.params["feature_space"] == "vision"
    assert torch.equal(on_vision.keep, pruning.select("divprune", vision.features, vision.cls_attention, k))
    assert not torch.equal(sel.keep, on_vision.keep)  # the feature space changes the choice
    scope = w.select_tokens(vision, "scope", k=k)
    assert scope.params["feature_space"] == "vision"
    with pytest.raises(ValueError, match="feature_space"):
        w.select_tokens(vision, "divprune", k=k, feature_space="pixels")


# ------------------------------------------------------------------ low answer-set mass warning


def _records(masses_by_run):
    import pandas as pd

    rows = []
    for run, masses in masses_by_run.items():
        for i, mass in enumerate(masses):
            p = 0.7 if i % 2 else 0.4
            rows.append({"dataset": "pope-random", "run": run, "status": "ok", "answers": ["yes", "no"],
                         "label": i % 2, "probs": [p, 1 - p], "confidence": max(p, 1 - p),
                         "prediction": 0 if p > 0.5 else 1, "correct": (0 if p > 0.5 else 1) == i % 2,
                         "answer_mass": mass})
    return pd.DataFrame(rows)


def test_summarize_warns_below_half_the_mass_naming_the_run():
    import warnings

    from visprune.engine import LowAnswerMassWarning, answer_mass_warning, summarize

    low = _records({"scope k=16": [0.2, 0.3, 0.6, 0.1]})    # mean 0.30
    with pytest.warns(LowAnswerMassWarning, match=r"pope-random scope k=16 \(0\.30\)"):
        summarize(low)
    fine = _records({"none": [0.5, 0.5, 0.6, 0.4]})         # mean exactly 0.5: not below
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowAnswerMassWarning)
        summarize(fine)
    both = _records({"none": [0.9] * 4, "random k=8": [0.1] * 4})
    message = answer_mass_warning(both)
    assert "random k=8" in message and "none" not in message.split(":")[0]


def test_grid_warns_for_a_checkpoint_whose_prompt_does_not_match(tmp_path):
    """A toy checkpoint declared with a foreign prompt format (another system sentence and
    role names): the engine runs it, and the grid warns because the model no longer puts its
    first-token mass on the answers."""
    import json
    import shutil

    from visprune.engine import Evaluator, LowAnswerMassWarning, RunConfig
    from visprune.engine.profiles import resolve_profile

    toy = resolve_profile("toy")
    model = tmp_path / "toy-llava-foreign"
    shutil.copytree(toy.model, model)
    (model / "prompt_format.json").write_text(json.dumps({
        "name": "foreign", "system": "You are a pirate.", "template": "{system} Q: {image} {question} A: ..."}))
    ev = Evaluator(resolve_profile("toy", model=model, results=tmp_path / "results"), device="cpu",
                   progress=False)
    with pytest.warns(LowAnswerMassWarning, match="pope-random none"):
        ev.grid([RunConfig("pope-random", "none", n_samples=8)])
