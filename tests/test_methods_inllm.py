"""PyramidDrop, SparseVLM and DART inside the language model (ALGORITHMS.md, "PyramidDrop",
"SparseVLM", "DART"; visprune.pruning.pyramiddrop / sparsevlm / dart / _layers).

References are independent re-implementations of ALGORITHMS.md (and the released code where it
decides): NumPy float64, explicit loops, on random inputs in LLaVA-1.5-7B's shapes (N = 576
visual tokens, hidden d = 4096, keys 32 heads x 128) where the pure selection functions are
tested, and on tiny random Llama layers (transformers' own, eager attention) where a layer is
needed. End-to-end checks through the LLaVA wrapper run when the decoder loop supports
``LayerDrop`` and ``renumber`` (skipped otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaModel, apply_rotary_pos_emb

from visprune.pruning import LayerDrop, spec
from visprune.pruning import dart, pyramiddrop, sparsevlm
from visprune.pruning._layers import attention_rows, layer_keys, map_layers, ranked
from visprune.pruning.fastv import TIE_RTOL, last_token_attention

N, D_MODEL, HEADS, HEAD_DIM = 576, 4096, 32, 128
LANGUAGE_PY = Path(__file__).resolve().parents[1] / "lib" / "visprune" / "instrument" / "llava" / "language.py"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ tiny Llama layers


@pytest.fixture(scope="module")
def tiny_llama():
    """A 3-layer random Llama (hidden 64, 4 query heads over 2 key/value heads), eager attention."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=3, vocab_size=32, max_position_embeddings=1024, rms_norm_eps=1e-5,
                         attn_implementation="eager")
    model = LlamaModel(config).eval()
    with torch.no_grad():  # non-trivial norms and attention
        for layer in model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model


