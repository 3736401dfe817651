"""VisionZip, VisPruner and plain downsampling before the language model (ALGORITHMS.md,
"VisionZip", "VisPruner", "Controls"; visprune.pruning.visionzip / vispruner / downsample).

References are independent re-implementations of ALGORITHMS.md (and the released code where it
decides, as the modules' docstrings state): NumPy float64, explicit loops over tokens, steps and
cells, written from the description, on random inputs in LLaVA-1.5's shapes (N = 576 patches on a
24 x 24 grid, d_v = 1024, keys d_head = 64, K = 64, 128, 192) and in toy shapes (N = 144,
K = 16, 32, 48). The library works in float32, the references in float64; every comparison a
reference makes against the near-tie tolerance delta records its margin, and the tests assert
that the margins exceed what float32 rounding can move, so no test is decided by rounding.

VisPruner's diverse stage is chaotic on Gaussian features of width 1024: its even/odd rounds
depend on the order of ~270 scores whose sorted neighbours lie ~1e-7 apart, so a 1-ulp change
flips some order and the cascade changes the selection (2 of 20 images at K = 64). Its tests at
full size therefore use features whose cosines are, in exact arithmetic, multiples of 1/M
(random supports of M ones, randomly rotated and scaled): exact ties, which float32 turns into
near-ties, and gaps of at least 1/M, far above rounding. Gaussian features are tested at sizes
where the margins hold (asserted).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
import torch

from visprune.pruning import merge, select, spec

N, GRID, D_V, D_HEAD = 576, 24, 1024, 64
N_TOY, GRID_TOY = 144, 12


def min_margin(d: int) -> float:
    """sqrt(d) eps of float32: a bound on how far float32 rounding moves a cosine of width-d
    vectors (measured at 0.1-0.35 of it, visprune.pruning._numerics); a decision whose margin to
    the tolerance is below it could go either way in float32. A quarter of delta."""
    return math.sqrt(d) * float(np.finfo(np.float32).eps)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def ref_delta(d: int) -> float:
    """ALGORITHMS.md, "SCOPE", "Numerics": delta = c sqrt(d) eps with the library's c = 4, for
    float32 work, as a float32 number."""
    return float(np.float32(4.0 * math.sqrt(d) * np.finfo(np.float32).eps))


def _unit(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i] / math.sqrt(float(x[i] @ x[i]))
    return out


# ----------------------------------------------------------------------------------------------
# VisionZip
# ----------------------------------------------------------------------------------------------


def ref_split(k: int) -> tuple[int, int]:
    """D = 54/64 of K rounded half up, C = K - D."""
    d = math.floor(Fraction(54 * k, 64) + Fraction(1, 2))
    return d, k - d


def ref_visionzip(x, a, cls, keys, k, dominant=None):
    """ALGORITHMS.md, "VisionZip", steps 2-5, one image in float64. Returns (tokens (K, d),
    sources (K,), the smallest margin of an assignment to the tolerance)."""
    x, a, cls, keys = (np.asarray(v, dtype=np.float64) for v in (x, a, cls, keys))
    n = x.shape[0]
    d_keep = ref_split(k)[0] if dominant is None else dominant
    c = k - d_keep
    by_score = sorted(range(n), key=lambda i: (-a[i], i))  # largest first, ties to the lower index
    dominant_patches = sorted(by_score[: d_keep - 1])
    rest = [i for i in range(n) if i not in set(dominant_patches)]  # index order
    r = len(rest)
    targets = [] if c == 0 else [rest[p] for p in list(range(0, r, max(1, r // c)))[:c]]
    unit = _unit(keys[1:])
    delta = ref_delta(keys.shape[1])
    assigned: dict[int, list[int]] = {t: [] for t in targets}
    margin = math.inf
    for i in [i for i in rest if i not in assigned] if targets else []:
        sims = [float(unit[i] @ unit[t]) for t in targets]
        best = max(sims)
        choice = next(j for j, s in enumerate(sims) if best - s <= delta)  # the lowest target near the best
        assigned[targets[choice]].append(i)
        best_at = sims.index(best)
        margin = min([margin] + [abs(best - s - delta) for j, s in enumerate(sims) if j != best_at])
    tokens = [cls] + [x[i] for i in dominant_patches]
    for t in targets:
        merged = np.zeros(x.shape[1])
        for i in assigned[t]:
            merged += x[i]
        tokens.append(x[t] + (merged / len(assigned[t]) if assigned[t] else 0.0))
    return np.stack(tokens), np.array([-1] + dominant_patches + targets), margin


def _vz_inputs(seed: int, b: int, n: int, d: int = D_V, d_head: int = D_HEAD):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g)
    a = torch.rand(b, n, generator=g)
    cls = torch.randn(b, d, generator=g)
    keys = torch.randn(b, 1 + n, d_head, generator=g) + 0.3  # a shared offset, as real keys have
    return x, a, cls, keys


def _check_visionzip(x, a, cls, keys, k, **params):
    out = merge("visionzip", x, a, k, cls_feature=cls, vision_keys=keys, **params)
    assert out.tokens.shape == (x.shape[0], k, x.shape[2]) and out.sources.shape == (x.shape[0], k)
    assert out.tokens.dtype == x.dtype and out.sources.dtype == torch.long
    for row in range(x.shape[0]):
        tokens, sources, margin = ref_visionzip(x[row].numpy(), a[row].numpy(), cls[row].numpy(),
                                                keys[row].numpy(), k, params.get("dominant"))
        assert margin > min_margin(keys.shape[-1]), margin  # no assignment within rounding of the tolerance
        assert out.sources[row].tolist() == sources.tolist()
        np.testing.assert_allclose(out.tokens[row].numpy(), tokens, rtol=1e-5, atol=1e-5)
    return out


@pytest.mark.parametrize("k", [64, 128, 192])
def test_visionzip_equals_reference_llava_shapes(k):
    x, a, cls, keys = _vz_inputs(10 + k, b=2, n=N)
    out = _check_visionzip(x, a, cls, keys, k)
    d, c = ref_split(k)
    assert ((out.sources[:, d:] >= 0) & (out.sources[:, :1] == -1)).all()
    assert out.tokens.shape[1] == d + c == k


@pytest.mark.parametrize("k", [16, 32, 48])
def test_visionzip_equals_reference_toy_shapes(k):
    x, a, cls, keys = _vz_inputs(20 + k, b=3, n=N_TOY, d=32, d_head=16)
    _check_visionzip(x, a, cls, keys, k)


@pytest.mark.parametrize("k,dominant", [(64, 1), (64, 64), (64, 30), (3, None), (576, None), (576, 1)])
def test_visionzip_other_splits(k, dominant):
    """Only the CLS token dominant, no contextual token (C = 0), K = N (R = C + 1)."""
    x, a, cls, keys = _vz_inputs(30 + k + (dominant or 0), b=1, n=N)
    params = {} if dominant is None else {"dominant": dominant}
    _check_visionzip(x, a, cls, keys, k, **params)


def test_visionzip_split_table():
    assert [ref_split(k) for k in (64, 128, 192, 16)] == [(54, 10), (108, 20), (162, 30), (14, 2)]
    x, a, cls, keys = _vz_inputs(40, b=1, n=N)
    for k, (d, c) in [(64, (54, 10)), (128, (108, 20)), (192, (162, 30)), (1, (1, 0)), (5, (4, 1))]:
        assert ref_split(k) == (d, c)
        out = merge("visionzip", x, a, k, cls_feature=cls, vision_keys=keys)
        # D - 1 dominant patches (the top of the saliency), then C targets
        top = set(torch.sort(a[0], descending=True, stable=True).indices[: d - 1].tolist())
        assert set(out.sources[0, 1:d].tolist()) == top and len(out.sources[0, d:]) == c


def test_visionzip_hand_computed():
    """N = 6, K = 4, dominant = 2: the CLS token, patch 1 (largest saliency); the remaining
    patches 0, 2, 3, 4, 5 (R = 5, C = 2, step 2) have targets 0 and 3; patches 2 and 5 (keys
    along the first axis) merge into 0, patch 4 into 3."""
    f = torch.tensor([[float(i), float(i * i)] for i in range(6)])[None]  # f_i = (i, i^2)
    a = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.05, 0.4]])
    cls = torch.tensor([[100.0, 200.0]])
    keys = torch.tensor([[[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [1.0, 0.2]]])
    out = merge("visionzip", f, a, 4, dominant=2, cls_feature=cls, vision_keys=keys)
    assert out.sources.tolist() == [[-1, 1, 0, 3]]
    # 0 + mean(f2, f5) = (3.5, 14.5); f3 + f4 = (7, 25)
    assert out.tokens.tolist() == [[[100.0, 200.0], [1.0, 1.0], [3.5, 14.5], [7.0, 25.0]]]
    # N = 4, K = 3 (default split 3 + 0): the CLS token and the two largest-saliency patches
    out = merge("visionzip", f[:, :4], a[:, :4], 3, cls_feature=cls, vision_keys=keys[:, :5])
    assert out.sources.tolist() == [[-1, 1, 3]]
    assert out.tokens.tolist() == [[[100.0, 200.0], [1.0, 1.0], [3.0, 9.0]]]


def test_visionzip_ties_go_to_the_lower_index():
    x, a, cls, keys = _vz_inputs(41, b=1, n=N_TOY, d=32, d_head=16)
    a = torch.full_like(a, 0.5)  # every saliency equal: patches 0..D-2 are dominant
    out = merge("visionzip", x, a, 32, cls_feature=cls, vision_keys=keys)
    d = ref_split(32)[0]
    assert out.sources[0, 1:d].tolist() == list(range(d - 1))
    # two targets with the same key direction: the later one receives nothing, its own feature
    # is its contextual token
    targets = out.sources[0, d:].tolist()
    keys = keys.clone()
    keys[0, 1 + targets[1]] = 3.0 * keys[0, 1 + targets[0]]
    out = merge("visionzip", x, a, 32, cls_feature=cls, vision_keys=keys)
    torch.testing.assert_close(out.tokens[0, d + 1], x[0, targets[1]], rtol=0, atol=0)
    _check_visionzip(x, a, cls, keys, 32)


def test_visionzip_robust_to_ulp_perturbation():
    x, a, cls, keys = _vz_inputs(42, b=2, n=N)
    g = torch.Generator().manual_seed(43)
    noisy = [v * (1 + 1e-7 * torch.randn(v.shape, generator=g)) for v in (x, cls, keys)]
    for k in (64, 192):
        base = merge("visionzip", x, a, k, cls_feature=cls, vision_keys=keys)
        moved = merge("visionzip", noisy[0], a, k, cls_feature=noisy[1], vision_keys=noisy[2])
        assert torch.equal(base.sources, moved.sources)
        torch.testing.assert_close(base.tokens, moved.tokens, rtol=1e-5, atol=1e-5)


def test_visionzip_float16_features():
    x, a, cls, keys = _vz_inputs(44, b=1, n=N_TOY, d=32, d_head=16)
    out = merge("visionzip", x.half(), a, 16, cls_feature=cls.half(), vision_keys=keys.half())
    assert out.tokens.dtype == torch.float16 and out.tokens.shape == (1, 16, 32)


# ----------------------------------------------------------------------------------------------
# VisPruner
# ----------------------------------------------------------------------------------------------


def ref_vispruner(x, a, k, rho=0.5):
    """ALGORITHMS.md, "VisPruner", steps 2-4, one image in float64, with the module's rules for
    odd R (even positions: ceil(R/2)), r larger than the even positions (drop them all) and near
    ties (within delta: the lower position among the even ones, taken greedily). Returns (sorted
    kept indices, smallest margin of a comparison to delta, number of picks a near-tie decided)."""
    x, a = np.asarray(x, dtype=np.float64), np.asarray(a, dtype=np.float64)
    n = x.shape[0]
    t_imp = math.floor(k * rho)
    t_div = k - t_imp
    by_score = sorted(range(n), key=lambda i: (-a[i], i))
    important, residual = by_score[:t_imp], by_score[t_imp:]
    unit = _unit(x)
    sim = unit @ unit.T
    delta = ref_delta(x.shape[1])
    margin, tied = math.inf, 0
    while t_div > 0:
        r = min(8, len(residual) - t_div)
        if r <= 0:
            break
        even, odd = residual[0::2], residual[1::2]
        scores = np.array([max(sim[e, o] for o in odd) for e in even])
        left = np.ones(len(even), dtype=bool)
        ranked = []
        for _ in range(len(even)):  # the greedy order: the lowest position among those near the best
            best = scores[left].max()
            near = left & (best - scores <= delta)
            pick = int(np.flatnonzero(near)[0])
            others = left.copy()
            others[int(np.flatnonzero(left & (scores == best))[0])] = False
            if others.any():
                margin = min(margin, float(np.abs(best - scores[others] - delta).min()))
            tied += int(near.sum() > 1)
            ranked.append(pick)
            left[pick] = False
        residual = [even[p] for p in ranked[r:]] + odd
    return sorted(important + (residual if t_div > 0 else [])), margin, tied


@lru_cache(maxsize=None)
def _rotation(d: int) -> np.ndarray:
    q, _ = np.linalg.qr(_rng(d).standard_normal((d, d)))
    return q


def overlap_features(seed: int, b: int, n: int, d: int, pool: int = 64, m: int = 24) -> torch.Tensor:
    """Features whose cosines are multiples of 1/m in exact arithmetic: per token, m ones on a
    random subset of ``pool`` coordinates, rotated by a fixed random orthogonal matrix and scaled
    by a random factor in [0.5, 2], rounded to float32."""
    rng = _rng(seed)
    out = np.zeros((b, n, d))
    for i in range(b):
        z = np.zeros((n, d))
        for j in range(n):
            z[j, rng.choice(pool, m, replace=False)] = 1.0
        out[i] = (z @ _rotation(d).T) * rng.uniform(0.5, 2.0, size=(n, 1))
    return torch.from_numpy(out.astype(np.float32))


def _saliency(seed: int, b: int, n: int) -> torch.Tensor:
    return torch.from_numpy(_rng(seed).dirichlet(np.ones(n), size=b).astype(np.float32))


def _check_vispruner(x, a, k, rho=0.5, expect_ties=False):
    params = {} if rho == 0.5 else {"important_ratio": rho}
    got = select("vispruner", x, a, k, **params)
    assert got.shape == (x.shape[0], k)
    for row in range(x.shape[0]):
        kept, margin, tied = ref_vispruner(x[row].numpy(), a[row].numpy(), k, rho)
        assert margin > min_margin(x.shape[-1]), margin  # no decision within rounding of the tolerance
        if expect_ties:
            assert tied > 0  # the near-tie rule decided some picks
        assert got[row].tolist() == kept
    return got


@pytest.mark.parametrize("k", [64, 128, 192])
def test_vispruner_equals_reference_llava_shapes(k):
    x, a = overlap_features(100 + k, 1, N, D_V), _saliency(100 + k, 1, N)
    _check_vispruner(x, a, k, expect_ties=True)


@pytest.mark.parametrize("k", [16, 32, 48])
def test_vispruner_equals_reference_toy_shapes(k):
    x, a = overlap_features(200 + k, 2, N_TOY, 64, pool=32, m=12), _saliency(200 + k, 2, N_TOY)
    _check_vispruner(x, a, k, expect_ties=True)


@pytest.mark.parametrize("k,rho", [(66, 0.5), (4, 0.5), (10, 0.5), (64, 0.75), (64, 0.0), (64, 1.0), (576, 0.5)])
def test_vispruner_edge_budgets(k, rho):
    """Odd R (66: T_imp = 33), r above the even positions (4, 10), other ratios, K = N."""
    x, a = overlap_features(300 + k, 1, N, 256), _saliency(300 + k, 1, N)
    got = _check_vispruner(x, a, k, rho)
    if rho == 1.0:  # no diverse stage: the K largest saliencies
        assert got[0].tolist() == sorted(torch.sort(a[0], descending=True, stable=True).indices[:k].tolist())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vispruner_gaussian_small(seed):
    """Gaussian features, where no two scores are near: the ranking by score alone decides."""
    g = torch.Generator().manual_seed(seed)
    x, a = torch.randn(2, 36, 32, generator=g), torch.rand(2, 36, generator=g)
    for k in (6, 12, 20):
        _check_vispruner(x, a, k)


def test_vispruner_robust_to_ulp_perturbation():
    """Exact ties in exact arithmetic are near-ties in float32, decided by position, not by the
    rounding: 1e-7 relative noise on every feature changes nothing."""
    x, a = overlap_features(400, 2, N, D_V), _saliency(400, 2, N)
    g = torch.Generator().manual_seed(401)
    noisy = x * (1 + 1e-7 * torch.randn(x.shape, generator=g))
    for k in (64, 128):
        assert torch.equal(select("vispruner", x, a, k), select("vispruner", noisy, a, k))


# ----------------------------------------------------------------------------------------------
# Downsampling
# ----------------------------------------------------------------------------------------------


def ref_downsample(x, k, side):
    """ALGORITHMS.md, "Controls": g = floor(sqrt(K)) cells per side; cell i covers rows
    floor(i G / g) .. ceil((i + 1) G / g) - 1 (adaptive average pooling), and so for columns."""
    x = np.asarray(x, dtype=np.float64)
    g = min(math.isqrt(k), side)
    tokens, sources = [], []
    for i in range(g):
        r0, r1 = (i * side) // g, -((-(i + 1) * side) // g)
        for j in range(g):
            c0, c1 = (j * side) // g, -((-(j + 1) * side) // g)
            cell = [x[r * side + c] for r in range(r0, r1) for c in range(c0, c1)]
            tokens.append(np.mean(cell, axis=0))
            sources.append(r0 * side + c0)
    return np.stack(tokens), sources


@pytest.mark.parametrize("n,side,k", [(N, GRID, 64), (N, GRID, 128), (N, GRID, 192), (N, GRID, 576),
                                      (N_TOY, GRID_TOY, 16), (N_TOY, GRID_TOY, 32), (N_TOY, GRID_TOY, 48)])
def test_downsample_equals_reference(n, side, k):
    g = torch.Generator().manual_seed(k + n)
    x, a = torch.randn(2, n, 64, generator=g), torch.rand(2, n, generator=g)
    out = merge("downsample", x, a, k)
    assert torch.equal(out.tokens, merge("downsample", x, a, k, grid_size=side).tokens)
    m = math.isqrt(k) ** 2
    assert out.tokens.shape == (2, m, 64) and out.sources.shape == (2, m)
    for row in range(2):
        tokens, sources = ref_downsample(x[row].numpy(), k, side)
        assert out.sources[row].tolist() == sources
        np.testing.assert_allclose(out.tokens[row].numpy(), tokens, rtol=1e-5, atol=1e-6)
    if k == n:
        assert torch.equal(out.tokens, x) and out.sources[0].tolist() == list(range(n))


def test_downsample_hand_computed_block_means():
    x = torch.arange(16.0).reshape(1, 16, 1)  # a 4 x 4 grid, one channel
    for k in (4, 5, 8):  # floor(sqrt(K)) = 2
        out = merge("downsample", x, torch.ones(1, 16), k)
        assert out.tokens.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # (0+1+4+5)/4, ...
        assert out.sources.tolist() == [[0, 2, 8, 10]]
    out = merge("downsample", x, torch.ones(1, 16), 1)
    assert out.tokens.flatten().tolist() == [7.5] and out.sources.tolist() == [[0]]
    # a non-square grid, given: 3 x 3 on N = 9 with grid_size
    out = merge("downsample", torch.arange(9.0).reshape(1, 9, 1), torch.ones(1, 9), 4, grid_size=3)
    assert out.tokens.flatten().tolist() == [2.0, 3.0, 5.0, 6.0]  # overlapping 2 x 2 cells
    assert out.sources.tolist() == [[0, 1, 3, 4]]


# ----------------------------------------------------------------------------------------------
# The registry and bad input
# ----------------------------------------------------------------------------------------------


def test_specs():
    vz, vp, ds = spec("visionzip"), spec("vispruner"), spec("downsample")
    assert (vz.output, vz.inputs, vz.stage) == ("tokens", ("cls_feature", "vision_keys"), "pre-llm")
    assert (vp.output, ds.output, ds.inputs) == ("indices", "tokens", ("grid_size",))
    assert vz.parameters == {"dominant": None, "feature_space": "vision"}
    assert vp.parameters == {"important_ratio": 0.5, "feature_space": "vision"}
    assert ds.parameters == {"feature_space": "vision"}
    assert vz.display({}) == "VisionZip" and vz.display({"dominant": 40}) == "VisionZip (D=40)"
    assert vp.display({}) == "VisPruner" and vp.display({"important_ratio": 0.75}) == "VisPruner ρ=0.75"
    assert vz.source.startswith("https://github.com/dvlab-research") and vp.source.startswith("https://github.com/Theia")
    # selector cost, d the feature width: VisionZip 2 (R - C) C d_head + (R - C) d with d_head = d / 16
    # (64: R = 523, C = 10); VisPruner 2 N^2 d; pooling N d
    assert vz.selector_flops(N, 64, D_V) == 2.0 * 513 * 10 * 64 + 513 * 1024
    assert vp.selector_flops(N, 64, D_V) == 2.0 * N * N * D_V
    assert ds.selector_flops(N, 64, D_V) == float(N * D_V)


def test_bad_input():
    x, a, cls, keys = _vz_inputs(500, b=2, n=N_TOY, d=32, d_head=16)
    with pytest.raises(ValueError, match="^cls_feature: VisionZip needs"):
        merge("visionzip", x, a, 16, vision_keys=keys)
    with pytest.raises(ValueError, match="^vision_keys: VisionZip needs"):
        merge("visionzip", x, a, 16, cls_feature=cls)
    with pytest.raises(ValueError, match="^vision_keys"):
        merge("visionzip", x, a, 16, cls_feature=cls, vision_keys=keys[:, 1:])  # CLS row missing
    with pytest.raises(ValueError, match="^cls_feature"):
        merge("visionzip", x, a, 16, cls_feature=cls[:, :8], vision_keys=keys)
    with pytest.raises(ValueError, match="^vision_keys"):
        merge("visionzip", x, a, 16, cls_feature=cls, vision_keys=keys.clone().fill_(math.nan))
    for dominant in (0, 17, 2.5, True, "3"):
        with pytest.raises(ValueError, match="^dominant"):
            merge("visionzip", x, a, 16, dominant=dominant, cls_feature=cls, vision_keys=keys)
    for ratio in (-0.1, 1.5, math.nan, "half", True):
        with pytest.raises(ValueError, match="^important_ratio"):
            select("vispruner", x, a, 16, important_ratio=ratio)
    with pytest.raises(ValueError, match="^grid_size"):
        merge("downsample", x[:, :143], a[:, :143], 16)  # 143 patches: not a square grid
    for side in (11, 0, 12.0):
        with pytest.raises(ValueError, match="^grid_size"):
            merge("downsample", x, a, 16, grid_size=side)
    with pytest.raises(ValueError, match="^k"):
        merge("visionzip", x, a, N_TOY + 1, cls_feature=cls, vision_keys=keys)
    with pytest.raises(ValueError, match="^method"):
        select("visionzip", x, a, 16)  # a merger is not a selector
    with pytest.raises(ValueError, match="^method"):
        merge("vispruner", x, a, 16)


def test_tolerant_order_hand_computed():
    """Within delta counts as equal, the lower position first; "within delta" is not transitive,
    so the order is built greedily from the largest remaining score."""
    from visprune.pruning.vispruner import tolerant_order

    delta = 1e-3
    up = float(np.float32(0.9) + 3 * np.spacing(np.float32(0.9)))
    assert tolerant_order(torch.tensor([[0.5, 0.9, up, 0.1]]), delta).tolist() == [[1, 2, 0, 3]]
    assert tolerant_order(torch.tensor([[0.5, 0.9, 0.95, 0.1]]), delta).tolist() == [[2, 1, 0, 3]]
    # positions 2, 1, 0 hold 1, 1 - 0.6 delta, 1 - 1.2 delta: position 1 ties with 2, position 0
    # with 1 but not with 2, so 1 goes first, then 2 (the largest left), then 0
    chain = torch.tensor([[1 - 1.2e-3, 1 - 0.6e-3, 1.0, 0.2]], dtype=torch.float64)
    assert tolerant_order(chain, delta).tolist() == [[1, 2, 0, 3]]
    assert tolerant_order(chain, 0.0).tolist() == [[2, 1, 0, 3]]
