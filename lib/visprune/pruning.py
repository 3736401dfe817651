"""Visual token selectors (ALGORITHMS.md, "Pruning methods"; DESIGN.md sections 4 and 8).

A selector looks at one image's vision-tower patch features ``X`` (N x d) and its CLS-to-patch
attention ``a`` (N, summed over heads) and returns the indices of the K visual tokens to keep.
Everything here works on batches of images and on whatever device the tensors are on.

    >>> import torch
    >>> from visprune.pruning import select
    >>> feats, sal = torch.randn(2, 576, 1024), torch.rand(2, 576)
    >>> keep = select("scope", feats, sal, 64, alpha=0.5)   # LongTensor (2, 64), ascending rows
    >>> keep.shape
    torch.Size([2, 64])

Methods (``available_methods()``): ``random``, ``saliency``, ``scope``, ``divprune``,
``adaptive``. FastV prunes inside the language model and lives with the model wrapper, not here.

Adding a method is one function and one registry entry::

    @register("my_method")
    def my_method(features, saliency, k, *, my_param=1.0):
        ...  # features (B, N, d), saliency (B, N), both validated; return LongTensor (B, k)

The function receives validated tensors and an int ``k`` (1 <= k <= N), takes its parameters as
keyword-only arguments with defaults (``select`` rejects any other keyword by name), and
returns K distinct indices per row in any order, or ``(indices, info)`` with a dict of per-image
diagnostics (returned by ``select(..., return_info=True)``). ``select`` sorts the rows and moves
them to the features' device.

Numerics (ALGORITHMS.md, "SCOPE", paragraph "Numerics"; the same care for every selector):
similarities are computed in float32, or float64 when the features are float64, and made exactly
symmetric. A GEMM may round one entry of S a few ulps differently from a bit-identical duplicate
of it (it sums tail columns in another order, and that differs between CPUs), so no outcome may
hinge on a difference that small. ``rounding_delta`` gives ``delta = c * sqrt(d) * eps`` (c =
``ROUNDING_C`` = 4, d the feature width, eps that of the work dtype): the size of a difference
between similarities, or distances, that rounding alone can produce. Then:

- SCOPE: a coverage gap ``S[j, i] - cover_j <= delta`` counts as 0, and two scores within
  ``max(rtol * best, atol)`` of each other tie (``scope_select`` derives ``atol``);
- DivPrune: min-distances within ``delta`` of the largest tie;
- adaptive: a distance ``<= delta`` counts as 0 (a duplicate), compared exactly with tau otherwise;
- saliency (and the adaptive walk order): an exact, stable sort; see ``saliency_select``.

Ties go to the lower token index everywhere. Selection never tracks gradients.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from visprune.image_stats import erank_batch

__all__ = [
    "METHODS",
    "ROUNDING_C",
    "rounding_delta",
    "register",
    "available_methods",
    "select",
    "cosine_similarity_matrix",
    "adaptive_threshold",
    "random_select",
    "saliency_select",
    "scope_select",
    "divprune_select",
    "adaptive_select",
    "ADAPTIVE_DEFAULT_C",
    "ADAPTIVE_DEFAULT_TAU_MAX",
]

# name -> selector function; filled by the @register decorator below.
METHODS: dict[str, Callable[..., Any]] = {}

# The three positional arguments every selector takes; everything else is a keyword parameter.
_POSITIONAL = ("features", "saliency", "k")


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that adds a selector to ``METHODS`` under ``name``.

    The function must take ``(features, saliency, k)`` positionally and its parameters as
    keyword-only arguments with defaults; see the module docstring.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: a selector needs a non-empty string name, got {name!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in METHODS:
            raise ValueError(f"name: a selector called {name!r} is already registered")
        params = list(inspect.signature(fn).parameters.values())
        head = [p.name for p in params[: len(_POSITIONAL)]]
        if head != list(_POSITIONAL) or any(p.kind is not p.KEYWORD_ONLY for p in params[len(_POSITIONAL):]):
            raise ValueError(
                f"selector {name!r}: the signature must be (features, saliency, k, *, params...), "
                f"got {inspect.signature(fn)}"
            )
        METHODS[name] = fn
        return fn

    return decorator


def available_methods() -> tuple[str, ...]:
    """Names of the registered selectors, sorted."""
    return tuple(sorted(METHODS))


def _method_params(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword parameters of a selector and their defaults."""
    params = list(inspect.signature(fn).parameters.values())[len(_POSITIONAL):]
    return {p.name: p.default for p in params}


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ValueError(f"{name}: expected a torch tensor or NumPy array, got {type(value).__name__}")


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k: the token budget must be an integer, got {k!r}")
    k = int(k)
    if k < 1 or k > n:
        raise ValueError(f"k: the token budget must satisfy 1 <= k <= N = {n} (the number of visual tokens), got {k}")
    return k


