"""Tests for visprune.pruning: every selector against a plain-Python brute force of its
definition in ALGORITHMS.md ("Pruning methods"), hand-computed cases, output invariants, and
every validation error."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from visprune import pruning
from visprune.pruning import adaptive_threshold, pre_llm_methods, select

# ----------------------------------------------------------------------------------------------
# Brute-force references: plain Python floats (float64), loops over steps, candidates and tokens.
# ----------------------------------------------------------------------------------------------


def ref_similarity(x: list[list[float]]) -> list[list[float]]:
    norms = [math.sqrt(sum(v * v for v in row)) for row in x]
    n = len(x)
    return [
        [sum(a * b for a, b in zip(x[j], x[i])) / (norms[j] * norms[i]) for i in range(n)]
        for j in range(n)
    ]


def ref_delta(dtype: torch.dtype, d: int) -> float:
    """ALGORITHMS.md, "SCOPE", "Numerics": delta = c sqrt(d) eps with the library's c = 4, as a
    float32 number."""
    return float(np.float32(4.0 * math.sqrt(d) * torch.finfo(dtype).eps))


def ref_scope(x, a, k, alpha, p, dtype=torch.float64, order=False):
    """SCOPE by its definition with the stated rule (ALGORITHMS.md, "SCOPE", "Numerics"): a gap
    <= delta counts as 0; scores within max(rtol * best, atol) of the best tie, rtol = 1e-9
    (float64 work dtype) or 1e-5 (float32), atol = sqrt(N) p delta ** min(p, 1) times the largest
    candidate weight; the lowest tied index wins. ``dtype`` is the library's work dtype. The
    library's power-of-two grid (<= 1e-13 per term, for exact sums) is left out: plain floats.
    Returns the sorted picks, or the pick order with ``order=True``."""
    s = ref_similarity(x)
    n, d = len(x), len(x[0])
    delta = ref_delta(dtype, d)
    rtol = 1e-9 if dtype == torch.float64 else 1e-5
    atol_per_weight = math.sqrt(n) * p * delta ** min(p, 1.0)
    cover = [0.0] * n
    chosen: list[int] = []
    for _ in range(k):
        scores, weights = {}, {}
        for i in range(n):
            if i in chosen:
                continue
            gain = 0.0
            for j in range(n):
                g = s[j][i] - cover[j]
                if g > delta:
                    gain += min(g, 1.0) ** p
            weights[i] = a[i] ** alpha  # Python: 0.0 ** 0.0 == 1.0
            scores[i] = gain * weights[i]
        top = max(scores.values())
        tol = max(rtol * top, atol_per_weight * max(weights.values()))
        best = min(i for i, v in scores.items() if v >= top - tol)
        chosen.append(best)
        cover = [max(cover[j], s[j][best]) for j in range(n)]
    return chosen if order else sorted(chosen)


def ref_saliency(a, k):
    return sorted(sorted(range(len(a)), key=lambda i: (-a[i], i))[:k])


def ref_divprune(x, k, dtype=torch.float64, order=False):
    """DivPrune by its definition; values within delta of the largest tie, lowest index wins."""
    s = ref_similarity(x)
    n = len(x)
    delta = ref_delta(dtype, len(x[0]))
    d = [[1.0 - s[j][i] for i in range(n)] for j in range(n)]

    def lowest_within(values: dict[int, float]) -> int:
        top = max(values.values())
        return min(i for i, v in values.items() if v >= top - delta)

    chosen = [lowest_within({i: min((d[i][j] for j in range(n) if j != i), default=math.inf) for i in range(n)})]
    while len(chosen) < k:
        chosen.append(lowest_within({i: min(d[i][c] for c in chosen) for i in range(n) if i not in chosen}))
    return chosen if order else sorted(chosen)


def ref_adaptive(x, a, k, tau, dtype=torch.float64):
    s = ref_similarity(x)
    n = len(x)
    delta = ref_delta(dtype, len(x[0]))  # a distance <= delta counts as 0
    dist = [[min(2.0, max(0.0, 1.0 - s[j][i])) for i in range(n)] for j in range(n)]
    dist = [[v if v > delta else 0.0 for v in row] for row in dist]
    order = sorted(range(n), key=lambda i: (-a[i], i))
    kept: list[int] = []
    for t in order:  # the sequential walk
        if len(kept) == k:
            break
        if all(dist[t][q] >= tau for q in kept):
            kept.append(t)
    walked = len(kept)
    for t in order:  # fill with the best remaining by saliency
        if len(kept) == k:
            break
        if t not in kept:
            kept.append(t)
    return sorted(kept), walked


def ref_erank(x: np.ndarray) -> float:
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    q = s / s.sum()
    q = q[q > 0]
    return float(np.exp(-(q * np.log(q)).sum()))


def random_batch(seed, b=3, n=12, d=6, dtype=torch.float64, shift=0.3):
    """Features with a common component (so similarities are mostly positive, as for CLIP
    patches) and saliencies with a few large values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64) + shift * torch.randn(b, 1, d, generator=g, dtype=torch.float64)
    a = torch.rand(b, n, generator=g, dtype=torch.float64) ** 3
    return x.to(dtype), a.to(dtype)


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.double().tolist()


