"""Tests of the calibration primer's estimator part (visprune.book.estimators_primer), of the
primer's temperature helpers as calls into visprune.metrics.temperature, and of the primer
notebook's shape (no functions defined in it, exercises folded, citations in the bibliography)."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from visprune import metrics  # noqa: E402
from visprune.book import estimators_primer as ep  # noqa: E402
from visprune.book import primer  # noqa: E402
from visprune.metrics.specs import metric_value  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "chapters" / "calibration_primer.ipynb"


def _top_label_form(conf: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs (n, 2), labels (n,)) whose top label has confidence ``conf`` and is right where ``hit``."""
    return np.stack([conf, 1.0 - conf], axis=1), np.where(hit > 0, 0, 1).astype(np.int64)


# ------------------------------------------------------------------------------ the simulated predictors


def test_confidence_pair_is_the_simulated_classifier_top_label():
    calibrated, sharpened = ep.confidence_pair(500, 2.5, seed=3)
    logits, _ = primer.simulate_classifier(500, sharpness=1.0, seed=3)
    np.testing.assert_allclose(calibrated, primer.softmax(logits).max(axis=1))
    np.testing.assert_allclose(sharpened, primer.softmax(2.5 * logits).max(axis=1))
    assert np.all(sharpened >= calibrated) and np.all(calibrated >= 0.5)


def test_true_calibration_error_matches_a_large_monte_carlo_sample():
    truth = ep.true_calibration_error(2.5)
    calibrated, sharpened = ep.confidence_pair(1_000_000, 2.5, seed=7)
    gap = sharpened - calibrated
    assert truth["l1"] == pytest.approx(gap.mean(), abs=3e-4)
    assert truth["l2"] == pytest.approx(np.sqrt(np.mean(gap**2)), abs=3e-4)
    assert ep.true_calibration_error(1.0) == {"l1": 0.0, "l2": 0.0}
    under = ep.true_calibration_error(0.5)  # under-confident: the gap has the other sign
    assert under["l1"] > 0.01 and under["l2"] >= under["l1"]


def test_binned_ece_converges_to_the_true_l1_error():
    """With labels drawn from softmax(z), ECE on a large sample reaches E[c_s - c_1] (no bin cancels)."""
    logits, labels = primer.simulate_classifier(200_000, sharpness=2.5, seed=11)
    truth = ep.true_calibration_error(2.5)
    assert metrics.ece(primer.softmax(logits), labels) == pytest.approx(truth["l1"], abs=3e-3)


# ------------------------------------------------------------------------------ estimators as n grows


def test_estimator_study_shape_and_determinism():
    study = ep.estimator_study([50, 120], 2.0, n_repeats=7, block=3, seed=4)
    assert list(study.columns) == ["n", "repeat", "predictor", "estimator", "value"]
    assert len(study) == 2 * 7 * 2 * len(ep.ESTIMATORS)
    per_cell = study.groupby(["n", "predictor", "estimator"])["repeat"].apply(sorted)
    assert all(r == list(range(7)) for r in per_cell)
    assert set(study["predictor"]) == {"calibrated", "over-confident"}
    assert (study["value"] >= 0).all()
    again = ep.estimator_study([50, 120], 2.0, n_repeats=7, block=3, seed=4)
    np.testing.assert_array_equal(study["value"].to_numpy(), again["value"].to_numpy())
    with pytest.raises(ValueError, match="estimators"):
        ep.estimator_study([50], 2.0, n_repeats=2, estimators=["brier"])
    with pytest.raises(ValueError, match="sample_sizes"):
        ep.estimator_study([1], 2.0, n_repeats=2)


def test_estimator_study_values_are_the_plain_metrics_of_the_drawn_data():
    """Rebuild one block's data from its documented seed and recompute every estimator directly."""
    n, sharpness, seed, block = 80, 2.5, 5, 4
    study = ep.estimator_study([n], sharpness, n_repeats=block, block=block, seed=seed)
    rng = np.random.default_rng([seed, n, 0])
    calibrated, sharpened = ep.confidence_pair(n, sharpness, 2.0, rng)
    hits = rng.random((block, n)) < calibrated[None, :]
    for predictor, conf in (("calibrated", calibrated), ("over-confident", sharpened)):
        for m in ep.ESTIMATORS:
            got = study[(study["predictor"] == predictor) & (study["estimator"] == m)].sort_values("repeat")["value"]
            expected = [metric_value(m, *_top_label_form(conf, row), 15) for row in hits]
            np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-9, err_msg=f"{predictor} {m}")


