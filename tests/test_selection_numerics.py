"""Selections must not depend on the CPU's BLAS kernels (ALGORITHMS.md, "SCOPE", paragraph
"Numerics"; visprune.pruning's module docstring): +-1 ulp changes of the similarities or the
features leave every pick unchanged, exhausted SCOPE gains pick the definition's tokens however
the duplicates are rounded, and the incremental CPU loop and the dense loop of SCOPE agree
exactly, on random inputs in LLaVA-1.5's shapes and on every test image of the toy world.

Exact pick orders are compared across code paths and perturbations throughout. They can be: the
rule makes a gap within rounding of 0 exactly 0 and makes scores within rounding of each other
a tie that the lower index wins, so rounding can only change a pick where two scores straddle
the tie tolerance by chance (not by construction, as duplicates do); and the two SCOPE loops
compute the same scores bit for bit (terms on a power-of-two grid, exact float64 sums).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_pruning import ref_delta, ref_divprune, ref_scope, rows
from visprune import pruning
from visprune.pruning import select

REPO = Path(__file__).resolve().parents[1]
SCOPE_PARAMS = [(alpha, p) for alpha in (0.0, 0.5, 1.0) for p in (1.0, 2.0)]
DTYPES = [torch.float32, torch.float64]


def features_with_duplicates(seed, b=3, n=40, d=12, dtype=torch.float64, n_copies=12):
    """Random CLIP-like features (a common component) in which ``n_copies`` rows per image are
    bit-identical copies of other rows, and saliencies with a few large values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64) + 0.5 * torch.randn(b, 1, d, generator=g, dtype=torch.float64)
    for row in range(b):
        targets = torch.randperm(n, generator=g)[:n_copies]
        sources = torch.randint(0, n, (n_copies,), generator=g)
        x[row, targets] = x[row, sources]
    a = torch.rand(b, n, generator=g, dtype=torch.float64) ** 3
    return x.to(dtype), a.to(dtype)


def nudge(t: torch.Tensor, seed: int, fraction: float = 0.3) -> torch.Tensor:
    """``t`` with a random ``fraction`` of its entries moved by one ulp, up or down at random."""
    g = torch.Generator().manual_seed(seed)
    moved = torch.rand(t.shape, generator=g) < fraction
    up = torch.rand(t.shape, generator=g) < 0.5
    toward = torch.where(up, torch.tensor(math.inf, dtype=t.dtype), torch.tensor(-math.inf, dtype=t.dtype))
    return torch.where(moved, torch.nextafter(t, toward), t)


def nudge_symmetric(sim: torch.Tensor, seed: int) -> torch.Tensor:
    """A +-1 ulp nudge of a (B, N, N) similarity matrix that keeps it exactly symmetric (as the
    library makes S), diagonal included."""
    upper = torch.triu(nudge(sim, seed))
    return upper + torch.triu(upper, diagonal=1).transpose(1, 2)


def scope_orders(sim, sal, k, alpha, p, width):
    """Pick orders (B, K) of both SCOPE loops, asserted equal, on a given similarity matrix."""
    weight = torch.ones_like(sal, dtype=sim.dtype) if alpha == 0.0 else sal.to(sim.dtype).pow(alpha)
    rule = pruning.scope._scope_rule(sim.dtype, sim.shape[1], width, p)
    cpu = pruning.scope._scope_greedy_cpu(sim, weight, k, p, rule)
    dense = pruning.scope._scope_greedy_dense(sim, weight, k, p, rule)
    assert torch.equal(cpu, dense)  # same terms, exact sums, same tie test: bit-identical scores
    return cpu


def test_rounding_delta_hand_computed():
    # 4 sqrt(1024) 2^-23 = 2^-16 exactly; float64: 4 * 3 * 2^-52 rounded to float32 (exact here).
    assert pruning.rounding_delta(torch.float32, 1024) == 2.0**-16
    assert pruning.rounding_delta(torch.float64, 9) == 12 * 2.0**-52
    assert pruning.ROUNDING_C == 4.0


# ----------------------------------------------------------------------------------------------
# (a) +-1 ulp perturbations of S and of the features change no pick
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha, p", SCOPE_PARAMS)
def test_scope_picks_survive_ulp_perturbation_of_similarities(dtype, alpha, p):
    for seed in range(3):
        x, a = features_with_duplicates(seed, dtype=dtype)
        sim = pruning.cosine_similarity_matrix(x)
        n = sim.shape[1]
        base = scope_orders(sim, a, n, alpha, p, x.shape[-1])  # K = N: the whole pick order
        for trial in range(3):
            got = scope_orders(nudge_symmetric(sim, 100 * seed + trial), a, n, alpha, p, x.shape[-1])
            assert torch.equal(got, base), (seed, trial)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha, p", SCOPE_PARAMS)