# ----------------------------------------------------------------------------------------------
# SCOPE
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("gap_power", [0.5, 1.0, 2.0])
def test_scope_matches_brute_force(alpha, gap_power):
    for seed in range(3):
        x, a = random_batch(seed)
        for k in (1, 4, 9, 12):
            got = select("scope", x, a, k, alpha=alpha, gap_power=gap_power)
            for b in range(x.shape[0]):
                want = ref_scope(rows(x[b]), a[b].tolist(), k, alpha, gap_power)
                assert got[b].tolist() == want, (seed, k, b)


@pytest.mark.parametrize("gap_power", [0.5, 1.0, 2.0])
def test_scope_float32_matches_brute_force(gap_power):
    for seed in range(3):
        x, a = random_batch(10 + seed, n=16, dtype=torch.float32)
        got = select("scope", x, a, 7, alpha=1.0, gap_power=gap_power)
        for b in range(x.shape[0]):
            assert got[b].tolist() == ref_scope(rows(x[b]), a[b].double().tolist(), 7, 1.0, gap_power, torch.float32)


@pytest.mark.parametrize("gap_power", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scope_cpu_and_dense_loops_agree(gap_power, dtype):
    # The dense torch loop runs on accelerators; check it here against the brute force and
    # against the incremental CPU loop (pick order included) at a realistic size.
    # Exact pick orders can be compared: both loops compute the same terms and exact float64 gains,
    # so their scores are equal bit for bit and the same tie rule decides.
    x, a = random_batch(5, b=2, n=10, dtype=dtype)
    sim = pruning.cosine_similarity_matrix(x)
    weight = a.to(sim.dtype)
    rule = pruning.scope._scope_rule(sim.dtype, 10, x.shape[-1], gap_power)
    dense = pruning.scope._scope_greedy_dense(sim, weight, 6, gap_power, rule)
    for b in range(2):
        want = ref_scope(rows(x[b]), a[b].double().tolist(), 6, 1.0, gap_power, dtype, order=True)
        assert dense[b].tolist() == want
    x, a = random_batch(6, b=2, n=120, d=32, dtype=dtype, shift=1.0)
    sim = pruning.cosine_similarity_matrix(x)
    weight = a.to(sim.dtype)
    rule = pruning.scope._scope_rule(sim.dtype, 120, 32, gap_power)
    cpu = pruning.scope._scope_greedy_cpu(sim, weight, 60, gap_power, rule)
    dense = pruning.scope._scope_greedy_dense(sim, weight, 60, gap_power, rule)
    assert torch.equal(cpu, dense)


def test_scope_alpha_zero_ignores_saliency():
    x, a = random_batch(7)
    base = select("scope", x, a, 5, alpha=0.0)
    for other in (torch.zeros_like(a), torch.ones_like(a), torch.rand(a.shape, dtype=a.dtype) * 100):
        assert torch.equal(select("scope", x, other, 5, alpha=0.0), base)
    # with alpha > 0 the saliency does matter for this batch (so the check above is not vacuous)
    assert not torch.equal(select("scope", x, a, 5, alpha=2.0), base)


def test_scope_all_gains_zero_picks_lowest_index():
    # Tokens are copies of three axis directions: e1, e1, e2, e2, e3 (similarities exactly 0 or 1).
    e = torch.eye(3, dtype=torch.float64)
    x = torch.stack([e[0], e[0], e[1], e[1], e[2]]).unsqueeze(0)
    a = torch.ones(1, 5, dtype=torch.float64)
    # Gains: 2, 2, 2, 2, 1 -> pick 0; then 0, _, 2, 2, 1 -> pick 2; then pick 4; then all zero ->
    # lowest remaining index, 1.
    assert select("scope", x, a, 3).tolist() == [[0, 2, 4]]
    assert select("scope", x, a, 4).tolist() == [[0, 1, 2, 4]]
    # Zero saliency with alpha > 0: orthogonal tokens, only token 2 has saliency; after it every
    # score is 0 and the lowest remaining indices follow. Picked tokens are never re-picked.
    x = torch.eye(5, dtype=torch.float64).unsqueeze(0)
    a = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    assert select("scope", x, a, 3, alpha=1.0).tolist() == [[0, 1, 2]]
    assert select("scope", x, a, 5, alpha=1.0).tolist() == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scope_exhausted_gains_with_rounding(dtype):
    # Ten random directions, each repeated three times (tokens i, i + 10, i + 20). Once one copy of
    # every direction is picked, every remaining gain is exactly 0 although the running sums of
    # the incremental CPU loop leave rounding residues; the lowest remaining indices must follow.
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(10, 7, generator=g, dtype=torch.float64) + 0.5
        x = v.repeat(3, 1).unsqueeze(0).to(dtype)
        a = torch.rand(1, 30, generator=g, dtype=torch.float64).to(dtype)
        assert select("scope", x, a, 20, alpha=0.0).tolist() == [list(range(20))]
        for alpha in (0.0, 1.0):
            want = ref_scope(rows(x[0]), a[0].double().tolist(), 20, alpha, 1.0, dtype)
            assert select("scope", x, a, 20, alpha=alpha).tolist() == [want]


def test_scope_hand_computed_saliency_weighting():
    # Two clusters: A = tokens 0-2 (identical), B = token 3 (orthogonal). Pure coverage prefers
    # the big cluster; a strongly salient lone token wins once alpha is large enough.
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    a = torch.tensor([[1.0, 1.0, 1.0, 2.0]], dtype=torch.float64)
    assert select("scope", x, a, 1, alpha=0.0).tolist() == [[0]]  # gains 3, 3, 3, 1
    assert select("scope", x, a, 1, alpha=1.0).tolist() == [[0]]  # 3 > 1 * 2
    assert select("scope", x, a, 1, alpha=2.0).tolist() == [[3]]  # 4 > 3


# ----------------------------------------------------------------------------------------------
# Saliency-only, DivPrune
# ----------------------------------------------------------------------------------------------


def test_saliency_matches_definition_with_ties():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 4, (4, 15), generator=g).double()  # many ties
    x = torch.randn(4, 15, 3, dtype=torch.float64)
    for k in (1, 5, 8, 15):
        got = select("saliency", x, a, k)
        for b in range(4):
            assert got[b].tolist() == ref_saliency(a[b].tolist(), k)


