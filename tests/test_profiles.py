"""Profiles resolve paths without touching files; chapters map budgets and report model quality."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from visprune.book import chapters
from visprune.engine.datasets import require
from visprune.engine.profiles import resolve_profile


def test_toy_profile_paths(tmp_path):
    p = resolve_profile("toy", world=tmp_path / "w", model=tmp_path / "m", results=tmp_path / "r")
    assert p.pope_files["adversarial"] == tmp_path / "w" / "pope" / "toy_pope_adversarial.json"
    assert p.scienceqa_root == tmp_path / "w" / "scienceqa" and p.results == tmp_path / "r"
    assert p.chair_synonyms.name == "toy_synonyms.txt"


def test_real_profile_asks_only_for_what_a_data_set_needs(monkeypatch, tmp_path):
    for name in ("MODEL", "COCO_IMAGES", "COCO_ANNOTATIONS", "POPE", "SCIENCEQA"):
        monkeypatch.delenv(f"VISPRUNE_{name}", raising=False)
    with pytest.raises(ValueError, match="VISPRUNE_MODEL"):
        resolve_profile("llava-1.5-7b")
    only_pope = resolve_profile("llava-1.5-7b", model=tmp_path, pope=tmp_path / "pope", coco_images=tmp_path)
    require(only_pope, "pope-random")  # POPE needs its questions and the images, nothing else
    with pytest.raises(ValueError, match="--scienceqa.*VISPRUNE_SCIENCEQA"):
        require(only_pope, "scienceqa")
    with pytest.raises(ValueError, match="--coco-annotations.*VISPRUNE_COCO_ANNOTATIONS"):
        require(only_pope, "chair")
    with pytest.raises(ValueError, match="--pope"):
        require(resolve_profile("llava-1.5-7b", model=tmp_path, scienceqa=tmp_path), "pope-adversarial")
    monkeypatch.setenv("VISPRUNE_POPE", str(tmp_path / "pope"))
    p = resolve_profile("llava-1.5-7b", model=tmp_path, coco_images=tmp_path, coco_annotations=tmp_path / "a",
                        scienceqa=tmp_path)
    assert p.pope_files["random"] == tmp_path / "pope" / "coco_pope_random.json"
    assert p.coco_instances == tmp_path / "a" / "instances_val2014.json"
    assert p.chair_synonyms.name == "coco_synonyms.txt"
    assert (p.chair_images, p.caption_tokens) == (500, 512)  # the CHAIR protocol on real data
    toy = resolve_profile("toy")
    assert (toy.chair_images, toy.caption_tokens) == (None, 64)
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_profile("llava-2")


@pytest.fixture()
def tiny_model_dir(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_llava import build_tiny_llava

    model, processor = build_tiny_llava()
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_budgets_map_by_fraction(tiny_model_dir):
    ev = chapters.open_evaluator("toy", model_path=str(tiny_model_dir))
    assert chapters.n_visual_tokens(ev) == 16
    assert chapters.budgets_for(ev, [64, 128, 192, 576]) == {64: 2, 128: 4, 192: 5, 576: 16}  # 16/9, 32/9, 48/9
    with pytest.raises(ValueError, match="budgets"):
        chapters.budgets_for(ev, [0])


def test_profile_note_reports_the_model_card(tiny_model_dir):
    ev = chapters.open_evaluator("toy", model_path=str(tiny_model_dir))
    assert "no model card" in chapters.profile_note(ev)
    card = tiny_model_dir / "card.json"
    card.write_text(json.dumps({"targets": {"POPE accuracy": {"value": 0.9, "met": True},
                                            "size": {"value": 1.0, "met": True}}}))
    assert "meets all 2 quality targets" in chapters.profile_note(ev)
    card.write_text(json.dumps({"targets": {"POPE accuracy": {"value": 0.5, "met": False},
                                            "size": {"value": 1.0, "met": True}}}))
    note = chapters.profile_note(ev)
    assert "misses 1 of the 2" in note and "POPE accuracy (measured 0.5)" in note and "{warning}" in note
