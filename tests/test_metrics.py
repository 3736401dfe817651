"""Tests of visprune.metrics: hand-computed cases, brute-force references, torchmetrics, properties.

CHAIR has its own file, tests/test_chair.py.
"""

from __future__ import annotations

import doctest
import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visprune import metrics as M

FAST = settings(max_examples=40, deadline=None)

# A 4-sample, 2-class case used by several hand computations below.
# Row: probs, label -> prediction, confidence, correct
#   [0.9, 0.1], 0   -> 0, 0.9, right
#   [0.8, 0.2], 1   -> 0, 0.8, wrong
#   [0.3, 0.7], 1   -> 1, 0.7, right
#   [0.6, 0.4], 1   -> 0, 0.6, wrong
P4 = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
Y4 = np.array([0, 1, 1, 1])


# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------


def naive_ece(conf, hit, n_bins, norm="l1"):
    """Loop over bins with explicit interval tests (float64 edges b/B; last bin closed)."""
    conf = np.asarray(conf, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    total, worst = 0.0, 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if in_bin.any():
            gap = abs(hit[in_bin].mean() - conf[in_bin].mean())
            total += in_bin.mean() * gap
            worst = max(worst, gap)
    return total if norm == "l1" else worst


def plain_aurc(conf_sorted_errors):
    """AURC of an already ordered list of errors (1 = error), no tie handling."""
    e = np.asarray(conf_sorted_errors, dtype=np.float64)
    k = np.arange(1, len(e) + 1)
    return float(np.mean(np.cumsum(e) / k))


def brute_force_tied_aurc(conf, correct):
    """Average AURC over every permutation of the input, each stably sorted by confidence.

    A uniformly random permutation followed by a stable sort orders every tie group uniformly at
    random, so this average is the expected AURC under random tie order.
    """
    conf = np.asarray(conf, dtype=np.float64)
    err = 1.0 - np.asarray(correct, dtype=np.float64)
    values, curves = [], []
    for perm in itertools.permutations(range(len(conf))):
        perm = np.array(perm)
        order = perm[np.argsort(-conf[perm], kind="stable")]
        e = err[order]
        curves.append(np.cumsum(e) / np.arange(1, len(e) + 1))
        values.append(plain_aurc(e))
    return float(np.mean(values)), np.mean(curves, axis=0)


def random_probs(rng, n, c, dtype=np.float32):
    logits = rng.normal(scale=2.0, size=(n, c))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


# ----------------------------------------------------------------------------------------------
# Classification scores
# ----------------------------------------------------------------------------------------------


def test_pope_scores_hand_computed():
    # yes = 0, no = 1 (visprune.instrument.prompts.POPE_ANSWERS)
    pred = [0, 0, 0, 1, 1, 0]
    labels = [0, 0, 1, 1, 0, 1]
    # TP (pred yes, label yes) = 2 (samples 0, 1); FP = 2 (samples 2, 5); FN = 1 (sample 4); TN = 1
    # accuracy = (2 + 1) / 6 = 0.5; precision = 2/4; recall = 2/3; F1 = 2 * .5 * .6667 / 1.1667 = 4/7
    # yes-ratio = 4 predicted yes / 6
    scores = M.pope_scores(pred, labels)
    assert M.POPE_YES == 0
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(4 / 7)
    assert scores["yes_ratio"] == pytest.approx(4 / 6)
    # with "no" as the positive class: TP = 1, FP = 1, FN = 2
    assert M.precision(pred, labels, positive=1) == pytest.approx(0.5)
    assert M.recall(pred, labels, positive=1) == pytest.approx(1 / 3)


def test_scores_accept_probabilities_and_tensors():
    # argmax of P4 rows: 0, 0, 1, 0; labels 0, 1, 1, 1 -> 2 right of 4
    assert M.accuracy(P4, Y4) == 0.5
    assert M.accuracy(torch.tensor(P4, dtype=torch.float32), torch.tensor(Y4)) == 0.5
    assert M.yes_ratio(P4) == 0.75


def test_scores_zero_division_gives_zero():
    # nothing predicted "yes": precision 0/0 -> 0; no "yes" label: recall 0/0 -> 0; F1 -> 0
    assert M.precision([1, 1], [0, 1]) == 0.0
    assert M.recall([0, 1], [1, 1]) == 0.0
    assert M.f1([1, 1], [1, 1]) == 0.0


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


def test_ece_mce_reliability_hand_computed():
    # B = 5, edges 0, .2, .4, .6, .8, 1.
    # bin 3 [0.6, 0.8): c = 0.7 (right), 0.6 (wrong): acc 0.5, conf 0.65, gap -0.15
    # bin 4 [0.8, 1.0]: c = 0.9 (right), 0.8 (wrong): acc 0.5, conf 0.85, gap -0.35
    # ECE = 2/4 * 0.15 + 2/4 * 0.35 = 0.25; MCE = 0.35
    assert M.ece(P4, Y4, n_bins=5) == pytest.approx(0.25)
    assert M.mce(P4, Y4, n_bins=5) == pytest.approx(0.35)
    table = M.reliability_table(P4, Y4, n_bins=5)
    assert list(table.columns) == ["bin", "lower", "upper", "count", "fraction", "confidence", "accuracy", "gap"]
    assert table["count"].tolist() == [0, 0, 0, 2, 2]
    np.testing.assert_allclose(table["lower"], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(table["upper"], [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(table["confidence"], [0, 0, 0, 0.65, 0.85])
    np.testing.assert_allclose(table["accuracy"], [0, 0, 0, 0.5, 0.5])
    np.testing.assert_allclose(table["gap"], [0, 0, 0, -0.15, -0.35])
    assert not table.isna().any().any()
    assert (table["fraction"] * table["gap"].abs()).sum() == pytest.approx(0.25)


def test_ece_single_bin_is_gap_of_means():
    # B = 1: ECE = |mean correctness - mean confidence| = |0.5 - (0.9+0.8+0.7+0.6)/4| = |0.5 - 0.75|
    assert M.ece(P4, Y4, n_bins=1) == pytest.approx(0.25)


def test_classwise_ece_hand_computed():
    # class 0: p = 0.9, 0.8, 0.3, 0.6; y = 1, 0, 0, 0
    #   bin 4: {0.9, 0.8}: |0.5 - 0.85| * 2/4 = 0.175; bin 1: {0.3}: 0.3/4 = 0.075; bin 3: {0.6}: 0.6/4 = 0.15
    #   ECE_0 = 0.4
    # class 1: p = 0.1, 0.2, 0.7, 0.4; y = 0, 1, 1, 1
    #   bin 0: {0.1}: 0.1/4; bin 1: {0.2}: 0.8/4; bin 3: {0.7}: 0.3/4; bin 2: {0.4}: 0.6/4 -> ECE_1 = 1.8/4 = 0.45
    #   (0.2 sits on an edge, so the mirror symmetry ECE_0 == ECE_1 breaks here)
    assert M.classwise_ece(P4, Y4, n_bins=5, class_index=0) == pytest.approx(0.4)
    assert M.classwise_ece(P4, Y4, n_bins=5, class_index=1) == pytest.approx(0.45)
    assert M.classwise_ece(P4, Y4, n_bins=5) == pytest.approx(0.425)


@pytest.mark.parametrize("n_classes,n_bins", [(2, 15), (3, 10), (5, 7)])
def test_classwise_ece_matches_naive_loop(n_classes, n_bins):
    rng = np.random.default_rng(n_classes)
    probs = random_probs(rng, 300, n_classes, dtype=np.float64)
    labels = rng.integers(0, n_classes, size=300)
    per_class = [naive_ece(probs[:, k], labels == k, n_bins) for k in range(n_classes)]
    assert M.classwise_ece(probs, labels, n_bins=n_bins) == pytest.approx(np.mean(per_class), abs=1e-12)
    if n_classes == 2:  # continuous probabilities never sit on an edge: the two classes mirror
        assert per_class[0] == pytest.approx(per_class[1], abs=1e-12)


def test_brier_hand_computed():
    # sample 0: p = (0.9, 0.1), y = (1, 0): 0.01 + 0.01 = 0.02
    # sample 1: p = (0.8, 0.2), y = (0, 1): 0.64 + 0.64 = 1.28
    # sample 2: p = (0.3, 0.7), y = (0, 1): 0.09 + 0.09 = 0.18
    # sample 3: p = (0.6, 0.4), y = (0, 1): 0.36 + 0.36 = 0.72
    # mean = 2.2 / 4 = 0.55
    assert M.brier(P4, Y4) == pytest.approx(0.55)
    # three classes: p = (0.5, 0.3, 0.2), y = class 1: 0.25 + 0.49 + 0.04 = 0.78
    assert M.brier([[0.5, 0.3, 0.2]], [1]) == pytest.approx(0.78)


@pytest.mark.parametrize("n_bins", list(range(1, 21)))
def test_bin_edges_are_robust(n_bins):
    # c = b/B lands in bin b (the last edge, c = 1, in bin B-1), in float64 and in float32
    for dtype in (np.float64, np.float32):
        c = (np.arange(n_bins + 1) / n_bins).astype(dtype)
        expected = np.minimum(np.arange(n_bins + 1), n_bins - 1)
        np.testing.assert_array_equal(M.bin_index(c, n_bins), expected)
        # just below an edge b >= 1 belongs to bin b - 1
        below = np.nextafter(c[1:], dtype(0))
        np.testing.assert_array_equal(M.bin_index(below, n_bins), np.arange(n_bins))


def test_edge_confidence_through_ece():
    # five equal probabilities: confidence exactly 0.2 -> bin 1 of 5 (the brief's example)
    table = M.reliability_table([[0.2] * 5], [0], n_bins=5)
    assert table["count"].tolist() == [0, 1, 0, 0, 0]
    # a float32 0.7 is below the real 0.7 but is the float32 edge: bin 7 of 10
    probs = torch.tensor([[0.7, 0.3]], dtype=torch.float32)
    assert M.reliability_table(probs, [0], n_bins=10)["count"].tolist()[7] == 1


CASES = [(2, 200, 15), (3, 500, 10), (5, 300, 7), (10, 1000, 20), (4, 50, 1)]


@pytest.mark.parametrize("n_classes,n,n_bins", CASES)
def test_ece_and_mce_match_torchmetrics(n_classes, n, n_bins):
    # Random continuous float32 confidences: the chance that one lies within an ulp of a bin edge
    # is negligible, so torchmetrics' edges (torch.linspace in float32) and ours (the float32
    # value nearest b/B) put every sample in the same bin.
    from torchmetrics.classification import MulticlassCalibrationError

    rng = np.random.default_rng(1000 * n_classes + n_bins)
    probs = torch.from_numpy(random_probs(rng, n, n_classes))
    labels = torch.from_numpy(rng.integers(0, n_classes, size=n))
    for norm, ours in (("l1", M.ece), ("max", M.mce)):
        reference = MulticlassCalibrationError(num_classes=n_classes, n_bins=n_bins, norm=norm)(probs, labels)
        assert ours(probs, labels, n_bins=n_bins) == pytest.approx(float(reference), abs=2e-6)
    conf, pred = probs.double().max(dim=1)
    assert M.ece(probs, labels, n_bins) == pytest.approx(naive_ece(conf, pred == labels, n_bins), abs=1e-12)


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(3)
    probs = random_probs(rng, 100, 3)
    labels = rng.integers(0, 3, size=100)
    for fn in (M.ece, M.mce, M.brier, M.classwise_ece):
        assert fn(probs, labels) == fn(torch.from_numpy(probs), torch.from_numpy(labels))
        assert fn(probs, labels) == fn(probs.tolist(), labels.tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_tensors():
    rng = np.random.default_rng(4)
    probs = random_probs(rng, 100, 2)
    labels = rng.integers(0, 2, size=100)
    gp, gl = torch.from_numpy(probs).cuda(), torch.from_numpy(labels).cuda()
    assert M.ece(gp, gl) == M.ece(probs, labels)
    assert M.brier(gp, gl) == M.brier(probs, labels)
    conf, correct = gp.max(dim=1).values, gp.argmax(dim=1) == gl
    assert M.aurc(conf, correct) == M.aurc(conf.cpu(), correct.cpu())
    x = torch.randn(3, 20, 8, device="cuda")
    np.testing.assert_allclose(M.erank(x), M.erank(x.cpu()), rtol=1e-4)
    a = torch.rand(3, 20, device="cuda")
    np.testing.assert_allclose(M.attention_entropy(a), M.attention_entropy(a.cpu()), rtol=1e-5)


@st.composite
def prob_label_data(draw):
    n_classes = draw(st.integers(2, 5))
    n = draw(st.integers(1, 30))
    weights = draw(
        st.lists(
            st.lists(st.floats(0.0, 1.0), min_size=n_classes, max_size=n_classes).filter(lambda w: sum(w) > 1e-3),
            min_size=n,
            max_size=n,
        )
    )
    probs = np.array(weights) / np.array(weights).sum(axis=1, keepdims=True)
    labels = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    n_bins = draw(st.integers(1, 20))
    return probs, labels, n_bins


@FAST
@given(prob_label_data())
def test_calibration_ranges(data):
    probs, labels, n_bins = data
    e, m, b = M.ece(probs, labels, n_bins), M.mce(probs, labels, n_bins), M.brier(probs, labels)
    assert 0.0 <= e <= 1.0
    assert e <= m + 1e-12 <= 1.0 + 1e-12  # a weighted mean of gaps never exceeds the largest gap
    assert 0.0 <= b <= 2.0
    assert 0.0 <= M.classwise_ece(probs, labels, n_bins) <= 1.0
    assert M.ece(probs, labels, n_bins) == pytest.approx(naive_ece(probs.max(1), probs.argmax(1) == labels, n_bins), abs=1e-12)


@FAST
@given(
    st.lists(st.tuples(st.integers(10, 20), st.integers(1, 3)), min_size=1, max_size=6, unique_by=lambda t: t[0]),
    st.integers(2, 4),
    st.sampled_from([5, 10, 20]),
)
def test_ece_zero_when_perfectly_calibrated(levels, n_classes, n_bins):
    # For each chosen level j/20 (>= 1/2, so it is the top label), 20*m samples have confidence
    # exactly j/20 and exactly j*m of them are right: every bin's accuracy equals its confidence.
    rows, labels = [], []
    for j, m in levels:
        conf = j / 20
        rest = (1 - conf) / (n_classes - 1)
        row = [conf] + [rest] * (n_classes - 1)
        for i in range(20 * m):
            rows.append(row)
            labels.append(0 if i < j * m else 1)
    probs, labels = np.array(rows), np.array(labels)
    assert M.ece(probs, labels, n_bins) == pytest.approx(0.0, abs=1e-12)
    assert M.mce(probs, labels, n_bins) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Selective prediction
# ----------------------------------------------------------------------------------------------


def test_risk_coverage_and_aurc_hand_computed():
    # sorted: 0.9 right, 0.8 wrong, 0.7 right, 0.6 wrong
    # risk(k) = 0/1, 1/2, 1/3, 2/4; AURC = (0 + .5 + .3333 + .5) / 4 = 1/3
    cov, risk = M.risk_coverage([0.7, 0.9, 0.6, 0.8], [1, 1, 0, 0])
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.5, 1 / 3, 0.5])
    assert M.aurc([0.7, 0.9, 0.6, 0.8], [1, 1, 0, 0]) == pytest.approx(1 / 3)
    # ideal ranking with 2 errors of 4: risks 0, 0, 1/3, 2/4 -> AURC* = (1/3 + 1/2) / 4 = 5/24
    # E-AURC = 1/3 - 5/24 = 1/8
    assert M.eaurc([0.7, 0.9, 0.6, 0.8], [1, 1, 0, 0]) == pytest.approx(1 / 8)


def test_aurc_ties_hand_computed():
    # all four tied, 1 error: each top-k set holds k/4 errors on average -> risk(k) = 1/4 for all k
    _, risk = M.risk_coverage([0.5] * 4, [1, 0, 1, 1])
    np.testing.assert_allclose(risk, [0.25] * 4)
    assert M.aurc([0.5] * 4, [1, 0, 1, 1]) == pytest.approx(0.25)


TIE_CASES = [
    ([0.5, 0.5, 0.5], [1, 0, 0]),
    ([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0]),
    ([0.8, 0.8, 0.3, 0.3, 0.3], [0, 1, 1, 0, 1]),
    ([0.2, 0.7, 0.7, 0.2, 0.7, 0.4], [1, 0, 1, 0, 0, 1]),
    ([0.6, 0.6, 0.6, 0.6, 0.6, 0.6], [1, 1, 0, 1, 0, 1]),
    ([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 0, 1, 1]),
]


@pytest.mark.parametrize("conf,correct", TIE_CASES)
def test_aurc_ties_match_permutation_average(conf, correct):
    expected, expected_curve = brute_force_tied_aurc(conf, correct)
    assert M.aurc(conf, correct) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(M.risk_coverage(conf, correct)[1], expected_curve, atol=1e-12)


@FAST
@given(
    st.lists(st.tuples(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.booleans()), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_aurc_independent_of_input_order(pairs, rnd):
    conf = np.array([c for c, _ in pairs])
    correct = np.array([z for _, z in pairs])
    perm = list(range(len(pairs)))
    rnd.shuffle(perm)
    assert M.aurc(conf[perm], correct[perm]) == pytest.approx(M.aurc(conf, correct), abs=1e-12)
    assert M.eaurc(conf, correct) >= 0.0
    assert 0.0 <= M.aurc(conf, correct) <= 1.0


@pytest.mark.parametrize("n,n_errors", [(1, 0), (1, 1), (5, 2), (10, 3), (10, 10), (37, 11)])
def test_eaurc_zero_for_perfect_ranking_and_closed_form(n, n_errors):
    correct = np.r_[np.ones(n - n_errors), np.zeros(n_errors)]  # all right answers first
    conf = np.linspace(1.0, 0.0, n)  # strictly decreasing: a perfect ranking
    assert M.eaurc(conf, correct) == pytest.approx(0.0, abs=1e-15)
    # the closed form equals the plain AURC of the ideal order
    assert M._ideal_aurc(n, n_errors) == pytest.approx(plain_aurc(1 - correct), abs=1e-14)
    # the worst ranking (errors first) has a positive excess whenever there are both kinds
    if 0 < n_errors < n:
        assert M.eaurc(conf, correct[::-1]) > 0.0


# ----------------------------------------------------------------------------------------------
# Image statistics
# ----------------------------------------------------------------------------------------------


def test_erank_and_entropy_hand_computed():
    # singular values 1, 1, 2 -> q = 1/4, 1/4, 1/2 -> H = 1.5 ln 2 -> erank = 2^1.5
    assert M.erank(np.diag([1.0, 1.0, 2.0])) == pytest.approx(2**1.5, rel=1e-6)
    # rank one: erank 1
    assert M.erank(np.outer([1.0, 2.0, 3.0], [1.0, -1.0])) == pytest.approx(1.0, rel=1e-6)
    # p = 1/4, 1/4, 1/2 -> H = 1.5 ln 2; uniform over 5 -> ln 5
    assert M.attention_entropy([1.0, 1.0, 2.0]) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    out = M.attention_entropy(torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 3.0, 0.0, 0.0]]))
    np.testing.assert_allclose(out, [math.log(5), 0.0], atol=1e-6)
    batch = M.erank(torch.stack([torch.eye(4), torch.ones(4, 4)]))
    assert isinstance(batch, np.ndarray) and batch.shape == (2,)
    np.testing.assert_allclose(batch, [4.0, 1.0], rtol=1e-5)


@FAST
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_erank_between_one_and_rank(n, d, r, seed):
    rng = np.random.default_rng(seed)
    r = min(r, n, d)
    x = rng.normal(size=(n, r)) @ rng.normal(size=(r, d))  # rank r (almost surely)
    rank = np.linalg.matrix_rank(x)
    value = M.erank(x)
    assert 1.0 - 1e-9 <= value <= rank + 1e-6


@FAST
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=50).filter(lambda a: sum(a) > 1e-3))
def test_entropy_between_zero_and_log_n(attn):
    value = M.attention_entropy(np.array(attn))
    assert -1e-9 <= value <= math.log(len(attn)) + 1e-9


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


