"""Hand-checkable tests for the Study B helpers (visprune.book.diversity, visprune.book.patch_maps) and the
calibration primer's helpers (visprune.book.primer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from visprune import metrics
from visprune.book import diversity, patch_maps, primer, verdicts

# ------------------------------------------------------------------------------ complexity groups


def _images(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], **columns})


def test_complexity_split_by_erank_at_the_median():
    images = _images(erank_image=[5.0, 1.0, 3.0, 4.0, 2.0])
    groups = diversity.complexity_groups(images, by="erank")
    # median 3: images with erank 1, 2, 3 are simple (ties go to simple), 4 and 5 complex
    assert groups.to_dict() == {"im0": "complex", "im1": "simple", "im2": "simple", "im3": "complex", "im4": "simple"}
    assert groups.attrs["threshold"] == 3.0


def test_complexity_split_by_objects_at_a_given_threshold():
    images = _images(erank_image=[9.0, 9.0, 9.0], n_objects=[1, 2, 3])
    groups = diversity.complexity_groups(images, by="objects", threshold=2)
    assert groups.to_dict() == {"im0": "simple", "im1": "simple", "im2": "complex"}


def test_complexity_split_rejects_bad_arguments():
    images = _images(erank_image=[1.0, 2.0])
    with pytest.raises(ValueError, match="by"):
        diversity.complexity_groups(images, by="colour")
    with pytest.raises(ValueError, match="n_objects"):
        diversity.complexity_groups(images, by="objects")
    with pytest.raises(ValueError, match="threshold"):
        diversity.complexity_groups(images, threshold="high")


def test_add_complexity_labels_every_record_of_an_image():
    records = pd.DataFrame({"image_id": ["a", "a", "b"], "sample_id": ["1", "2", "3"]})
    groups = pd.Series({"a": "simple", "b": "complex"})
    assert diversity.add_complexity(records, groups)["complexity"].tolist() == ["simple", "simple", "complex"]
    with pytest.raises(ValueError, match="groups"):
        diversity.add_complexity(records, pd.Series({"a": "simple"}))


# ------------------------------------------------------------------------------ erank and tau tables


def _qa_records():
    # two images, two questions each, two runs; erank_kept is per image
    rows = []
    for method, kept in (("saliency", {"a": 2.0, "b": 4.0}), ("divprune", {"a": 3.0, "b": 7.0})):
        for image, erank_image in (("a", 10.0), ("b", 20.0)):
            for q in range(2):
                rows.append({"method": method, "k": 16, "run": f"{method}-k16", "status": "ok",
                             "sample_id": f"{image}{q}", "image_id": image, "erank_image": erank_image,
                             "erank_kept": kept[image], "correct": q == 0})
    return pd.DataFrame(rows)


def test_erank_table_counts_images_not_questions():
    table = diversity.erank_table(_qa_records(), n_bootstrap=50).set_index("method")
    assert table.loc["saliency", "n_images"] == 2
    assert table.loc["saliency", "erank_kept"] == pytest.approx(3.0)  # (2 + 4) / 2
    assert table.loc["divprune", "erank_kept"] == pytest.approx(5.0)
    assert table.loc["divprune", "kept_share"] == pytest.approx((3 / 10 + 7 / 20) / 2)
    assert table.loc["saliency", "erank_kept_low"] <= 3.0 <= table.loc["saliency", "erank_kept_high"]


def test_tau_table_groups_images_by_erank():
    records = pd.DataFrame({
        "method": "adaptive", "k": 8, "run": "adaptive-k8", "image_id": ["w", "x", "y", "z"],
        "erank_image": [4.0, 1.0, 3.0, 2.0], "tau": [0.5, 0.1, 0.3, 0.2], "tau_max": 0.5,
        "erank_kept": [4.0, 1.0, 3.0, 2.0],
    })
    table = diversity.tau_table(records, n_groups=2)
    assert table["n_images"].tolist() == [2, 2]
    assert table["erank_image"].tolist() == [1.5, 3.5]  # {x, z} then {y, w}
    assert table["tau_mean"].tolist() == pytest.approx([0.15, 0.4])
    assert table["at_cap"].tolist() == [0.0, 0.5]  # only w sits at tau_max
    with pytest.raises(ValueError, match="adaptive"):
        diversity.tau_table(records.assign(method="saliency"))


def test_spearman_matches_pandas():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 40).astype(float)  # with ties
    y = x + rng.normal(0, 2, 40)
    expected = pd.DataFrame({"x": x, "y": y}).corr(method="spearman").loc["x", "y"]  # pandas own ranks
    assert diversity.spearman(x, y) == pytest.approx(expected)
    assert diversity.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert diversity.spearman([1, 1, 1], [3, 2, 1]) == 0.0


# ------------------------------------------------------------------------------ CHAIR counts


SYNONYMS = {"cat": ["cat", "kitten"], "dog": ["dog"], "couch": ["couch", "sofa"], "bird": ["bird"]}


def _caption_records():
    return pd.DataFrame({
        "dataset": "chair", "method": ["saliency", "saliency", "divprune", "divprune"], "k": 4,
        "run": ["s", "s", "d", "d"], "status": "ok", "sample_id": ["1", "2", "1", "2"],
        "image_id": ["1", "2", "1", "2"],
        "caption": ["A cat on a couch with a dog.", "A bird.", "A kitten on a sofa.", "A dog and a dog."],
    })


TRUTH = {"1": {"cat", "couch"}, "2": {"bird"}}


def test_caption_scores_count_mentions_by_hand():
    scores = diversity.caption_scores(_caption_records(), TRUTH, synonyms=SYNONYMS)
    s = scores.set_index(["run", "sample_id"])
    assert s.loc[("s", "1"), ["n_mentions", "n_hallucinated", "n_hits", "n_truth"]].tolist() == [3, 1, 2, 2]
    assert s.loc[("s", "2"), ["n_mentions", "n_hallucinated", "hallucinated"]].tolist() == [1, 0, 0]
    assert s.loc[("d", "2"), ["n_mentions", "n_hallucinated", "n_hits"]].tolist() == [2, 2, 0]


def test_chair_table_agrees_with_metrics_chair():
    records = _caption_records()
    scores = diversity.caption_scores(records, TRUTH, synonyms=SYNONYMS)
    table = diversity.chair_table(scores, n_bootstrap=20).set_index("method")
    for method, run in (("saliency", "s"), ("divprune", "d")):
        sub = records[records["run"] == run]
        ref = metrics.chair(dict(zip(sub["sample_id"], sub["caption"])), TRUTH, synonyms=SYNONYMS)
        for name in ("chair_s", "chair_i", "recall", "length"):
            assert table.loc[method, name] == pytest.approx(ref[name]), name
    # saliency: 1 hallucinated of 4 mentions; divprune: 2 of 4
    assert table.loc["saliency", "chair_i"] == pytest.approx(0.25)
    assert table.loc["divprune", "chair_i"] == pytest.approx(0.5)


def test_paired_comparison_by_hand():
    scores = pd.DataFrame({
        "method": ["a"] * 4 + ["b"] * 4, "k": 1, "sample_id": list("wxyz") * 2,
        "correct": [1, 1, 0, 0, 0, 1, 0, 0],
    })
    out = diversity.paired_comparison(scores, "a", "b", "accuracy", n_bootstrap=200)
    assert out[["n", "a", "b", "diff"]].iloc[0].tolist() == [4, 0.5, 0.25, 0.25]
    assert out["low"].iloc[0] >= 0.0  # a is never worse than b on any sample
    same = diversity.paired_comparison(scores.assign(correct=[1, 0, 1, 0] * 2), "a", "b", "accuracy", n_bootstrap=50)
    assert same[["diff", "low", "high"]].iloc[0].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="method_b"):
        diversity.paired_comparison(scores, "a", "c", "accuracy")
    with pytest.raises(ValueError, match="metric"):
        diversity.paired_comparison(scores, "a", "b", "f2")


# ------------------------------------------------------------------------------ patch maps


def test_kept_mask_marks_exactly_the_kept_cells():
    mask = patch_maps.kept_mask([0, 5, 143], grid_size=12)
    assert mask.shape == (12, 12)
    assert mask.sum() == 3
    assert mask[0, 0] and mask[0, 5] and mask[11, 11]
    with pytest.raises(ValueError, match="keep"):
        patch_maps.kept_mask([144], grid_size=12)


def test_overlay_keeps_kept_patches_and_dims_the_rest():
    image = np.random.default_rng(0).random((4, 4, 3))
    out = patch_maps.overlay(image, [1], grid_size=2, dim=0.5)  # token 1 = top-right 2x2 block
    np.testing.assert_array_equal(out[:2, 2:], image[:2, 2:])
    np.testing.assert_allclose(out[:2, :2], 0.5 * image[:2, :2])
    np.testing.assert_allclose(out[2:], 0.5 * image[2:])
    with pytest.raises(ValueError, match="grid_size"):
        patch_maps.overlay(np.zeros((5, 4, 3)), [0], grid_size=2)


# ------------------------------------------------------------------------------ primer


def test_temperature_one_is_the_identity():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(primer.temperature_scale(logits, 1.0), primer.softmax(logits))
    p = np.array([[0.7, 0.3], [0.2, 0.8]])
    np.testing.assert_allclose(primer.rescale_probs(p, 1.0), p)
    # T = 2 on probabilities: softmax(log p / 2) = sqrt(p) renormalised
    expected = np.sqrt(p) / np.sqrt(p).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(primer.rescale_probs(p, 2.0), expected)
    with pytest.raises(ValueError, match="temperature"):
        primer.temperature_scale(logits, 0.0)


def test_synthetic_classifier_calibration_is_known():
    logits, labels = primer.simulate_classifier(n=20000, sharpness=1.0, seed=1)
    assert metrics.ece(primer.softmax(logits), labels) < 0.02
    over, labels = primer.simulate_classifier(n=20000, sharpness=3.0, seed=1)
    assert metrics.ece(primer.softmax(over), labels) > 0.08
    assert metrics.ece(primer.temperature_scale(over, 3.0), labels) < 0.02
    assert primer.fit_temperature(over, labels) == pytest.approx(3.0, rel=0.1)


def test_nll_by_hand():
    assert primer.nll([[0.5, 0.5], [0.9, 0.1]], [0, 0]) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)


def test_calibration_explorer_redraws_on_a_new_temperature():
    logits, labels = primer.simulate_classifier(n=200, sharpness=3.0, seed=0)
    box = primer.calibration_explorer({"synthetic": (logits, labels)}, n_bins=10)
    source, temperature, bins, row = box.children
    picture, numbers = row.children
    assert picture.value[:8] == b"\x89PNG\r\n\x1a\n"
    expected = metrics.ece(primer.softmax(logits), labels, n_bins=10)
    assert f"ece = {expected:.4f}" in numbers.value
    first = picture.value
    temperature.value = 3.0
    expected = metrics.ece(primer.temperature_scale(logits, 3.0), labels, n_bins=10)
    assert f"ece = {expected:.4f}" in numbers.value
    assert picture.value != first


def test_verdict_and_description_follow_the_interval():
    above = {"diff": 0.1, "low": 0.02, "high": 0.2}
    across = {"diff": 0.1, "low": -0.02, "high": 0.2}
    assert verdicts.verdict(above, higher_is_better=True) == "better"
    assert verdicts.verdict(above, higher_is_better=False) == "worse"
    assert verdicts.verdict(across, higher_is_better=True) == "no clear difference"
    assert verdicts.describe_difference(above, 2) == "+0.10 [+0.02, +0.20], clearly above 0"


def test_run_configs_share_settings_across_chapters():
    configs = diversity.run_configs("chair", ["saliency", "random"], [16, 32], 10, seed=3, max_new_tokens=20)
    assert [(c.method, c.k) for c in configs] == [("none", None), ("saliency", 16), ("saliency", 32),
                                                  ("random", 16), ("random", 32)]
    assert all(c.sample_seed == 3 and c.max_new_tokens == 20 and c.n_samples == 10 for c in configs)
    assert configs[3].params == {"seed": 3}
    pope = diversity.run_configs("pope-random", ["adaptive"], [8], 12, params={"adaptive": {"erank_ref": 5.0}})
    assert pope[1].params == {"erank_ref": 5.0} and pope[1].sample_seed == 0


def test_paper_budgets_invert_the_mapping():
    records = pd.DataFrame({"k": [16, 32, 144]})
    assert diversity.paper_budgets(records, {64: 16, 128: 32}, n_tokens=144).tolist() == [64, 128, 576]
    with pytest.raises(ValueError, match="k_of"):
        diversity.paper_budgets(pd.DataFrame({"k": [20]}), {64: 16}, n_tokens=144)


def test_count_sides_by_hand():
    table = pd.DataFrame({"low": [0.1, -0.3, -0.1, -0.2], "high": [0.2, -0.1, 0.1, 0.0]})
    assert verdicts.count_sides(table) == {"above": 1, "below": 1, "unclear": 2}  # high = 0 touches 0
