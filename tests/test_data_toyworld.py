"""The toy world: determinism, COCO format, POPE rules, ScienceQA answers, captions and CHAIR.

A 60-image world is generated once per module (fractions 0.5 / 0.2 / 0.3). POPE's rules are
checked against brute-force counts written here over the raw JSON, ScienceQA answers against
the annotations, COCO files by pycocotools.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visprune import toyworld
from visprune.datasets import build_pope, caption_samples, chair_ground_truth, read_pope, read_scienceqa
from visprune.datasets.pope import STRATEGIES, question_text
from visprune.toyworld import (
    CATEGORIES,
    N_TOKENS,
    SCENES,
    TOY_BUDGETS,
    generate_toyworld,
    toy_budget,
    toy_paths,
)
from visprune.toyworld import sync
from visprune.toyworld.language import plural

N_IMAGES = 60
PARAMS = dict(n_images=N_IMAGES, split_fractions=(0.5, 0.2, 0.3), pope_images=None)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "toyworld"
    generate_toyworld(root, seed=0, **PARAMS)
    return toy_paths(root)


def _json(path):
    return json.loads(Path(path).read_text())


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


# --------------------------------------------------------------------------- sizes and layout


def test_toy_budget_maps_same_fraction():
    assert [toy_budget(k) for k in (64, 128, 192)] == [16, 32, 48]
    assert TOY_BUDGETS == {64: 16, 128: 32, 192: 48}
    assert toy_budget(576) == N_TOKENS == 144
    assert toy_budget(100, n_real=200, n_toy=50) == 25
    with pytest.raises(ValueError, match="k_real"):
        toy_budget(600)
    with pytest.raises(ValueError, match="k_real"):
        toy_budget(0)


def test_layout_and_counts(world):
    sizes = {"train": 30, "val": 12, "test": 18}
    for split, n in sizes.items():
        files = sorted(world.images(split).glob("*.png"))
        assert len(files) == n
        assert re.fullmatch(rf"toy_{split}_\d{{12}}\.png", files[0].name)
        image = Image.open(files[0])
        assert image.size == (96, 96) and image.mode == "RGB"
        assert world.instances(split).is_file() and world.captions(split).is_file()
    for strategy in STRATEGIES:
        assert world.pope(strategy).is_file() and world.pope(strategy, "val").is_file()
    assert (world.scienceqa / "problems.json").is_file() and (world.scienceqa / "pid_splits.json").is_file()
    manifest = _json(world.manifest)
    assert manifest["params"]["seed"] == 0 and manifest["params"]["split_sizes"] == sizes
    assert not list(world.root.parent.glob(".toyworld.*"))  # no temporary folders left behind


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2, in annToMask
def test_coco_format_read_by_pycocotools(world, capsys):
    from pycocotools.coco import COCO

    coco = COCO(str(world.instances("train")))
    data = _json(world.instances("train"))
    assert len(coco.getImgIds()) == 30
    assert len(coco.getCatIds()) == len(CATEGORIES) == 26
    assert {img["scene"] for img in data["images"]} <= set(SCENES)
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w >= 5 and h >= 5
        assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(w * h)
        assert len(ann["segmentation"][0]) == 8
    # annToMask draws the polygon: here the box itself
    ann = data["annotations"][0]
    assert coco.annToMask(coco.loadAnns([ann["id"]])[0]).sum() == pytest.approx(ann["area"], rel=0.25)
    captions = COCO(str(world.captions("test")))
    per_image = Counter(a["image_id"] for a in captions.dataset["annotations"])
    assert set(per_image.values()) == {5}
    names = [c.name for c in CATEGORIES]
    assert any(n[0] in "aeiou" for n in names) and any(" " in n for n in names)


def test_scenes_and_complexity_vary(world):
    images = []
    for split in ("train", "val", "test"):
        data = _json(world.instances(split))
        counts = Counter(a["image_id"] for a in data["annotations"])
        images += [(img["scene"], counts[img["id"]]) for img in data["images"]]
    assert len({s for s, _ in images}) >= 5
    n_objects = [n for _, n in images]
    assert min(n_objects) == 1 and max(n_objects) >= 7


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_world_and_other_seed_differs(world, tmp_path):
    again = toy_paths(tmp_path / "again")
    generate_toyworld(again.root, seed=0, **PARAMS)
    for split in ("train", "val", "test"):
        assert again.instances(split).read_bytes() == world.instances(split).read_bytes()
        assert again.captions(split).read_bytes() == world.captions(split).read_bytes()
        a, b = _pixels(world.images(split)), _pixels(again.images(split))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for strategy in STRATEGIES:
        assert again.pope(strategy).read_bytes() == world.pope(strategy).read_bytes()
    assert (again.scienceqa / "problems.json").read_bytes() == (world.scienceqa / "problems.json").read_bytes()

    other = toy_paths(tmp_path / "other")
    generate_toyworld(other.root, seed=1, **PARAMS)
    assert other.instances("train").read_bytes() != world.instances("train").read_bytes()
    a, b = _pixels(world.images("train")), _pixels(other.images("train"))
    assert sum(np.array_equal(a[k], b[k]) for k in a) == 0


def test_idempotent_and_regenerates_on_change(tmp_path):
    root = tmp_path / "w"
    small = dict(n_images=10, split_fractions=(0.4, 0.3, 0.3), pope_images=None)
    first = generate_toyworld(root, seed=0, **small)
    marker = root / "annotations" / "instances_test.json"
    stamp = marker.stat().st_mtime_ns
    assert generate_toyworld(root, seed=0, **small) == first
    assert marker.stat().st_mtime_ns == stamp  # nothing rewritten
    marker.write_text("{}")  # a damaged file: the content hash no longer matches
    generate_toyworld(root, seed=0, **small)
    assert _json(marker)["images"]
    changed = generate_toyworld(root, seed=2, **small)
    assert changed["params"]["seed"] == 2 and _json(root / "manifest.json")["params"]["seed"] == 2
    with pytest.raises(ValueError, match="split_fractions"):
        generate_toyworld(root, n_images=10, split_fractions=(0.5, 0.5, 0.5))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to write into it"):
        generate_toyworld(precious, n_images=10)
    assert (precious / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- POPE rules


def _brute_force_stats(instances: dict):
    """Per-image category sets (first-appearance order), image frequency, co-occurrence: by loops."""
    names = {c["id"]: c["name"] for c in instances["categories"]}
    cats_of: dict[int, list[str]] = {img["id"]: [] for img in instances["images"]}
    for ann in instances["annotations"]:
        name = names[ann["category_id"]]
        if name not in cats_of[ann["image_id"]]:
            cats_of[ann["image_id"]].append(name)
    freq = Counter()
    co = Counter()
    for cats in cats_of.values():
        for a in cats:
            freq[a] += 1
            for b in cats:
                if a != b:
                    co[a, b] += 1
    order = [c["name"] for c in instances["categories"]]
    return cats_of, freq, co, order


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pope_rules(world, strategy):
    instances = _json(world.instances("test"))
    cats_of, freq, co, order = _brute_force_stats(instances)
    file_of = {img["file_name"]: img["id"] for img in instances["images"]}
    lines = [json.loads(line) for line in world.pope(strategy).read_text().splitlines()]
    assert [q["question_id"] for q in lines] == list(range(1, len(lines) + 1))
    assert len(lines) % 6 == 0
    eligible = sorted(i for i, cats in cats_of.items() if len(cats) >= 3)
    assert [file_of[q["image"]] for q in lines[::6]] == eligible  # every eligible image, id order
    name_of = {question_text(n): n for n in order}
    for k in range(0, len(lines), 6):
        group = lines[k : k + 6]
        image_id = file_of[group[0]["image"]]
        assert all(q["image"] == group[0]["image"] for q in group)
        assert [q["label"] for q in group] == ["yes", "no"] * 3
        asked = [name_of[q["text"]] for q in group]
        positives, negatives = asked[0::2], asked[1::2]
        present = cats_of[image_id]
        assert positives == present[:3]
        assert len(set(negatives)) == 3 and not set(negatives) & set(present)
        used = set(present)
        for p, neg in zip(positives, negatives):
            remaining = [c for c in order if c not in used]
            if strategy == "popular":
                best = max(freq[c] for c in remaining)
                assert freq[neg] == best
                assert neg == [c for c in remaining if freq[c] == best][0]  # ties: file order
            elif strategy == "adversarial":
                best = max(co[p, c] for c in remaining)
                assert co[p, neg] == best
                assert neg == [c for c in remaining if co[p, c] == best][0]
            used.add(neg)


def test_pope_article_and_vowel_names(world):
    texts = {json.loads(line)["text"] for line in world.pope("random").read_text().splitlines()}
    texts |= {json.loads(line)["text"] for line in world.pope("popular", "val").read_text().splitlines()}
    for text in texts:
        name = re.fullmatch(r"Is there an? (.+) in the image\?", text).group(1)
        assert text.startswith("Is there an " if name[0] in "aeiou" else "Is there a ")


def test_pope_seeded_image_cap(world):
    full = build_pope(world.instances("train"), "random", n_images=None, seed=0)
    n_eligible = len(full) // 6
    capped = build_pope(world.instances("train"), "random", n_images=5, seed=0)
    assert len(capped) == 30
    assert capped == build_pope(world.instances("train"), "random", n_images=5, seed=0)
    images = [q["image"] for q in capped[::6]]
    assert images == [q["image"] for q in build_pope(world.instances("train"), "adversarial", n_images=5, seed=0)[::6]]
    others = [[q["image"] for q in build_pope(world.instances("train"), "random", n_images=5, seed=s)[::6]] for s in (1, 2, 3)]
    assert n_eligible > 5 and any(o != images for o in others)


def test_read_pope_toy(world):
    samples = read_pope(world.pope("adversarial"), world.images("test"), instances_file=world.instances("test"))
    assert samples[0].meta["split"] == "adversarial"
    assert samples[0].meta["scene"] in SCENES and samples[0].meta["n_objects"] >= 3
    assert samples[0].load_image().size == (96, 96)


# --------------------------------------------------------------------------- ScienceQA


def _check_answer(problem: dict, anns: list[dict], names: dict[int, str]) -> None:
    """Re-derive the answer of a toy problem from the image's annotations."""
    q, choices, answer = problem["question"], problem["choices"], problem["answer"]
    objs = [(names[a["category_id"]], a.get("color"), a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2) for a in anns]
    present = {o[0] for o in objs}
    correct = choices[answer]
    if m := re.fullmatch(r"How many (.+) are in the picture\?", q):
        name = {plural(c.name): c.name for c in CATEGORIES}[m.group(1)]
        assert int(correct) == sum(o[0] == name for o in objs)
    elif m := re.fullmatch(r"What color is the (.+)\?", q):
        [obj] = [o for o in objs if o[0] == m.group(1)]
        assert correct == obj[1]
    elif m := re.fullmatch(r"Is the (.+) to the left or to the right of the (.+)\?", q):
        [a] = [o for o in objs if o[0] == m.group(1)]
        [b] = [o for o in objs if o[0] == m.group(2)]
        assert correct == ("left" if a[2] < b[2] else "right") and abs(a[2] - b[2]) >= 12
    elif m := re.fullmatch(r"Is the (.+) above or below the (.+)\?", q):
        [a] = [o for o in objs if o[0] == m.group(1)]
        [b] = [o for o in objs if o[0] == m.group(2)]
        assert correct == ("above" if a[3] < b[3] else "below") and abs(a[3] - b[3]) >= 12
    elif m := re.fullmatch(r"Which object is (farthest to the left|farthest to the right|closest to the top|closest to the bottom)\?", q):
        axis = 2 if "left" in q or "right" in q else 3
        pos = {c: [o[axis] for o in objs if o[0] == c] for c in choices}
        assert all(len(v) == 1 for v in pos.values())  # each choice is in the picture once
        values = {c: v[0] for c, v in pos.items()}
        pick = min if ("left" in q or "top" in q) else max
        assert correct == pick(values, key=values.get)
        others = [v for c, v in values.items() if c != correct]
        assert all(abs(values[correct] - v) >= 12 for v in others)
    elif q == "Which of these objects is in the picture?":
        assert correct in present and not (set(choices) - {correct}) & present
    elif q == "Which of these objects is not in the picture?":
        assert correct not in present and set(choices) - {correct} <= present
    else:
        raise AssertionError(f"unexpected toy question {q!r}")


