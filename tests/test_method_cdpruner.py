"""CDPruner (ALGORITHMS.md, "CDPruner"; Zhang et al., NeurIPS 2025) against independent references.

- A NumPy float64 re-implementation written from ALGORITHMS.md with explicit loops: relevance
  ``-mean cos`` token by token, min-max normalised; the kernel ``diag(r) S diag(r)``; greedy MAP
  by the *definition* (each step, every candidate's Schur complement ``L_ii - L_iY L_YY^-1 L_Yi``
  by a linear solve, not the library's incremental Cholesky update), the same near-tie rule
  (the lowest index within ``4 sqrt(d) eps * max_i L_ii`` of the largest) and the same
  exhaustion rule. Compared at LLaVA-1.5 shapes (N = 576, d = 4096, K = 64/128/192) and toy ones
  (N = 144, K = 16/32/48), exactly in float64 mode and in float32 wherever no candidate lies
  within float32 rounding of the tie boundary.
- A transcription of the released function (``llava/model/llava_arch.py``,
  ``LlavaMetaForCausalLM.encode_images``, torch, float32, plain argmax): every disagreement must be
  a near-tie that the rounding-robust rule decides.
- Hand-computed relevance; a tiny random CLIP checkpoint (text tower, 77-token segments); bad
  input; a rounding-level perturbation.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from visprune.pruning import select, spec
from visprune.pruning import cdpruner as cdp
from visprune.pruning.cdpruner import cdpruner_relevance, cdpruner_select, dpp_greedy_map

EPS32, EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------
# The independent reference (NumPy float64)


def tie_tol(eps: float, d: int) -> float:
    """ALGORITHMS.md's rounding threshold 4 sqrt(d) eps, as a float32 number (the project's rule)."""
    return float(np.float32(4.0 * math.sqrt(d) * eps))


def ref_relevance(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """``r_i = -mean_m cos(image_i, text_m)``, then ``(r - min + 1e-6) / (max - min)``; loops."""
    n, m = image.shape[0], text.shape[0]
    raw = np.empty(n)
    for i in range(n):
        total = 0.0
        for t in range(m):
            total += float(image[i] @ text[t]) / (np.linalg.norm(image[i]) * np.linalg.norm(text[t]))
        raw[i] = -total / m
    low, high = raw.min(), raw.max()
    return (raw - low + 1e-6) / (high - low)


def ref_kernel(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return r[:, None] * (unit @ unit.T) * r[None, :]


def schur_d2(kernel: np.ndarray, picked: list[int]) -> np.ndarray:
    """Every token's ``L_ii - L_iY L_YY^-1 L_Yi`` (the det gain of adding it to Y); picked = -inf."""
    d2 = np.diag(kernel).copy()
    if picked:
        block = kernel[picked, :]  # (|Y|, N)
        d2 -= np.einsum("yn,yn->n", block, np.linalg.solve(kernel[np.ix_(picked, picked)], block))
    d2[picked] = -np.inf
    return d2


def first_within(values: np.ndarray, tol: float) -> int:
    best = max(values)
    for i, v in enumerate(values):
        if v >= best - tol:
            return i
    raise AssertionError("unreachable")


def ref_greedy(kernel: np.ndarray, r: np.ndarray, k: int, tol_rel: float, tol_r: float):
    """Greedy MAP by the definition; returns (picks in order, DPP picks, ambiguity per step).

    ``tol = tol_rel * max_i L_ii``; a step whose largest d2 is <= tol stops the DPP (the rest by
    relevance). The ambiguity of a step is how close any other candidate's gap ``best - d2_c`` (or
    the best d2 itself, for the exhaustion test) comes to ``tol``: a computation that rounds d2 by less
    than that makes the same pick.
    """
    tol = tol_rel * float(np.max(np.diag(kernel)))
    picks, ambiguity, dpp = [], [], None
    for step in range(k):
        if dpp is None:
            d2 = schur_d2(kernel, picks)
            best = float(np.max(d2))
            others = d2[np.isfinite(d2) & (np.arange(len(d2)) != np.argmax(d2))]
            gaps = np.abs(best - others - tol) if others.size else np.array([np.inf])
            ambiguity.append(min(float(np.min(gaps)), abs(best - tol)))
            if best <= tol:
                dpp = step
        if dpp is None:
            picks.append(first_within(d2, tol))
        else:
            rest = np.where(np.isin(np.arange(len(r)), picks), -np.inf, r)
            picks.append(first_within(rest, tol_r))
    return picks, (k if dpp is None else dpp), np.array(ambiguity)


