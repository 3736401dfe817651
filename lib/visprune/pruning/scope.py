"""SCOPE: saliency-weighted greedy coverage (ALGORITHMS.md, "SCOPE")."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dataclasses import dataclass

from visprune.pruning._numerics import _check_real, cosine_similarity_matrix, rounding_delta
from visprune.pruning.registry import register


@dataclass(frozen=True)
class _ScopeRule:
    """The numbers of SCOPE's rounding rule for one call (see ``_scope_rule`` and ``scope_select``)."""

    delta: float  # a gap S[j, i] - cover_j <= delta counts as 0
    grid: float  # every term is a multiple of grid, so that float64 sums of terms are exact
    round_terms: bool  # False when the terms lie on the grid already (float32, large enough delta)
    rtol: float  # scores within max(rtol * best, atol) of the best tie
    atol_per_weight: float  # atol = atol_per_weight * (largest weight among the candidates)


def _scope_rule(dtype: torch.dtype, n: int, width: int, gap_power: float) -> _ScopeRule:
    """SCOPE's tie rule for similarities of work dtype ``dtype``, N = ``n`` tokens of width d.

    - ``delta = rounding_delta(dtype, d)``.
    - The grid: a term is at most 1 (gaps are clamped to 1; exactly, S <= 1 and cover >= 0) and
      a gain, or any partial sum or difference of terms the loops form, is at most 2N in size.
      With ``grid = 2 ** (ceil(log2(2N)) - 53)`` every multiple of grid up to 2N is a float64
      number, so sums of terms on the grid are exact in float64 in any order (an incremental
      update, a GEMM, a reduction on a GPU). Float32 terms >= 2 ** 23 * grid are multiples of
      grid already; when every nonzero term is (gaps > delta, so terms > delta ** p), the
      rounding is skipped (float32 features at p = 1, the default).
    - ``rtol``: 1e-5 in float32, 1e-9 in float64 (relative rounding of weights and terms).
    - ``atol``, derived: a gain is a sum of N terms ``t(g) = g ** p`` (0 for g <= delta) of gaps
      g in [0, 1], and rounding moves each gap by up to delta (the GEMM's own error is about a
      tenth of that, ``ROUNDING_C``). That moves a term by at most ``tau_p = p delta ** min(p, 1)``:
      the slope p g ** (p - 1) is at most p for p >= 1 (g <= 1) and at most p delta ** (p - 1)
      above the threshold for p < 1. The grid adds one grid step. These N errors have no common
      sign (they come from independent roundings of different entries of S), so their sum is of
      order ``sqrt(N) (tau_p + grid)``; since delta is itself ~10x the per-entry error, that is a
      ~10-sigma bound. The worst case, N (tau_p + grid), is not used: it is reached only if all N
      errors have the same sign, and it is so wide (8.8e-3 at N = 576, d = 1024, p = 1, against
      late-loop gains ~0.1 that differ by 1e-5 to 1e-3) that the lowest index, not the score, would decide
      most late picks. A score is its gain times a weight, at most the largest weight among the
      candidates: ``atol = sqrt(N) (tau_p + grid) max_i a_i ** alpha``. A threshold-sized term
      appearing or vanishing (a gap within rounding of delta; for p < 1 a jump of delta ** p) is a
      generic near-tie, as rare as any other, and is not covered.
    """
    delta = rounding_delta(dtype, width)
    grid = 2.0 ** ((2 * n - 1).bit_length() - 53)  # (2N - 1).bit_length() = ceil(log2(2N))
    on_grid = dtype == torch.float32 and delta**gap_power >= 2.0 * grid * 2.0**23  # 2x: pow's rounding
    tau = gap_power * delta ** min(gap_power, 1.0)
    return _ScopeRule(
        delta=delta,
        grid=grid,
        round_terms=not on_grid,
        rtol=1e-9 if dtype == torch.float64 else 1e-5,
        atol_per_weight=math.sqrt(n) * (tau + grid),
    )