def _check_real(name: str, value: Any, *, low: float | None = None, low_open: bool = False) -> float:
    """A finite real parameter, optionally bounded below (``low`` included unless ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if low is not None:
        if low_open and value <= low:
            raise ValueError(f"{name}: must be > {low:g}, got {value:g}")
        if not low_open and value < low:
            raise ValueError(f"{name}: must be >= {low:g}, got {value:g}")
    return value


def _check_inputs(features: Any, saliency: Any) -> tuple[torch.Tensor, torch.Tensor]:
    features = _as_tensor(features, "features")
    saliency = _as_tensor(saliency, "saliency")
    if features.dim() != 3:
        raise ValueError(f"features: expected shape (B, N, d) (batch, visual tokens, width), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features: expected a floating-point tensor, got dtype {features.dtype}")
    if saliency.shape != features.shape[:2]:
        raise ValueError(
            f"saliency: expected shape (B, N) = {tuple(features.shape[:2])} to match features, got {tuple(saliency.shape)}"
        )
    if not (saliency.is_floating_point() or saliency.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"saliency: expected a real-valued tensor, got dtype {saliency.dtype}")
    if saliency.device != features.device:
        raise ValueError(f"saliency: is on {saliency.device} but features are on {features.device}; put both on one device")
    # One min/max pass each: NaN propagates into both, +-inf shows in one (far cheaper than an
    # elementwise isfinite mask on (B, N, d) features).
    if features.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(features))).all()):
        raise ValueError("features: contains NaN or infinite values")
    if saliency.numel():
        low, high = torch.aminmax(saliency)
        if saliency.is_floating_point() and not bool(torch.isfinite(torch.stack([low, high])).all()):
            raise ValueError("saliency: contains NaN or infinite values")
        if bool(low < 0):
            raise ValueError("saliency: must be non-negative (CLS attention summed over heads), found negative values")
    return features, saliency


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise (at least float32 for all arithmetic)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# The public entry point
# ----------------------------------------------------------------------------------------------


def select(method: str, features: Any, saliency: Any, k: int, *, return_info: bool = False, **params: Any):
    """Indices of the K visual tokens to keep, per image (ALGORITHMS.md, "Pruning methods").

    Parameters
    ----------
    method : one of ``available_methods()``: "random", "saliency", "scope", "divprune",
        "adaptive".
    features : (B, N, d) float tensor (or NumPy array): the vision tower's patch features at the
        feature layer, CLS dropped.
    saliency : (B, N) non-negative tensor: CLS-to-patch attention at that layer, summed over heads.
    k : token budget, 1 <= k <= N.
    return_info : if True, return ``(indices, info)`` where ``info`` is a dict of per-image
        diagnostics (empty for methods that have none; "adaptive" gives its threshold tau).
    **params : the method's parameters (see each ``*_select`` function):
        random: ``seed`` (0), ``sample_seeds`` (None); scope: ``alpha`` (1.0), ``gap_power`` (1.0);
        adaptive: ``erank_ref`` (required), ``c``, ``tau_max``, ``image_erank``.

    Returns
    -------
    LongTensor (B, K) on the features' device, each row K distinct indices in 0..N-1, ascending
    (the kept tokens keep their spatial order).

    Raises ValueError naming the offending argument for an unknown method or parameter, a
    budget outside 1..N, bad shapes, NaN/inf, negative saliency, or out-of-range parameters.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: unknown selector {method!r}; available: {', '.join(available_methods())}")
    fn = METHODS[method]
    allowed = _method_params(fn)
    for name in params:
        if name not in allowed:
            accepted = ", ".join(allowed) if allowed else "none"
            raise ValueError(f"{name}: not a parameter of method {method!r} (its parameters: {accepted})")
    features, saliency = _check_inputs(features, saliency)
    batch, n = features.shape[:2]
    k = _check_k(k, n)

    with torch.no_grad():  # selection is not differentiable; never build a graph
        out = fn(features, saliency, k, **params)
    indices, info = out if isinstance(out, tuple) else (out, {})
    indices = indices.to(device=features.device, dtype=torch.long)
    indices = torch.sort(indices, dim=-1).values  # (B, K) ascending
    if indices.shape != (batch, k):  # a broken selector must not pass silently
        raise RuntimeError(f"selector {method!r} returned shape {tuple(indices.shape)}, expected {(batch, k)}")
    return (indices, info) if return_info else indices


