"""Data-set specs: each data set declared once, and what the engine does with the declaration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from visprune.engine import DATASET_SPECS, DATASETS, dataset_spec, summarize
from visprune.engine.datasets import TASKS, require
from visprune.engine.profiles import resolve_profile


def _records(dataset: str, answers: list[str], n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(answers)), size=n)
    labels = rng.integers(0, len(answers), size=n)
    pred = probs.argmax(axis=1)
    return pd.DataFrame({
        "dataset": dataset, "status": "ok", "label": labels, "answers": [list(answers)] * n,
        "probs": list(probs), "confidence": probs.max(axis=1), "prediction": pred, "correct": pred == labels,
        "answer_mass": rng.uniform(0.6, 1.0, size=n),
    })


def test_every_data_set_is_declared_once_with_a_known_task():
    assert DATASETS == tuple(DATASET_SPECS) == ("pope-random", "pope-random-val", "pope-popular", "pope-popular-val",
                                                "pope-adversarial", "pope-adversarial-val", "scienceqa",
                                                "scienceqa-val", "chair")
    assert {spec.task for spec in DATASET_SPECS.values()} <= set(TASKS)
    assert dataset_spec("pope-adversarial").answers == ("yes", "no")
    with pytest.raises(ValueError, match="^dataset: unknown data set 'vqav2'"):
        dataset_spec("vqav2")


@pytest.mark.parametrize("dataset, answers", [("pope-random", ["yes", "no"]), ("scienceqa", ["A", "B", "C"]),
                                              ("scienceqa", ["yes", "no"])])
def test_summary_reports_what_the_spec_declares(dataset, answers):
    """The task comes from the spec, not from the answer set: a ScienceQA problem whose options
    happen to be yes/no gets no POPE scores."""
    out = summarize(_records(dataset, answers))
    assert set(out) == {"n", "n_failed", *dataset_spec(dataset).metrics}


def test_the_spec_names_the_paths_a_data_set_needs(tmp_path, monkeypatch):
    for name in ("COCO_IMAGES", "COCO_ANNOTATIONS", "POPE", "SCIENCEQA"):
        monkeypatch.delenv(f"VISPRUNE_{name}", raising=False)
    profile = resolve_profile("llava-1.5-7b", model=tmp_path, scienceqa=tmp_path)
    require(profile, "scienceqa")
    for dataset in ("pope-popular", "chair"):
        first = dataset_spec(dataset).needs[0]
        with pytest.raises(ValueError, match=f"needs {first[1]}: pass {first[2]}"):
            require(profile, dataset)
