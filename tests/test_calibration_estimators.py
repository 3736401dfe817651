"""Tests of the calibration estimators added beside ECE: SmoothECE, equal-mass ECE, the ECE sweep,
debiased ECE, the ECE of P(yes), the noise floor, the Brier decomposition and temperature scaling.

Each estimator is checked against hand-computed cases and against an independent implementation
on random inputs: ``relplot`` (SmoothECE) and a dense-quadrature brute force, Kumar et al.'s
``calibration`` package (equal-mass and debiased ECE), brute-force loops written here from
ALGORITHMS.md ("Metrics"), torchmetrics, scipy and ``torch.optim.LBFGS``.

Project rule: a 1-ulp difference never decides a test. Hand cases keep every value well inside
its bin; where rounding can differ between two computations of the same quantity the comparison
has a tolerance, never ``==``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.special import softmax

from visprune.metrics import (brier, brier_decomposition, classwise_ece, debiased_ece, ece, ece_sweep,
                              equal_mass_ece, fit_temperature, noise_floor, smooth_ece, smooth_ece_at,
                              temperature_nll, temperature_probs)
from visprune.metrics.calibration import equal_mass_edges
from visprune.metrics.noise_floor import FLOOR_METRICS
from visprune.metrics.smooth import SIGMA_RANGE
from visprune.metrics.specs import METRIC_SPECS, Resampled, draw_indices, metric_value
from visprune.metrics.temperature import T_RANGE, AnswerLogits

SEEDS = [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------
# Inputs and independent references
# ----------------------------------------------------------------------------------------------


def top_label(probs, labels):
    """(confidence, correctness 0/1 float) of the top label, computed independently."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    return probs[np.arange(len(probs)), pred], (pred == np.asarray(labels)).astype(np.float64)


def binary_top(conf, correct):
    """(n, 2) probs whose top label is class 0 with confidence ``conf`` (>= 0.5), and labels that
    make it right where ``correct``. Only for confidences >= 0.5: below, class 1 would be the top."""
    conf = np.asarray(conf, dtype=np.float64)
    assert conf.min() >= 0.5
    return np.stack([conf, 1.0 - conf], axis=1), np.where(np.asarray(correct) > 0, 0, 1)


def top_class0(conf, correct, n_classes=3):
    """(n, C) probs whose top label is class 0 with confidence ``conf``, the rest split evenly
    (so ``conf`` must exceed ``(1 - conf) / (C - 1)``; with C = 3 confidences below 0.5 are
    allowed), and labels 0 where correct and 1 where not."""
    conf = np.asarray(conf, dtype=np.float64)
    rest = (1.0 - conf) / (n_classes - 1)
    assert np.all(conf > rest + 1e-6)
    probs = np.concatenate([conf[:, None], np.repeat(rest[:, None], n_classes - 1, axis=1)], axis=1)
    return probs, np.where(np.asarray(correct) > 0, 0, 1)


def miscalibrated(rng, n, kind):
    """Realistic (probs, labels): labels drawn from softmax(z / T_true), probs = softmax(z).

    - ``"pope_beta"``: binary, confidences 1 - 0.5 Beta(1, 8) (crowded near 1, as on POPE), over-confident;
    - ``"pope_saturated"``: binary, logits of scale 4: a fifth of the confidences within 1e-3 of 1;
    - ``"sqa"``: 3 to 5 answers, spread confidences (as on ScienceQA), over-confident.
    """
    if kind == "pope_beta":
        c = 1.0 - 0.5 * rng.beta(1.0, 8.0, size=n)
        z, t_true, n_classes = np.log(np.stack([c, 1.0 - c], axis=1)), 1.8, 2
    elif kind == "pope_saturated":
        z, t_true, n_classes = rng.normal(size=(n, 2)) * 4.0 + np.array([1.0, 0.0]), 2.5, 2
    else:
        n_classes = int(rng.integers(3, 6))
        z, t_true = rng.normal(size=(n, n_classes)) * 1.5, 1.6
    probs = softmax(z, axis=1)
    p_true = softmax(z / t_true, axis=1)
    labels = np.minimum((rng.random((n, 1)) > np.cumsum(p_true, axis=1)).sum(axis=1), n_classes - 1)
    return probs, labels


def brute_smece_sigma(conf, correct, sigma, grid=3000):
    """smECE_sigma by dense midpoint quadrature of the reflected Gaussian kernel written as a sum
    of images, ``K(t, x) = sum_m phi(t - x + 2m) + phi(t + x + 2m)``, |m| <= 3; an image that stays
    more than 12 sigma from every (t, x) in [0, 1]^2 (weight < e^-72) is skipped."""
    t = (np.arange(grid) + 0.5) / grid
    r = (np.asarray(conf) - np.asarray(correct)) / len(conf)
    smoothed = np.zeros(grid)
    for m in range(-3, 4):
        # t - x + 2m ranges over [2m - 1, 2m + 1]; t + x + 2m over [2m, 2m + 2]
        for sign, (lo, hi) in ((-1.0, (2 * m - 1, 2 * m + 1)), (1.0, (2 * m, 2 * m + 2))):
            if max(lo, -hi, 0) > 12 * sigma:
                continue
            d = t[:, None] + sign * conf[None, :] + 2 * m
            smoothed += np.exp(-0.5 * (d / sigma) ** 2) @ r / (math.sqrt(2 * math.pi) * sigma)
    return float(np.abs(smoothed).mean())