def test_bootstrap_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 400, 2, dtype=np.float64)
    labels = (rng.random(400) < probs[:, 1]).astype(int)
    point = M.ece(probs, labels)
    low, high = M.bootstrap_ci(M.ece, probs, labels, n_resamples=300)
    assert low <= point <= high
    assert (low, high) == M.bootstrap_ci(M.ece, probs, labels, n_resamples=300)  # same seed
    assert (low, high) != M.bootstrap_ci(M.ece, probs, labels, n_resamples=300, seed=1)
    # torch inputs resample the same way
    assert (low, high) == M.bootstrap_ci(M.ece, torch.from_numpy(probs), torch.from_numpy(labels), n_resamples=300)


def test_bootstrap_width_matches_normal_approximation():
    # mean of 400 fair coin flips: standard error 0.025, so a 95% interval is about 0.098 wide
    z = np.random.default_rng(5).random(400) < 0.5
    low, high = M.bootstrap_ci(np.mean, z, n_resamples=1000)
    assert 0.08 < high - low < 0.12
    low90, high90 = M.bootstrap_ci(np.mean, z, n_resamples=1000, level=0.9)
    assert low <= low90 <= high90 <= high


def test_bootstrap_resamples_arrays_together():
    x = np.arange(50)
    # every resample keeps pairs (x_i, 2 x_i) together, so the metric is 1 on each resample
    assert M.bootstrap_ci(lambda a, b: float(np.all(b == 2 * a)), x, 2 * x, n_resamples=50) == (1.0, 1.0)