def released_cdpruner(image_features, image_embeds, text_embeds, visual_token_num):
    """The released ``encode_images`` after the projector, transcribed (one prompt: B = 1 image);
    returns the picks in pick order (the released code sorts them afterwards)."""
    B, N, C = image_features.shape
    device = image_features.device
    image_normalized = image_features / image_features.norm(dim=-1, keepdim=True)  # (B, N, D)
    image_normalized = image_normalized.float()  # (B, N, D)
    similarity = torch.matmul(image_normalized, image_normalized.transpose(1, 2))  # (B, N, N)
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)  # (B, N, C)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)  # (M, C)
    relevance = torch.matmul(image_embeds, text_embeds.t())  # (B, N, M)
    relevance = (-relevance).mean(dim=-1)  # (B, N)
    relevance = (relevance - relevance.min() + 1e-6) / (relevance.max() - relevance.min())  # (B, N)
    kernel = relevance.unsqueeze(2) * similarity * relevance.unsqueeze(1)  # (B, N, N)
    cis = torch.zeros((visual_token_num, B, N), device=device)  # (T, B, N)
    di2s = torch.diagonal(kernel, dim1=1, dim2=2).clone()  # (B, N)
    select_idx = torch.empty((visual_token_num, B), dtype=torch.long, device=device)  # (T, B)
    for i in range(visual_token_num):
        j = torch.argmax(di2s, dim=-1)
        select_idx[i] = j
        eis = (kernel[torch.arange(B), j] - torch.einsum('tb,tbn->bn', cis[:i, torch.arange(B), j], cis[:i])) \
            / torch.sqrt(di2s[torch.arange(B), j]).unsqueeze(-1)
        cis[i, :, :] = eis
        di2s -= torch.square(eis)
        di2s[torch.arange(B), j] = -float('inf')
    return select_idx.t()


