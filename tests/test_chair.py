"""Tests of the CHAIR parser and scores (visprune.metrics: load_synonyms, caption_objects, chair)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from visprune import metrics as M

# The 80 category names of COCO 2014/2017 instances, in category-id order.
COCO_CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip


@pytest.fixture(scope="module")
def coco():
    return M.load_synonyms()


def test_shipped_list_has_the_80_coco_categories(coco):
    assert sorted(set(coco.values())) == sorted(COCO_CATEGORIES)
    for name in COCO_CATEGORIES:
        assert coco[name] == name  # every canonical name maps to itself
    assert coco["girl"] == "person"
    assert coco["table"] == "dining table"
    assert coco["television"] == "tv"


@pytest.mark.parametrize(
    "caption,expected",
    [
        # plurals: regular, -es, -ves, irregular
        ("Two dogs and three buses.", ["dog", "bus"]),
        ("knives and forks", ["knife", "fork"]),
        ("people watch a person", ["person", "person"]),
        ("mice on the desks", ["mouse", "dining table"]),
        ("children with their puppies", ["person", "dog"]),
        ("benches, ponies, sandwiches and toothbrushes", ["bench", "horse", "sandwich", "toothbrush"]),
        ("men and women and policemen", ["person", "person", "person"]),
        # two-word names, not their single words
        ("a traffic light over a hot dog stand", ["traffic light", "hot dog"]),
        ("a teddy bear and a bear", ["teddy bear", "bear"]),
        ("two wine glasses and cell phones", ["wine glass", "cell phone"]),
        ("a stove top oven", ["oven"]),  # three-word synonym, one mention
        ("a hot-dog", ["hot dog"]),
        # synonyms
        ("a puppy on the sofa watching television", ["dog", "couch", "tv"]),
        ("a jetliner above the motorbike", ["airplane", "motorcycle"]),
        # special rules of Rohrbach et al.
        ("a baby elephant and a baby", ["elephant", "person"]),
        ("a passenger train on the train tracks", ["train"]),
        ("a toilet with the seat up", ["toilet"]),
        ("a toilet seat", ["toilet"]),
        ("a seat by the window", ["chair"]),
        # words that only look like plurals of objects
        ("blue skies over the skis", ["skis"]),
        ("a glass of water", []),
        # possessive and case
        ("The Dog's BOWL", ["dog", "bowl"]),
    ],
)
def test_caption_objects(coco, caption, expected):
    assert M.caption_objects(caption, coco) == expected


def test_caption_objects_default_table_is_coco():
    assert M.caption_objects("A cat sits next to a laptop.") == ["cat", "laptop"]


def test_chair_hand_computed(coco):
    captions = {
        1: "A dog chases another dog past a cat.",  # dog, dog, cat; GT {dog}: cat hallucinated
        2: "A man holds an umbrella.",  # person, umbrella; GT {person, umbrella, car}: none
        3: "An empty street.",  # no objects
    }
    truth = {1: ["dog"], 2: ["person", "umbrella", "car"], 3: ["car"], 99: ["bus"]}
    out = M.chair(captions, truth, coco)
    # mentions (every occurrence): 3 + 2 + 0 = 5, hallucinated 1 -> CHAIR_I = 1/5
    assert out["n_mentions"] == 5 and out["n_hallucinated"] == 1
    assert out["chair_i"] == pytest.approx(1 / 5)
    # captions with a hallucination: caption 1 only -> CHAIR_S = 1/3
    assert out["chair_s"] == pytest.approx(1 / 3)
    assert out["n_captions"] == 3 and out["n_hallucinated_captions"] == 1
    # recall: GT objects mentioned {dog} + {person, umbrella} + {} = 3 of 1 + 3 + 1 = 5
    assert out["n_ground_truth"] == 5
    assert out["recall"] == pytest.approx(3 / 5)
    # words: 8 ("A dog chases another dog past a cat") + 5 + 3 -> mean 16/3
    assert out["length"] == pytest.approx(16 / 3)

    per = out["per_caption"]
    assert isinstance(per, pd.DataFrame) and per["id"].tolist() == [1, 2, 3]
    first = per.iloc[0]
    assert first["mentioned"] == ["dog", "dog", "cat"]
    assert first["hallucinated"] == ["cat"]
    assert first["ground_truth"] == ["dog"]
    assert first["chair_i"] == pytest.approx(1 / 3)
    assert per["chair_s"].tolist() == [1, 0, 0]
    assert per["n_words"].tolist() == [8, 5, 3]


def test_chair_counts_each_distinct_object_once_when_asked(coco):
    # "dog" twice and a hallucinated "cat" twice: by mention 2/4, by distinct object 1/2
    captions = {"a": "A dog, a cat, another dog and another cat."}
    truth = {"a": ["dog"]}
    assert M.chair(captions, truth, coco)["chair_i"] == pytest.approx(2 / 4)
    distinct = M.chair(captions, truth, coco, count_repeats=False)
    assert distinct["chair_i"] == pytest.approx(1 / 2)
    assert distinct["per_caption"].iloc[0]["mentioned"] == ["dog", "cat"]


def test_chair_maps_ground_truth_synonyms(coco):
    out = M.chair({1: "A puppy on a table."}, {1: ["dog", "table"]}, coco)
    assert out["chair_i"] == 0.0 and out["recall"] == 1.0
    assert out["per_caption"].iloc[0]["ground_truth"] == ["dining table", "dog"]


def test_chair_no_mentions_gives_zero_not_nan(coco):
    out = M.chair({1: "Nothing to see here."}, {1: []}, coco)
    assert out["chair_i"] == 0.0 and out["chair_s"] == 0.0 and out["recall"] == 0.0


def test_custom_synonym_table_as_mapping():
    table = {"circle": ["disc", "ring"], "red square": ["red box"], "square": ["box"]}
    assert M.caption_objects("Two rings, a red box and three boxes.", table) == ["circle", "red square", "square"]
    out = M.chair({0: "A disc and a box."}, {0: ["circle"]}, synonyms=table)
    assert out["chair_i"] == pytest.approx(1 / 2)
    # the output of load_synonyms (word -> category) is accepted as well
    inverted = M.load_synonyms(table)
    assert inverted["ring"] == "circle"
    assert M.caption_objects("a ring", inverted) == ["circle"]


def test_custom_synonym_file(tmp_path):
    path = tmp_path / "toy_synonyms.txt"
    path.write_text("# toy-world objects\n\nball, sphere, orb\ntraffic cone, cone\n")
    table = M.load_synonyms(path)
    assert table == {"ball": "ball", "sphere": "ball", "orb": "ball", "traffic cone": "traffic cone", "cone": "traffic cone"}
    assert M.caption_objects("Spheres beside traffic cones and a cone.", str(path)) == ["ball", "traffic cone", "traffic cone"]


def test_synonym_conflict_and_missing_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("ball, sphere\nglobe, sphere\n")
    with pytest.raises(ValueError, match=re.escape("line 2") + ".*'sphere'"):
        M.load_synonyms(path)
    with pytest.raises(FileNotFoundError, match="synonyms file not found"):
        M.load_synonyms(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="^synonyms:"):
        M.load_synonyms({"ball": ["sphere"], "globe": ["sphere"]})


BAD_CHAIR = [
    ("captions not a mapping", lambda: M.chair(["a dog"], {0: ["dog"]}), "captions"),
    ("captions empty", lambda: M.chair({}, {0: ["dog"]}), "captions"),
    ("caption not a string", lambda: M.chair({0: 3}, {0: ["dog"]}), "captions"),
    ("ground_truth not a mapping", lambda: M.chair({0: "a dog"}, [["dog"]]), "ground_truth"),
    ("missing id", lambda: M.chair({0: "a dog", 1: "a cat"}, {0: ["dog"]}), "ground_truth"),
    ("ground truth a bare string", lambda: M.chair({0: "a dog"}, {0: "dog"}), "ground_truth"),
    ("unknown category", lambda: M.chair({0: "a dog"}, {0: ["unicorn"]}), "ground_truth"),
    ("synonyms wrong type", lambda: M.chair({0: "a dog"}, {0: ["dog"]}, synonyms=3), "synonyms"),
    ("caption_objects not a string", lambda: M.caption_objects(None), "caption"),
]


@pytest.mark.parametrize("case,call,name", BAD_CHAIR, ids=[c[0] for c in BAD_CHAIR])
def test_bad_chair_input_names_argument(case, call, name):
    with pytest.raises(ValueError, match="^" + re.escape(name) + ":"):
        call()