def _left_padded(p: int, lengths: list[int], d: int, seed: int):
    """Hidden states (P, T, d), validity (P, T) and position ids for left-padded rows."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    hidden = torch.randn(p, t, d, generator=g)
    valid = torch.zeros(p, t, dtype=torch.bool)
    for i, length in enumerate(lengths):
        valid[i, t - length:] = True
    positions = (valid.long().cumsum(1) - 1).clamp_min(0)
    return hidden, valid, positions


def _np_rmsnorm(x, weight, eps):
    return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps) * weight


def _np_rotary(x, pos, theta):
    """x (T, D) rotated at positions pos (T,), Llama's rotate-half convention, float64."""
    dim = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        ang = pos[t] * inv
        cos, sin = np.cos(np.concatenate([ang, ang])), np.sin(np.concatenate([ang, ang]))
        rot = np.concatenate([-x[t, dim // 2:], x[t, : dim // 2]])
        out[t] = x[t] * cos + rot * sin
    return out


def _np_attention_row(layer, config, hidden, positions, valid, row):
    """ALGORITHMS.md's attention row, float64 with explicit loops over heads and keys: (T,)."""
    attn = layer.self_attn
    x = _np_rmsnorm(hidden.double().numpy(), layer.input_layernorm.weight.detach().double().numpy(), config.rms_norm_eps)
    wq, wk = attn.q_proj.weight.detach().double().numpy(), attn.k_proj.weight.detach().double().numpy()
    hd, hq, hkv = attn.head_dim, config.num_attention_heads, config.num_key_value_heads
    theta = config.rope_parameters["rope_theta"] if getattr(config, "rope_parameters", None) else config.rope_theta
    pos = positions.numpy()
    q = (x[row] @ wq.T).reshape(hq, hd)
    k = (x @ wk.T).reshape(x.shape[0], hkv, hd)
    out = np.zeros(x.shape[0])
    for h in range(hq):
        qh = _np_rotary(q[h][None], pos[row: row + 1], theta)[0]
        kh = _np_rotary(k[:, h // (hq // hkv)], pos, theta)
        logits = np.full(x.shape[0], -np.inf)
        for j in range(row + 1):
            if valid[j]:
                logits[j] = qh @ kh[j] / math.sqrt(hd)
        e = np.exp(logits - logits.max())
        out += e / e.sum() / hq
    return out


def _rope(model, hidden, positions):
    return model.rotary_emb(hidden, position_ids=positions)


# ------------------------------------------------------------------ map_layers


def test_map_layers_identity_on_32_and_documented_on_4():
    for schedule in [(2, 8, 16), (8, 16, 24), (2, 6, 15), (2,), (1, 2, 3, 31)]:
        assert map_layers(schedule, 32) == schedule
    assert map_layers((2, 8, 16), 4) == (1, 2, 3)
    assert map_layers((8, 16, 24), 4) == (1, 2, 3)
    assert map_layers((2,), 4) == (1,)
    assert map_layers((2, 6, 15), 4, minimum=0, limit=3) == (0, 1, 2)
    assert map_layers((2, 6, 15), 40, minimum=0, limit=39) == (3, 8, 19)  # 2.5 -> 3 (half up), 7.5 -> 8, 18.75 -> 19
    with pytest.raises(ValueError, match="layers"):
        map_layers((8, 16, 24), 2)  # (1, 2, 3) does not fit below 2
    with pytest.raises(ValueError, match="layers"):
        map_layers((8, 8), 32)
    with pytest.raises(ValueError, match="n_layers"):
        map_layers((2,), 0)


# ------------------------------------------------------------------ attention_rows / layer_keys


def test_attention_rows_equal_transformers_eager_attention(tiny_llama):
    model = tiny_llama
    hidden, valid, positions = _left_padded(2, [40, 33], 64, seed=1)
    with torch.no_grad():
        out = model(inputs_embeds=hidden, attention_mask=valid.long(), position_ids=positions,
                    output_attentions=True, output_hidden_states=True)
        rows = torch.tensor([[10, 25, 39], [12, 30, 39]])
        for i in range(3):
            got = attention_rows(model.layers[i], out.hidden_states[i], _rope(model, out.hidden_states[i], positions),
                                 valid, rows)
            ref = out.attentions[i].mean(dim=1)  # (P, T, T)
            expected = torch.stack([ref[p, rows[p]] for p in range(2)])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
            one = last_token_attention(model.layers[i], out.hidden_states[i],
                                       _rope(model, out.hidden_states[i], positions), valid, 39)
            torch.testing.assert_close(got[:, -1, :40], one, atol=1e-6, rtol=0)


def test_attention_row_equals_float64_loop_reference(tiny_llama):
    model = tiny_llama
    hidden, valid, positions = _left_padded(1, [30], 64, seed=2)
    with torch.no_grad():
        got = attention_rows(model.layers[1], hidden, _rope(model, hidden, positions), valid, [29])[0, 0]
    ref = _np_attention_row(model.layers[1], model.config, hidden[0], positions[0], valid[0], 29)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)


def test_layer_keys_are_post_rotary_heads_concatenated(tiny_llama):
    model = tiny_llama
    hidden, valid, positions = _left_padded(2, [20, 17], 64, seed=3)
    layer = model.layers[0]
    with torch.no_grad():
        cos, sin = _rope(model, hidden, positions)
        got = layer_keys(layer, hidden, (cos, sin))
        x = layer.input_layernorm(hidden)
        k = layer.self_attn.k_proj(x).view(2, 20, 2, 16).transpose(1, 2)
        _, k_rot = apply_rotary_pos_emb(k, k, cos, sin)
    assert got.shape == (2, 20, 32)
    torch.testing.assert_close(got, k_rot.transpose(1, 2).reshape(2, 20, 32), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ ties


def _ulps(x: float, n: int) -> float:
    return float(np.float32(x) + np.float32(n) * np.spacing(np.float32(x)))


def test_ranked_near_ties_go_to_the_lower_index():
    values = torch.tensor([[0.5, 0.9, _ulps(0.9, 3), 0.1]])  # index 2 exceeds 1 by 3 ulps: a tie
    assert ranked(values, 2).tolist() == [[1, 2]]
    assert ranked(values, 1).tolist() == [[1]]
    clear = torch.tensor([[0.5, 0.9, 0.9 * (1 + 1e-3), 0.1]])
    assert ranked(clear, 1).tolist() == [[2]]
    signed = torch.tensor([[-0.2, 3e-7, 1e-7, -0.5]])  # around 0 the absolute tolerance decides
    assert ranked(signed, 1, atol=TIE_RTOL).tolist() == [[1]]
    assert ranked(-signed, 1, atol=TIE_RTOL).tolist() == [[3]]


@pytest.mark.parametrize("method", ["pdrop", "sparsevlm"])
def test_selection_is_robust_to_ulp_perturbations(method):
    """A near-tie at the cut: perturbing the tied values by a few ulps (either way) never changes
    the pick, which is the lower index."""
    rng = _rng(4)
    scores = rng.uniform(0.0, 1e-3, size=N).astype(np.float32)
    order = np.argsort(-scores)
    k = 128
    a, b = sorted(order[[k - 1, k]])  # the last kept and the first dropped
    base = scores.copy()
    for delta in (-4, -1, 0, 1, 4):
        s = base.copy()
        s[b] = s[a] = base[order[k - 1]]
        s[b] = _ulps(float(s[a]), delta)
        t = torch.from_numpy(s)[None]
        if method == "pdrop":
            keep = pyramiddrop.pdrop_select(t, torch.tensor([0]), N, k)[0]
        else:
            keep = sparsevlm.sparsevlm_keep(t, k)[0]
        assert a in keep.tolist() and b not in keep.tolist()


def test_dart_near_ties_are_robust_to_rounding():
    """Pivots: two keys whose L1 norms differ by a few ulps (either way) -> the lower index.
    Least-similar tokens: two candidates that are the same direction at different scales (equal
    cosines up to rounding) -> the lower index, whatever the rounding does."""
    rng = _rng(5)
    keys = rng.standard_normal((64, 256)).astype(np.float32)
    states = rng.standard_normal((64, 512)).astype(np.float32)
    text = rng.standard_normal((6, 256)).astype(np.float32)
    text_states = rng.standard_normal((6, 512)).astype(np.float32)
    keys[10] = keys[int(np.argmax(np.abs(keys).sum(axis=1)))] * 1.5  # the largest L1 norm
    for delta in (-3, 0, 3):
        k2 = keys.copy()
        k2[50] = keys[10]
        k2[50, 0] = _ulps(float(keys[10, 0]), delta if keys[10, 0] > 0 else -delta)
        assert ranked(torch.from_numpy(np.abs(k2).sum(axis=1))[None], 1)[0].tolist() == [10]
    for scale in (1.0 + 1e-7, 1.3, 1.7, 2.9):
        st = states.copy()
        st[20] = -st[10] * 0.9  # the pivot is 10: candidates 20 and 40 are both exactly opposite it
        st[40] = -st[10] * scale
        sel = dart.dart_select(torch.from_numpy(keys), torch.from_numpy(text), torch.from_numpy(st),
                               torch.from_numpy(text_states), 1, pivot_image=1, pivot_text=1, pivot_order="ascending")
        assert 10 in sel.tolist() and 20 in sel.tolist()  # the visual pivot (processed first) took 20, not 40
        cos = torch.nn.functional.cosine_similarity(torch.from_numpy(st[10])[None], torch.from_numpy(st[[20, 40]]), dim=-1)
        assert float((cos[0] - cos[1]).abs()) < 1e-6


# ------------------------------------------------------------------ PyramidDrop


def _np_pdrop_average(n, lam, layers, depth):
    total = 0
    for i in range(depth):
        s = sum(1 for b in layers if b <= i)
        total += n if s == 0 else max(1, math.floor(n * lam**s))
    return total / depth


def test_pdrop_released_default_averages_270():
    params = pyramiddrop.pdrop_params(layers=(8, 16, 24), ratio=0.5, n_layers=32)
    schedule = pyramiddrop.pdrop_schedule(576, 270, params, 32)
    assert schedule[:8] == [576] * 8 and schedule[8:16] == [288] * 8 and schedule[16:24] == [144] * 8
    assert schedule[24:] == [72] * 8 and sum(schedule) / 32 == 270


@pytest.mark.parametrize("k", [64, 128, 192])
def test_pdrop_solved_ratio_is_the_closest_average_not_above_k(k):
    params = pyramiddrop.pdrop_params(n_layers=32)  # layers (2, 8, 16)
    lam = pyramiddrop.pdrop_ratio(576, k, params, 32)
    avg = sum(pyramiddrop.pdrop_schedule(576, k, params, 32)) / 32
    assert avg == pytest.approx(_np_pdrop_average(576, lam, (2, 8, 16), 32))
    assert avg <= k
    # every reachable average: the schedule only changes where N * lam^s crosses an integer
    breaks = {(m / 576) ** (1.0 / s) for s in (1, 2, 3) for m in range(1, 577)}
    candidates = [c * f for c in breaks for f in (1 - 1e-12, 1.0, 1 + 1e-12) if 0 < c * f <= 1]
    reachable = [_np_pdrop_average(576, c, (2, 8, 16), 32) for c in candidates]
    best = max(r for r in reachable if r <= k)
    assert avg == pytest.approx(best)


def test_pdrop_unreachable_budget_names_k():
    params = pyramiddrop.pdrop_params(layers=(8, 16, 24), n_layers=32)
    # all 576 tokens for 8 layers, 1 token for the other 24: (8 * 576 + 24) / 32 = 144.75
    with pytest.raises(ValueError, match=r"^k: .*smallest reachable average is 144\.75"):
        pyramiddrop.pdrop_schedule(576, 128, params, 32)


@pytest.mark.parametrize("k", [64, 128, 192])
def test_pdrop_select_equals_numpy_top_k(k):
    rng = _rng(10 + k)
    t = 650
    att = rng.dirichlet(np.ones(t), size=2).astype(np.float32)
    starts = [35, 40]
    keep = pyramiddrop.pdrop_select(torch.from_numpy(att), torch.tensor(starts), N, k)
    for p in range(2):
        vis = att[p, starts[p]: starts[p] + N].astype(np.float64)
        picked = []
        for _ in range(k):  # explicit selection loop
            best = -1
            for j in range(N):
                if j not in picked and (best < 0 or vis[j] > vis[best]):
                    best = j
            picked.append(best)
        assert keep[p].tolist() == sorted(picked)


def test_pdrop_pruner_ranks_with_layer_l_attention_of_the_last_token(tiny_llama):
    """The pruner at a boundary keeps the top tokens of the float64 loop reference row."""
    model = tiny_llama
    n = 48
    hidden, valid, positions = _left_padded(2, [70, 64], 64, seed=6)
    image_start = torch.tensor([10, 16])
    params = pyramiddrop.pdrop_params(layers=(1, 2), ratio=0.5, absolute_layers=True, n_layers=3)
    pruner = pyramiddrop.PyramidDropPruner(params, k=10)
    assert pruner.renumber is True
    with torch.no_grad():
        rope = _rope(model, hidden, positions)
        state = {"hidden": hidden, "rope": rope, "valid": valid, "positions": positions, "image_start": image_start,
                 "num_visual": n, "query_row": 69}
        assert pruner.before_layer(0, model.layers[0], state) is None
        keep = pruner.before_layer(1, model.layers[1], state)
    assert pruner.schedule == [48, 24, 12]
    for p in range(2):
        row = _np_attention_row(model.layers[1], model.config, hidden[p], positions[p], valid[p], 69)
        vis = row[int(image_start[p]): int(image_start[p]) + n]
        assert keep[p].tolist() == sorted(np.argsort(-vis, kind="stable")[:24].tolist())


def test_pdrop_params_validate():
    assert pyramiddrop.pdrop_params(n_layers=32)["layers"] == (2, 8, 16)
    p4 = pyramiddrop.pdrop_params(n_layers=4)
    assert p4 == {"layers": (1, 2, 3), "ratio": None, "absolute_layers": True}  # records the layers used
    assert pyramiddrop.pdrop_params(**p4, n_layers=4) == p4  # completing again changes nothing
    assert pyramiddrop.pdrop_params(ratio=0.5) == {"layers": (2, 8, 16), "ratio": 0.5, "absolute_layers": False}
    with pytest.raises(ValueError, match="^params:"):
        pyramiddrop.PyramidDropPruner(pyramiddrop.pdrop_params(), 64)  # not completed for a model
    assert pyramiddrop.pdrop_params(layers=(1, 3), absolute_layers=True, n_layers=4)["layers"] == (1, 3)
    for kwargs, name in [({"ratio": 0.0}, "ratio"), ({"ratio": 1.5}, "ratio"), ({"ratio": True}, "ratio"),
                         ({"layers": (8, 8)}, "layers"), ({"layers": (0, 8)}, "layers"), ({"layers": "8"}, "layers"),
                         ({"layers": (1, 4), "absolute_layers": True}, "layers"), ({"absolute_layers": 1}, "absolute_layers"),
                         ({"n_layers": 0}, "n_layers"), ({"layers": (8, 16, 24), "n_layers": 2}, "layers")]:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            pyramiddrop.pdrop_params(**{"n_layers": 4, **kwargs})


# ------------------------------------------------------------------ SparseVLM


def _np_raters(v, t):
    relation = np.zeros(t.shape[0])
    for i in range(v.shape[0]):  # softmax over text, per visual token, then mean over visual tokens
        logits = t @ v[i]
        e = np.exp(logits - logits.max())
        relation += e / e.sum() / v.shape[0]
    return relation > relation.mean()


def test_sparsevlm_raters_equal_numpy():
    rng = _rng(20)
    v = rng.standard_normal((N, D_MODEL)) * 0.02
    t = rng.standard_normal((45, D_MODEL)) * 0.02
    t[:5] += v[:100].mean(axis=0) * 40  # some text tokens aligned with the image
    got = sparsevlm.sparsevlm_raters(torch.from_numpy(v).float(), torch.from_numpy(t).float())
    expected = _np_raters(v, t)
    assert 0 < expected.sum() < 45
    assert got.tolist() == expected.tolist()


def _np_density_peak(x, c, noise):
    """The released cluster_and_merge, re-implemented with float64 loops."""
    n, d = x.shape
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = np.sqrt(((x[i] - x[j]) ** 2).sum()) / math.sqrt(d)
    density = np.array([math.exp(-(np.sort(dist[i])[:c] ** 2).mean()) for i in range(n)]) + noise * 1e-6
    dmax = dist.max()
    parent = np.empty(n)
    for i in range(n):
        others = [dist[i, j] for j in range(n) if density[j] > density[i]]
        parent[i] = min(others) if others else dmax
    centres = list(np.argsort(-(parent * density), kind="stable")[:c])
    assign = [int(np.argmin([dist[ctr, j] for ctr in centres])) for j in range(n)]
    for r, ctr in enumerate(centres):
        assign[ctr] = r
    out = np.zeros((c, d))
    for r in range(c):
        members = [j for j in range(n) if assign[j] == r]
        out[r] = x[members].sum(axis=0) / (len(members) + 1e-6)
    return out, centres


@pytest.mark.parametrize("n_drop", [276, 94, 15])
def test_sparsevlm_recycling_equals_numpy(n_drop):
    """Top floor(0.3 n) + 1 dropped tokens by score, density-peak clusters, means in centre order."""
    rng = _rng(30 + n_drop)
    n_rec = (3 * n_drop) // 10 + 1
    c = n_rec // 10 + 1
    centres = rng.standard_normal((c + 2, D_MODEL))
    x = centres[rng.integers(0, c + 2, n_drop)] + 0.3 * rng.standard_normal((n_drop, D_MODEL))
    scores = rng.uniform(size=n_drop)
    noise = rng.uniform(size=n_rec)
    got = sparsevlm.sparsevlm_recycle(torch.from_numpy(x).float(), torch.from_numpy(scores).float(),
                                      torch.from_numpy(noise).float())
    top = np.argsort(-scores, kind="stable")[:n_rec]
    expected, _ = _np_density_peak(x[top], c, noise)
    assert got.shape == (c, D_MODEL)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [64, 128, 192])
def test_sparsevlm_scores_and_keep_equal_numpy(k):
    rng = _rng(40 + k)
    t = 650
    att = rng.dirichlet(np.ones(t), size=30)  # 30 rater rows
    counts = sparsevlm.BUDGETS[k]
    scores = sparsevlm.sparsevlm_scores(torch.from_numpy(att).float(), None, 35, N)
    ref = np.zeros(N)
    for r in range(30):
        ref += att[r, 35: 35 + N] / 30
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-5)
    keep = sparsevlm.sparsevlm_keep(scores[None], counts[0])[0]
    assert keep.tolist() == sorted(np.argsort(-ref, kind="stable")[: counts[0]].tolist())


def _np_sparsevlm_average(k, depth=32, layers=(2, 6, 15)):
    nv, per_layer, change = 576, [], {}
    for layer, k_l in zip(layers, sparsevlm.BUDGETS[k]):
        kept = min(k_l, nv - 1)
        n_rec = math.floor(0.3 * (nv - kept)) + 1
        nv = kept + math.floor(n_rec / 10) + 1
        change[layer + 1] = nv
    nv = 576
    for i in range(depth):
        nv = change.get(i, nv)
        per_layer.append(nv)
    return per_layer


@pytest.mark.parametrize("k, average", [(64, 82.25), (128, 145.40625), (192, 206.5)])
def test_sparsevlm_schedule_averages(k, average):
    params = sparsevlm.sparsevlm_params(n_layers=32)
    schedule = sparsevlm.sparsevlm_schedule(576, k, params, 32)
    assert schedule == _np_sparsevlm_average(k)
    assert schedule[:3] == [576] * 3  # layers 0-2 see all N
    assert sum(schedule) / 32 == average
    no_recycle = sparsevlm.sparsevlm_schedule(576, k, sparsevlm.sparsevlm_params(recycle=False, n_layers=32), 32)
    assert no_recycle[-1] == sparsevlm.BUDGETS[k][2]


def test_sparsevlm_budget_scaling_and_errors():
    params = sparsevlm.sparsevlm_params(n_layers=32)
    assert sparsevlm.sparsevlm_stage_counts(576, 192, params) == (300, 200, 110)
    assert sparsevlm.sparsevlm_stage_counts(16, 4, params) == (8, 3, 1)  # 128 of 576 -> 3.56 -> 4 of 16
    with pytest.raises(ValueError, match=r"^k: .*64, 96, 128, 192"):
        sparsevlm.sparsevlm_stage_counts(576, 100, params)
    explicit = sparsevlm.sparsevlm_params(schedule=(0.5, 0.25, 0.1), n_layers=32)
    assert sparsevlm.sparsevlm_stage_counts(576, 7, explicit) == (288, 144, 58)
    for kwargs, name in [({"schedule": (0.5, 0.2)}, "schedule"), ({"schedule": (0.5, 0.2, 0)}, "schedule"),
                         ({"layers": (2, 6)}, "layers"), ({"seed": -1}, "seed"), ({"recycle": "yes"}, "recycle"),
                         ({"layers": (2, 6, 3)}, "layers"), ({"layers": (1, 2, 3), "absolute_layers": True}, "layers"),
                         ({"n_layers": 2}, "layers")]:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            sparsevlm.sparsevlm_params(**{"n_layers": 4, **kwargs})
    done = sparsevlm.sparsevlm_params(n_layers=4)
    assert done["layers"] == (0, 1, 2) and done["absolute_layers"] is True
    assert sparsevlm.sparsevlm_params(**done, n_layers=4) == done
    assert sparsevlm.sparsevlm_schedule(16, 4, sparsevlm.sparsevlm_params(), 4) == sparsevlm.sparsevlm_schedule(16, 4, done, 4)


def _mini_loop(model, pruner, hidden, valid, positions, image_start, num_visual, query_row, record=None):
    """A decoder loop implementing the LayerPruner protocol (drop, insert, renumber), written
    independently of language.py: returns the visual tokens each layer saw and the final hidden.
    ``record``: a list that gets each layer's actual input (hidden, valid, positions, num_visual)
    and the pruner's pending scores after its call (SparseVLM)."""
    seen = []
    final_norm = model.norm
    for i, layer in enumerate(model.layers):
        rope = _rope(model, hidden, positions)
        state = {"hidden": hidden, "rope": rope, "valid": valid, "positions": positions, "image_start": image_start,
                 "num_visual": num_visual, "query_row": query_row, "final_norm": final_norm,
                 "input_ids": torch.zeros_like(positions)}
        out = pruner.before_layer(i, layer, state)
        if out is not None:
            drop = out if isinstance(out, LayerDrop) else LayerDrop(out)
            extra = 0 if drop.insert is None else drop.insert.shape[1]
            rows_h, rows_v = [], []
            for p in range(hidden.shape[0]):
                s = int(image_start[p])
                parts = [hidden[p, :s], hidden[p, s + drop.keep[p]]]
                if extra:
                    parts.append(drop.insert[p])
                parts.append(hidden[p, s + num_visual:])
                rows_h.append(torch.cat(parts))
                rows_v.append(torch.cat([valid[p, :s], torch.ones(drop.keep.shape[1] + extra, dtype=torch.bool),
                                         valid[p, s + num_visual:]]))
            old_t = hidden.shape[1]
            hidden, valid = torch.stack(rows_h), torch.stack(rows_v)
            if getattr(pruner, "renumber", False):
                positions = (valid.long().cumsum(1) - 1).clamp_min(0)
            else:
                idx = [torch.cat([torch.arange(int(image_start[p])), int(image_start[p]) + drop.keep[p],
                                  torch.arange(int(image_start[p]) + num_visual, old_t)]) for p in range(hidden.shape[0])]
                positions = torch.stack([positions[p, idx[p]] for p in range(hidden.shape[0])])
            query_row -= old_t - hidden.shape[1]
            num_visual = drop.keep.shape[1] + extra
        seen.append(num_visual)
        if record is not None:
            pending = getattr(pruner, "pending", None)
            record.append((hidden, valid, positions, num_visual, None if pending is None else pending[1].clone()))
        t = hidden.shape[1]
        allowed = torch.ones(t, t, dtype=torch.bool).tril()[None] & valid[:, None, :] | torch.eye(t, dtype=torch.bool)
        bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
        hidden = layer(hidden, attention_mask=bias, position_ids=positions,
                       position_embeddings=_rope(model, hidden, positions))
    return seen, hidden


def test_sparsevlm_pruner_on_consecutive_stage_layers(tiny_llama):
    """Stages at layers 0 and 1 (a shallow model): per-layer counts follow sparsevlm_schedule, the
    stage-0 drop uses the stage-0 scores from layer 0's attention of the raters."""
    model = tiny_llama
    n = 40
    hidden, valid, positions = _left_padded(2, [60, 56], 64, seed=7)
    image_start = torch.tensor([5, 9])
    params = sparsevlm.sparsevlm_params(layers=(0, 1), absolute_layers=True, schedule=(0.5, 0.25), n_layers=3)
    pruner = sparsevlm.SparseVLMPruner(params, k=1)
    record = []
    with torch.no_grad():
        seen, _ = _mini_loop(model, pruner, hidden, valid, positions, image_start, n, 59, record)
    assert seen == sparsevlm.sparsevlm_schedule(n, 1, params, 3) == [40, 21, 11]  # 20 kept + 1 cluster (7 recycled); 10 kept + 1
    # stage 1 was scored, before layer 1, on the sequence after stage 0's drop (simulated by the
    # pruner): the scores equal the float64 reference on layer 1's actual input in the loop
    h1, v1, pos1, nv1, scores1 = record[1]
    assert nv1 == 21 and bool((pos1[valid.sum(1) == 60][0] == torch.arange(h1.shape[1])).all())
    for p in range(2):
        s = int(image_start[p])
        ref = _np_rater_scores(model, 1, hidden[p], s, n, h1[p], pos1[p], v1[p], nv1)
        np.testing.assert_allclose(scores1[p].numpy(), ref, atol=1e-6)
    # stage 0 by hand: raters from layer 0's input, layer 0's attention rows, top 20 of 40
    pruner2 = sparsevlm.SparseVLMPruner(params, k=1)
    with torch.no_grad():
        state = {"hidden": hidden, "rope": _rope(model, hidden, positions), "valid": valid, "positions": positions,
                 "image_start": image_start, "num_visual": n, "query_row": 59}
        pruner2.before_layer(0, model.layers[0], state)
        _, scores = pruner2.pending
    for p in range(2):
        s = int(image_start[p])
        ref = _np_rater_scores(model, 0, hidden[p], s, n, hidden[p], positions[p], valid[p], n)
        np.testing.assert_allclose(scores[p].numpy(), ref, atol=1e-6)


def _np_rater_scores(model, layer, inputs, start, n, h, pos, valid, nv):
    """The float64 reference of a SparseVLM stage's scores for one prompt: raters from the input
    embeddings ``inputs`` (the n visual tokens at ``start``, text up to row 59), their attention
    rows at ``layer`` on that layer's input ``h`` (``nv`` visual tokens), averaged over raters."""
    text = inputs[start + n: 60].double().numpy()
    raters = np.nonzero(_np_raters(inputs[start: start + n].double().numpy(), text))[0]
    ref = np.zeros(nv)
    for r in raters:
        row = _np_attention_row(model.layers[layer], model.config, h, pos, valid, start + nv + r)
        ref += row[start: start + nv] / len(raters)
    return ref


# ------------------------------------------------------------------ DART


def _np_dart(vk, tk, vs, ts, per_pivot, n_img=4, n_txt=4, order="released", vpos=None, tpos=None):
    n, t = vk.shape[0], tk.shape[0]
    vpos = list(range(n)) if vpos is None else vpos
    tpos = list(range(n, n + t)) if tpos is None else tpos
    vl1 = [sum(abs(v) for v in row) for row in vk.tolist()]
    tl1 = [sum(abs(v) for v in row) for row in tk.tolist()]
    v_piv = sorted(range(n), key=lambda i: (-vl1[i], i))[:n_img]
    t_piv = sorted(range(t), key=lambda i: (-tl1[i], i))[:n_txt]
    by_pos = {vpos[i]: ("v", i) for i in v_piv} | {tpos[i]: ("t", i) for i in t_piv}
    seq = list(set([vpos[i] for i in v_piv] + [tpos[i] for i in t_piv])) if order == "released" else sorted(by_pos)
    cands = [j for j in range(n) if j not in v_piv]
    chosen = list(v_piv)
    for pos in seq:
        kind, idx = by_pos[pos]
        a = vs[idx] if kind == "v" else ts[idx]
        cos = [float(a @ vs[j] / (np.linalg.norm(a) * np.linalg.norm(vs[j]))) for j in cands]
        pick = [cands[i] for i in sorted(range(len(cands)), key=lambda i: (cos[i], i))[:per_pivot]]
        chosen += pick
        cands = [j for j in cands if j not in pick]
    return sorted(chosen)


@pytest.mark.parametrize("k", [64, 128, 192])
@pytest.mark.parametrize("order", ["released", "ascending"])
def test_dart_select_equals_numpy_and_keeps_k_plus_4(k, order):
    rng = _rng(50 + k)
    t = 40
    vk = rng.standard_normal((N, HEADS * HEAD_DIM)).astype(np.float32)
    tk = rng.standard_normal((t, HEADS * HEAD_DIM)).astype(np.float32)
    vs = rng.standard_normal((N, D_MODEL)).astype(np.float32)
    ts = rng.standard_normal((t, D_MODEL)).astype(np.float32)
    vpos, tpos = list(range(35, 35 + N)), list(range(35 + N, 35 + N + t))
    params = dart.dart_params(n_layers=32, pivot_order=order)
    per = dart.dart_per_pivot(k, params)
    assert per == k // 8 and dart.dart_kept(k, params) == k + 4
    got = dart.dart_select(torch.from_numpy(vk), torch.from_numpy(tk), torch.from_numpy(vs), torch.from_numpy(ts), per,
                           visual_positions=torch.tensor(vpos), text_positions=torch.tensor(tpos), pivot_order=order)
    expected = _np_dart(vk.astype(np.float64), tk.astype(np.float64), vs.astype(np.float64), ts.astype(np.float64),
                        per, order=order, vpos=vpos, tpos=tpos)
    assert len(got) == k + 4
    assert got.tolist() == expected


def test_dart_pruner_uses_previous_layer_keys_and_final_norm(tiny_llama):
    model = tiny_llama
    n = 40
    hidden, valid, positions = _left_padded(2, [60, 55], 64, seed=8)
    image_start = torch.tensor([5, 10])
    params = dart.dart_params(layer=2, absolute_layer=True, n_layers=3)
    pruner = dart.DARTPruner(params, k=16)
    assert pruner.renumber is False
    with torch.no_grad():
        seen, _ = _mini_loop(model, pruner, hidden, valid, positions, image_start, n, 59)
        assert seen == [40, 40, 20]
        out = model(inputs_embeds=hidden, attention_mask=valid.long(), position_ids=positions, output_hidden_states=True)
        h1 = out.hidden_states[1]  # layer 1's input
        keys = layer_keys(model.layers[1], h1, _rope(model, h1, positions))
        normed = model.norm(out.hidden_states[2])  # layer 1's output
        pruner2 = dart.DARTPruner(params, k=16)
        base = {"valid": valid, "positions": positions, "image_start": image_start, "num_visual": n, "query_row": 59,
                "final_norm": model.norm}
        pruner2.before_layer(1, model.layers[1], {**base, "hidden": h1, "rope": _rope(model, h1, positions)})
        keep = pruner2.before_layer(2, model.layers[2], {**base, "hidden": out.hidden_states[2],
                                                         "rope": _rope(model, h1, positions)})
    for p in range(2):
        s = int(image_start[p])
        e = s + n
        expected = _np_dart(keys[p, s:e].double().numpy(), keys[p, e:60].double().numpy(),
                            normed[p, s:e].double().numpy(), normed[p, e:60].double().numpy(), 2,
                            vpos=positions[p, s:e].tolist(), tpos=positions[p, e:60].tolist())
        assert keep[p].tolist() == expected


def test_dart_params_validate():
    assert dart.dart_params(n_layers=32)["layer"] == 2
    done = dart.dart_params(n_layers=4)
    assert done["layer"] == 1 and done["absolute_layer"] is True and dart.dart_params(**done, n_layers=4) == done
    assert dart.dart_schedule(16, 8, done, 4) == dart.dart_schedule(16, 8, dart.dart_params(), 4) == [16, 12, 12, 12]
    for kwargs, name in [({"layer": 0}, "layer"), ({"layer": 4, "absolute_layer": True}, "layer"),
                         ({"layer": 2.0}, "layer"), ({"pivot_image": 0}, "pivot_image"), ({"pivot_text": True}, "pivot_text"),
                         ({"pivot_order": "set"}, "pivot_order"), ({"absolute_layer": "no"}, "absolute_layer"),
                         ({"n_layers": -1}, "n_layers")]:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            dart.dart_params(**{"n_layers": 4, **kwargs})
    params = dart.dart_params(n_layers=4)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=rng)
    with pytest.raises(ValueError, match="^k:"):
        dart.dart_select(x, x[:5], x, x[:5], dart.dart_per_pivot(16, params))  # 4 + 16 > 16
    with pytest.raises(ValueError, match="^pivot_text:"):
        dart.dart_select(x, x[:3], x, x[:3], 1)


def test_registered_specs():
    for name, label, color in [("pdrop", "PyramidDrop", "#e377c2"), ("sparsevlm", "SparseVLM", "#aec7e8"),
                               ("dart", "DART", "#ff9896")]:
        s = spec(name)
        assert (s.stage, s.label, s.color, s.inputs) == ("in-llm", label, color, ("n_layers",))
        assert s.source.startswith("https://github.com/") and s.convention
    assert spec("pdrop").parameters == {"layers": (2, 8, 16), "ratio": None, "absolute_layers": False}
    assert spec("dart").display({"layer": 3}) == "DART (layer 3)"


# ------------------------------------------------------------------ end to end (tiny LLaVA)

_WRAPPER_READY = "renumber" in LANGUAGE_PY.read_text()
needs_wrapper = pytest.mark.skipif(not _WRAPPER_READY, reason="the LLaVA decoder loop does not support LayerDrop/renumber yet")
E2E_QUESTIONS = ["Is there a cat in the image?", "Is there a red ball on the big table in the picture?",
                 "What color is the sky?"]
E2E_IMAGES = [0, 1, 1]


@pytest.fixture(scope="module")
def tiny_wrapper():
    from tiny_llava import build_tiny_llava, tiny_images
    from visprune.instrument.llava import PrunedLlava

    model, processor = build_tiny_llava(vision_feature_layer=-2, seed=1)
    w = PrunedLlava(model, processor, device="cpu", dtype=torch.float32)
    return w, w.encode_images(tiny_images(2, seed=3))


@needs_wrapper
@pytest.mark.parametrize("method, k, params", [
    ("pdrop", 8, {}),                      # layers (2, 8, 16) -> (1, 2, 3) on 4 layers, lambda solved
    ("pdrop", 9, {"layers": (1, 3), "ratio": 0.5, "absolute_layers": True}),
    ("sparsevlm", 4, {}),                  # 128 of 576 -> 4 of 16; layers (0, 1, 2), consecutive stages
    ("sparsevlm", 4, {"recycle": False}),
    ("dart", 8, {}),                       # layer 2 -> 1; keeps 4 + 8 * 1 = 12 of 16
])
def test_cached_generation_equals_recomputation(tiny_wrapper, method, k, params):
    w, vision = tiny_wrapper
    sel = w.select_tokens(vision, method, k=k, **params)
    out = w.generate(E2E_QUESTIONS, vision, sel, E2E_IMAGES, max_new_tokens=5, eos_token_id=[])
    scratch = w.generate(E2E_QUESTIONS, vision, sel, E2E_IMAGES, max_new_tokens=5, eos_token_id=[], use_cache=False)
    assert out.token_ids == scratch.token_ids
    pruned, _ = w.first_token_logits(E2E_QUESTIONS, vision, sel, E2E_IMAGES)
    unpruned, _ = w.first_token_logits(E2E_QUESTIONS, vision, None, E2E_IMAGES)
    assert (pruned - unpruned).abs().max() > 1e-4  # the drops changed the logits: the check has teeth


@needs_wrapper
def test_pdrop_with_k_equal_n_is_the_unpruned_model(tiny_wrapper):
    w, vision = tiny_wrapper
    n = vision.num_tokens
    sel = w.select_tokens(vision, "pdrop", k=n)
    pruned, _ = w.first_token_logits(E2E_QUESTIONS, vision, sel, E2E_IMAGES)
    unpruned, _ = w.first_token_logits(E2E_QUESTIONS, vision, None, E2E_IMAGES)
    torch.testing.assert_close(pruned, unpruned, atol=1e-5, rtol=0)