def cosine_similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """``S = normalize(X) @ normalize(X).T`` per image: (B, N, d) -> (B, N, N), float32 or float64.

    A zero feature vector has similarity 0 to everything (itself included).
    """
    x = F.normalize(features.to(_work_dtype(features)), dim=-1)  # (B, N, d), unit rows
    sim = torch.bmm(x, x.transpose(1, 2))  # (B, N, N), S[b, j, i] = <x_j, x_i>
    # A GEMM need not round S[j, i] and S[i, j] alike; make S exactly symmetric, as it is in
    # exact arithmetic, so that "row i" and "column i" are the same thing for every selector.
    return (sim + sim.transpose(1, 2)).mul_(0.5)


# delta = ROUNDING_C * sqrt(d) * eps. The error of one entry of S, and the difference between
# two computations of it (another summation order, a +-1 ulp change of the features), is about
# sqrt(d) * eps for unit vectors of width d: measured at 0.1-0.35 sqrt(d) eps for the GEMM and
# up to 1 sqrt(d) eps (d = 7) for a 1-ulp change of every feature; a gap is a difference of two
# such entries. 4 leaves a factor of 2 or more over all of these, and delta stays far below any
# similarity difference that means something (1.5e-5 in float32 at d = 1024).
ROUNDING_C = 4.0


def rounding_delta(dtype: torch.dtype, width: int) -> float:
    """``delta = ROUNDING_C * sqrt(width) * eps(dtype)``: below it, similarities are rounding noise.

    ALGORITHMS.md, "SCOPE", paragraph "Numerics". ``dtype`` is the work dtype of the
    similarities (float32 or float64), ``width`` the feature width d. The value is rounded to a
    float32 number, so that it is exactly the same threshold in float32 and float64 arithmetic
    (NumPy or torch, CPU or GPU).
    """
    return float(np.float32(ROUNDING_C * math.sqrt(max(int(width), 1)) * torch.finfo(dtype).eps))


def _first_within(values: torch.Tensor, tol: float | torch.Tensor) -> torch.Tensor:
    """Per row of ``values`` (B, N): the lowest index whose value is >= the row's max - ``tol``."""
    best = values.amax(dim=1, keepdim=True)  # (B, 1)
    return (values >= best - tol).to(torch.uint8).argmax(dim=1)  # argmax returns the first max