def test_scienceqa_problems_schema_and_answers(world):
    problems = _json(world.scienceqa / "problems.json")
    pid_splits = _json(world.scienceqa / "pid_splits.json")
    keys = {"question", "choices", "answer", "hint", "image", "task", "grade", "subject", "topic",
            "category", "skill", "lecture", "solution", "split"}
    anns: dict[int, list] = {}
    names = {c.id: c.name for c in CATEGORIES}
    for split in ("train", "val", "test"):
        for ann in _json(world.instances(split))["annotations"]:
            anns.setdefault(ann["image_id"], []).append(ann)
    types = Counter()
    for split in ("train", "val", "test"):
        pids = pid_splits[split]
        assert any(problems[p]["image"] is None for p in pids)  # the IMG filter has work to do
        assert any(problems[p]["image"] == "image.png" for p in pids)
        for pid in pids:
            prob = problems[pid]
            assert keys <= set(prob) and prob["split"] == split
            assert 2 <= len(prob["choices"]) <= 5 and len(set(prob["choices"])) == len(prob["choices"])
            assert 0 <= prob["answer"] < len(prob["choices"])
            assert isinstance(prob["hint"], str)
            types[prob["toy_meta"]["question_type"]] += 1
            if prob["image"] is not None:
                image_id = prob["toy_meta"]["source_image_id"]
                _check_answer(prob, anns[image_id], names)
                src = world.images(split) / prob["toy_meta"]["file_name"]
                assert (world.scienceqa / split / pid / "image.png").read_bytes() == src.read_bytes()
    assert set(types) == {"counting", "colour", "position", "presence", "scene"}
    assert set(pid_splits["minitest"]) <= set(pid_splits["test"])
    assert any(problems[p]["hint"] for p in problems) and any(not problems[p]["hint"] for p in problems)
    assert sorted(Counter(p["answer"] for p in problems.values())) == [0, 1, 2, 3, 4]


