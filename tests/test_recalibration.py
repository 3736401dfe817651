"""Recalibration end to end: the records keep each answer's first-token logits, the fitting
splits are the ones DESIGN.md and ALGORITHMS.md name, temperatures are fitted there and applied
to the evaluated records without a model run (ALGORITHMS.md, "Metrics": temperature scaling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from visprune.book import recalibration as rc
from visprune.engine import Evaluator, RunConfig
from visprune.engine.datasets import DATASET_SPECS, FIT_SHARE, dataset_spec, fitting_image, load_samples
from visprune.engine.profiles import resolve_profile
from visprune.metrics import temperature_probs


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from tiny_llava import engine_assets

    return engine_assets(tmp_path_factory.mktemp("engine"), n_images=60, seed=3)


@pytest.fixture(scope="module")
def evaluator(assets, tmp_path_factory):
    profile = resolve_profile("toy", model=assets / "model", world=assets / "world",
                              results=tmp_path_factory.mktemp("results"))
    return Evaluator(profile, progress=False)


CONFIGS = [("none", None, {}), ("scope", 4, {"alpha": 0.0}), ("fastv", 4, {"layer": 1})]


@pytest.fixture(scope="module")
def grids(evaluator):
    test = evaluator.grid([RunConfig("pope-random", m, k, p, n_samples=24) for m, k, p in CONFIGS]
                          + [RunConfig("scienceqa", m, k, p) for m, k, p in CONFIGS])
    fit = evaluator.grid([RunConfig("pope-random-val", m, k, p, n_samples=24) for m, k, p in CONFIGS]
                         + [RunConfig("scienceqa-val", m, k, p) for m, k, p in CONFIGS])
    return test, fit


def test_every_question_set_names_a_fitting_split_that_exists():
    for name, spec in DATASET_SPECS.items():
        if spec.validation is not None:
            fit = dataset_spec(spec.validation)
            assert (fit.task, fit.answers, fit.prompt) == (spec.task, spec.answers, spec.prompt), name
    assert {n for n, s in DATASET_SPECS.items() if s.validation} == {"pope-random", "pope-popular",
                                                                     "pope-adversarial", "scienceqa"}


def test_records_keep_answer_logits_that_give_back_their_probabilities(grids):
    """p(T = 1) from the stored logits equals the stored probs (the wrapper's renormalised
    full-vocabulary softmax mass), and each answer has one logit per counted token id."""
    test, _ = grids
    for r in test.itertuples():
        assert [len(x) for x in r.answer_logits] == [len(x) for x in r.answer_token_ids]
        np.testing.assert_allclose(temperature_probs([r.answer_logits], 1.0)[0, : len(r.answers)], r.probs, atol=2e-6)


def test_the_stored_logits_are_the_models_first_token_logits(assets):
    """score()'s answer_logits are first_token_logits at the answer ids (an independent call)."""
    from visprune.instrument.llava import PrunedLlava
    from visprune.instrument.prompts import pope_question
    from PIL import Image

    w = PrunedLlava.from_pretrained(assets / "model", device="cpu", dtype=torch.float32)
    images = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (40, 40), (20, 200, 60))]
    vision = w.encode_images(images)
    questions = [pope_question("Is there a kite in the image?"), pope_question("Is there a tree in the image?")]
    out = w.score(questions, ("yes", "no"), vision, None, [0, 1])
    logits, _ = w.first_token_logits(questions, vision, None, [0, 1])
    for i in range(2):
        for ids, values in zip(out.answer_ids[i], out.answer_logits[i]):
            np.testing.assert_allclose(values, logits[i, ids].numpy(), rtol=0, atol=0)


def test_fitting_splits_share_no_sample_or_image_with_the_evaluated_ones(grids):
    test, fit = grids
    assert set(fit["dataset"]) == {"pope-random-val", "scienceqa-val"}
    assert not set(test["image_id"]) & set(fit["image_id"])
    assert rc.held_out(test, fit).shape == test.shape  # toy world: nothing to drop