def test_bootstrap_diff():
    rng = np.random.default_rng(2)
    probs = random_probs(rng, 300, 2, dtype=np.float64)
    labels = rng.integers(0, 2, size=300)
    assert M.bootstrap_diff_ci(M.ece, (probs, labels), (probs, labels), n_resamples=100) == (0.0, 0.0)
    # method A right everywhere, method B right on half the samples: accuracy difference ~0.5
    right = np.ones(300)
    half = (np.arange(300) % 2).astype(float)
    low, high = M.bootstrap_diff_ci(np.mean, right, half, n_resamples=200)
    assert 0.4 < low <= 0.5 <= high < 0.6


# ----------------------------------------------------------------------------------------------
# Validation: every bad input names its argument
# ----------------------------------------------------------------------------------------------

GOOD_P = np.array([[0.7, 0.3], [0.2, 0.8]])
GOOD_Y = np.array([0, 1])

BAD_INPUTS = [
    ("probs 1-D", lambda: M.ece(np.array([0.7, 0.3]), GOOD_Y), "probs"),
    ("probs one column", lambda: M.ece(np.ones((2, 1)), GOOD_Y), "probs"),
    ("probs NaN", lambda: M.ece(np.array([[np.nan, 0.3], [0.2, 0.8]]), GOOD_Y), "probs"),
    ("probs inf", lambda: M.brier(np.array([[np.inf, 0.3], [0.2, 0.8]]), GOOD_Y), "probs"),
    ("probs above 1", lambda: M.ece(np.array([[1.5, -0.5], [0.2, 0.8]]), GOOD_Y), "probs"),
    ("probs logits", lambda: M.mce(np.array([[2.0, -1.0], [0.2, 0.8]]), GOOD_Y), "probs"),
    ("rows do not sum to 1", lambda: M.ece(np.array([[0.7, 0.2], [0.2, 0.8]]), GOOD_Y), "probs"),
    ("probs strings", lambda: M.ece(np.array([["a", "b"]]), [0]), "probs"),
    ("probs empty", lambda: M.ece(np.zeros((0, 2)), np.zeros(0, dtype=int)), "probs"),
    ("labels out of range", lambda: M.ece(GOOD_P, [0, 2]), "labels"),
    ("labels negative", lambda: M.brier(GOOD_P, [-1, 0]), "labels"),
    ("labels non-integer", lambda: M.ece(GOOD_P, [0, 0.5]), "labels"),
    ("labels 2-D", lambda: M.reliability_table(GOOD_P, [[0, 1]]), "labels"),
    ("lengths differ", lambda: M.ece(GOOD_P, [0, 1, 1]), "probs and labels"),
    ("n_bins zero", lambda: M.ece(GOOD_P, GOOD_Y, n_bins=0), "n_bins"),
    ("n_bins float", lambda: M.ece(GOOD_P, GOOD_Y, n_bins=2.5), "n_bins"),
    ("class_index too big", lambda: M.classwise_ece(GOOD_P, GOOD_Y, class_index=2), "class_index"),
    ("pred non-integer", lambda: M.accuracy([0.5, 1.0], GOOD_Y), "pred"),
    ("pred length", lambda: M.accuracy([0, 1, 1], GOOD_Y), "pred and labels"),
    ("positive negative", lambda: M.precision([0, 1], GOOD_Y, positive=-1), "positive"),
    ("pred empty", lambda: M.yes_ratio([]), "pred"),
    ("confidence NaN", lambda: M.aurc([np.nan, 0.5], [1, 0]), "confidence"),
    ("correct not 0/1", lambda: M.aurc([0.9, 0.5], [1, 2]), "correct"),
    ("aurc lengths", lambda: M.eaurc([0.9, 0.5], [1, 0, 1]), "confidence and correct"),
    ("aurc empty", lambda: M.risk_coverage([], []), "confidence"),
    ("matrix 1-D", lambda: M.erank(np.ones(3)), "matrix"),
    ("matrix NaN", lambda: M.erank(torch.tensor([[1.0, float("nan")]])), "matrix"),
    ("matrix empty", lambda: M.erank(np.zeros((0, 3))), "matrix"),
    ("attn negative", lambda: M.attention_entropy([0.5, -0.1]), "attn"),
    ("attn all zero", lambda: M.attention_entropy(np.zeros((2, 3))), "attn"),
    ("attn inf", lambda: M.attention_entropy([np.inf, 1.0]), "attn"),
    ("metric not callable", lambda: M.bootstrap_ci(3, GOOD_Y), "metric"),
    ("metric NaN", lambda: M.bootstrap_ci(lambda y: float("nan"), GOOD_Y, n_resamples=5), "metric"),
    ("bootstrap lengths", lambda: M.bootstrap_ci(M.ece, GOOD_P, [0, 1, 1]), "arrays[0] and arrays[1]"),
    ("bootstrap no arrays", lambda: M.bootstrap_ci(np.mean), "arrays"),
    ("level", lambda: M.bootstrap_ci(np.mean, GOOD_Y, level=1.5), "level"),
    ("n_resamples", lambda: M.bootstrap_ci(np.mean, GOOD_Y, n_resamples=0), "n_resamples"),
    ("diff lengths", lambda: M.bootstrap_diff_ci(np.mean, GOOD_Y, [1, 0, 1]), "arrays_a[0] and arrays_b[0]"),
]