def test_read_scienceqa_toy_img_only(world):
    problems = _json(world.scienceqa / "problems.json")
    pids = _json(world.scienceqa / "pid_splits.json")["test"]
    samples = read_scienceqa(world.scienceqa, "test")
    assert [s.sample_id for s in samples] == [p for p in pids if problems[p]["image"] is not None]
    s = samples[0]
    assert s.label == problems[s.sample_id]["answer"]
    assert len(s.answers) == len(problems[s.sample_id]["choices"])
    assert s.meta["scene"] in SCENES and s.meta["n_objects"] >= 1 and s.meta["question_type"]
    assert s.load_image().size == (96, 96)


# --------------------------------------------------------------------------- captions and CHAIR


def test_command_line_synonyms(tmp_path):
    from visprune.toyworld.__main__ import main

    out = tmp_path / "toy_synonyms.txt"
    assert main(["synonyms", "--out", str(out)]) == 0
    assert out.read_text() == toyworld.toy_synonyms_text()


def test_synonym_file_is_current_and_parses():
    from visprune.metrics import load_synonyms

    path = REPO / "lib" / "visprune" / "assets" / "chair" / "toy_synonyms.txt"
    assert path.read_text() == toyworld.toy_synonyms_text(), "run `python -m visprune.toyworld synonyms`"
    table = load_synonyms(path)
    for cat in CATEGORIES:
        assert 2 <= len(cat.words) <= 4
        assert all(table[w] == cat.name for w in cat.words)


