"""ScienceQA-style problems about toy images, written in ScienceQA's schema (DESIGN.md section 6).

:func:`toy_problems` makes, per image, problems of the question types the image allows
(counting, colour, position, presence; 2 to 5 options; hints on some), each answer following
from the annotations, plus a few problems without an image (which object belongs in which
scene), so that the IMG filter of :func:`visprune.datasets.read_scienceqa` has something to
drop. Every problem has the real schema plus a ``toy_meta`` field.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from visprune.datasets.coco import CocoIndex
from visprune.toyworld.categories import CATEGORIES, CATEGORY_BY_NAME, SCENE_PHRASES, SCENES
from visprune.toyworld.glyphs import COLOURS
from visprune.toyworld.language import article, number_word, plural

GRADES = {"counting": "grade1", "colour": "grade1", "presence": "grade1", "position": "grade2", "scene": "grade2"}
CATEGORY = {
    "counting": ("Counting objects", "Count objects in a picture"),
    "colour": ("Colors", "Identify the color of an object"),
    "position": ("Spatial relations", "Compare the positions of objects in a picture"),
    "presence": ("Object recognition", "Find objects in a picture"),
    "scene": ("Scenes", "Know which objects are found in which places"),
}
MIN_SEPARATION = 12  # pixels between box centres for a position question to be answerable


def _problem(question, choices, answer, hint, image, qtype, solution, split, toy_meta) -> dict:
    category, skill = CATEGORY[qtype]
    return {
        "question": question, "choices": list(choices), "answer": int(answer), "hint": hint,
        "image": image, "task": "closed choice", "grade": GRADES[qtype], "subject": "natural science",
        "topic": "toy-world", "category": category, "skill": skill, "lecture": "",
        "solution": solution, "split": split, "toy_meta": toy_meta,
    }


def _objects(index: CocoIndex, image_id: int) -> list[dict]:
    """The image's objects as {name, colour, cx, cy} in annotation order."""
    out = []
    for ann in index.annotations[image_id]:
        x, y, w, h = ann["bbox"]
        out.append({"name": index.categories[ann["category_id"]], "colour": ann.get("color"), "cx": x + w / 2, "cy": y + h / 2})
    return out


def _shuffled(rng, correct: str, distractors: Sequence[str]) -> tuple[list[str], int]:
    choices = [correct, *distractors]
    order = rng.permutation(len(choices))
    choices = [choices[i] for i in order]
    return choices, choices.index(correct)


def _n_options(rng, most: int) -> int:
    return int(rng.integers(2, min(5, most) + 1))


def _absent_by_scene(rng, scene: str | None, present: set[str], k: int) -> list[str]:
    """``k`` absent category names, favouring the scene's own categories (plausible distractors)."""
    names = [c.name for c in CATEGORIES if c.name not in present]
    profile = SCENES.get(scene or "", {})
    weights = np.array([profile.get(n, 0.0) + 0.5 for n in names])
    pick = rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())
    return [names[i] for i in pick]


def _counting(rng, objs, scene, hint_on):
    counts: dict[str, int] = {}
    for o in objs:
        counts[o["name"]] = counts.get(o["name"], 0) + 1
    if rng.random() < 0.15:
        name = _absent_by_scene(rng, scene, set(counts), 1)[0]
    else:
        name = str(rng.choice(sorted(counts)))
    n = counts.get(name, 0)
    k = _n_options(rng, 5)
    # distractors: other small counts, the nearer to the true count the likelier
    others = [v for v in range(0, max(6, n + 3)) if v != n]
    weights = np.array([1.0 / abs(v - n) for v in others])
    distractors = [str(others[int(i)]) for i in rng.choice(len(others), size=k - 1, replace=False, p=weights / weights.sum())]
    choices, answer = _shuffled(rng, str(n), distractors)
    hint = f"Count every {name} in the picture, including any that are partly hidden." if hint_on else ""
    if n == 0:
        solution = f"There is no {name} in the picture, so the answer is 0."
    elif n == 1:
        solution = f"There is one {name} in the picture."
    else:
        solution = f"There are {number_word(n)} {plural(name)} in the picture."
    return f"How many {plural(name)} are in the picture?", choices, answer, hint, solution