def brute_equal_mass_bins(conf, n_bins):
    """Bin of each confidence under the equal-mass rule, by explicit loops (ALGORITHMS.md and
    Kumar et al.'s ``get_equal_bins``): sort, split into min(B, n) groups as ``np.array_split``,
    edges half-way between groups plus 1.0, deduplicated; a confidence goes to the first edge >= it."""
    ordered = sorted(float(c) for c in conf)
    groups = np.array_split(np.array(ordered), min(n_bins, len(ordered)))
    edges = sorted({*((a[-1] + b[0]) / 2.0 for a, b in zip(groups[:-1], groups[1:])), 1.0})
    return [next(k for k, e in enumerate(edges) if e >= c) for c in conf]


def brute_equal_mass_ece(conf, correct, n_bins):
    bins = brute_equal_mass_bins(conf, n_bins)
    total = 0.0
    for b in set(bins):
        members = [i for i, k in enumerate(bins) if k == b]
        total += abs(sum(correct[i] for i in members) - sum(conf[i] for i in members))
    return total / len(conf)


def brute_sweep(conf, correct):
    """ECE sweep from its description: b = 2, 3, ...; stop at the first b whose non-empty-bin
    accuracies (compared exactly, as fractions) are not non-decreasing; value at the last monotone b."""
    chosen = 1
    for b in range(2, len(conf) + 1):
        bins = brute_equal_mass_bins(conf, b)
        acc = []
        for k in sorted(set(bins)):
            members = [i for i, j in enumerate(bins) if j == k]
            acc.append(Fraction(int(sum(correct[i] for i in members)), len(members)))
        if any(later < earlier for earlier, later in zip(acc, acc[1:])):
            break
        chosen = b
    return brute_equal_mass_ece(conf, correct, chosen), chosen