def test_captions_truthful_and_parsed(world):
    from visprune.metrics import caption_objects, load_synonyms

    table = load_synonyms(REPO / "lib" / "visprune" / "assets" / "chair" / "toy_synonyms.txt")
    instances = _json(world.instances("val"))
    cats_of, *_ = _brute_force_stats(instances)
    captions = _json(world.captions("val"))["annotations"]
    mentioned_some_synonym = False
    for cap in captions:
        found = caption_objects(cap["caption"], table)
        assert found, cap["caption"]
        assert set(found) <= set(cats_of[cap["image_id"]]), cap["caption"]
        words = set(re.findall(r"[a-z]+", cap["caption"].lower()))
        mentioned_some_synonym |= bool(words & {"mug", "pine", "automobile", "parasol", "sailboat", "novel", "teddy"})
    assert mentioned_some_synonym
    # captions name a subset: over the split, some annotated category is never mentioned for its image
    per_image: dict[int, set] = {}
    for cap in captions:
        per_image.setdefault(cap["image_id"], set()).update(caption_objects(cap["caption"], table))
    assert any(per_image[i] < set(cats_of[i]) for i in per_image)


def test_chair_ground_truth_toy(world):
    truth = chair_ground_truth(world.instances("test"), world.captions("test"), synonyms=world.synonyms)
    cats_of, *_ = _brute_force_stats(_json(world.instances("test")))
    assert truth == {str(i): set(c) for i, c in cats_of.items()}  # truthful captions add nothing new
    samples = caption_samples(world.instances("test"), world.images("test"), n=5, seed=1)
    assert all(s.sample_id in truth for s in samples)
    assert all(s.meta["scene"] in SCENES for s in samples)


