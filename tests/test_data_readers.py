"""Readers of the real data formats, on fixtures in those exact formats (tests/fixtures/).

- POPE: official JSON-lines question files (tests/fixtures/pope/) with COCO val2014 file names;
- ScienceQA: problems.json + pid_splits.json + {split}/{pid}/image.png (tests/fixtures/scienceqa/);
- COCO: instances_val2014.json / captions_val2014.json (tests/fixtures/coco/).

Expected values are written out by hand from the fixture files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from visprune.instrument import prompts
from visprune.datasets import (
    ImageLoadError,
    build_pope,
    caption_samples,
    chair_ground_truth,
    load_captions,
    load_instances,
    question_text,
    read_pope,
    read_scienceqa,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
POPE_FILE = FIXTURES / "pope" / "coco_pope_adversarial.json"
COCO_IMAGES = FIXTURES / "coco" / "val2014"
INSTANCES = FIXTURES / "coco" / "instances_val2014.json"
CAPTIONS = FIXTURES / "coco" / "captions_val2014.json"
SQA = FIXTURES / "scienceqa"


# --------------------------------------------------------------------------- POPE


def test_read_pope_official_format():
    samples = read_pope(POPE_FILE, COCO_IMAGES)
    assert len(samples) == 12
    first, second = samples[0], samples[1]
    assert first.sample_id == "1" and first.image_id == "COCO_val2014_000000310196.jpg"
    assert first.prompt == "Is there a snowboard in the image?\nAnswer the question using a single word or phrase."
    assert first.answers == ("yes", "no")
    assert (first.label, second.label) == (0, 1)  # "yes" is answers[0], "no" answers[1]
    assert first.meta["split"] == "adversarial"  # taken from the file name
    assert first.meta["category"] == "snowboard"
    assert samples[11].meta["category"] == "umbrella"  # "Is there an umbrella ..."
    assert [s.label for s in samples] == [0, 1] * 6
    assert first.image_path == COCO_IMAGES / "COCO_val2014_000000310196.jpg"
    image = first.load_image()
    assert image.mode == "RGB" and image.size == (16, 12)
    json.dumps([s.meta for s in samples])  # meta is JSON-serialisable


def test_read_pope_meta_from_instances():
    samples = read_pope(POPE_FILE, COCO_IMAGES, "adv", instances_file=INSTANCES)
    assert samples[0].meta["split"] == "adv"
    # COCO_val2014_000000310196.jpg: annotations person, snowboard, person, car
    assert samples[0].meta["n_objects"] == 4 and samples[0].meta["n_categories"] == 3
    assert samples[0].meta["coco_image_id"] == 310196
    assert samples[0].meta["scene"] is None  # real COCO has no scene type
    json.dumps([s.meta for s in samples])


def test_pope_missing_file_names_path_and_source(tmp_path):
    missing = tmp_path / "coco_pope_random.json"
    with pytest.raises(FileNotFoundError) as err:
        read_pope(missing, COCO_IMAGES)
    msg = str(err.value)
    assert str(missing) in msg and "POPE" in msg and "RUCAIBox/POPE" in msg and "output/coco" in msg
    with pytest.raises(FileNotFoundError, match="image folder"):
        read_pope(POPE_FILE, tmp_path / "no_such_dir")


def test_pope_malformed_line_names_file_and_line(tmp_path):
    lines = POPE_FILE.read_text().splitlines()
    bad = tmp_path / "coco_pope_random.json"
    bad.write_text("\n".join([lines[0], lines[1][:-5], lines[2]]) + "\n")
    with pytest.raises(ValueError) as err:
        read_pope(bad, COCO_IMAGES)
    assert f"{bad}, line 2" in str(err.value)


def test_pope_missing_field_and_bad_label(tmp_path):
    bad = tmp_path / "coco_pope_popular.json"
    bad.write_text('{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a dog in the image?"}\n')
    with pytest.raises(ValueError, match=r"line 1: missing field 'label'"):
        read_pope(bad, COCO_IMAGES)
    bad.write_text('{"question_id": 1, "image": "x.jpg", "text": "Is there a dog in the image?", "label": "maybe"}\n')
    with pytest.raises(ValueError, match="'label' should be 'yes' or 'no'"):
        read_pope(bad, COCO_IMAGES)


def test_pope_missing_images_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_pope(POPE_FILE, tmp_path)
    assert "COCO_val2014_000000210789.jpg" in str(err.value) and "2 images" in str(err.value)


def test_unreadable_image_names_file(tmp_path):
    images = tmp_path / "val2014"
    shutil.copytree(COCO_IMAGES, images)
    broken = images / "COCO_val2014_000000310196.jpg"
    broken.write_bytes(b"not a jpeg at all")
    sample = read_pope(POPE_FILE, images)[0]
    with pytest.raises(ImageLoadError) as err:
        sample.load_image()
    assert str(broken) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_question_text_article():
    assert question_text("snowboard") == "Is there a snowboard in the image?"
    assert question_text("umbrella") == "Is there an umbrella in the image?"
    assert question_text("apple") == "Is there an apple in the image?"


def test_build_pope_on_coco_fixture_hand_computed():
    """Hand-computed from tests/fixtures/coco/instances_val2014.json.

    Category order in the file: person, bicycle, car, traffic light, snowboard, dog, skateboard,
    cup, chair, dining table. Images (annotation order): 310196 person, snowboard, person, car;
    210789 dog, person, chair, cup; 429109 car, traffic light (only 2 categories: not used);
    574769 dining table, cup, chair, person.
    Image frequencies: person 3; car, cup, chair 2; traffic light, snowboard, dog, dining table 1;
    bicycle, skateboard 0.
    """
    popular = build_pope(INSTANCES, "popular", n_images=None)
    images = [q["image"] for q in popular[::6]]
    assert images == ["COCO_val2014_000000210789.jpg", "COCO_val2014_000000310196.jpg", "COCO_val2014_000000574769.jpg"]
    by_image = {img: popular[6 * k : 6 * k + 6] for k, img in enumerate(images)}
    q310 = by_image["COCO_val2014_000000310196.jpg"]
    assert [q["text"] for q in q310[0::2]] == [question_text(n) for n in ("person", "snowboard", "car")]
    # absent: cup (2), chair (2), then frequency 1 in file order: traffic light
    assert [q["text"] for q in q310[1::2]] == [question_text(n) for n in ("cup", "chair", "traffic light")]
    assert [q["label"] for q in q310] == ["yes", "no"] * 3
    assert [q["question_id"] for q in popular] == list(range(1, 19))

    adversarial = build_pope(INSTANCES, "adversarial", n_images=None)
    q310 = [q for q in adversarial if q["image"] == "COCO_val2014_000000310196.jpg"]
    # person co-occurs with cup and chair twice (cup first in the file); snowboard with no absent
    # category (all 0: first unused absent category, bicycle); car with traffic light once.
    assert [q["text"] for q in q310[1::2]] == [question_text(n) for n in ("cup", "bicycle", "traffic light")]


def test_build_pope_writes_official_lines(tmp_path):
    from visprune.datasets import write_pope

    path = write_pope(build_pope(INSTANCES, "random", n_images=2, seed=3), tmp_path / "coco_pope_random.json")
    lines = path.read_text().splitlines()
    assert len(lines) == 12
    assert list(json.loads(lines[0])) == ["question_id", "image", "text", "label"]
    assert lines[0].startswith('{"question_id": 1, "image": "COCO_val2014_')
    samples = read_pope(path, COCO_IMAGES)  # and our reader takes it back
    assert [s.label for s in samples] == [0, 1] * 6


# --------------------------------------------------------------------------- ScienceQA


def test_read_scienceqa_img_subset():
    samples = read_scienceqa(SQA, "test")
    assert [s.sample_id for s in samples] == ["11", "15"]  # pid 12 has no image
    s11, s15 = samples
    assert s11.answers == ("A", "B") and s11.label == 1
    assert s11.prompt == (
        "Is the object in the picture a solid or a liquid?\nA. a solid\nB. a liquid\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert s15.prompt.startswith("Context: The map shows four regions.\nWhich color is the largest region on the map?\nA. green\n")
    assert s15.answers == ("A", "B", "C", "D") and s15.label == 2 and s15.answer == "C"
    assert s15.image_path == SQA / "test" / "15" / "image.png"
    assert s15.load_image().size == (8, 8)
    assert s15.meta["split"] == "test" and s15.meta["has_hint"] and s15.meta["grade"] == "grade5"
    json.dumps([s.meta for s in samples])


def test_read_scienceqa_all_and_minitest():
    everything = read_scienceqa(SQA, "test", img_only=False)
    assert [s.sample_id for s in everything] == ["11", "12", "15"]
    assert everything[1].image_path is None and not everything[1].meta["has_image"]
    with pytest.raises(ImageLoadError, match="no image"):
        everything[1].load_image()
    mini = read_scienceqa(SQA, "minitest")  # images still under test/ (the problem's own split)
    assert [s.sample_id for s in mini] == ["11"]
    assert mini[0].image_path == SQA / "test" / "11" / "image.png"
    assert [s.sample_id for s in read_scienceqa(SQA, "train")] == ["3"]


def test_read_scienceqa_images_subfolder(tmp_path):
    """The official release unpacks images under images/{split}/{pid}/image.png."""
    root = tmp_path / "scienceqa"
    root.mkdir()
    for name in ("problems.json", "pid_splits.json"):
        shutil.copy(SQA / name, root / name)
    shutil.copytree(SQA / "test", root / "images" / "test")
    samples = read_scienceqa(root, "test")
    assert samples[0].image_path == root / "images" / "test" / "11" / "image.png"


def test_scienceqa_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_scienceqa(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "lupantech/ScienceQA" in str(err.value)
    root = tmp_path / "sqa"
    shutil.copytree(SQA, root)
    (root / "pid_splits.json").unlink()
    with pytest.raises(FileNotFoundError, match="pid_splits.json"):
        read_scienceqa(root)
    shutil.copy(SQA / "pid_splits.json", root / "pid_splits.json")
    with pytest.raises(ValueError, match="'nope' is not in"):
        read_scienceqa(root, "nope")
    problems = json.loads((SQA / "problems.json").read_text())
    problems["15"]["answer"] = 4
    (root / "problems.json").write_text(json.dumps(problems, indent=2))
    with pytest.raises(ValueError, match=r"problem '15'.*'answer' = 4 is out of range for 4 choices"):
        read_scienceqa(root)
    del problems["15"]["choices"]
    (root / "problems.json").write_text(json.dumps(problems, indent=2))
    with pytest.raises(ValueError, match="missing field 'choices'"):
        read_scienceqa(root)
    text = (SQA / "problems.json").read_text().splitlines()
    text[2] = text[2].rstrip(",") + " oops,"  # break line 3
    (root / "problems.json").write_text("\n".join(text))
    with pytest.raises(ValueError, match=r"problems.json, line 3, column"):
        read_scienceqa(root)
    shutil.copy(SQA / "problems.json", root / "problems.json")
    shutil.rmtree(root / "test" / "15")
    with pytest.raises(FileNotFoundError, match=r"test/15/image.png"):
        read_scienceqa(root)


# --------------------------------------------------------------------------- COCO and CHAIR


def test_load_instances_and_captions():
    index = load_instances(INSTANCES)
    assert list(index.images) == [310196, 210789, 429109, 574769]
    assert index.image_categories(310196) == ["person", "snowboard", "car"]
    assert index.image_id_of("COCO_val2014_000000574769.jpg") == 574769
    captions = load_captions(CAPTIONS)
    assert captions[429109][0] == "A bus waits at the traffic light on a busy street."
    assert all(len(c) == 2 for c in captions.values())


def test_coco_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_instances(tmp_path / "instances_val2014.json")
    assert "cocodataset.org" in str(err.value) and "instances_val2014.json" in str(err.value)
    data = json.loads(INSTANCES.read_text())
    del data["annotations"][2]["category_id"]
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotations\[2\]: missing field 'category_id'"):
        load_instances(bad)


def test_chair_ground_truth_adds_caption_objects():
    only_instances = chair_ground_truth(INSTANCES)
    assert only_instances["429109"] == {"car", "traffic light"}
    truth = chair_ground_truth(INSTANCES, CAPTIONS)
    # "A bus waits at the traffic light": the bus is only in a reference caption
    assert truth["429109"] == {"car", "traffic light", "bus"}
    # "A puppy sleeps beside a chair while a man holds a cup." -> dog, chair, person, cup
    assert truth["210789"] == {"dog", "person", "chair", "cup"}
    assert truth["574769"] == {"dining table", "cup", "chair", "person"}
    assert set(truth) == {"310196", "210789", "429109", "574769"}
    assert chair_ground_truth(INSTANCES, CAPTIONS, image_ids=["429109"]) == {"429109": truth["429109"]}
    with pytest.raises(ValueError, match="image_ids"):
        chair_ground_truth(INSTANCES, image_ids=[1])


def test_caption_samples():
    samples = caption_samples(INSTANCES, COCO_IMAGES)
    assert [s.sample_id for s in samples] == ["210789", "310196", "429109", "574769"]
    assert all(s.prompt == prompts.CAPTION_PROMPT and s.answers == () and s.label is None for s in samples)
    assert samples[0].image_id == samples[0].sample_id
    two = caption_samples(INSTANCES, COCO_IMAGES, n=2, seed=5)
    assert len(two) == 2 and two == caption_samples(INSTANCES, COCO_IMAGES, n=2, seed=5)
    assert [s.sample_id for s in two] == sorted((s.sample_id for s in two), key=int)
    assert {s.sample_id for s in two} <= {s.sample_id for s in samples}
    with pytest.raises(ValueError, match="only 4 images"):
        caption_samples(INSTANCES, COCO_IMAGES, n=5)


def test_command_line_pope(tmp_path, capsys):
    from visprune.datasets.__main__ import main

    assert main(["pope", "--instances", str(INSTANCES), "--out-dir", str(tmp_path), "--n-images", "0"]) == 0
    for strategy in ("random", "popular", "adversarial"):
        samples = read_pope(tmp_path / f"coco_pope_{strategy}.json", COCO_IMAGES)
        assert len(samples) == 18 and samples[0].meta["split"] == strategy


def test_pope_object_span_finds_the_name_of_every_template_question():
    from visprune.datasets import pope
    from visprune.instrument import prompts

    for name in ("umbrella", "traffic cone", "cup"):
        for text in (pope.question_text(name), prompts.pope_question(pope.question_text(name))):
            start, end = pope.object_span(text)
            assert text[start:end] == name
    assert pope.object_span(prompts.pope_question(pope.question_text("cup")), whole=True) is None
    assert pope.object_span("How many cups are in the picture?") is None
    assert pope.object_span(prompts.CAPTION_PROMPT) is None