def llava_like_inputs(seed: int, p: int, n: int, d: int, t: int = 12):
    """Random projected tokens (P, N, d) float32 and P question embeddings (T, d) that lean towards
    a few tokens (so that relevance has structure), float32."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(p, n, d, generator=g)
    questions = [torch.randn(t, d, generator=g) + feats[i, torch.randint(0, n, (4,), generator=g)].mean(0)
                 for i in range(p)]
    return feats, questions


def reference_picks(feats: torch.Tensor, questions, k: int, eps: float):
    """The reference on the same numbers as the library (float32 inputs read as float64)."""
    out = []
    for i in range(feats.shape[0]):
        x, q = feats[i].double().numpy(), questions[i].double().numpy()
        r = ref_relevance(x, q)
        d = x.shape[1]
        out.append(ref_greedy(ref_kernel(x, r), r, k, tie_tol(eps, d), tie_tol(eps, d)))
    return out


# ----------------------------------------------------------------------------------------------
# Selections


@pytest.mark.parametrize("n, d, budgets", [(576, 4096, (64, 128, 192)), (144, 256, (16, 32, 48))])
def test_float64_selection_equals_the_reference(n, d, budgets):
    """Float64 features: float64 arithmetic, and the same picks as the definition, at every budget."""
    feats, questions = llava_like_inputs(7, 2, n, d)
    kmax = max(budgets)
    refs = reference_picks(feats, questions, kmax, EPS64)
    for picks, dpp, ambiguity in refs:
        assert dpp == kmax
        assert ambiguity.min() > 1e-9  # no near-tie: the tie rule does not decide this test
    f64, q64 = feats.double(), [q.double() for q in questions]
    order, info = cdpruner_select(f64, None, kmax, questions=["a", "b"], question_embeddings=q64)
    assert order.tolist() == [picks for picks, _, _ in refs]  # the same picks in the same order
    assert info["dpp_picks"].tolist() == [kmax, kmax]
    for k in budgets:  # through the registry: sorted rows, K tokens; greedy picks are prefixes
        got = select("cdpruner", f64, torch.ones(2, n), k, questions=["a", "b"], question_embeddings=q64)
        assert got.tolist() == [sorted(picks[:k]) for picks, _, _ in refs]


def test_float32_selection_equals_the_reference_away_from_the_tie_boundary():
    """Float32 (the production path): the reference with the float32 tolerance predicts every pick
    until a candidate lies within float32 rounding of the tie boundary (the library's float32 d2
    differ from float64 by at most 1e-6 at these shapes, measured; 2e-6 is the margin required)."""
    n, d, k = 576, 4096, 192
    feats, questions = llava_like_inputs(11, 1, n, d)
    (picks, dpp, ambiguity), = reference_picks(feats, questions, k, EPS32)
    order, _ = cdpruner_select(feats, None, k, questions=["q"], question_embeddings=questions)
    close = np.nonzero(ambiguity < 2e-6)[0]
    upto = int(close[0]) if close.size else k
    assert upto == k  # this input has no candidate that close to the boundary at any step
    assert order[0].tolist() == picks


def test_disagreements_with_the_released_function_are_near_ties():
    """The released function (float32, plain argmax) against the library: the same K tokens, or a
    first divergence at a step where the two picks' d2 are within the tie tolerance (the library
    then takes the lower index)."""
    n, d, k = 576, 4096, 192
    tol = tie_tol(EPS32, d)
    same, overlap = {64: 0, 128: 0, 192: 0}, {64: [], 128: [], 192: []}
    for seed in range(4):
        feats, questions = llava_like_inputs(100 + seed, 1, n, d)
        ours = cdpruner_select(feats, None, k, questions=["q"], question_embeddings=questions)[0][0].tolist()
        theirs = released_cdpruner(feats, feats, questions[0], k)[0].tolist()
        for budget in same:
            same[budget] += set(ours[:budget]) == set(theirs[:budget])
            overlap[budget].append(len(set(ours[:budget]) & set(theirs[:budget])) / budget)
        if ours != theirs:
            step = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
            x = feats[0].double().numpy()
            r = ref_relevance(x, questions[0].double().numpy())
            kernel = ref_kernel(x, r)
            d2 = schur_d2(kernel, ours[:step])
            assert abs(d2[ours[step]] - d2[theirs[step]]) <= tol * np.max(np.diag(kernel)) + 1e-5
            assert ours[step] < theirs[step]
    print("identical K-token sets with the released function (of 4):", same,
          "mean overlap:", {b: float(np.mean(v)) for b, v in overlap.items()})
    assert same[64] >= 3  # near-ties are rare: most selections are identical


def test_rounding_level_perturbation_leaves_the_selection_unchanged():
    """features * (1 + 1e-7 noise), with duplicated tokens (exact ties in exact arithmetic): the same
    picks. Plain argmax (tolerance 0) on the same kernels does change them, so the test can fail."""
    n, d, k = 576, 4096, 192
    feats, questions = llava_like_inputs(3, 2, n, d)
    g = torch.Generator().manual_seed(4)
    copies = torch.randperm(n, generator=g)[:160]
    feats[:, copies[80:]] = feats[:, copies[:80]]  # 80 tokens duplicate 80 others
    noisy = feats * (1 + 1e-7 * torch.randn(feats.shape, generator=g))
    q = dict(questions=["a", "b"], question_embeddings=questions)
    base, _ = cdpruner_select(feats, None, k, **q)
    moved, _ = cdpruner_select(noisy, None, k, **q)
    assert torch.equal(base, moved)
    plain = []
    for f in (feats, noisy):
        r = cdpruner_relevance(f, **q)
        plain.append(dpp_greedy_map(cdp.cdpruner_kernel(f, r), k, 0.0, r)[0])
    assert not torch.equal(plain[0], plain[1])


def test_exhaustion_fills_with_the_most_relevant_tokens():
    """Rank-2 features: after 2 picks every d2 is rounding noise; the rest go by relevance."""
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(1)
        feats = (torch.randn(1, 10, 2, generator=g) @ torch.randn(2, 8, generator=g)).to(dtype)
        q = [torch.randn(3, 8, generator=g).to(dtype)]
        order, info = cdpruner_select(feats, None, 5, questions=["q"], question_embeddings=q)
        assert info["dpp_picks"].tolist() == [2]
        x = feats[0].double().numpy()
        r = ref_relevance(x, q[0].double().numpy())
        kernel = ref_kernel(x, r)
        first = schur_d2(kernel, []).argmax()
        assert order[0, 0] == first and order[0, 1] == schur_d2(kernel, [int(first)]).argmax()
        rest = [i for i in np.argsort(-r, kind="stable") if i not in order[0, :2].tolist()][:3]
        assert order[0, 2:].tolist() == rest


# ----------------------------------------------------------------------------------------------
# Relevance


def test_fallback_relevance_by_hand():
    """N = 3, d = 2, two question tokens: ``r_i = -mean cos``, min-max with 1e-6; the most
    question-similar token gets the LOWEST relevance (the released sign)."""
    feats = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]], dtype=torch.float64)
    q = [torch.tensor([[1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)]
    s5, s2 = math.sqrt(5), math.sqrt(2)
    raw = [-(1 + 2 / s5) / 2, -(0 + 1 / s5) / 2, -(1 / s2 + 3 / (s2 * s5)) / 2]
    low, high = min(raw), max(raw)
    expected = [(v - low + 1e-6) / (high - low) for v in raw]
    r = cdpruner_relevance(feats, questions=["q"], question_embeddings=q)[0]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-12, atol=0)
    assert r.argmin() == 0 and r.argmax() == 1  # token 0 is the question's direction
    assert r[0] == pytest.approx(1e-6 / (high - low), rel=1e-9)
    # K = 2 by hand: token 1 first (largest r^2); then d2_i = r_i^2 (1 - S_1i^2): token 2 (S = 1/sqrt 2)
    assert select("cdpruner", feats, torch.ones(1, 3), 2, questions=["q"], question_embeddings=q).tolist() == [[1, 2]]


def test_constant_relevance_is_the_plain_dpp():
    """A question without tokens (fallback): relevance is constant, r = 1 (the released formula
    would divide by 0), so the kernel is S itself."""
    feats, _ = llava_like_inputs(5, 1, 64, 32)
    r = cdpruner_relevance(feats, questions=[""], question_embeddings=[torch.zeros(0, 32)])
    assert torch.equal(r, torch.ones(1, 64))
    got = select("cdpruner", feats.double(), torch.ones(1, 64), 10, questions=[""],
                 question_embeddings=[torch.zeros(0, 32, dtype=torch.float64)])
    x = feats[0].double().numpy()
    picks, _, _ = ref_greedy(ref_kernel(x, np.ones(64)), np.ones(64), 10, tie_tol(EPS64, 32), 0.0)
    assert got[0].tolist() == sorted(picks)


# ----------------------------------------------------------------------------------------------
# The CLIP text tower


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-to-character table (the base alphabet of its BPE vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIPModel and a CLIP tokenizer with a hand-written vocabulary, saved offline."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = [("t", "h</w>"), ("a", "t</w>"), ("o", "r</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _clip_relevance_by_hand(path, questions, vision):
    """E and t straight from the loaded CLIP model: each 77-token segment encoded on its own."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    out, segments = [], []
    with torch.no_grad():
        for p, question in enumerate(questions):
            ids = tokenizer(question)["input_ids"]  # [BOS, ..., EOS], no truncation
            rows = []
            for start in range(0, len(ids), 77):
                seg = ids[start:start + 77]
                pad = 77 - len(seg)
                emb = model.get_text_features(input_ids=torch.tensor([seg + [0] * pad]),
                                              attention_mask=torch.tensor([[1] * len(seg) + [0] * pad]))
                rows.append((emb if isinstance(emb, torch.Tensor) else emb.pooler_output)[0])
            segments.append(len(rows))
            image = model.visual_projection(model.vision_model.post_layernorm(vision[p]))  # (N, c)
            out.append(ref_relevance(image.double().numpy(), torch.stack(rows).double().numpy()))
    return np.stack(out), segments