@pytest.mark.parametrize("case,call,name", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_naming_argument(case, call, name):
    with pytest.raises(ValueError, match="^" + re.escape(name) + ":"):
        call()


def test_small_float32_rounding_is_accepted():
    # float32 softmax rows miss 1 by ~1e-7 and may exceed 1 by an ulp: accepted (and clipped)
    p = torch.tensor([[1.0000001, 0.0], [0.3333333, 0.6666666]], dtype=torch.float32)
    assert 0.0 <= M.ece(p, [0, 1]) <= 1.0
    assert isinstance(M.reliability_table(p, [0, 1]), pd.DataFrame)


def test_docstring_examples():
    import importlib

    attempted = failed = 0
    for family in ("pope", "calibration", "selective", "image", "chair", "bootstrap"):
        result = doctest.testmod(importlib.import_module(f"visprune.metrics.{family}"),
                                 optionflags=doctest.NORMALIZE_WHITESPACE)
        attempted, failed = attempted + result.attempted, failed + result.failed
    assert attempted > 20 and failed == 0


# ----------------------------------------------------------------------------------------------
# Booleans are not class indices; POPE answers are 0 or 1 (issue 15)
# ----------------------------------------------------------------------------------------------

BOOL_AND_RANGE_INPUTS = [
    ("pope prediction 2", lambda: M.pope_scores([0, 2], [0, 1]), "pred"),
    ("pope label 2", lambda: M.pope_scores([0, 1], [0, 2]), "labels"),
    ("pope probabilities with 3 columns", lambda: M.pope_scores(np.full((2, 3), 1 / 3), [0, 1]), "pred"),
    ("pope positive 2", lambda: M.pope_scores([0, 1], [0, 1], positive=2), "positive"),
    ("bool numpy predictions", lambda: M.accuracy(np.array([True, False]), GOOD_Y), "pred"),
    ("bool tensor predictions", lambda: M.yes_ratio(torch.tensor([True, False])), "pred"),
    ("bool in an int list", lambda: M.recall([0, True], GOOD_Y), "pred"),
    ("bool labels", lambda: M.ece(GOOD_P, [True, False]), "labels"),
    ("bool tensor labels", lambda: M.brier(GOOD_P, torch.tensor([False, True])), "labels"),
    ("bool probabilities", lambda: M.mce(np.eye(2, dtype=bool), GOOD_Y), "probs"),
    ("bool positive", lambda: M.f1([0, 1], GOOD_Y, positive=True), "positive"),
    ("bool n_bins", lambda: M.reliability_table(GOOD_P, GOOD_Y, n_bins=True), "n_bins"),
    ("label beyond the probability columns", lambda: M.accuracy(GOOD_P, [0, 2]), "labels"),
    ("positive beyond the probability columns", lambda: M.precision(GOOD_P, GOOD_Y, positive=2), "positive"),
    ("bin_index NaN", lambda: M.bin_index(np.array([np.nan, 0.5]), 4), "confidence"),
    ("bin_index above 1", lambda: M.bin_index(np.array([1.5]), 4), "confidence"),
    ("bool seed", lambda: M.bootstrap_ci(np.mean, GOOD_Y, seed=False), "seed"),
    ("negative seed", lambda: M.bootstrap_diff_ci(np.mean, GOOD_Y, GOOD_Y, seed=-1), "seed"),
]


@pytest.mark.parametrize("case,call,name", BOOL_AND_RANGE_INPUTS, ids=[c[0] for c in BOOL_AND_RANGE_INPUTS])
def test_booleans_and_out_of_range_answers_are_rejected(case, call, name):
    with pytest.raises(ValueError, match="^" + re.escape(name) + ":"):
        call()


def test_stricter_checks_keep_every_value():
    # by hand: pred [0, 1, 0, 0], labels [0, 1, 1, 0]: TP = 2, FP = 1, FN = 0, TN = 1
    scores = M.pope_scores([0, 1, 0, 0], [0, 1, 1, 0])
    assert scores == {"accuracy": 0.75, "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "yes_ratio": 0.75}
    # integers held in floats and in tensors are still accepted, with the same values
    assert M.pope_scores(np.array([0.0, 1.0, 0.0, 0.0]), torch.tensor([0, 1, 1, 0])) == scores
    assert M.ece(GOOD_P, np.array([0.0, 1.0])) == M.ece(GOOD_P, GOOD_Y)
    # a seeded Generator is still a valid seed, and checking it draws nothing from it
    a = M.bootstrap_ci(np.mean, np.arange(10.0), n_resamples=20, seed=np.random.default_rng(3))
    assert a == M.bootstrap_ci(np.mean, np.arange(10.0), n_resamples=20, seed=3)
    # correctness stays 0/1 or bool
    assert M.aurc([0.9, 0.5], [True, False]) == M.aurc([0.9, 0.5], [1, 0]) == 0.25


# ----------------------------------------------------------------------------------------------
# Metric specs: the bootstrap's resampled form of every metric equals its plain function
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_resampled_form_equals_the_plain_metric(n_classes, seed):
    from visprune.metrics.specs import METRIC_SPECS, Resampled, draw_indices

    rng = np.random.default_rng(seed)
    n = 57
    probs = rng.dirichlet(np.ones(n_classes) * 0.7, size=n)
    probs[::5] = probs[0]  # repeated rows: ties in confidence (the risk curve's tie groups) and in bins
    probs[3::7, :] = 1.0 / n_classes  # rows at a bin edge-free uniform value, argmax ties resolved to 0
    labels = rng.integers(0, n_classes, size=n)
    idx = draw_indices(n, 25, seed)
    prepared = Resampled(probs, labels, n_bins=6)
    for name, spec in METRIC_SPECS.items():
        if spec.binary_only and n_classes != 2:
            continue
        fast = spec.resampled(prepared, idx)
        plain = np.array([spec.plain(probs[i], labels[i], 6) for i in idx])
        atol = 1e-5 if name == "smece" else 1e-12  # SmoothECE: the fixed point's bisection precision
        np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=atol, err_msg=name)


def test_metric_specs_declare_direction_and_answer_set():
    from visprune.metrics.specs import BINARY_METRICS, LOWER_IS_BETTER, METRIC_SPECS, metric_value

    assert set(LOWER_IS_BETTER) == {"ece", "mce", "brier", "aurc", "eaurc", "smece", "ece_em", "ece_sweep",
                                    "debiased_ece", "ece_yes"}
    assert set(BINARY_METRICS) == {"precision", "recall", "f1", "yes_ratio", "ece_yes"}
    assert METRIC_SPECS["accuracy"].direction == "higher" and METRIC_SPECS["yes_ratio"].direction is None
    with pytest.raises(ValueError, match="^metric: unknown metric 'auroc'"):
        metric_value("auroc", [[0.5, 0.5]], [0])