def _colour(rng, objs, scene, hint_on):
    counts: dict[str, int] = {}
    for o in objs:
        counts[o["name"]] = counts.get(o["name"], 0) + 1
    single = [o for o in objs if counts[o["name"]] == 1 and o["colour"]]
    if not single:
        return None
    obj = single[int(rng.integers(len(single)))]
    palette = [c for c in CATEGORY_BY_NAME[obj["name"]].colours if c != obj["colour"]] if obj["name"] in CATEGORY_BY_NAME else []
    others = [c for c in COLOURS if c != obj["colour"] and c not in palette]
    pool = palette + list(rng.permutation(others))  # the category's own colours are the plausible wrong answers
    k = _n_options(rng, 5)
    choices, answer = _shuffled(rng, obj["colour"], pool[: k - 1])
    hint = f"Look at the {obj['name']} in the picture." if hint_on else ""
    return f"What color is the {obj['name']}?", choices, answer, hint, f"The {obj['name']} is {obj['colour']}."


def _position(rng, objs, scene, hint_on):
    counts: dict[str, int] = {}
    for o in objs:
        counts[o["name"]] = counts.get(o["name"], 0) + 1
    single = [o for o in objs if counts[o["name"]] == 1]
    axis = str(rng.choice(["cx", "cy"]))
    extreme = str(rng.choice(["min", "max"]))
    # greedily pick objects whose centres are pairwise MIN_SEPARATION apart on this axis
    chosen: list[dict] = []
    for i in rng.permutation(len(single)):
        o = single[int(i)]
        if all(abs(o[axis] - c[axis]) >= MIN_SEPARATION for c in chosen):
            chosen.append(o)
    if len(chosen) < 2:
        return None
    k = _n_options(rng, min(4, len(chosen)))
    chosen = chosen[:k]
    target = (min if extreme == "min" else max)(chosen, key=lambda o: o[axis])
    words = {("cx", "min"): "farthest to the left", ("cx", "max"): "farthest to the right",
             ("cy", "min"): "closest to the top", ("cy", "max"): "closest to the bottom"}[(axis, extreme)]
    if k == 2 and rng.random() < 0.5:
        a, b = chosen
        if axis == "cx":
            rel = "left" if a["cx"] < b["cx"] else "right"
            question = f"Is the {a['name']} to the left or to the right of the {b['name']}?"
            choices = ["left", "right"]
        else:
            rel = "above" if a["cy"] < b["cy"] else "below"
            question = f"Is the {a['name']} above or below the {b['name']}?"
            choices = ["above", "below"]
        if axis == "cx":
            solution = f"The {a['name']} is to the {rel} of the {b['name']}."
        else:
            solution = f"The {a['name']} is {rel} the {b['name']}."
        hint = "Compare where the two objects are in the picture." if hint_on else ""
        return question, choices, choices.index(rel), hint, solution
    question = f"Which object is {words}?"
    choices, answer = _shuffled(rng, target["name"], [o["name"] for o in chosen if o is not target])
    hint = "Only the objects listed in the choices count." if hint_on else ""
    return question, choices, answer, hint, f"Of these objects, the {target['name']} is {words}."


def _presence(rng, objs, scene, hint_on):
    present = list(dict.fromkeys(o["name"] for o in objs))
    negative = rng.random() < 0.4 and len(present) >= 2
    if negative:
        k = _n_options(rng, min(5, len(present) + 1))
        absent = _absent_by_scene(rng, scene, set(present), 1)[0]
        others = [present[int(i)] for i in rng.permutation(len(present))[: k - 1]]
        choices, answer = _shuffled(rng, absent, others)
        solution = f"The {absent} is not in the picture; the other objects are."
        question = "Which of these objects is not in the picture?"
    else:
        k = _n_options(rng, 5)
        correct = present[int(rng.integers(len(present)))]
        choices, answer = _shuffled(rng, correct, _absent_by_scene(rng, scene, set(present), k - 1))
        solution = f"The {correct} is in the picture; the other objects are not."
        question = "Which of these objects is in the picture?"
    hint = f"The picture shows {article(scene)} {scene} scene." if hint_on and scene else ""
    return question, choices, answer, hint, solution