def test_divprune_matches_brute_force():
    for seed in range(4):
        x, a = random_batch(20 + seed, n=14)
        for k in (1, 3, 8, 14):
            got = select("divprune", x, a, k)
            for b in range(x.shape[0]):
                assert got[b].tolist() == ref_divprune(rows(x[b]), k), (seed, k, b)


def test_divprune_hand_computed():
    # Token 3 is orthogonal to the near-duplicates 0-2, so its nearest neighbour is farthest.
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [0.0, 1.0]]], dtype=torch.float64)
    a = torch.ones(1, 4, dtype=torch.float64)
    assert select("divprune", x, a, 1).tolist() == [[3]]
    assert select("divprune", x, a, 2).tolist() == [[0, 3]]  # token 0 is farthest from token 3
    single = torch.ones(1, 1, 2, dtype=torch.float64)
    assert select("divprune", single, torch.ones(1, 1), 1).tolist() == [[0]]


# ----------------------------------------------------------------------------------------------
# Adaptive
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.05, 0.3, 0.7, 1.2])
def test_adaptive_matches_sequential_walk(tau):
    fills = 0
    for seed in range(4):
        x, a = random_batch(30 + seed, n=14)
        erank = torch.full((x.shape[0],), 2.0, dtype=torch.float64)
        for k in (1, 4, 9, 14):
            idx, info = select(
                "adaptive", x, a, k, erank_ref=2.0, c=tau, tau_max=2.0, image_erank=erank, return_info=True
            )
            for b in range(x.shape[0]):
                want, walked = ref_adaptive(rows(x[b]), a[b].tolist(), k, tau)
                assert idx[b].tolist() == want, (seed, k, b)
                assert int(info["n_walk"][b]) == walked
                fills += walked < k
    if tau >= 0.7:
        assert fills > 0  # the fill branch was exercised