def _descending_order(values: torch.Tensor) -> torch.Tensor:
    """Token indices sorted by ``values`` (B, N) largest first; ties keep the lower index first."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices


# ----------------------------------------------------------------------------------------------
# Random
# ----------------------------------------------------------------------------------------------


def _row_seed(seed: int, sample_seed: int) -> int:
    """A 64-bit generator seed mixed from (seed, sample_seed) by NumPy's SeedSequence.

    SeedSequence is a documented, version-stable hash, so nearby pairs give unrelated streams.
    """
    return int(np.random.SeedSequence([seed, sample_seed]).generate_state(1, dtype=np.uint64)[0])


@register("random")
def random_select(features, saliency, k, *, seed: int = 0, sample_seeds: Sequence[int] | torch.Tensor | None = None):
    """K tokens drawn uniformly without replacement (ALGORITHMS.md, "Random").

    Each row gets its own CPU ``torch.Generator`` seeded from ``(seed, sample_seeds[row])``
    (mixed by NumPy's SeedSequence) and draws ``torch.randperm(N)[:K]``. With
    ``sample_seeds=None`` row r uses sample seed r, so a batch's rows differ from each other and
    the result is deterministic per (seed, batch position). To make a sample's draw independent
    of the batch it lands in, pass a stable per-sample integer (e.g. its dataset index) as
    ``sample_seeds`` (length B, non-negative). Draws happen on the CPU and are moved to the
    features' device, so CPU and CUDA inputs give the same indices.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    batch, n = features.shape[:2]
    if sample_seeds is None:
        row_seeds = list(range(batch))
    else:
        values = sample_seeds.tolist() if isinstance(sample_seeds, (torch.Tensor, np.ndarray)) else list(sample_seeds)
        if len(values) != batch:
            raise ValueError(f"sample_seeds: expected one integer per image ({batch}), got {len(values)}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"sample_seeds: expected non-negative integers, got {v!r}")
        row_seeds = [int(v) for v in values]
    rows = []
    for row_seed in row_seeds:
        gen = torch.Generator(device="cpu").manual_seed(_row_seed(int(seed), row_seed))
        rows.append(torch.randperm(n, generator=gen)[:k])
    indices = torch.stack(rows) if rows else torch.empty(0, k, dtype=torch.long)
    return indices.to(features.device)


# ----------------------------------------------------------------------------------------------
# Saliency-only
# ----------------------------------------------------------------------------------------------


@register("saliency")
def saliency_select(features, saliency, k):
    """The K tokens with the largest CLS attention (ALGORITHMS.md, "Saliency-only", as in FasterVLM).

    Ties are broken by the lower token index (a stable descending sort). Only exact ties:
    the sort compares the saliency values exactly, so its result is the same on every CPU and
    GPU for the same input. Unlike SCOPE's scores and DivPrune's distances, saliency is not the
    output of a GEMM over duplicate rows, so it has no structural near-ties made by rounding
    here; its own rounding happens upstream, in the model, where no selector can undo it. (A
    tolerance in a sort would not be transitive.)
    """
    return _descending_order(saliency)[:, :k]


# ----------------------------------------------------------------------------------------------
# SCOPE
# ----------------------------------------------------------------------------------------------


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


@register("scope")
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


@register("divprune")
def divprune_select(features, saliency, k):
    """Greedy max-min (farthest point) selection on cosine distance (ALGORITHMS.md, "DivPrune";
    Alvar et al., CVPR 2025).

    ``D = 1 - S``. The first token is the one whose nearest other token (self excluded) is
    farthest; then, K - 1 times, the unpicked token with the largest minimum distance to the
    picked set. Saliency is not used. With N = 1 the single token is picked. The features used
    are whatever is passed (the vision features by default; pass the projected tokens for the
    released code's variant).

    Ties (ALGORITHMS.md, "SCOPE", "Numerics", applied here): distances come from the same GEMM
    as SCOPE's similarities, and near-duplicate rows give distances that differ by rounding
    noise only, so values within ``delta = rounding_delta(dtype, d)`` of the largest tie and
    the lowest index among them is picked (every argmax below, the first pick included). Once
    every remaining token duplicates a picked one, all their min-distances are noise around 0
    and the lowest remaining indices follow.
    """
    dist = 1.0 - cosine_similarity_matrix(features)  # (B, N, N)
    batch, n, _ = dist.shape
    delta = rounding_delta(dist.dtype, features.shape[-1])
    rows = torch.arange(batch, device=dist.device)
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    nearest_other = dist.masked_fill(eye, math.inf).amin(dim=2)  # (B, N); +inf when N = 1
    picks = torch.empty(batch, k, dtype=torch.long, device=dist.device)
    pick = _first_within(nearest_other, delta)  # (B,)
    picks[:, 0] = pick
    selected = torch.zeros(batch, n, dtype=torch.bool, device=dist.device)
    selected[rows, pick] = True
    min_dist = dist[rows, pick, :].clone()  # (B, N): distance of every token to the picked set
    for step in range(1, k):
        pick = _first_within(min_dist.masked_fill(selected, -math.inf), delta)
        picks[:, step] = pick
        selected[rows, pick] = True
        torch.minimum(min_dist, dist[rows, pick, :], out=min_dist)
    return picks


# ----------------------------------------------------------------------------------------------
# Adaptive (AgilePruner-style)
# ----------------------------------------------------------------------------------------------

# Defaults: a convention of this project, not published values; calibrate them on real features
# (the chapters record tau per image). Cosine distances lie in [0, 2], and near-duplicate patches
# (sky, wall) are much closer than 1. With c = 0.1 an image of average complexity
# (erank = erank_ref) gets tau = 0.1, which skips near-duplicates of kept tokens but little
# else; twice the reference erank gives 0.2. tau_max = 0.5 caps the threshold for very complex
# images, so that the walk does not end long before K and fall back to saliency order.
ADAPTIVE_DEFAULT_C = 0.1
ADAPTIVE_DEFAULT_TAU_MAX = 0.5


def adaptive_threshold(
    features: Any,
    *,
    erank_ref: float,
    c: float = ADAPTIVE_DEFAULT_C,
    tau_max: float = ADAPTIVE_DEFAULT_TAU_MAX,
    image_erank: Any = None,
) -> torch.Tensor:
    """Per-image distance threshold ``tau = clip(c * erank(X) / erank_ref, 0, tau_max)``: (B,) tensor.

    ALGORITHMS.md, "Adaptive". ``erank(X)`` is the effective rank of the image's N features
    (``visprune.image_stats.erank_batch``), unless ``image_erank`` (B,) gives it precomputed (the
    SVD dominates the adaptive selector's cost, and an evaluation run computes it anyway).
    ``erank_ref`` is required: the mean erank over a calibration set of images from the same
    vision tower (``erank_batch(calibration_features).mean()``), stored with the run. It has no
    default on purpose: a batch-dependent default would make a sample's selection depend on the
    other images in its batch.
    """
    return _threshold_and_erank(features, erank_ref, c, tau_max, image_erank)[0]


def _threshold_and_erank(features, erank_ref, c, tau_max, image_erank) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, erank), each (B,), for ``adaptive_threshold`` and the adaptive selector."""
    features = _as_tensor(features, "features")
    if features.dim() != 3:
        raise ValueError(f"features: expected shape (B, N, d), got {tuple(features.shape)}")
    if erank_ref is None:
        raise ValueError(
            "erank_ref: required for the adaptive selector: pass the mean erank of a calibration set "
            "(visprune.image_stats.erank_batch(features).mean())"
        )
    erank_ref = _check_real("erank_ref", erank_ref, low=0.0, low_open=True)
    c = _check_real("c", c, low=0.0)
    tau_max = _check_real("tau_max", tau_max, low=0.0)
    work = _work_dtype(features)
    if image_erank is None:
        erank = erank_batch(features).to(work)  # (B,)
    else:
        if isinstance(image_erank, (list, tuple, numbers.Real)):
            image_erank = torch.tensor(image_erank, dtype=torch.float64)
        erank = _as_tensor(image_erank, "image_erank").to(device=features.device, dtype=work).reshape(-1)
        if erank.shape[0] != features.shape[0]:
            raise ValueError(f"image_erank: expected one value per image ({features.shape[0]}), got {erank.shape[0]}")
        if not bool(torch.isfinite(erank).all()) or bool((erank < 0).any()):
            raise ValueError("image_erank: expected finite non-negative values")
    return (c * erank / erank_ref).clamp(0.0, tau_max), erank


@register("adaptive")
def adaptive_select(
    features,
    saliency,
    k,
    *,
    erank_ref: float | None = None,
    c: float = ADAPTIVE_DEFAULT_C,
    tau_max: float = ADAPTIVE_DEFAULT_TAU_MAX,
    image_erank: Any = None,
):
    """Attention-first selection with an image-aware diversity threshold (ALGORITHMS.md,
    "Adaptive"; after AgilePruner, Baek et al., ICLR 2026).

    Walk the tokens in descending saliency (ties: lower index first); keep a token unless its
    cosine distance ``1 - S`` (clamped to [0, 2]) to an already-kept token is < tau; stop at K. If
    the walk ends with fewer than K, fill with the best remaining tokens by saliency. tau comes
    from ``adaptive_threshold`` (``erank_ref`` required; ``c`` >= 0, ``tau_max`` >= 0,
    ``image_erank`` optional precomputed (B,) erank). tau = 0 gives exactly saliency-only.
    The threshold does not change along the walk (the published method also scales it with the
    selection order; not done here).

    Rounding (ALGORITHMS.md, "SCOPE", "Numerics", applied here): a distance at or below
    ``delta = rounding_delta(dtype, d)`` counts as 0, so a duplicate of a kept token is blocked
    by every tau > 0 whatever its rounding noise, and accepted at tau = 0. Other distances are
    compared with tau exactly (``dist >= tau`` is compatible): tau is a continuous function of
    the image's erank, not a value that distances sit at by construction, so a distance within
    rounding of it is a generic near-tie, which no tolerance would remove (it would only move
    the boundary).

    Returns indices and ``info = {"tau": (B,), "erank": (B,), "n_walk": (B,)}``, n_walk being how
    many tokens the walk accepted before any filling.

    Vectorised form (no Python loop over the N tokens). Call a token *blocked* when its distance
    to some kept token is < tau. The loop runs over acceptances: each step accepts, per image,
    the first token in saliency order that is neither kept nor blocked, then blocks the tokens
    within tau of it. This equals the sequential walk. Proof, by induction over acceptances:
    suppose both have kept the same tokens so far, the last one at walk position q. The walk
    continues from q + 1 and accepts the first token that is not blocked. The loop instead scans
    from the start, but every not-kept token before q was rejected by the walk because it was
    blocked by the kept set at that time; the kept set only grows, so it is still blocked. And
    tokens after q are treated alike by both. So both accept the same next token, or both find
    none (the walk ends).
    """
    tau, erank = _threshold_and_erank(features, erank_ref, c, tau_max, image_erank)  # (B,), (B,)
    batch, n, d = features.shape
    rows = torch.arange(batch, device=features.device)
    order = _descending_order(saliency)  # (B, N): rank r -> token index
    # Work in rank order throughout: row/column r of these matrices is the r-th most salient token.
    ranked = features.gather(1, order.unsqueeze(-1).expand(batch, n, d))  # (B, N, d)
    dist = (1.0 - cosine_similarity_matrix(ranked)).clamp_(0.0, 2.0)  # (B, N, N) cosine distances
    F.threshold_(dist, rounding_delta(dist.dtype, d), 0.0)  # rounding noise around 0 -> exactly 0
    # compatible[b, r, s] = 1 when token s may still be kept next to kept token r (distance >= tau);
    # a token is never compatible with itself, so accepting it also takes it out of the walk.
    compatible = (dist >= tau.to(dist.dtype)[:, None, None]).to(torch.uint8)  # (B, N, N)
    compatible.diagonal(dim1=1, dim2=2).zero_()
    available = torch.ones(batch, n, dtype=torch.uint8, device=features.device)  # not kept, not blocked
    kept = torch.zeros(batch, n, dtype=torch.bool, device=features.device)  # by rank position
    n_walk = torch.zeros(batch, dtype=torch.long, device=features.device)
    for _ in range(k):
        pos = available.argmax(dim=1)  # (B,) first available rank position (0 if none)
        accepted = available[rows, pos].bool()  # (B,) False where the walk has ended
        if not bool(accepted.any()):
            break
        kept[rows, pos] |= accepted
        n_walk += accepted
        available &= compatible[rows, pos, :]  # block what is within tau of the new token
    # Fill: the first (k - n_walk) not-kept tokens in rank order.
    missing = (k - n_walk).unsqueeze(1)  # (B, 1)
    not_kept = ~kept
    kept |= not_kept & (torch.cumsum(not_kept.long(), dim=1) <= missing)
    indices = order[kept].view(batch, k)  # each row has exactly k kept positions
    info = {"tau": tau, "erank": erank, "n_walk": n_walk}
    return indices, info