def test_clip_text_tower_relevance_and_selection(clip_dir):
    n, d = 16, 32
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, n, d, generator=g, dtype=torch.float64)
    vision = torch.randn(2, n, 24, generator=g)
    questions = ["What color is the cat?",
                 " ".join(["is there a tractor or a horse in the photo near the other one"] * 4)]
    expected, segments = _clip_relevance_by_hand(clip_dir, questions, vision)
    assert segments == [1, 3]  # the long question spans three 77-token segments
    q = dict(text_tower=str(clip_dir), questions=questions, question_embeddings=None, vision_features=vision)
    r = cdpruner_relevance(feats, **q)
    np.testing.assert_allclose(r.numpy(), expected, atol=1e-5, rtol=0)
    truncated, _ = _clip_relevance_by_hand(clip_dir, [questions[1][:60]], vision[1:])
    assert np.abs(truncated[0] - expected[1]).max() > 1e-2  # segmenting matters: not a truncation
    assert cdp.load_text_tower(clip_dir) is cdp.load_text_tower(str(clip_dir))  # loaded once, cached
    got = select("cdpruner", feats, torch.ones(2, n), 6, **q)
    for p in range(2):
        x = feats[p].numpy()
        picks, _, ambiguity = ref_greedy(ref_kernel(x, expected[p]), expected[p], 6, tie_tol(EPS64, d), 0.0)
        assert ambiguity.min() > 1e-3  # far from any tie: the CLIP path's float32 rounding cannot decide
        assert got[p].tolist() == sorted(picks)
    assert spec("cdpruner").display({"text_tower": str(clip_dir)}) == "CDPruner"