def test_calibrated_estimates_fall_as_n_grows_and_the_over_confident_ones_reach_the_truth():
    sizes = [100, 400, 1600]
    truth = ep.true_calibration_error(2.5)
    table = ep.study_table(ep.estimator_study(sizes, 2.5, n_repeats=20, seed=0), truth)
    for m in ("ece", "ece_em", "smece"):
        means = table[(table["predictor"] == "calibrated") & (table["estimator"] == m)].sort_values("n")["mean"]
        assert np.all(np.diff(means.to_numpy()) < 0), m
        assert means.iloc[-1] > 0  # biased upwards: the true error is 0
    over = table[(table["predictor"] == "over-confident") & (table["n"] == 1600)].set_index("estimator")
    for m in ep.ESTIMATORS:
        assert abs(over.loc[m, "bias"]) < 0.02, m
    assert over.loc["debiased_ece", "truth"] == truth["l2"] and over.loc["ece", "truth"] == truth["l1"]


def test_study_table_summarises_the_values():
    study = ep.estimator_study([60, 200], 2.0, n_repeats=6, seed=1)
    truth = {"l1": 0.05, "l2": 0.07}
    table = ep.study_table(study, truth)
    assert len(table) == 2 * len(ep.ESTIMATORS) * 2
    row = table[(table["predictor"] == "over-confident") & (table["estimator"] == "ece") & (table["n"] == 60)].iloc[0]
    values = study[(study["predictor"] == "over-confident") & (study["estimator"] == "ece") & (study["n"] == 60)]["value"]
    assert row["mean"] == pytest.approx(values.mean()) and row["sd"] == pytest.approx(values.std(ddof=1))
    assert row["q95"] == pytest.approx(np.quantile(values, 0.95))
    assert row["truth"] == 0.05 and row["bias"] == pytest.approx(values.mean() - 0.05)
    assert (table.loc[table["predictor"] == "calibrated", "truth"] == 0).all()
    wide = ep.format_study(table)
    assert list(wide.index) == [60, 200] and wide.shape == (2, 2 * len(ep.ESTIMATORS))
    assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}", wide.iloc[0, 0])


# ------------------------------------------------------------------------------ floor, bootstrap, decomposition


def _held_out(n=600, sharpness=2.5, seed=2):
    logits, labels = primer.simulate_classifier(n, sharpness=1.0, seed=seed)
    return {"calibrated": primer.softmax(logits), "over-confident": primer.softmax(sharpness * logits)}, labels


def test_floor_table_follows_the_noise_floors():
    candidates, labels = _held_out()
    floors = ep.noise_floors(candidates, n_draws=100, seed=0)
    measured = ep.measured_values(candidates, labels)
    truth = {"calibrated": {"l1": 0.0, "l2": 0.0}, "over-confident": ep.true_calibration_error(2.5)}
    table = ep.floor_table(floors, measured, truth)
    assert len(table) == 2 * len(ep.ESTIMATORS)
    row = table.loc[("over-confident", "ECE")]
    assert row["measured"] == pytest.approx(metrics.ece(candidates["over-confident"], labels))
    assert row["floor 95th pct"] == floors["over-confident"]["ece"].upper
    assert not row["within floor"]  # a 0.1 error is far above a floor of n = 600
    assert row["truth"] == truth["over-confident"]["l1"]
    assert table.loc[("over-confident", "debiased ECE (L2)"), "truth"] == truth["over-confident"]["l2"]


def test_bootstrap_values_are_the_draws_of_bootstrap_ci():
    candidates, labels = _held_out(300)
    probs = candidates["over-confident"]
    values = ep.bootstrap_values(probs, labels, "ece", n_resamples=200, seed=5)
    low, high = metrics.bootstrap_ci(functools.partial(metrics.ece, n_bins=15), probs, labels, n_resamples=200, seed=5)
    np.testing.assert_allclose(np.quantile(values, [0.025, 0.975]), [low, high])