def _coverage_terms_(gap: torch.Tensor, gap_power: float, rule: _ScopeRule) -> torch.Tensor:
    """In place: gaps ``S[j, i] - cover_j`` -> SCOPE's terms ``g ** p``, 0 where ``g <= delta``.

    Gaps are clamped to 1 (their exact bound), raised to ``gap_power`` and rounded to
    ``rule.grid``. Both greedy loops compute their terms with this one function (the CPU loop on
    torch views of its NumPy rows), so they hold the same terms bit for bit: every step here is
    an exactly rounded operation (for p in {1, 2, 0.5}: x * x and sqrt) except ``pow`` for other
    p, whose last-ulp differences the tie rule absorbs.
    """
    gap.clamp_(max=1.0)
    F.threshold_(gap, rule.delta, 0.0)  # g if g > delta else 0 (negative gaps included)
    if gap_power != 1.0:
        gap.pow_(gap_power)
    if rule.round_terms:  # exact: scalings by powers of two and round-half-even
        gap.mul_(1.0 / rule.grid).round_().mul_(rule.grid)
    return gap


def _scope_greedy_dense(
    sim: torch.Tensor, weight: torch.Tensor, k: int, gap_power: float, rule: _ScopeRule
) -> torch.Tensor:
    """SCOPE's greedy loop in torch on any device; returns (B, K) indices in pick order.

    sim:    (B, N, N) symmetric cosine similarities, sim[b, j, i] = S[j, i] = S[i, j]
    weight: (B, N) = a_i ** alpha (exactly 1 everywhere when alpha = 0)
    rule:   ``_scope_rule(sim.dtype, N, d, gap_power)``

    Each step recomputes the term matrix ``R[b, j, i] = t(S[j, i] - cover_j)`` (row j = the token
    being covered, column i = the candidate) into one preallocated buffer and sums its columns
    exactly in float64: a few large kernels per step and no host synchronisation, which suits GPUs.
    """
    batch, n, _ = sim.shape
    rows = torch.arange(batch, device=sim.device)  # (B,)
    weight = weight.to(torch.float64)  # (B, N)
    cover = torch.zeros(batch, n, dtype=sim.dtype, device=sim.device)  # (B, N) cover_j
    selected = torch.zeros(batch, n, dtype=torch.bool, device=sim.device)  # (B, N)
    picks = []
    gap = torch.empty_like(sim)  # (B, N, N) R, reused every step
    for step in range(k):
        _coverage_terms_(torch.sub(sim, cover.unsqueeze(-1), out=gap), gap_power, rule)
        score = gap.sum(dim=1, dtype=torch.float64).mul_(weight)  # (B, N): gain_i * a_i ** alpha, exact gain
        score.masked_fill_(selected, -math.inf)  # a picked token is never picked again
        best = score.amax(dim=1, keepdim=True)  # (B, 1)
        w_max = weight.masked_fill(selected, 0.0).amax(dim=1, keepdim=True)  # (B, 1) over candidates
        tol = torch.maximum(best * rule.rtol, w_max * rule.atol_per_weight)  # (B, 1)
        pick = (score >= best - tol).to(torch.uint8).argmax(dim=1)  # (B,) lowest tied index
        picks.append(pick)
        selected[rows, pick] = True
        torch.maximum(cover, sim[rows, pick, :], out=cover)  # S[i*, j] = S[j, i*]
    return torch.stack(picks, dim=1)