def test_scope_picks_survive_ulp_perturbation_of_features(dtype, alpha, p):
    for seed in range(3):
        x, a = features_with_duplicates(10 + seed, dtype=dtype)
        for k in (5, 20, 40):
            base = select("scope", x, a, k, alpha=alpha, gap_power=p)
            for trial in range(2):
                assert torch.equal(select("scope", nudge(x, 7 * seed + trial), a, k, alpha=alpha, gap_power=p), base)


@pytest.mark.parametrize("dtype", DTYPES)
def test_divprune_picks_survive_ulp_perturbation(dtype, monkeypatch):
    exact_similarity = pruning.cosine_similarity_matrix
    for seed in range(3):
        x, a = features_with_duplicates(20 + seed, dtype=dtype)
        n = x.shape[1]
        base = select("divprune", x, a, n - 1)
        want = [ref_divprune(rows(x[b]), n - 1, dtype) for b in range(x.shape[0])]
        assert base.tolist() == want  # the definition, before any perturbation
        for k in (1, 6, n - 1):  # +-1 ulp on the features: still the unperturbed definition's picks
            want = [ref_divprune(rows(x[b]), k, dtype) for b in range(x.shape[0])]
            assert select("divprune", nudge(x, seed), a, k).tolist() == want, (seed, k)
        for trial in range(3):
            monkeypatch.setattr(pruning, "cosine_similarity_matrix", lambda f, t=trial: nudge_symmetric(exact_similarity(f), t))
            assert torch.equal(select("divprune", x, a, n - 1), base), (seed, trial)
            monkeypatch.setattr(pruning, "cosine_similarity_matrix", exact_similarity)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_duplicates_blocked_whatever_their_rounding(dtype, monkeypatch):
    # Distances <= delta count as 0: at a tau far below any real distance but above 0, every
    # duplicate of a kept token is blocked, whatever ulps its similarities carry; at tau = 0 all
    # are accepted (saliency order).
    x, a = features_with_duplicates(30, dtype=dtype)
    n, d = x.shape[1], x.shape[2]
    tiny = ref_delta(dtype, d) / 2
    exact_similarity = pruning.cosine_similarity_matrix
    for trial in range(4):
        if trial:
            monkeypatch.setattr(pruning, "cosine_similarity_matrix", lambda f, t=trial: nudge_symmetric(exact_similarity(f), t))
        _, info = select("adaptive", x, a, n, erank_ref=1.0, c=tiny, tau_max=1.0, image_erank=[1.0] * 3, return_info=True)
        distinct = [len({tuple(r) for r in x[b].tolist()}) for b in range(3)]
        assert info["n_walk"].tolist() == distinct  # one token per distinct feature vector
        assert torch.equal(select("adaptive", x, a, 9, erank_ref=1.0, c=0.0), select("saliency", x, a, 9))


# ----------------------------------------------------------------------------------------------
# (b) exhausted gains: duplicates rounded differently still give the definition's picks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_scope_exhausted_gains_under_tail_rounding(dtype, alpha, monkeypatch):
    # Ten directions, each three times (tokens i, i + 10, i + 20). What an AVX-512 GEMM did to
    # this case: the tail columns of S, those of the third copies, came out 1-2 ulps above their
    # bit-identical duplicates, and the old rule then picked 25 and 27 instead of 18 and 19.
    # Here: the last ten rows/columns nudged up by 1 and 2 ulps, then random +-1 ulp everywhere.
    exact_similarity = pruning.cosine_similarity_matrix

    def tail_rounded(features, trial):
        sim = exact_similarity(features)
        up = torch.full_like(sim, math.inf)
        tail = sim.clone()
        tail[:, :, 20:] = torch.nextafter(torch.nextafter(sim[:, :, 20:], up[:, :, 20:]), up[:, :, 20:]) if trial % 2 else torch.nextafter(sim[:, :, 20:], up[:, :, 20:])
        tail[:, 20:, :] = tail[:, :, 20:].transpose(1, 2)
        return nudge_symmetric(tail, trial) if trial >= 2 else tail

    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(10, 7, generator=g, dtype=torch.float64) + 0.5
        x = v.repeat(3, 1).unsqueeze(0).to(dtype)
        a = torch.rand(1, 30, generator=g, dtype=torch.float64).to(dtype)
        want = ref_scope(rows(x[0]), a[0].double().tolist(), 20, alpha, 1.0, dtype)  # unperturbed definition
        if alpha == 0.0:
            assert want == list(range(20))  # one copy of each direction, then the lowest indices
        for trial in range(4):
            monkeypatch.setattr(pruning, "cosine_similarity_matrix", lambda f, t=trial: tail_rounded(f, t))
            assert select("scope", x, a, 20, alpha=alpha).tolist() == [want], (seed, trial)
            monkeypatch.setattr(pruning, "cosine_similarity_matrix", exact_similarity)
        for trial in range(3):  # +-1 ulp on the features: the copies are no longer bit-identical
            assert select("scope", nudge(x, trial), a, 20, alpha=alpha).tolist() == [want], (seed, trial)