def brute_classwise(p_k, y_k, n_bins):
    """Class-wise ECE of one column by a loop over equal-width bins (last bin closed)."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (p_k >= lo) & ((p_k < hi) if b < n_bins - 1 else (p_k <= hi))
        if inside.any():
            total += inside.mean() * abs(y_k[inside].mean() - p_k[inside].mean())
    return total


# ----------------------------------------------------------------------------------------------
# 1. SmoothECE
# ----------------------------------------------------------------------------------------------

# Measured over 30 seeds x {pope_beta, sqa} x n in 200..2000: |ours - relplot| <= 8.3e-4 for
# smECE and for smECE_sigma at sigma = 0.03, 0.05, 0.1 (relplot rounds the samples to a grid of
# ~1000 points and stops its bisection at a width within 1/1024 of the fixed point).
RELPLOT_ATOL = 2e-3


@pytest.mark.parametrize("kind", ["pope_beta", "sqa"])
@pytest.mark.parametrize("seed", SEEDS)
def test_smooth_ece_matches_relplot(kind, seed):
    """smooth_ece == relplot.smECE and smooth_ece_at == relplot.smECE_sigma (sigma 0.03, 0.05, 0.1)
    on top-label (confidence, correctness) of a miscalibrated model, within RELPLOT_ATOL."""
    relplot = pytest.importorskip("relplot")
    rng = np.random.default_rng(seed)
    probs, labels = miscalibrated(rng, int(rng.integers(200, 2001)), kind)
    conf, correct = top_label(probs, labels)
    assert smooth_ece(probs, labels) == pytest.approx(float(relplot.smECE(conf, correct)), abs=RELPLOT_ATOL)
    for sigma in (0.03, 0.05, 0.1):
        assert smooth_ece_at(probs, labels, sigma) == pytest.approx(
            float(relplot.smECE_sigma(conf, correct, sigma)), abs=RELPLOT_ATOL)


@pytest.mark.parametrize("kind", ["pope_saturated", "pope_beta", "sqa"])
@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_ece_at_matches_dense_quadrature(kind, seed):
    """smooth_ece_at == a dense midpoint quadrature of the image-sum reflected kernel, to 1e-5.

    Measured: the 3000-point quadrature is within 5e-8 of a 40000-point one; the library's own
    midpoint sum (400 points for sigma >= 0.03) differs from it by up to 3e-6 at sigma = 0.03.

    This includes confidences piled up within 1e-3 of 1 (saturated POPE logits), where relplot is
    off by ~1e-2: its grid reflection counts a sample in the last grid cell once instead of twice
    (K(t, 1) = 2 phi(t - 1)), so it under-weights exactly the samples POPE has most of."""
    rng = np.random.default_rng(seed)
    probs, labels = miscalibrated(rng, 500, kind)
    conf, correct = top_label(probs, labels)
    for sigma in (0.03, 0.05, 0.1):
        assert smooth_ece_at(probs, labels, sigma) == pytest.approx(brute_smece_sigma(conf, correct, sigma), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_ece_fixed_point_matches_brute_force_root(seed):
    """smooth_ece == the root of brute_smece_sigma(sigma) - sigma (scipy brentq), to 1e-5."""
    from scipy.optimize import brentq

    rng = np.random.default_rng(seed)
    probs, labels = miscalibrated(rng, 300, "pope_saturated" if seed else "sqa")
    conf, correct = top_label(probs, labels)
    root = brentq(lambda s: brute_smece_sigma(conf, correct, s, grid=2000) - s, 0.01, 0.5, xtol=1e-9)
    value, sigma = smooth_ece(probs, labels, return_sigma=True)
    assert value == pytest.approx(root, abs=1e-5) and sigma == pytest.approx(root, abs=1e-5)


@pytest.mark.parametrize("kind", ["pope_saturated", "pope_beta", "sqa"])
@pytest.mark.parametrize("seed", SEEDS)
def test_smooth_ece_sigma_is_the_fixed_point(kind, seed):
    """The returned bandwidth equals the returned value (|value - sigma| < 1e-4) unless sigma is
    at a bound of SIGMA_RANGE, and the value equals smooth_ece_at at that sigma."""
    rng = np.random.default_rng(seed)
    probs, labels = miscalibrated(rng, int(rng.integers(200, 2001)), kind)
    value, sigma = smooth_ece(probs, labels, return_sigma=True)
    at_bound = math.isclose(sigma, SIGMA_RANGE[0], rel_tol=1e-4) or math.isclose(sigma, SIGMA_RANGE[1], rel_tol=1e-4)
    assert at_bound or abs(value - sigma) < 1e-4
    assert value == pytest.approx(smooth_ece_at(probs, labels, sigma), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_ece_invariant_to_sample_order(seed):
    """Permuting the samples leaves smooth_ece and smooth_ece_at unchanged (to 1e-9: the
    coefficient sums may round differently; the bisection's precision is ~4e-7 relative)."""
    rng = np.random.default_rng(seed)
    probs, labels = miscalibrated(rng, 800, "sqa")
    perm = rng.permutation(len(labels))
    assert smooth_ece(probs[perm], labels[perm]) == pytest.approx(smooth_ece(probs, labels), abs=1e-9)
    at = smooth_ece_at(probs, labels, 0.05)
    assert smooth_ece_at(probs[perm], labels[perm], 0.05) == pytest.approx(at, abs=1e-12)


def test_smooth_ece_hand_computed_constant_cases():
    """Constant confidence 0.9, hand-checked.

    All right: the residual is -0.1 at every sample, the smoothed residual is -0.1 K(t, 0.9) and
    K has mass 1 on [0, 1], so smECE_sigma = 0.1 for every sigma and the fixed point is sigma = 0.1.
    Exactly 90% right (9 of 10): the residuals 9 * (0.9 - 1) + 1 * 0.9 sum to 0, so every
    coefficient is 0 and smECE_sigma = 0 for every sigma (the fixed point: the slow test below).
    All wrong: residual +0.9 everywhere, smECE_sigma = 0.9 for every sigma, fixed point 0.9.
    """
    probs, labels = binary_top([0.9] * 10, [1] * 10)
    value, sigma = smooth_ece(probs, labels, return_sigma=True)
    assert value == pytest.approx(0.1, abs=1e-6) and sigma == pytest.approx(0.1, abs=1e-6)
    for s in (0.01, 0.05, 0.3):
        assert smooth_ece_at(probs, labels, s) == pytest.approx(0.1, abs=1e-9)

    probs, labels = binary_top([0.9] * 10, [1] * 9 + [0])
    for s in (0.01, 0.05, 0.3):
        assert smooth_ece_at(probs, labels, s) < 1e-12

    probs, labels = binary_top([0.9] * 4, [0] * 4)
    assert smooth_ece(probs, labels) == pytest.approx(0.9, abs=1e-6)


# the bisection runs down to sigma = 1e-3 (the finest grid); about a second
def test_smooth_ece_perfectly_calibrated_constant_is_zero_at_lower_bound():
    """Constant confidence 0.9 with exactly 90% right: smECE_sigma = 0 < sigma for every sigma, so
    SmoothECE is 0 and its bandwidth is the lower bound SIGMA_RANGE[0] = 1e-3 (hand-checked above)."""
    value, sigma = smooth_ece(*binary_top([0.9] * 10, [1] * 9 + [0]), return_sigma=True)
    assert value < 1e-12 and sigma == pytest.approx(SIGMA_RANGE[0], rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_ece_continuous_under_tiny_perturbation(seed):
    """Moving every confidence by up to 1e-9 (including samples placed exactly on the 15-bin
    edges b/15) changes smooth_ece and smooth_ece_at by < 1e-6: no edge decides its value."""
    rng = np.random.default_rng(seed)
    conf = np.concatenate([rng.uniform(0.5, 1.0, 300), np.arange(8, 16) / 15.0])
    correct = rng.random(len(conf)) < conf - 0.1
    probs, labels = binary_top(conf, correct)
    moved = np.clip(conf + rng.uniform(-1e-9, 1e-9, len(conf)), 0.5, 1.0)
    probs2, labels2 = binary_top(moved, correct)
    assert abs(smooth_ece(probs2, labels2) - smooth_ece(probs, labels)) < 1e-6
    assert abs(smooth_ece_at(probs2, labels2, 0.05) - smooth_ece_at(probs, labels, 0.05)) < 1e-6


# ----------------------------------------------------------------------------------------------
# 2. Equal-mass ECE and debiased ECE (Kumar, Liang and Ma)
# ----------------------------------------------------------------------------------------------


def random_multiclass(rng, n, n_classes):
    probs = rng.dirichlet(np.ones(n_classes) * 0.6, size=n)
    hit = rng.random(n) < probs.max(axis=1) - 0.1  # over-confident
    pred = probs.argmax(axis=1)
    labels = np.where(hit, pred, (pred + rng.integers(1, n_classes, size=n)) % n_classes)
    return probs, labels


def kumar_debiased(calibration, probs, labels, n_bins=15):
    return calibration.lower_bound_scaling_ce(probs, labels, p=2, debias=True, num_bins=n_bins,
                                              binning_scheme=calibration.get_equal_bins, mode="top-label")


@pytest.mark.parametrize("n_classes", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_mass_and_debiased_match_kumar(n_classes, seed):
    """equal_mass_ece == calibration.get_ece_em and debiased_ece == calibration.lower_bound_scaling_ce
    (p=2, debias, equal bins, top-label), to 1e-10, on random C-class inputs (n 20..600, and n < 15)."""
    calibration = pytest.importorskip("calibration")
    rng = np.random.default_rng(100 * n_classes + seed)
    for n in (int(rng.integers(20, 601)), 9):
        probs, labels = random_multiclass(rng, n, n_classes)
        for bins in (15, 4):
            assert equal_mass_ece(probs, labels, bins) == pytest.approx(
                float(calibration.get_ece_em(probs, labels, num_bins=bins)), abs=1e-10)
            assert debiased_ece(probs, labels, bins) == pytest.approx(
                float(kumar_debiased(calibration, probs, labels, bins)), abs=1e-10)
        conf, correct = top_label(probs, labels)
        assert equal_mass_ece(probs, labels, 15) == pytest.approx(brute_equal_mass_ece(conf, correct, 15), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_mass_and_debiased_with_ties_match_kumar_and_ignore_order(seed):
    """Confidences rounded to 2 decimals (many ties, edges landing on tied values): both estimators
    still equal Kumar's to 1e-10 and are unchanged (to 1e-12) by permuting the samples."""
    calibration = pytest.importorskip("calibration")
    rng = np.random.default_rng(seed)
    n, n_classes = 400, 3
    conf = np.round(rng.uniform(0.5, 1.0, n), 2)
    probs, _ = top_class0(conf, np.ones(n), n_classes)
    labels = np.where(rng.random(n) < conf - 0.15, 0, rng.integers(1, n_classes, size=n))
    perm = rng.permutation(n)
    for fn, ref in ((equal_mass_ece, lambda p, y: calibration.get_ece_em(p, y, num_bins=15)),
                    (debiased_ece, lambda p, y: kumar_debiased(calibration, p, y))):
        value = fn(probs, labels, 15)
        assert value == pytest.approx(float(ref(probs, labels)), abs=1e-10)
        assert fn(probs[perm], labels[perm], 15) == pytest.approx(value, abs=1e-12)
    assert np.array_equal(equal_mass_edges(conf, 15), equal_mass_edges(conf[perm], 15))


def test_equal_mass_and_debiased_hand_computed():
    """Eight samples, 2 equal-mass bins, confidences well away from the edge 0.8.

    conf    0.60 0.65 0.70 0.75 | 0.85 0.90 0.95 0.99
    correct  0    0    0    1   |  0    1    1    1
    edge = (0.75 + 0.85) / 2 = 0.8, then 1.0.
    bin 1: conf_b = 2.7 / 4 = 0.675, acc_b = 0.25, gap 0.425
    bin 2: conf_b = 3.69 / 4 = 0.9225, acc_b = 0.75, gap 0.1725
    equal-mass ECE = 0.5 * 0.425 + 0.5 * 0.1725 = 0.29875
    debiased: bin 1 0.425^2 - 0.25 * 0.75 / 3 = 0.180625 - 0.0625 = 0.118125
              bin 2 0.1725^2 - 0.75 * 0.25 / 3 = 0.02975625 - 0.0625 = -0.03274375
              CE^2 = 0.5 * (0.118125 - 0.03274375) = 0.042690625, CE = sqrt(0.042690625)
    """
    conf = [0.60, 0.65, 0.70, 0.75, 0.85, 0.90, 0.95, 0.99]
    probs, labels = binary_top(conf, [0, 0, 0, 1, 0, 1, 1, 1])
    assert equal_mass_edges(conf, 2).tolist() == pytest.approx([0.8, 1.0], abs=1e-15)
    assert equal_mass_ece(probs, labels, 2) == pytest.approx(0.29875, abs=1e-12)
    assert debiased_ece(probs, labels, 2) == pytest.approx(math.sqrt(0.042690625), abs=1e-12)

    # Six samples, 3 bins: groups {0.55, 0.65} {0.72, 0.81} {0.90, 0.95}, edges 0.685, 0.855, 1.0;
    # gaps |0.5 - 0.6| = 0.1, |0.5 - 0.765| = 0.265, |1 - 0.925| = 0.075 -> (2/6) * 0.44.
    # Debiased: 0.01 - 0.25, 0.070225 - 0.25, 0.005625 - 0 sum to < 0: clipped at 0.
    probs, labels = binary_top([0.55, 0.65, 0.72, 0.81, 0.90, 0.95], [0, 1, 1, 0, 1, 1])
    assert equal_mass_ece(probs, labels, 3) == pytest.approx(0.44 / 3, abs=1e-12)
    assert debiased_ece(probs, labels, 3) == 0.0
    # A bin of one sample adds 0 to the debiased sum; n_bins > n falls back to n bins.
    assert equal_mass_ece(probs, labels, 50) == pytest.approx(equal_mass_ece(probs, labels, 6), abs=1e-15)


# ----------------------------------------------------------------------------------------------
# 3. ECE sweep (Roelofs et al.)
# ----------------------------------------------------------------------------------------------


def test_ece_sweep_hand_computed():
    """conf 0.6 0.7 0.8 0.9, correct 0 1 0 1.
    b = 2: {0.6, 0.7} {0.8, 0.9}, accuracies 0.5, 0.5: monotone.
    b = 3: array_split sizes 2, 1, 1: {0.6, 0.7} {0.8} {0.9}, accuracies 0.5, 0, 1: not monotone.
    So b = 2 and the value is 0.5 |0.5 - 0.65| + 0.5 |0.5 - 0.85| = 0.075 + 0.175 = 0.25.
    conf 0.6 0.9, correct 1 0: b = 2 gives accuracies 1, 0: b = 1, value |0.5 - 0.75| = 0.25.
    """
    value, b = ece_sweep(*binary_top([0.6, 0.7, 0.8, 0.9], [0, 1, 0, 1]), return_bins=True)
    assert b == 2 and value == pytest.approx(0.25, abs=1e-12)
    value, b = ece_sweep(*binary_top([0.6, 0.9], [1, 0]), return_bins=True)
    assert b == 1 and value == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_ece_sweep_matches_brute_force(seed):
    """ece_sweep (value and bin count) == brute_sweep on random inputs, some with tied
    confidences; the bin count lies in [1, n]."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 160))
    n_classes = int(rng.integers(2, 5))
    probs, labels = random_multiclass(rng, n, n_classes)
    if seed % 2:
        conf = np.round(rng.uniform(0.55, 1.0, n), 2)  # ties
        probs, _ = top_class0(conf, np.ones(n), 3)
        labels = np.where(rng.random(n) < conf, 0, 1)
    conf, correct = top_label(probs, labels)
    value, b = ece_sweep(probs, labels, return_bins=True)
    ref_value, ref_b = brute_sweep(list(conf), list(correct))
    assert 1 <= b <= n
    assert b == ref_b
    assert value == pytest.approx(ref_value, abs=1e-12)
    assert ece_sweep(probs, labels) == value


# ----------------------------------------------------------------------------------------------
# 4. ECE of P(yes); binned top-label ECE vs torchmetrics is already in tests/test_metrics.py
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_yes_matches_torchmetrics_binary_and_brute_force(seed):
    """metric_value('ece_yes') == torchmetrics BinaryCalibrationError(n_bins=15, norm='l1') on
    (P(yes), label == 0) and == a loop over bins of the class-wise formula.

    torchmetrics' binary form bins ``preds`` as given (its source: confidences = preds, accuracies
    = target), so despite its "top-label" docstring it is the class-wise quantity; random
    continuous P(yes) never lies within an ulp of its float64 linspace edges."""
    from torchmetrics.classification import BinaryCalibrationError

    rng = np.random.default_rng(seed)
    n = 500
    p_yes = rng.beta(0.7, 0.7, size=n) * 0.998 + 0.001  # both sides of 0.5, none exactly 0 or 1
    labels = np.where(rng.random(n) < np.clip(p_yes + 0.15 * (p_yes - 0.5), 0, 1), 0, 1)
    probs = np.stack([p_yes, 1.0 - p_yes], axis=1)
    ours = metric_value("ece_yes", probs, labels)
    is_yes = torch.from_numpy((labels == 0).astype(np.int64))
    reference = BinaryCalibrationError(n_bins=15, norm="l1")(torch.from_numpy(p_yes), is_yes)
    assert ours == pytest.approx(float(reference), abs=1e-10)
    assert ours == pytest.approx(brute_classwise(p_yes, (labels == 0).astype(np.float64), 15), abs=1e-12)
    assert ours == pytest.approx(classwise_ece(probs, labels, class_index=0), abs=0)


def test_ece_yes_is_binary_only():
    """ece_yes is declared for POPE's yes/no set only."""
    assert METRIC_SPECS["ece_yes"].binary_only


# ----------------------------------------------------------------------------------------------
# Resampled forms of the new metrics (the bootstrap) == a loop of the plain metric
# ----------------------------------------------------------------------------------------------

NEW_METRICS = {"smece": 1e-5, "ece_em": 1e-12, "ece_sweep": 1e-12, "debiased_ece": 1e-12, "ece_yes": 1e-12}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("metric,n_classes", [(m, c) for m in sorted(NEW_METRICS) for c in (2, 4)
                                              if c == 2 or not METRIC_SPECS[m].binary_only])
def test_resampled_new_metrics_equal_plain_loop(metric, n_classes, seed):
    """Resampled(probs, labels, 6).values(metric, idx) == [metric_value(metric, probs[i], labels[i], 6)
    for i in idx] (tolerance 1e-5 for smece, the bisection's precision; 1e-12 otherwise), with
    repeated rows (tied confidences), uniform rows and, for 4 answers, confidences below 0.5."""
    rng = np.random.default_rng(seed)
    n = 57
    probs = rng.dirichlet(np.ones(n_classes) * 0.7, size=n)
    probs[::5] = probs[0]  # repeated rows: tied confidences
    probs[3::7, :] = 1.0 / n_classes  # uniform rows: argmax ties resolved to class 0
    labels = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, n_classes - 1)  # calibrated
    idx = draw_indices(n, 12, seed)
    fast = Resampled(probs, labels, n_bins=6).values(metric, idx)
    plain = np.array([metric_value(metric, probs[i], labels[i], 6) for i in idx])
    np.testing.assert_allclose(fast, plain, rtol=0, atol=NEW_METRICS[metric])


def test_resampled_ece_sweep_with_confidences_below_half():
    """Regression (Resampled.ece_sweep once rebuilt probs as [c, 1 - c], which makes class 1 the
    top label when c < 0.5 and flips confidence and correctness), hand-computed.

    Three answers; conf 0.40 (right), 0.65 (wrong), 0.70 (right). b = 2: groups {0.40, 0.65}
    {0.70}, accuracies 0.5, 1; b = 3: 1, 0, 1, not monotone -> b = 2, value
    (2/3) |0.5 - 0.525| + (1/3) |1 - 0.7| = 0.35 / 3. (The flipped form gives 0.6 wrong, 0.65
    wrong, 0.7 right: monotone at b = 3, value 1.55 / 3.)"""
    probs = np.array([[0.40, 0.30, 0.30], [0.65, 0.35, 0.00], [0.70, 0.20, 0.10]])
    labels = np.array([0, 1, 0])
    assert ece_sweep(probs, labels, return_bins=True) == (pytest.approx(0.35 / 3, abs=1e-12), 2)
    resampled = Resampled(probs, labels, 15).values("ece_sweep", np.array([[0, 1, 2], [2, 1, 0]]))
    np.testing.assert_allclose(resampled, [0.35 / 3] * 2, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 5. Noise floor
# ----------------------------------------------------------------------------------------------


def test_noise_floor_covers_calibrated_predictor_about_95_percent():
    """200 experiments of n = 300 from a calibrated-by-construction predictor (z ~ Bernoulli(c)):
    the measured ECE is at or below floor.upper (level 0.95, 400 draws) in 90%..99% of them."""
    rng = np.random.default_rng(12345)
    covered = []
    for e in range(200):
        conf = 1.0 - 0.5 * rng.beta(1.0, 3.0, size=300)
        probs, labels = binary_top(conf, rng.random(300) < conf)
        floor = noise_floor("ece", probs, n_draws=400, seed=10_000 + e)
        covered.append(floor.covers(ece(probs, labels)))
    assert 0.90 <= np.mean(covered) <= 0.99


def test_noise_floor_falls_with_n():
    """The floor's mean for binned ECE is larger at n = 100 than at n = 3000 (it scales like
    1/sqrt(n): expect a factor of several)."""
    rng = np.random.default_rng(7)
    means = []
    for n in (100, 3000):
        probs, _ = binary_top(rng.uniform(0.5, 1.0, n), np.ones(n))
        means.append(noise_floor("ece", probs, n_draws=300, seed=0).mean)
    assert means[0] > 2.5 * means[1]


def test_noise_floor_is_seeded():
    """Same seed -> identical draws; a different seed -> different draws."""
    probs, _ = binary_top(np.linspace(0.55, 0.98, 120), np.ones(120))
    a = noise_floor("ece_em", probs, n_draws=50, seed=3)
    b = noise_floor("ece_em", probs, n_draws=50, seed=3)
    c = noise_floor("ece_em", probs, n_draws=50, seed=4)
    assert np.array_equal(a.draws, b.draws) and a.mean == b.mean and a.upper == b.upper
    assert not np.array_equal(a.draws, c.draws)
    assert a.n_draws == 50 and a.draws.shape == (50,) and a.level == 0.95 and a.metric == "ece_em"
    assert a.upper == pytest.approx(np.quantile(a.draws, 0.95), abs=0)


@pytest.mark.parametrize("metric", FLOOR_METRICS)
def test_noise_floor_draws_equal_plain_estimator(metric):
    """Each batched floor draw == the plain estimator on probs (top label class 0, confidences
    below and above 0.5 with 3 answers) and labels 0/1 built from that draw's correctness,
    reproduced as rng.random((R, n)) < c with numpy.random.default_rng(seed): 1e-12 for ece,
    ece_em, debiased_ece; 1e-5 for smece (bisection)."""
    rng = np.random.default_rng(5)
    n, draws, seed = 150, 12 if metric == "smece" else 40, 9
    conf = rng.uniform(0.4, 0.99, n)
    probs, _ = top_class0(conf, np.ones(n), 3)
    floor = noise_floor(metric, probs, n_draws=draws, seed=seed, n_bins=10)
    hits = np.random.default_rng(seed).random((draws, n)) < conf[None, :]
    plain = np.array([metric_value(metric, probs, np.where(h, 0, 1), 10) for h in hits])
    np.testing.assert_allclose(floor.draws, plain, rtol=0, atol=1e-5 if metric == "smece" else 1e-12)
    assert floor.mean == pytest.approx(plain.mean(), abs=1e-5 if metric == "smece" else 1e-12)


def test_noise_floor_metrics_and_bad_names():
    """FLOOR_METRICS is the four top-label estimators; another name raises ValueError naming 'metric'."""
    assert set(FLOOR_METRICS) == {"ece", "smece", "ece_em", "debiased_ece"}
    probs = [[0.7, 0.3]] * 10
    for bad in ("mce", "brier", "nope", "ece_sweep"):
        with pytest.raises(ValueError, match="^metric"):
            noise_floor(bad, probs)


# ----------------------------------------------------------------------------------------------
# 6. Brier decomposition
# ----------------------------------------------------------------------------------------------


def identity(d):
    return d["reliability"] - d["resolution"] + d["uncertainty"] + d["within_variance"] - d["within_covariance"]


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_brier_decomposition_identity_random(n_classes, seed):
    """brier == rel - res + unc + wbv - wbc to 1e-12 for n_bins in (1, 5, 15, 37), and 'brier'
    == metrics.brier, on random C-class inputs."""
    rng = np.random.default_rng(10 * n_classes + seed)
    probs, labels = random_multiclass(rng, 300, n_classes)
    for n_bins in (1, 5, 15, 37):
        d = brier_decomposition(probs, labels, n_bins=n_bins)
        assert d["brier"] == pytest.approx(brier(probs, labels), abs=1e-14)
        assert identity(d) == pytest.approx(d["brier"], abs=1e-12)
        assert d["reliability"] >= 0 and d["resolution"] >= 0 and d["within_variance"] >= 0


ROWS3 = np.array([[0.72, 0.17, 0.11], [0.46, 0.33, 0.21], [0.13, 0.24, 0.63], [0.36, 0.58, 0.06]])
# every column's four values fall in four different bins of 10, each >= 0.01 from an edge
ROWS2 = np.array([[0.85, 0.15], [0.65, 0.35], [0.25, 0.75], [0.45, 0.55]])  # bin centres of 10


@pytest.mark.parametrize("rows", [ROWS2, ROWS3], ids=["binary", "three"])
def test_brier_decomposition_reduces_to_murphy(rows):
    """When each bin holds one distinct forecast value, the within terms are 0 (< 1e-15: bin
    means of equal values may differ by an ulp) and reliability, resolution and uncertainty equal
    Murphy's distinct-value form computed by brute force (summed over the answer columns)."""
    rng = np.random.default_rng(0)
    which = rng.integers(0, len(rows), size=400)
    probs = rows[which]
    truth = np.clip(probs + rng.normal(scale=0.1, size=probs.shape), 0.01, None)
    truth /= truth.sum(axis=1, keepdims=True)
    labels = (rng.random((400, 1)) > np.cumsum(truth, axis=1)).sum(axis=1).clip(0, rows.shape[1] - 1)
    d = brier_decomposition(probs, labels, n_bins=10)
    rel = res = unc = 0.0
    for c in range(rows.shape[1]):
        f, o = probs[:, c], (labels == c).astype(np.float64)
        base = o.mean()
        unc += base * (1 - base)
        for value in np.unique(f):
            members = f == value
            rel += members.sum() * (value - o[members].mean()) ** 2 / len(f)
            res += members.sum() * (o[members].mean() - base) ** 2 / len(f)
    assert abs(d["within_variance"]) < 1e-15 and abs(d["within_covariance"]) < 1e-15
    assert d["reliability"] == pytest.approx(rel, abs=1e-12)
    assert d["resolution"] == pytest.approx(res, abs=1e-12)
    assert d["uncertainty"] == pytest.approx(unc, abs=1e-12)
    assert rel - res + unc == pytest.approx(d["brier"], abs=1e-12)


def test_brier_decomposition_hand_computed():
    """Four samples, 5 bins; P(class 0) = 0.62, 0.78 (bin [0.6, 0.8)) and 0.22, 0.38 (bin [0.2, 0.4)),
    labels 1, 0, 1, 0 (class-0 outcomes 0, 1, 0, 1).

    Column 0: bin means f = 0.7 and 0.3, outcome frequency 0.5 in both, base rate 0.5:
      reliability 0.5 * 0.2^2 + 0.5 * 0.2^2 = 0.04; resolution 0; uncertainty 0.25;
      within variance (4 * 0.08^2) / 4 = 0.0064;
      within covariance (2/4) [(-0.08)(-0.5) + (0.08)(0.5) + (-0.08)(-0.5) + (0.08)(0.5)] = 0.08;
      Brier (0.62^2 + 0.22^2 + 0.22^2 + 0.62^2) / 4 = 0.2164 = 0.04 + 0.25 + 0.0064 - 0.08.
    Column 1 mirrors column 0 (1 - p, 1 - o) and gives the same parts, so the totals double.
    """
    probs = np.array([[0.62, 0.38], [0.78, 0.22], [0.22, 0.78], [0.38, 0.62]])
    d = brier_decomposition(probs, [1, 0, 1, 0], n_bins=5)
    expected = {"reliability": 0.08, "resolution": 0.0, "uncertainty": 0.5, "within_variance": 0.0128,
                "within_covariance": 0.16, "brier": 0.4328}
    for key, value in expected.items():
        assert d[key] == pytest.approx(value, abs=1e-12), key


# ----------------------------------------------------------------------------------------------
# 7. Temperature scaling
# ----------------------------------------------------------------------------------------------


def random_answer_logits(rng, n, max_answers=4, max_tokens=3):
    """One entry per sample: 2..max_answers answers, each 1..max_tokens token logits."""
    data = []
    for _ in range(n):
        k = int(rng.integers(2, max_answers + 1))
        data.append([list(rng.normal(scale=3.0, size=int(rng.integers(1, max_tokens + 1)))) for _ in range(k)])
    return data


def brute_probs(data, temperature):
    width = max(len(s) for s in data)
    out = np.zeros((len(data), width))
    for i, sample in enumerate(data):
        mass = [sum(math.exp(l / temperature) for l in tokens) for tokens in sample]
        total = sum(mass)
        out[i, : len(sample)] = [m / total for m in mass]
    return out


def test_temperature_probs_equal_renormalised_token_mass():
    """temperature_probs == sum over each answer's tokens of exp(l / T), divided by the sum over
    all tokens of the set (brute force, T = 1 and T = 2.5), padded with 0."""
    rng = np.random.default_rng(0)
    data = random_answer_logits(rng, 40)
    for t in (1.0, 2.5):
        np.testing.assert_allclose(temperature_probs(data, t), brute_probs(data, t), rtol=1e-12, atol=1e-15)


def test_temperature_probs_single_token_is_softmax():
    """With one token per answer: temperature_probs == scipy.special.softmax(z / T), from nested
    lists and from an (n, C) array."""
    rng = np.random.default_rng(1)
    z = rng.normal(scale=4.0, size=(50, 4))
    for t in (0.3, 1.0, 3.0):
        np.testing.assert_allclose(temperature_probs(z, t), softmax(z / t, axis=1), rtol=1e-12, atol=1e-300)
        nested = [[[v] for v in row] for row in z]
        np.testing.assert_allclose(temperature_probs(nested, t), softmax(z / t, axis=1), rtol=1e-12, atol=1e-300)


def labels_for(rng, probs_true):
    drawn = (rng.random((len(probs_true), 1)) > np.cumsum(probs_true, axis=1)).sum(axis=1)
    return drawn.clip(0, probs_true.shape[1] - 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_temperature_matches_dense_grid(seed):
    """fit_temperature on random multi-token data == the argmin of temperature_nll over 4000
    log-spaced T in T_RANGE, within one grid step in log T; its NLL is not above the grid's."""
    rng = np.random.default_rng(seed)
    data = random_answer_logits(rng, 300)
    probs_true = brute_probs(data, 1.7)
    labels = np.array([min(int((rng.random() > np.cumsum(p[: len(s)])).sum()), len(s) - 1)
                       for p, s in zip(probs_true, data)])
    logits = AnswerLogits.of(data)
    grid = np.exp(np.linspace(math.log(T_RANGE[0]), math.log(T_RANGE[1]), 4000))
    nll = np.array([temperature_nll(logits, labels, t) for t in grid])
    step = math.log(grid[1] / grid[0])
    fitted = fit_temperature(data, labels)
    assert abs(math.log(fitted) - math.log(grid[np.argmin(nll)])) <= step
    assert temperature_nll(logits, labels, fitted) <= nll.min() + 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_temperature_matches_lbfgs(seed):
    """Single-token case: fit_temperature == torch.optim.LBFGS minimising the cross-entropy of
    z / exp(log T) over log T (float64, strong Wolfe), within 1e-3 relative."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(500, 3))
    labels = labels_for(rng, softmax(z / 1.8, axis=1))
    logits, target = torch.from_numpy(z), torch.from_numpy(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    opt.step(closure)
    assert fit_temperature(z, labels) == pytest.approx(float(log_t.detach().exp()), rel=1e-3)


@pytest.mark.parametrize("t_true", [2.0, 0.5])
def test_fit_temperature_recovers_known_temperature(t_true):
    """Labels drawn from softmax(z / T0) with n = 20000: the fit is within 10% of T0."""
    rng = np.random.default_rng(int(t_true * 10))
    z = rng.normal(scale=3.0, size=(20000, 3))
    labels = labels_for(rng, softmax(z / t_true, axis=1))
    assert fit_temperature(z, labels) == pytest.approx(t_true, rel=0.1)


def test_fit_temperature_ignores_sample_order():
    """Permuting the samples (logits and labels together) leaves the fit unchanged (to 1e-5
    relative: the NLL's sum may round differently; the search's precision is 1e-6 in log T)."""
    rng = np.random.default_rng(3)
    data = random_answer_logits(rng, 200)
    labels = np.array([int(rng.integers(0, len(s))) for s in data])
    perm = rng.permutation(len(data))
    fitted = fit_temperature(data, labels)
    assert fit_temperature([data[i] for i in perm], labels[perm]) == pytest.approx(fitted, rel=1e-5)


@pytest.mark.parametrize("call,name", [
    (lambda: fit_temperature([[[1.0], [0.0]], [[2.0]]], [0, 0]), "answer_logits"),  # a sample with one answer
    (lambda: fit_temperature([[[1.0], []]], [0]), "answer_logits"),  # an answer with no tokens
    (lambda: fit_temperature([[[1.0], [float("nan")]]], [0]), "answer_logits"),
    (lambda: fit_temperature([[[1.0], [float("inf")]]], [0]), "answer_logits"),
    (lambda: fit_temperature(np.array([[1.0, np.nan]]), [0]), "answer_logits"),
    (lambda: fit_temperature([[[1.0], [0.0]], [[1.0], [0.0], [2.0]]], [2, 0]), "labels"),  # 2 outside the first set
    (lambda: fit_temperature([[[1.0], [0.0]]], [-1]), "labels"),
    (lambda: temperature_nll([[[1.0], [0.0]]], [0], 0.0), "temperature"),
    (lambda: temperature_probs([[[1.0], [0.0]]], -1.0), "temperature"),
    (lambda: temperature_probs([[[1.0], [0.0]]], float("inf")), "temperature"),
])
def test_temperature_bad_inputs_name_the_argument(call, name):
    """Bad inputs raise ValueError whose message starts with the argument's name."""
    with pytest.raises(ValueError, match=f"^{name}"):
        call()