def _scope_greedy_cpu(
    sim: torch.Tensor, weight: torch.Tensor, k: int, gap_power: float, rule: _ScopeRule
) -> torch.Tensor:
    """SCOPE's greedy loop for CPU tensors, incremental and in NumPy; the same picks as the dense loop.

    Same inputs as ``_scope_greedy_dense``. The term matrix R (B, N, N) is kept between steps,
    and after a pick only the rows whose cover rose (S[j, i*] > cover_j; their new cover is
    S[j, i*]) are recomputed: after the first few picks that is typically a few percent of the
    N rows. The gains (column sums of R, float64) are lowered by the change of those rows, so a
    step costs O(B N + changed rows x N) instead of O(B N^2). When more than 40% of all rows
    change (the first pick), R and the gains are recomputed in full instead.

    Exactness: the terms lie on ``rule.grid`` (``_coverage_terms_``, the dense loop's function),
    so every float64 sum and difference of them here is exact: a running gain *is* the column
    sum of R, bit for bit, whatever the order of updates, and equals the dense loop's gain. The
    scores and the tie test are then the same float64 operations in both loops, so the picks
    agree exactly, and a gain whose terms are all 0 is exactly 0 (no rounding residue). The loop
    is in NumPy because per-call overhead, not arithmetic, dominates once only a few rows change
    per step.
    """
    batch, n, _ = sim.shape
    sim_np = sim.contiguous().numpy()  # (B, N, N), shares memory
    sim_rows = sim_np.reshape(batch * n, n)  # flat row b*N + j
    gap = np.empty_like(sim_np)  # (B, N, N): R
    gap_rows = gap.reshape(batch * n, n)
    cover = np.zeros((batch, n), dtype=sim_np.dtype)  # (B, N) cover_j
    cover_flat = cover.reshape(-1)

    def recompute_all():  # R and its column sums from scratch: (B, N) float64, exact
        np.subtract(sim_np, cover[:, :, None], out=gap)
        _coverage_terms_(torch.from_numpy(gap), gap_power, rule)
        return gap.sum(axis=1, dtype=np.float64)

    gain = recompute_all()
    weight_np = weight.to(torch.float64).numpy()  # (B, N)
    weight_left = weight_np.copy()  # (B, N): the candidates' weights, 0 once picked
    penalty = np.zeros((batch, n))  # (B, N): -inf once picked
    score = np.empty((batch, n))
    row_offset = np.arange(batch) * n  # (B,)
    image_rows = np.arange(batch)
    picks = []
    for step in range(k):
        np.multiply(gain, weight_np, out=score)
        score += penalty  # a picked token is never picked again
        best = score.max(axis=1, keepdims=True)  # (B, 1)
        tol = np.maximum(best * rule.rtol, weight_left.max(axis=1, keepdims=True) * rule.atol_per_weight)
        pick = (score >= best - tol).argmax(axis=1)  # (B,) lowest tied index
        picks.append(pick)
        flat_pick = row_offset + pick  # (B,) flat index b*N + i*
        penalty.put(flat_pick, -np.inf)
        weight_left.put(flat_pick, 0.0)
        if step == k - 1:
            break
        column = sim_rows[flat_pick]  # (B, N): S[i*, j] = S[j, i*]
        changed = (column > cover).ravel().nonzero()[0]  # flat rows b*N + j, ascending
        np.maximum(cover, column, out=cover)
        if changed.size > 0.4 * batch * n:  # cheaper to recompute everything (measured break-even)
            gain = recompute_all()
        elif changed.size:
            fresh = sim_rows[changed]  # (m, N) copy
            fresh -= cover_flat[changed][:, None]
            _coverage_terms_(torch.from_numpy(fresh), gap_power, rule)
            drop = gap_rows[changed].astype(np.float64)  # (m, N) old rows
            gap_rows[changed] = fresh
            drop -= fresh  # how much each term fell: exact (both on the grid)
            if batch == 1:
                gain[0] -= drop.sum(axis=0)
            else:  # sum the changed rows per image with a (B, m) 0/1 matrix product (exact too)
                gain -= (changed // n == image_rows[:, None]).astype(np.float64) @ drop
    return torch.from_numpy(np.stack(picks, axis=1))


def _scope_label(params: dict) -> str:
    """``SCOPE α=0.5`` (and ``, p=2`` when the gap power is not 1)."""
    text = f"SCOPE α={float(params.get('alpha', 1.0)):g}"
    if float(params.get("gap_power", 1.0)) != 1.0:
        text += f", p={float(params['gap_power']):g}"
    return text


@register("scope", label="SCOPE", color="#1f77b4", describe=_scope_label, source="Deng et al., NeurIPS 2025",
          convention="K tokens enter the language model",
          selector_flops=lambda n, k, d: 2.0 * n * n * d + 2.0 * k * n * n)  # similarities, then k coverage sweeps
def scope_select(features, saliency, k, *, alpha: float = 1.0, gap_power: float = 1.0):
    """SCOPE greedy saliency-coverage selection (ALGORITHMS.md, "SCOPE"; Deng et al., NeurIPS 2025).

    With ``S`` the cosine similarities of the features and ``cover_j`` (starting at 0) the best
    similarity of token j to the tokens picked so far, each of K steps picks the unpicked token
    maximising ``score_i = gain_i * a_i ** alpha`` with ``gain_i = sum_j max(0, S[j,i] - cover_j) ** p``
    (p = ``gap_power``), then sets ``cover_j = max(cover_j, S[j, i*])``.

    - ``alpha`` >= 0 (default 1, the released SCOPE code): saliency weight. ``alpha = 0`` is pure
      coverage: the weight is exactly 1 for every token, including tokens with zero saliency.
    - ``gap_power`` > 0 (default 1): exponent on the coverage gap.
    - Numerics (ALGORITHMS.md, "SCOPE", "Numerics"), so that the picks do not depend on the
      CPU's BLAS kernels. With d the feature width, eps that of the work dtype (float32, or
      float64 for float64 features) and ``delta = 4 sqrt(d) eps`` (``rounding_delta``):

      * a gap ``S[j, i] - cover_j <= delta`` counts as 0. Identical feature rows need not give
        bit-identical columns of S, so a token whose duplicate is picked keeps gaps of an ulp or
        two; they are 0 here, its gain is exactly 0.
      * two scores tie when they differ by at most ``max(rtol * best, atol)``, ``best`` being the
        largest score, rtol = 1e-5 (float32) or 1e-9 (float64) and
        ``atol = sqrt(N) * (p * delta ** min(p, 1) + grid) * max_i a_i ** alpha`` over the
        unpicked candidates i (``grid`` = 2.3e-13 at N = 576): how far N independent roundings
        of the gaps, each up to delta, move a score; ``_scope_rule`` gives the derivation (and
        why not the worst case N instead of sqrt(N)). The pick is the lowest
        index among the tied, i.e. the lowest index whose score is >= ``best - max(rtol * best, atol)``.
        Exact ties are common, not a corner case: late in the loop two mutually similar
        uncovered tokens often get gains that are equal in exact arithmetic, and rounding alone
        would otherwise decide between them, differently on CPU and GPU.
      * the terms are rounded to a power-of-two grid far below delta, so that every gain is an
        exact float64 sum: both loops below compute the same scores bit for bit.
    - Picked tokens are masked with -inf, so they are never picked again. When every remaining
      score is 0 (e.g. remaining tokens are duplicates of picked ones, or have zero saliency with
      alpha > 0), the lowest remaining index is picked.
    - Cost: one (B, N, N) similarity matrix, then K steps vectorised over candidates and images
      (the only Python loop). On CPU the term matrix is updated incrementally
      (``_scope_greedy_cpu``, a few percent of its rows per step); on other devices it is
      recomputed each step (``_scope_greedy_dense``, O(N^2) per step but no host syncs). Both
      apply the same rule to the same numbers and give the same picks. Memory: two (B, N, N)
      arrays in the work dtype.
    """
    alpha = _check_real("alpha", alpha, low=0.0)
    gap_power = _check_real("gap_power", gap_power, low=0.0, low_open=True)
    sim = cosine_similarity_matrix(features)  # (B, N, N)
    rule = _scope_rule(sim.dtype, sim.shape[1], features.shape[-1], gap_power)
    sal = saliency.to(sim.dtype)
    weight = torch.ones_like(sal) if alpha == 0.0 else sal.pow(alpha)  # (B, N); 0 ** 0 = 1 by construction
    if sim.device.type == "cpu":
        return _scope_greedy_cpu(sim, weight, k, gap_power, rule)
    return _scope_greedy_dense(sim, weight, k, gap_power, rule)


# ----------------------------------------------------------------------------------------------
# DivPrune
# ----------------------------------------------------------------------------------------------