# ----------------------------------------------------------------------------------------------
# (d) both SCOPE loops against the brute force of the definition, pick order included
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha, p", SCOPE_PARAMS + [(2.0, 0.5)])
def test_scope_loops_match_brute_force_order(dtype, alpha, p):
    for seed in range(2):
        x, a = features_with_duplicates(40 + seed, b=2, n=24, d=6, dtype=dtype, n_copies=6)
        sim = pruning.cosine_similarity_matrix(x)
        order = scope_orders(sim, a, 24, alpha, p, x.shape[-1])
        for b in range(2):
            assert order[b].tolist() == ref_scope(rows(x[b]), a[b].double().tolist(), 24, alpha, p, dtype, order=True)


# ----------------------------------------------------------------------------------------------
# (c) the CPU loop and the dense loop agree in the real shapes and on the toy world
# ----------------------------------------------------------------------------------------------


def test_scope_loops_agree_in_llava_shapes():
    # N = 576 tokens of width 1024 (CLIP ViT-L/14 at 336 px), float32, K up to 192: clustered
    # features on a 24 x 24 grid with a few exact duplicate patches (flat regions) and two
    # high-norm artefact tokens that take most of the CLS attention.
    g = torch.Generator().manual_seed(0)
    b, n, d = 3, 576, 1024
    region = torch.randint(0, 12, (b, n), generator=g)
    centres = torch.randn(b, 12, d, generator=g)
    x = 1.5 * torch.randn(b, 1, d, generator=g) + centres.gather(1, region[..., None].expand(b, n, d))
    x += 0.6 * torch.randn(b, n, d, generator=g)
    x[:, 100:140] = x[:, 60:100]  # 40 exact duplicates per image
    logits = torch.randn(b, n, generator=g)
    logits[:, :2] += 6.0
    sal = torch.softmax(logits, dim=1) * 16
    sim = pruning.cosine_similarity_matrix(x)
    for alpha, p in SCOPE_PARAMS:
        scope_orders(sim, sal, 192, alpha, p, d)  # asserts the two loops' orders are equal


@pytest.fixture(scope="module")
def toy_test_features(tmp_path_factory):
    """Vision features and CLS attention of every test image of the toy world, float32."""
    from PIL import Image

    from visprune.instrument.llava import PrunedLlava

    world = REPO / "data" / "toyworld"
    if not (world / "images" / "test").is_dir():
        world = tmp_path_factory.mktemp("toyworld")
        subprocess.run([sys.executable, "-m", "visprune.toyworld", "--out", str(world), "--seed", "0"],
                       check=True, cwd=REPO, capture_output=True)
    paths = sorted((world / "images" / "test").glob("*.png"))
    assert len(paths) >= 100, f"expected the toy world's test images under {world}"
    model = PrunedLlava.from_pretrained(str(REPO / "lib" / "visprune" / "assets" / "toy-llava"), device="cpu")
    feats, sals = [], []
    with torch.no_grad():
        for start in range(0, len(paths), 50):
            out = model.encode_images([Image.open(p).convert("RGB") for p in paths[start:start + 50]])
            feats.append(out.features.float())
            sals.append(out.cls_attention.float())
    return torch.cat(feats), torch.cat(sals)


@pytest.mark.slow  # ~20 s in all: encodes every toy test image (400, ~6 s), then K = N twice
@pytest.mark.parametrize("alpha, p", [(0.0, 1.0), (0.5, 2.0)])
def test_scope_loops_agree_on_every_toy_test_image(toy_test_features, alpha, p):
    # The greedy is prefix-consistent (the first K picks do not depend on K), so one run with
    # K = N per image checks every budget K at once.
    feats, sal = toy_test_features
    n = feats.shape[1]
    for start in range(0, feats.shape[0], 100):
        x, a = feats[start:start + 100], sal[start:start + 100]
        sim = pruning.cosine_similarity_matrix(x)
        full = scope_orders(sim, a, n, alpha, p, x.shape[-1])  # asserts the two loops' orders are equal
        # and select() keeps the loops' first K picks at a few budgets
        for k in (16, 64):
            assert torch.equal(select("scope", x, a, k, alpha=alpha, gap_power=p), full[:, :k].sort(dim=1).values)