# ----------------------------------------------------------------------------------------------
# The registry entry and bad input


def test_spec():
    s = spec("cdpruner")
    assert s.stage == "pre-llm" and s.feature_space == "projected" and s.per_prompt
    assert s.inputs == ("questions", "question_embeddings", "vision_features")
    assert s.parameters == {"text_tower": None, "feature_space": "projected"}
    assert s.display() == "CDPruner (LM-embedding relevance)"
    assert s.convention == "K tokens enter the language model"
    n, k, d = 576, 64, 4096
    assert s.selector_flops(n, k, d) == 2 * n * n * d + 3 * n * d + 2 * n * n + n * k * (k - 1) + 4 * n * k


def test_bad_input(clip_dir, tmp_path, monkeypatch):
    feats, questions = llava_like_inputs(0, 2, 16, 8, t=3)
    sal = torch.ones(2, 16)
    ok = dict(questions=["a", "b"], question_embeddings=questions)

    def fails(match, **params):
        with pytest.raises(ValueError, match=match):
            select("cdpruner", feats, sal, 4, **{**ok, **params})

    fails("^questions: .*needs one entry per prompt", questions=None)
    fails("^questions: expected a list of P = 2", questions=["a"])
    fails("^questions: expected strings", questions=["a", 3])
    fails("^question_embeddings: .*needs one entry per prompt", question_embeddings=None)
    fails("^question_embeddings: expected a list of P = 2", question_embeddings=questions[:1])
    fails(r"^question_embeddings: entry 1 must be a float tensor \(T, 8\)", question_embeddings=[questions[0], torch.ones(3, 5)])
    fails("^question_embeddings: entry 0 contains NaN", question_embeddings=[questions[0] * math.nan, questions[1]])
    # a bad text tower fails before any expensive work (similarities, model loading)
    monkeypatch.setattr(cdp, "cosine_similarity_matrix", lambda *a: pytest.fail("similarities computed"))
    fails("^text_tower: no CLIP checkpoint at", text_tower=str(tmp_path / "missing"))
    fails("^text_tower: expected the path", text_tower=5)
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    fails("^text_tower: .*holds a 'llama' model", text_tower=str(tmp_path / "llama"))
    (tmp_path / "empty_clip").mkdir()
    (tmp_path / "empty_clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    fails("^text_tower: cannot load a CLIP model", text_tower=str(tmp_path / "empty_clip"),
          vision_features=torch.ones(2, 16, 24))
    fails(r"^vision_features: with a CLIP text tower .*\(2, 16, d_v\)", text_tower=str(clip_dir))
    fails("^vision_features: width 7 does not match", text_tower=str(clip_dir), vision_features=torch.ones(2, 16, 7))


def test_run_configuration_checks_the_text_tower_before_running(clip_dir, tmp_path):
    """validate_config accepts a real CLIP checkpoint for text_tower (its widths need not match
    the dummy input's) and refuses a missing or non-CLIP folder in one line naming text_tower."""
    from visprune.engine import RunConfig, validate_config

    validate_config(RunConfig("pope-random", "cdpruner", 16, {"text_tower": str(clip_dir)}), 144, 4)
    with pytest.raises(ValueError, match="text_tower: no CLIP checkpoint"):
        validate_config(RunConfig("pope-random", "cdpruner", 16, {"text_tower": str(tmp_path / "absent")}), 144, 4)
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="text_tower: .* holds a 'llama' model"):
        validate_config(RunConfig("pope-random", "cdpruner", 16, {"text_tower": str(tmp_path / "llama")}), 144, 4)