def _scene_problem(rng, split):
    """A problem without an image: which object belongs in a scene (world knowledge)."""
    scene = str(rng.choice(list(SCENES)))
    profile = SCENES[scene]
    top = sorted(profile, key=lambda n: -profile[n])[:4]
    correct = top[int(rng.integers(len(top)))]
    outsiders = [c.name for c in CATEGORIES if c.name not in profile]
    k = _n_options(rng, 5)
    distractors = [outsiders[int(i)] for i in rng.permutation(len(outsiders))[: k - 1]]
    choices, answer = _shuffled(rng, correct, distractors)
    prep, noun = SCENE_PHRASES[scene][0]
    place = f"{prep} {noun}"
    hint = "Think about where these objects are usually found." if rng.random() < 0.3 else ""
    return _problem(
        f"Which of these objects would you most likely find {place}?", choices, answer, hint, None,
        "scene", f"{article(correct).capitalize()} {correct} is often found {place}.", split,
        {"source_image_id": None, "file_name": None, "scene": scene, "n_objects": None, "question_type": "scene"},
    )


QUESTION_TYPES = {"counting": _counting, "colour": _colour, "position": _position, "presence": _presence}


def toy_problems(
    indexes: Mapping[str, CocoIndex],
    *,
    seed: int = 0,
    per_image: int = 1,
    text_only_fraction: float = 0.08,
    hint_fraction: float = 0.3,
) -> tuple[dict, dict, dict]:
    """ScienceQA-format problems about toy images: ``(problems, pid_splits, pid -> image file name)``.

    ``indexes`` maps split -> that split's COCO instances (with the toy world's "scene" and
    "color" fields). For each image, ``per_image`` problems of question types drawn among
    those the image allows (counting, colour, position, presence); each answer follows from
    the annotations (counts, colours, box centres at least :data:`MIN_SEPARATION` px apart,
    presence). Then ``text_only_fraction`` of each split's problems are added without an image
    (which object belongs in which scene), so the IMG filter has something to drop. Within a
    split the problems are shuffled; pids are "1", "2", ... over train, val, test. Every
    problem has the real schema plus a ``toy_meta`` field (source_image_id, file_name,
    scene, n_objects, question_type), which readers of the real files ignore.
    """
    if not 0.0 <= text_only_fraction < 1.0:
        raise ValueError(f"text_only_fraction must be in [0, 1), got {text_only_fraction!r}")
    problems: dict[str, dict] = {}
    pid_splits: dict[str, list[str]] = {}
    pid_image: dict[str, str] = {}
    next_pid = 1
    for split_no, (split, index) in enumerate(indexes.items()):
        batch: list[tuple[dict, str | None]] = []
        for image_id, img in index.images.items():
            objs = _objects(index, image_id)
            if not objs:
                continue
            rng = np.random.default_rng([seed, image_id, 11])
            for _ in range(per_image):
                kinds = list(QUESTION_TYPES)
                made = None
                for kind in [kinds[int(i)] for i in rng.permutation(len(kinds))]:
                    made = QUESTION_TYPES[kind](rng, objs, img.get("scene"), bool(rng.random() < hint_fraction))
                    if made is not None:
                        break
                question, choices, answer, hint, solution = made  # presence always succeeds
                meta = {"source_image_id": image_id, "file_name": img["file_name"], "scene": img.get("scene"),
                        "n_objects": len(objs), "question_type": kind}
                batch.append((_problem(question, choices, answer, hint, "image.png", kind, solution, split, meta), img["file_name"]))
        rng = np.random.default_rng([seed, 1000 + split_no, 13])
        n_text = int(round(len(batch) * text_only_fraction / (1.0 - text_only_fraction)))
        batch += [(_scene_problem(rng, split), None) for _ in range(n_text)]
        order = rng.permutation(len(batch))
        pids = []
        for i in order:
            prob, file_name = batch[int(i)]
            pid = str(next_pid)
            next_pid += 1
            problems[pid] = prob
            pids.append(pid)
            if file_name is not None:
                pid_image[pid] = file_name
        pid_splits[split] = pids
    for split, mini in (("val", "minival"), ("test", "minitest")):
        if split in pid_splits:
            pid_splits[mini] = pid_splits[split][: max(1, len(pid_splits[split]) // 4)] if pid_splits[split] else []
    return problems, pid_splits, pid_image