def test_temperatures_are_fitted_per_run_and_lower_the_fitting_nll(grids):
    _, fit = grids
    pope_fit = fit[fit["dataset"] == "pope-random-val"]
    t = rc.fit_temperatures(pope_fit)
    assert list(t["run"]) == list(dict.fromkeys(pope_fit["run"]))
    assert (t["nll_after"] <= t["nll_before"] + 1e-12).all() and (t["temperature"] > 0).all()
    assert (t["n_fit"] == 24).all()
    with pytest.raises(ValueError, match="^runs: no fitting records of run 'nope'"):
        rc.fit_temperatures(pope_fit, runs=["nope"])


def test_recalibrating_at_temperature_one_changes_nothing(grids):
    test, _ = grids
    ones = pd.DataFrame({"run": sorted(set(test["run"])), "temperature": 1.0})
    same = rc.recalibrate(test, ones)
    for a, b in zip(same["probs"], test["probs"]):
        np.testing.assert_allclose(a, b, atol=2e-6)
    assert (same["prediction"] == test["prediction"]).all() and (same["correct"] == test["correct"]).all()


def test_recalibrated_records_follow_their_temperature(grids):
    test, _ = grids
    temps = pd.DataFrame({"run": sorted(set(test["run"])), "temperature": [0.5, 2.0, 4.0]})
    out = rc.recalibrate(test, temps)
    t_of = dict(zip(temps["run"], temps["temperature"]))
    for r, o in zip(test.itertuples(), out.itertuples()):
        expected = temperature_probs([r.answer_logits], t_of[r.run])[0, : len(r.answers)]
        np.testing.assert_allclose(o.probs, expected, atol=1e-12)
        assert o.confidence == pytest.approx(max(expected)) and o.correct == (int(np.argmax(expected)) == r.label)
    # a higher temperature softens: mean confidence falls with T for the same records
    run = temps["run"][2]
    assert out.loc[out["run"] == run, "confidence"].mean() < test.loc[test["run"] == run, "confidence"].mean()
    with pytest.raises(ValueError, match="^temperatures: no fitted temperature"):
        rc.recalibrate(test, temps.iloc[:1])


def test_survival_marks_effects_kept_lost_and_absent():
    """The survival rule on constructed differences: compare_runs's directions before and after."""
    before = pd.DataFrame({"comparison": ["a", "b", "c"], "metric": "ece", "diff": [-0.1, 0.1, 0.0],
                           "low": [-0.2, 0.05, -0.1], "high": [-0.05, 0.2, 0.1],
                           "direction": ["lower", "higher", "indistinguishable"]})
    after = before.assign(direction=["lower", "indistinguishable", "higher"])
    import visprune.book.recalibration as module

    calls = iter([before, after])
    original = module.compare_runs
    module.compare_runs = lambda *a, **k: next(calls)
    try:
        table = module.survival(None, None, [], ("ece",))
    finally:
        module.compare_runs = original
    assert list(table["survives"]) == [True, False, None]
    assert rc.survival_counts(table, "ece") == {"comparisons": 3, "effects": 2, "survived": 1, "lost": 1, "new": 1}


def test_the_real_profile_fits_on_a_documented_fifth_of_the_pope_images(tmp_path):
    """No POPE validation file on a real profile: pope-<split>-val is the questions of the images
    that fitting_image selects (SHA-256 of the name, one in FIT_SHARE), and ScienceQA's fitting
    split is its official val split."""
    from real_fixtures import write_real_fixtures

    data = write_real_fixtures(tmp_path / "data")
    profile = resolve_profile("llava-1.5-7b", model=tmp_path, coco_images=data["coco_images"],
                              coco_annotations=data["coco_annotations"], pope=data["pope"], scienceqa=data["scienceqa"])
    test = load_samples(profile, RunConfig("pope-random", "none"))
    fit = load_samples(profile, RunConfig("pope-random-val", "none"))
    assert [s.sample_id for s in fit] == [s.sample_id for s in test if fitting_image(s.image_id)]
    sqa = load_samples(profile, RunConfig("scienceqa-val", "none"))
    assert [s.sample_id for s in sqa] == ["16"]
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(20000)]
    share = np.mean([fitting_image(n) for n in names])
    assert abs(share - 1 / FIT_SHARE) < 0.01  # about one in five, and fixed by the name alone