def test_bootstrap_table_by_hand_and_the_lopsided_ece():
    floor = metrics.noise_floor("ece", [[0.7, 0.3]] * 50, n_draws=20)
    values = np.linspace(0.0, 1.0, 101)
    table = ep.bootstrap_table([{"predictor": "p", "metric": "ece", "point": 0.25, "values": values, "floor": floor,
                                 "truth": 0.9}])
    row = table.iloc[0]
    assert row["low"] == pytest.approx(0.025) and row["high"] == pytest.approx(0.975)
    assert row["above point"] == pytest.approx(75 / 101)
    assert row["position"] == pytest.approx((0.25 - 0.025) / 0.95)
    assert row["covers truth"]
    # the calibrated predictor's ECE: resampling noise only adds, so most resamples lie above the point
    candidates, labels = _held_out(800)
    floors = ep.noise_floors(candidates, n_draws=50, seed=0, estimators=("ece",))
    cases = [ep.bootstrap_case(name, candidates[name], labels, "ece", truth, floors[name]["ece"], 400, 0)
             for name, truth in (("calibrated", 0.0), ("over-confident", ep.true_calibration_error(2.5)["l1"]))]
    table = ep.bootstrap_table(cases)
    assert table.loc[("calibrated", "ECE"), "above point"] > 0.7
    assert 0.2 < table.loc[("over-confident", "ECE"), "above point"] < 0.8


def test_decomposition_table_parts_sum_to_the_brier_score():
    candidates, labels = _held_out(700)
    candidates["scaled"] = primer.temperature_scale(np.log(candidates["over-confident"]), 2.5)
    candidates["always 50%"] = np.full((700, 2), 0.5)
    table = ep.decomposition_table(candidates, labels, n_bins=10)
    np.testing.assert_allclose(table["sum of parts"], table["brier"], atol=1e-12)
    np.testing.assert_allclose(table["brier"], [metrics.brier(p, labels) for p in candidates.values()])
    assert table["uncertainty"].nunique() == 1  # the labels', the same for every predictor
    assert table.loc["always 50%", "resolution"] == 0.0
    assert table.loc["over-confident", "reliability"] > 3 * table.loc["calibrated", "reliability"]


def test_figures_draw_their_panels():
    import matplotlib.pyplot as plt

    candidates, labels = _held_out(300)
    table = ep.study_table(ep.estimator_study([50, 100], 2.5, n_repeats=3), ep.true_calibration_error(2.5))
    floors = ep.noise_floors(candidates, n_draws=30)
    measured = ep.measured_values(candidates, labels)
    case = ep.bootstrap_case("calibrated", candidates["calibrated"], labels, "smece", 0.0,
                             floors["calibrated"]["smece"], 30, 0)
    for fig, n_axes in ((ep.study_figure(table), 2), (ep.floor_figure(floors["calibrated"], measured["calibrated"]), 4),
                        (ep.bootstrap_figure([case, case]), 2)):
        assert len(fig.axes) == n_axes
        plt.close(fig)


# ------------------------------------------------------------------------------ primer's temperature helpers


def test_primer_temperature_helpers_call_metrics_temperature():
    logits, labels = primer.simulate_classifier(1500, sharpness=3.0, seed=2)
    assert primer.fit_temperature(logits, labels) == metrics.fit_temperature(logits, labels)
    probs = primer.softmax(logits)
    assert primer.fit_temperature(probs, labels, from_probs=True) == pytest.approx(
        metrics.fit_temperature(logits, labels), rel=1e-4)
    # the same up to the floor at 1e-12 on probabilities (sqrt(1e-12) = 1e-6 after T = 2)
    np.testing.assert_allclose(primer.rescale_probs(probs, 2.0), primer.temperature_scale(logits, 2.0), atol=1e-6)
    np.testing.assert_allclose(primer.temperature_scale(logits, 2.0), metrics.temperature_probs(logits, 2.0))
    assert primer.nll(probs, labels) == pytest.approx(metrics.temperature_nll(logits, labels, 1.0))


# ------------------------------------------------------------------------------ the notebook


def _notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_primer_notebook_defines_no_functions():
    for i, cell in enumerate(_notebook().cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        defined = [type(node).__name__ for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))]
        assert not defined, f"cell {i} defines {defined}: put the logic in visprune.book"


def test_primer_exercises_fold_their_answers_and_citations_exist():
    cells = [c.source for c in _notebook().cells if c.cell_type == "markdown"]
    questions = [s for s in cells if re.match(r"\*\*\d\.\*\*", s)]
    assert 3 <= len(questions) <= 5
    assert all(s.count("```{dropdown} Answer") == 1 for s in questions)
    bib = (ROOT / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    cited = {k.strip() for s in cells for group in re.findall(r"\{cite\}`([^`]+)`", s) for k in group.split(",")}
    assert cited and not cited - keys, f"cited but not in references.bib: {sorted(cited - keys)}"