# --------------------------------------------------------------------------- the user's files (issue 15)

SMALL = dict(n_images=20, split_fractions=(0.5, 0.2, 0.3), pope_images=None)


def _snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


USER_FILES = {"notes.txt": b"my notes\n", "images/test/my_photo.png": b"not really a png", "pope/mine.json": b"{}\n"}


def _add_user_files(root: Path) -> None:
    for rel, data in USER_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _without_user_files(snapshot: dict[str, str]) -> dict[str, str]:
    return {rel: h for rel, h in snapshot.items() if rel not in USER_FILES}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Fresh generations to compare with, by (seed, n_images)."""
    base = tmp_path_factory.mktemp("fresh")
    out = {}
    for seed, n in ((0, 20), (1, 20), (0, 30)):
        root = base / f"s{seed}n{n}"
        generate_toyworld(root, seed=seed, **{**SMALL, "n_images": n})
        out[seed, n] = _snapshot(root)
    return out


def test_user_files_survive_force_and_parameter_changes(tmp_path, fresh):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    _add_user_files(root)
    for call in (dict(seed=0, force=True), dict(seed=1), dict(seed=0, n_images=30), dict(seed=0), dict(seed=0, force=True)):
        params = {**SMALL, **call}
        generate_toyworld(root, **params)
        snap = _snapshot(root)
        for rel, data in USER_FILES.items():
            assert (root / rel).read_bytes() == data, (call, rel)
        # the rest is exactly a fresh world of these parameters: the earlier world's extra images are gone
        assert _without_user_files(snap) == fresh[params["seed"], params["n_images"]], call


def test_missing_files_are_completed_byte_for_byte(tmp_path, fresh):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    _add_user_files(root)
    missing = ["images/val/toy_val_000000000011.png", "annotations/captions_test.json", "pope/toy_pope_popular.json"]
    for rel in missing:
        (root / rel).unlink()
    untouched = root / "annotations" / "instances_train.json"
    stamp = untouched.stat().st_mtime_ns, untouched.stat().st_ino
    generate_toyworld(root, seed=0, **SMALL)
    assert _without_user_files(_snapshot(root)) == fresh[0, 20]
    assert (untouched.stat().st_mtime_ns, untouched.stat().st_ino) == stamp  # only the missing files were written
    assert all((root / rel).read_bytes() == data for rel, data in USER_FILES.items())


def test_damaged_files_are_repaired(tmp_path, fresh):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    _add_user_files(root)
    (root / "images" / "test" / "toy_test_000000000015.png").write_bytes(b"broken")
    sqa = sorted((root / "scienceqa" / "test").glob("*/image.png"))[0]
    sqa.write_bytes(b"")  # a hard link: its source under images/ is damaged with it
    generate_toyworld(root, seed=0, **SMALL)
    assert _without_user_files(_snapshot(root)) == fresh[0, 20]


def test_missing_manifest_world_is_completed(tmp_path, fresh):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    _add_user_files(root)
    (root / "manifest.json").unlink()
    (root / "images" / "train" / "toy_train_000000000003.png").unlink()
    generate_toyworld(root, seed=0, **SMALL)
    assert _without_user_files(_snapshot(root)) == fresh[0, 20]


def test_a_different_file_the_manifest_does_not_list_stops_the_call(tmp_path):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    # without a manifest nothing is known to be the generator's: a different file at its path is the user's
    (root / "manifest.json").unlink()
    mine = root / "annotations" / "instances_val.json"
    mine.write_text('{"mine": true}')
    before = _snapshot(root)
    with pytest.raises(ValueError, match="refusing to overwrite.*instances_val.json"):
        generate_toyworld(root, seed=0, **SMALL)
    assert _snapshot(root) == before
    # with a manifest: the new world's image 21 is not listed, and a user's file is there
    other = tmp_path / "v"
    generate_toyworld(other, seed=0, **SMALL)
    (other / "images" / "test" / "toy_test_000000000030.png").write_bytes(b"the user's")
    before = _snapshot(other)
    with pytest.raises(ValueError, match="toy_test_000000000030.png"):
        generate_toyworld(other, seed=0, **{**SMALL, "n_images": 30})
    assert _snapshot(other) == before  # checked before anything was written


def test_a_foreign_manifest_is_not_replaced(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    (root / "manifest.json").write_text('{"mine": 1}')
    (root / "images").mkdir()
    with pytest.raises(ValueError, match="manifest.json is not a toy-world manifest"):
        generate_toyworld(root, seed=0, **SMALL)
    assert (root / "manifest.json").read_text() == '{"mine": 1}'


def test_older_manifest_without_file_list_is_still_current(tmp_path):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    manifest = _json(root / "manifest.json")
    for key in ("files", "complete"):  # what manifests written before issue 15 lack
        del manifest[key]
    (root / "manifest.json").write_text(json.dumps(manifest))
    _add_user_files(root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert generate_toyworld(root, seed=0, **SMALL)["content_sha256"] == manifest["content_sha256"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before  # nothing written


class _Stop(Exception):
    pass


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_interrupted_or_failed_write_never_passes_as_complete(tmp_path, monkeypatch, fresh, error):
    root = tmp_path / "w"
    generate_toyworld(root, seed=0, **SMALL)
    _add_user_files(root)
    real = sync._write_file
    calls = []

    def failing(target, data):
        calls.append(target)
        if len(calls) == 4:  # the manifest (marked incomplete) and two files are written, then this fails
            if error is OSError:
                import errno

                real(target, data[: len(data) // 2])  # half written ...
                raise OSError(errno.ENOSPC, "No space left on device")  # ... as a full disk would leave it
            raise KeyboardInterrupt
        return real(target, data)

    monkeypatch.setattr(sync, "_write_file", failing)
    with pytest.raises(error):
        generate_toyworld(root, seed=1, **SMALL)
    monkeypatch.setattr(sync, "_write_file", real)
    assert _json(root / "manifest.json")["complete"] is False
    assert not [p for p in root.rglob(".*.tmp-*")]  # no temporary file is left behind
    assert all((root / rel).read_bytes() == data for rel, data in USER_FILES.items())
    generate_toyworld(root, seed=1, **SMALL)  # a rerun completes the world
    assert _without_user_files(_snapshot(root)) == fresh[1, 20]


def test_full_disk_message_names_the_file(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sync.os, "replace", full)
    with pytest.raises(OSError, match=r"cannot write .*manifest.json \(No space left on device\)"):
        generate_toyworld(tmp_path / "w", seed=0, **SMALL)
    assert not [p for p in (tmp_path / "w").rglob("*") if p.is_file()]  # nothing partial


def test_generate_toyworld_rejects_booleans_and_bad_numbers(tmp_path):
    root = tmp_path / "w"
    for kwargs, name in ((dict(n_images=True), "n_images"), (dict(seed=False), "seed"), (dict(pope_images=True), "pope_images"),
                         (dict(sqa_text_only=False), "sqa_text_only"), (dict(sqa_text_only=float("nan")), "sqa_text_only"),
                         (dict(split_fractions=(True, 0, 0)), "split_fractions"), (dict(split_fractions=(0.5, 0.5)), "split_fractions"),
                         (dict(force="yes"), "force"), (dict(sqa_per_image=-1), "sqa_per_image")):
        with pytest.raises(ValueError, match=name):
            generate_toyworld(root, **{**SMALL, **kwargs})
    assert not root.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out: .*file is a file"):
        generate_toyworld(tmp_path / "file", **SMALL)