def test_adaptive_hand_computed_and_boundary():
    # e1, e2, (e1 + e2)/sqrt 2, e3 with saliency 4, 3, 2, 1. Distances: orthogonal pairs 1 exactly,
    # token 2 to tokens 0 and 1: 1 - 1/sqrt 2 = 0.293.
    x = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 1.0]]])
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])

    def run(k, tau):
        return select("adaptive", x, a, k, erank_ref=1.0, c=tau, tau_max=2.0, image_erank=[1.0]).tolist()

    assert run(3, 1.0) == [[0, 1, 3]]  # distance exactly tau is kept; token 2 is within tau
    assert run(4, 1.0) == [[0, 1, 2, 3]]  # walk ends at 3, fill adds token 2
    assert run(3, 0.2) == [[0, 1, 2]]  # below 0.293 nothing is rejected
    assert run(2, 1.5) == [[0, 1]]  # walk keeps only token 0, fill adds the next by saliency


def test_adaptive_tau_zero_is_saliency_only():
    for seed in range(3):
        x, a = random_batch(40 + seed, n=20)
        x[:, 5] = x[:, 4]  # exact duplicates must not block each other at tau = 0
        for k in (1, 7, 20):
            got = select("adaptive", x, a, k, erank_ref=10.0, c=0.0)
            assert torch.equal(got, select("saliency", x, a, k))


def test_adaptive_threshold_formula():
    x, _ = random_batch(50, b=4, n=16, d=8)
    x[1] = x[1, :, :1] * torch.ones(1, 8, dtype=torch.float64)  # a rank-1 image: erank 1
    eranks = [ref_erank(x[b].numpy()) for b in range(4)]
    assert eranks[1] == pytest.approx(1.0, abs=1e-6)
    for c, tau_max, ref in [(0.1, 0.5, 4.0), (0.3, 0.6, 2.5), (2.0, 0.5, 1.0)]:
        tau = adaptive_threshold(x, erank_ref=ref, c=c, tau_max=tau_max)
        want = [min(max(c * e / ref, 0.0), tau_max) for e in eranks]
        assert tau.tolist() == pytest.approx(want, rel=1e-6)
    _, info = select("adaptive", x, torch.rand(4, 16, dtype=torch.float64), 3, erank_ref=4.0, return_info=True)
    assert info["erank"].tolist() == pytest.approx(eranks, rel=1e-6)
    assert torch.equal(info["tau"], adaptive_threshold(x, erank_ref=4.0))


# ----------------------------------------------------------------------------------------------
# Invariants shared by every method
# ----------------------------------------------------------------------------------------------

PARAMS = {"adaptive": {"erank_ref": 5.0}}


def _plain_selectors() -> list[str]:
    """The pre-LLM selectors that need nothing but features and saliency (mergers and methods
    reading the vision tower or the question have their own tests: test_methods_prellm.py,
    test_method_cdpruner.py)."""
    from visprune.pruning import PROMPT_INPUTS, VISION_INPUTS, spec

    return [m for m in pre_llm_methods() if spec(m).output == "indices"
            and not set(spec(m).inputs) & set(VISION_INPUTS + PROMPT_INPUTS)]


@pytest.mark.parametrize("method", ["random", "saliency", "scope", "divprune", "adaptive"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_output_invariants(method, dtype):
    assert method in pre_llm_methods()
    x, a = random_batch(60, b=3, n=25, d=8, dtype=dtype)
    for k in (1, 6, 24, 25):
        idx = select(method, x, a, k, **PARAMS.get(method, {}))
        assert idx.shape == (3, k) and idx.dtype == torch.long and idx.device == x.device
        assert bool((idx[:, 1:] > idx[:, :-1]).all())  # ascending and distinct
        assert int(idx.min()) >= 0 and int(idx.max()) < 25
        if k == 25:
            assert torch.equal(idx, torch.arange(25).expand(3, 25))


def test_numpy_inputs_accepted():
    x, a = random_batch(61)
    for method in _plain_selectors():
        got = select(method, x.numpy(), a.numpy(), 4, **PARAMS.get(method, {}))
        assert torch.equal(got, select(method, x, a, 4, **PARAMS.get(method, {})))


def test_gradients_not_tracked():
    x, a = random_batch(62)
    x.requires_grad_(True)
    assert not select("scope", x, a, 3).requires_grad


def test_return_info():
    x, a = random_batch(63)
    idx, info = select("scope", x, a, 3, return_info=True)
    assert info == {} and torch.equal(idx, select("scope", x, a, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, a = random_batch(64, b=4, n=64, d=16)
    for method in _plain_selectors():
        for k in (1, 10, 64):
            cpu = select(method, x, a, k, **PARAMS.get(method, {}))
            gpu = select(method, x.cuda(), a.cuda(), k, **PARAMS.get(method, {}))
            assert gpu.device.type == "cuda"
            assert torch.equal(gpu.cpu(), cpu), (method, k)


# ----------------------------------------------------------------------------------------------
# Random
# ----------------------------------------------------------------------------------------------


def test_random_determinism_and_seeds():
    x, a = random_batch(70, b=4, n=30)
    first = select("random", x, a, 10, seed=3)
    assert torch.equal(first, select("random", x, a, 10, seed=3))
    assert not torch.equal(first, select("random", x, a, 10, seed=4))
    assert len({tuple(r) for r in first.tolist()}) == 4  # rows of a batch get different draws
    assert torch.equal(select("random", x, a, 10), select("random", x, a, 10, seed=0))  # default seed 0
    # Row r uses sample seed r by default; explicit per-sample seeds make a row's draw
    # independent of the batch it is in.
    assert torch.equal(first, select("random", x, a, 10, seed=3, sample_seeds=[0, 1, 2, 3]))
    alone = select("random", x[2:3], a[2:3], 10, seed=3, sample_seeds=[17])
    in_batch = select("random", x, a, 10, seed=3, sample_seeds=torch.tensor([5, 9, 17, 2]))
    assert torch.equal(in_batch[2:3], alone)


def test_random_is_uniform():
    n, k, draws = 10, 3, 2000
    x = torch.randn(draws, n, 2)
    idx = select("random", x, torch.ones(draws, n), k, seed=1)
    counts = torch.bincount(idx.flatten(), minlength=n).double()
    expected, sd = draws * k / n, math.sqrt(draws * (k / n) * (1 - k / n))
    assert bool(((counts - expected).abs() < 5 * sd).all()), counts.tolist()


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_register_new_method():
    @pruning.register("_test_last_k", label="last k", color="#123456")
    def last_k(features, saliency, k, *, offset: int = 0):
        n = features.shape[1]
        return torch.arange(n - k - offset, n - offset).expand(features.shape[0], k)

    try:
        x, a = random_batch(80)
        assert "_test_last_k" in pre_llm_methods() and "_test_last_k" in pruning.METHODS
        assert select("_test_last_k", x, a, 2, offset=1).tolist() == [[9, 10]] * 3
        with pytest.raises(ValueError, match=r"^alpha: .*_test_last_k.*offset"):
            select("_test_last_k", x, a, 2, alpha=1.0)
        with pytest.raises(ValueError, match=r"^name: "):
            pruning.register("_test_last_k", label="last k", color="#123456")(last_k)
        with pytest.raises(ValueError, match="signature"):
            pruning.register("_test_bad", label="bad", color="#654321")(lambda features, saliency, k, alpha=1.0: None)
    finally:
        pruning.METHODS.pop("_test_last_k", None)
        pruning.METHODS.pop("_test_bad", None)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

X, A = random_batch(90, b=2, n=8, d=4)
NAN_X = X.clone()
NAN_X[0, 1, 2] = math.nan
NAN_A = A.clone()
NAN_A[1, 3] = math.nan
NEG_A = A.clone()
NEG_A[0, 0] = -1e-3
INF_X = X.clone()
INF_X[1, 0, 0] = math.inf

BAD_CALLS = [
    # (parameter named in the error, method, features, saliency, k, params)
    ("k", "saliency", X, A, 0, {}),
    ("k", "scope", X, A, 9, {}),
    ("k", "random", X, A, 2.5, {}),
    ("k", "random", X, A, True, {}),
    ("alpha", "scope", X, A, 2, {"alpha": -0.5}),
    ("alpha", "scope", X, A, 2, {"alpha": math.nan}),
    ("alpha", "scope", X, A, 2, {"alpha": "1"}),
    ("gap_power", "scope", X, A, 2, {"gap_power": 0.0}),
    ("gap_power", "scope", X, A, 2, {"gap_power": -1.0}),
    ("c", "adaptive", X, A, 2, {"c": -0.1, "erank_ref": 3.0}),
    ("tau_max", "adaptive", X, A, 2, {"tau_max": -0.1, "erank_ref": 3.0}),
    ("erank_ref", "adaptive", X, A, 2, {"erank_ref": 0.0}),
    ("erank_ref", "adaptive", X, A, 2, {"erank_ref": -2.0}),
    ("erank_ref", "adaptive", X, A, 2, {}),
    ("image_erank", "adaptive", X, A, 2, {"erank_ref": 3.0, "image_erank": [1.0]}),
    ("seed", "random", X, A, 2, {"seed": -1}),
    ("seed", "random", X, A, 2, {"seed": 1.5}),
    ("sample_seeds", "random", X, A, 2, {"sample_seeds": [1, 2, 3]}),
    ("sample_seeds", "random", X, A, 2, {"sample_seeds": [1, -2]}),
    ("method", "fastv", X, A, 2, {}),
    ("alpha", "saliency", X, A, 2, {"alpha": 1.0}),
    ("seed", "scope", X, A, 2, {"seed": 0}),
    ("gamma", "adaptive", X, A, 2, {"erank_ref": 3.0, "gamma": 1.0}),
    ("features", "scope", X[0], A, 2, {}),
    ("features", "scope", X.unsqueeze(0), A, 2, {}),
    ("features", "scope", X.long(), A, 2, {}),
    ("features", "scope", [[[1.0]]], A, 1, {}),
    ("saliency", "scope", X, A[:, :5], 2, {}),
    ("saliency", "scope", X, A[0], 2, {}),
    ("saliency", "scope", X, NEG_A, 2, {}),
    ("saliency", "random", X, NAN_A, 2, {}),
    ("features", "divprune", NAN_X, A, 2, {}),
    ("features", "saliency", INF_X, A, 2, {}),
]


@pytest.mark.parametrize(
    "name, method, features, saliency, k, params",
    BAD_CALLS,
    ids=[f"{row[0]}-{row[1]}-{i}" for i, row in enumerate(BAD_CALLS)],
)
def test_validation_errors_name_the_parameter(name, method, features, saliency, k, params):
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: "):
        select(method, features, saliency, k, **params)


def test_unknown_method_lists_available():
    with pytest.raises(ValueError) as err:
        select("nope", X, A, 2)
    for name in ("random", "saliency", "scope", "divprune", "adaptive"):
        assert name in str(err.value)


def test_adaptive_threshold_validation():
    for kwargs, name in [
        ({"erank_ref": None}, "erank_ref"),
        ({"erank_ref": 0.0}, "erank_ref"),
        ({"erank_ref": 1.0, "c": -1.0}, "c"),
        ({"erank_ref": 1.0, "tau_max": -1.0}, "tau_max"),
    ]:
        with pytest.raises(ValueError, match=rf"^{name}: "):
            adaptive_threshold(X, **kwargs)
    with pytest.raises(ValueError, match=r"^features: "):
        adaptive_threshold(X[0], erank_ref=1.0)
