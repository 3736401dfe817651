"""The toy world: a seeded generator of synthetic scenes with COCO-format annotations.

DESIGN.md section 3 (the ``toy`` profile). Every image is drawn from its seed alone, so the
world is identical on every machine. It is built to make the studied effects *possible*
without forcing them:

- **Objects.** 26 categories (:data:`CATEGORIES`), each a distinct glyph (shape plus a typical
  colour, with other colours now and then, so colour questions make sense), each with a few
  synonyms (:func:`toy_synonyms`, written to ``lib/visprune/assets/chair/toy_synonyms.txt`` for CHAIR). Three
  names start with a vowel ("apple", "egg", "umbrella": POPE's "an") and three are two words
  ("traffic cone", "stop sign", "teddy bear").
- **Scenes.** Six scene types (:data:`SCENES`), each with its own background texture and a
  frequency profile over the categories, so objects co-occur (which gives POPE's popular and
  adversarial negatives, and a captioner's priors, something to work with). Any category can
  still turn up in any scene, rarely.
- **Simple to complex.** One to eight objects per image, smaller when there are more, with
  partial occlusion (an object may cover up to 30% of another's box), clutter marks (dots,
  strokes, specks that are no category) and background texture that grow with the object count.
- **Text.** Five reference captions per image from templates that mention a subset of the
  objects, with synonyms, plurals, counts, colours and positions.

Sizes: images are 96 x 96 RGB and the toy vision tower uses 8 px patches, so an image gives a
12 x 12 grid of N = 144 visual tokens. LLaVA-1.5's budgets (64, 128, 192 of 576 tokens) map by
the same fractions onto 16, 32 and 48 of 144 (:func:`toy_budget`, :data:`TOY_BUDGETS`).

:func:`generate_toyworld` writes the whole world (images, COCO instances and captions per
split, POPE question files, ScienceQA-format problems) under one folder, atomically, only
where files are missing or changed, and never touching files in that folder that it did not
write itself; ``python -m visprune.data toyworld`` is the command line for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from visprune import _paths
from visprune import _validation as v
from visprune.data import glyphs
from visprune.data.glyphs import COLOURS, SKY  # colour names -> RGB

# --------------------------------------------------------------------------- sizes and budgets

IMAGE_SIZE = 96  # pixels per side
PATCH_SIZE = 8  # the toy vision tower's patch size
GRID = IMAGE_SIZE // PATCH_SIZE  # 12 patches per side
N_TOKENS = GRID * GRID  # 144 visual tokens per image
N_TOKENS_LLAVA = 576  # LLaVA-1.5: 336 px images, 14 px patches, 24 x 24 tokens


def toy_budget(k_real: int, n_real: int = N_TOKENS_LLAVA, n_toy: int = N_TOKENS) -> int:
    """The toy-world token budget that keeps the same fraction as ``k_real`` of ``n_real``.

    ``round(k_real * n_toy / n_real)``, at least 1. With the defaults (576 real tokens, 144 toy
    tokens) the papers' budgets map as 64 -> 16, 128 -> 32, 192 -> 48 (1/9, 2/9, 1/3 of the
    tokens kept).

    >>> [toy_budget(k) for k in (64, 128, 192, 576)]
    [16, 32, 48, 144]
    """
    for name, value in (("k_real", k_real), ("n_real", n_real), ("n_toy", n_toy)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"toy_budget: {name} must be a positive integer, got {value!r}")
    if k_real > n_real:
        raise ValueError(f"toy_budget: k_real={k_real} is more than n_real={n_real} tokens")
    return max(1, int(round(k_real * n_toy / n_real)))


#: The papers' budgets (of 576 tokens) and their toy-world equivalents (of 144).
TOY_BUDGETS = {k: toy_budget(k) for k in (64, 128, 192)}

# --------------------------------------------------------------------------- categories


@dataclass(frozen=True)
class Category:
    """One toy object category.

    ``synonyms`` are the other words captions use for it (CHAIR maps them back to ``name``);
    ``colours`` the colours it is drawn in, the first being the typical one; ``aspect`` its
    box's width / height.
    """

    id: int
    name: str
    supercategory: str
    synonyms: tuple[str, ...]
    colours: tuple[str, ...]
    aspect: float
    draw: Callable

    @property
    def words(self) -> tuple[str, ...]:
        """Every name of the category: the canonical name first, then the synonyms."""
        return (self.name, *self.synonyms)


def _cats(rows) -> tuple[Category, ...]:
    return tuple(Category(i + 1, *row) for i, row in enumerate(rows))


CATEGORIES: tuple[Category, ...] = _cats([
    ("cup", "kitchenware", ("mug", "teacup"), ("white", "red", "blue", "yellow"), 1.15, glyphs.draw_cup),
    ("plate", "kitchenware", ("dish", "saucer"), ("white", "blue", "yellow"), 1.7, glyphs.draw_plate),
    ("apple", "food", ("pippin", "crabapple"), ("red", "green", "yellow"), 0.9, glyphs.draw_apple),
    ("banana", "food", ("plantain",), ("yellow", "green"), 1.8, glyphs.draw_banana),
    ("bottle", "kitchenware", ("flask", "flagon"), ("green", "blue", "brown", "white"), 0.42, glyphs.draw_bottle),
    ("egg", "food", ("boiled egg",), ("white", "brown"), 0.75, glyphs.draw_egg),
    ("clock", "indoor", ("timepiece", "wall clock"), ("white", "yellow", "blue"), 1.0, glyphs.draw_clock),
    ("tree", "nature", ("pine", "fir", "evergreen"), ("green", "orange", "yellow"), 0.7, glyphs.draw_tree),
    ("flower", "nature", ("blossom", "daisy", "bloom"), ("pink", "red", "yellow", "purple", "white"), 0.8, glyphs.draw_flower),
    ("kite", "sports", ("box kite",), ("red", "blue", "yellow", "purple", "orange"), 0.7, glyphs.draw_kite),
    ("bird", "animal", ("sparrow", "pigeon", "songbird"), ("blue", "brown", "black", "red", "yellow"), 1.4, glyphs.draw_bird),
    ("ball", "sports", ("beach ball", "sphere"), ("red", "blue", "yellow", "green", "orange"), 1.0, glyphs.draw_ball),
    ("umbrella", "accessory", ("parasol", "brolly"), ("red", "blue", "purple", "black", "green"), 1.1, glyphs.draw_umbrella),
    ("car", "vehicle", ("automobile", "sedan"), ("red", "blue", "yellow", "green", "white"), 1.8, glyphs.draw_car),
    ("bus", "vehicle", ("coach", "minibus"), ("yellow", "red", "blue", "green"), 2.2, glyphs.draw_bus),
    ("traffic cone", "outdoor", ("cone", "pylon", "safety cone"), ("orange", "red", "yellow"), 0.75, glyphs.draw_traffic_cone),
    ("stop sign", "outdoor", ("stopsign", "road sign"), ("red",), 0.72, glyphs.draw_stop_sign),
    ("house", "building", ("home", "cottage", "hut"), ("white", "yellow", "blue", "pink", "brown"), 1.0, glyphs.draw_house),
    ("boat", "vehicle", ("sailboat", "dinghy", "yacht"), ("brown", "red", "blue", "white"), 1.0, glyphs.draw_boat),
    ("fish", "animal", ("goldfish", "minnow"), ("orange", "blue", "yellow", "red"), 1.6, glyphs.draw_fish),
    ("starfish", "animal", ("sea star",), ("orange", "red", "pink", "purple", "yellow"), 1.0, glyphs.draw_starfish),
    ("laptop", "electronic", ("computer", "notebook computer"), ("gray", "black", "white"), 1.3, glyphs.draw_laptop),
    ("book", "indoor", ("novel", "paperback"), ("blue", "red", "green", "yellow", "purple", "brown"), 0.75, glyphs.draw_book),
    ("lamp", "furniture", ("desk lamp", "lantern"), ("yellow", "white", "red", "green"), 0.7, glyphs.draw_lamp),
    ("pencil", "office", ("crayon",), ("yellow", "red", "blue", "green"), 4.0, glyphs.draw_pencil),
    ("teddy bear", "toy", ("teddy", "bear", "stuffed toy"), ("brown", "orange", "pink", "white"), 0.8, glyphs.draw_teddy_bear),
])
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}

#: Scene types: how often each category appears (relative weights; every other category has
#: weight :data:`STRAY_WEIGHT`, so any object can turn up anywhere, rarely).
SCENES: dict[str, dict[str, float]] = {
    "kitchen": {"cup": 5, "plate": 5, "apple": 4, "banana": 4, "bottle": 3, "egg": 3, "clock": 2, "book": 1},
    "park": {"tree": 5, "flower": 5, "kite": 4, "bird": 4, "ball": 3, "umbrella": 2, "bottle": 1, "house": 1},
    "street": {"car": 5, "bus": 4, "traffic cone": 4, "stop sign": 4, "house": 3, "tree": 2, "umbrella": 2, "bird": 1},
    "beach": {"boat": 4, "starfish": 4, "ball": 4, "umbrella": 4, "fish": 3, "kite": 2, "bottle": 2, "bird": 2},
    "office": {"laptop": 5, "book": 4, "pencil": 4, "cup": 3, "lamp": 3, "clock": 3, "bottle": 1, "apple": 1},
    "bedroom": {"teddy bear": 5, "lamp": 4, "book": 3, "clock": 3, "ball": 2, "pencil": 1, "cup": 1, "kite": 1},
}
STRAY_WEIGHT = 0.12
#: How captions name each scene: (preposition, noun phrase).
SCENE_PHRASES = {
    "kitchen": (("in", "a kitchen"), ("on", "a kitchen counter"), ("in", "a tiled kitchen")),
    "park": (("in", "a park"), ("in", "a grassy park"), ("on", "a green field")),
    "street": (("on", "a street"), ("on", "a city street"), ("on", "a road")),
    "beach": (("on", "a beach"), ("on", "a sandy beach"), ("at", "the seaside")),
    "office": (("in", "an office"), ("on", "a desk"), ("in", "a workspace")),
    "bedroom": (("in", "a bedroom"), ("in", "a child's room"), ("in", "a cozy bedroom")),
}
# Number of objects per image, 1..8, roughly uniform with a slight tilt towards fewer.
N_OBJECTS_WEIGHTS = np.array([14, 14, 14, 13, 12, 12, 11, 10], dtype=float)
MAX_OVERLAP = 0.30  # an object may cover at most this fraction of another's box (and vice versa)
N_CAPTIONS = 5
GENERATOR_VERSION = 1  # bump when drawing or sampling changes (invalidates generated worlds)


def _check_tables() -> None:
    """Every word names exactly one category; every scene names known categories."""
    seen: dict[str, str] = {}
    for cat in CATEGORIES:
        for word in cat.words:
            if word in seen:
                raise AssertionError(f"toy synonym {word!r} names both {seen[word]!r} and {cat.name!r}")
            seen[word] = cat.name
        for colour in cat.colours:
            assert colour in COLOURS, colour
    for scene, weights in SCENES.items():
        for name in weights:
            assert name in CATEGORY_BY_NAME, (scene, name)


_check_tables()


def toy_synonyms() -> dict[str, list[str]]:
    """The toy world's CHAIR vocabulary: canonical category name -> its synonyms."""
    return {c.name: list(c.synonyms) for c in CATEGORIES}


def toy_synonyms_text() -> str:
    """The text of ``lib/visprune/assets/chair/toy_synonyms.txt`` ("canonical, synonym, ..." lines)."""
    lines = [
        "# CHAIR object vocabulary for the visprune toy world: one category per line, \"canonical, synonym, ...\".",
        "# Written by `python -m visprune.data synonyms` from visprune.data.toyworld.CATEGORIES; do not edit by hand.",
        "# Plurals are matched by visprune.metrics, which singularises caption words before looking them up here.",
    ]
    lines += [", ".join(c.words) for c in CATEGORIES]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- language helpers

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def article(word: str) -> str:
    """ "an" before a vowel letter, else "a" (the rule POPE's template uses)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def plural(word: str) -> str:
    """English plural of a (possibly two-word) noun from the toy vocabulary."""
    head, _, last = word.rpartition(" ")
    if last in ("fish", "goldfish", "starfish", "minnow"):
        p = last if last != "minnow" else "minnows"
    elif last.endswith(("s", "sh", "ch", "x")):
        p = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


def number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def join_phrases(parts: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def position_phrase(cx: float, cy: float, size: int = IMAGE_SIZE) -> str:
    """Where a point lies in the picture, in words ("on the left", "at the top", ...)."""
    third = size / 3
    horiz = "left" if cx < third else "right" if cx > 2 * third else ""
    vert = "top" if cy < third else "bottom" if cy > 2 * third else ""
    if horiz and vert:
        return f"in the {vert} {horiz} corner"
    if horiz:
        return f"on the {horiz}"
    if vert:
        return f"at the {vert}"
    return "in the middle"


# --------------------------------------------------------------------------- one scene


@dataclass(frozen=True)
class ToyObject:
    """An object placed in a toy scene: its category, colour name and box [x, y, w, h]."""

    category: str
    colour: str
    bbox: tuple[int, int, int, int]

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class ToyScene:
    """One generated image: its scene type, objects (in drawing = annotation order), captions."""

    image_id: int
    split: str
    scene: str
    objects: tuple[ToyObject, ...]
    n_clutter: int
    captions: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return image_file_name(self.split, self.image_id)


def image_file_name(split: str, image_id: int) -> str:
    """``toy_{split}_{image_id:012d}.png`` (COCO-like names)."""
    return f"toy_{split}_{image_id:012d}.png"


def _scene_weights(scene: str) -> np.ndarray:
    profile = SCENES[scene]
    return np.array([profile.get(c.name, STRAY_WEIGHT) for c in CATEGORIES], dtype=float)


def _background(rng: np.random.Generator, scene: str, strength: float) -> np.ndarray:
    """A (96, 96, 3) uint8 background: the scene's texture plus noise scaled by ``strength``."""
    S = IMAGE_SIZE
    yy, xx = np.mgrid[0:S, 0:S]
    img = np.zeros((S, S, 3), dtype=float)
    jitter = rng.uniform(-12, 12, size=3)
    if scene == "kitchen":
        img[:] = np.array([228, 218, 188]) + jitter
        step = int(rng.integers(12, 20))
        grout = ((xx % step) < 1) | ((yy % step) < 1)
        img[grout] *= 0.8
    elif scene == "park":
        horizon = int(rng.integers(0, 30))
        img[:] = np.array([112, 172, 82]) + jitter
        img[:horizon] = np.array(SKY)
        blades = rng.random((S, S)) < 0.08
        img[blades & (yy >= horizon)] *= 0.75
    elif scene == "street":
        img[:] = np.array([102, 102, 108]) + jitter
        walk = int(rng.integers(8, 22))
        img[:walk] = np.array([175, 170, 160])
        lane = int(rng.integers(walk + 20, S - 10))
        dashes = (yy >= lane) & (yy < lane + 2) & ((xx // 8) % 2 == 0)
        img[dashes] = np.array([240, 225, 90])
    elif scene == "beach":
        sea_top = int(rng.integers(10, 28))
        sand_top = int(rng.integers(sea_top + 14, sea_top + 40))
        img[:] = np.array([232, 208, 152]) + jitter
        img[:sea_top] = np.array(SKY)
        img[sea_top:sand_top] = np.array([60, 130, 200]) + jitter
        waves = (yy > sea_top) & (yy < sand_top) & (((xx + 3 * yy) % 11) == 0)
        img[waves] = np.array([200, 225, 245])
    elif scene == "office":
        desk = int(rng.integers(30, 60))
        img[:] = np.array([200, 205, 215]) + jitter
        img[desk:] = np.array([172, 122, 72]) + jitter
        grain = (yy >= desk) & (((yy + (xx // 9)) % 5) == 0)
        img[grain] *= 0.88
    elif scene == "bedroom":
        wall = np.array([[238, 205, 215], [215, 205, 238], [240, 232, 200]])[rng.integers(0, 3)]
        img[:] = wall + jitter
        stripe = int(rng.integers(6, 12))
        img[(xx // stripe) % 2 == 0] *= 0.93
        floor = int(rng.integers(60, 80))
        img[floor:] = np.array([150, 110, 80]) + jitter
    else:  # pragma: no cover - SCENES is the only source of scene names
        raise ValueError(f"unknown scene {scene!r}")
    # grain at half resolution (2 x 2 pixel blocks): texture that still compresses in PNG
    grain = rng.normal(0.0, strength, size=(S // 2, S // 2, 3))
    img += np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _overlap_ok(box: Sequence[float], others: Sequence[Sequence[float]]) -> bool:
    x, y, w, h = box
    for ox, oy, ow, oh in others:
        iw = min(x + w, ox + ow) - max(x, ox)
        ih = min(y + h, oy + oh) - max(y, oy)
        if iw > 0 and ih > 0 and iw * ih > MAX_OVERLAP * min(w * h, ow * oh):
            return False
    return True


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, n: int) -> None:
    """``n`` small marks (dots, strokes, specks) in random colours: texture, not objects."""
    S = IMAGE_SIZE
    for _ in range(n):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x, y = (float(v) for v in rng.uniform(2, S - 3, size=2))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            r = float(rng.uniform(1.0, 2.2))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif kind == 1:
            t = float(rng.uniform(0, math.pi))
            ln = float(rng.uniform(3, 8))
            draw.line((x, y, x + ln * math.cos(t), y + ln * math.sin(t)), fill=colour, width=1)
        else:
            s = float(rng.uniform(1.5, 3.5))
            draw.rectangle((x, y, x + s, y + s), fill=colour)


def _colour_rgb(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.array(COLOURS[name], dtype=float)
    return tuple(int(v) for v in np.clip(base + rng.uniform(-14, 14, size=3), 0, 255))  # type: ignore[return-value]


def render_scene(seed: int, image_id: int, split: str) -> tuple[ToyScene, bytes]:
    """Draw image ``image_id`` of the world with ``seed``: its description and its PNG bytes.

    Depends only on ``(seed, image_id)``: the split goes into the description, not the
    randomness, so a world's images do not change when split sizes do.
    """
    rng = np.random.default_rng([int(seed), int(image_id)])
    scene = str(rng.choice(list(SCENES)))
    n_target = int(rng.choice(np.arange(1, 9), p=N_OBJECTS_WEIGHTS / N_OBJECTS_WEIGHTS.sum()))
    complexity = (n_target - 1) / 7.0  # 0 (one object) .. 1 (eight)
    strength = 3.0 + 9.0 * complexity * float(rng.uniform(0.5, 1.0))
    n_clutter = int(rng.integers(0, 3 + int(12 * complexity)))

    canvas = Image.fromarray(_background(rng, scene, strength), "RGB")
    draw = ImageDraw.Draw(canvas)
    _draw_clutter(draw, rng, n_clutter)

    weights = _scene_weights(scene)
    p = weights / weights.sum()
    hi = max(20.0, 46.0 - 3.5 * (n_target - 1))  # longest side, pixels: smaller when crowded
    lo = max(12.0, 0.45 * hi)
    objects: list[ToyObject] = []
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(n_target):
        cat = CATEGORIES[int(rng.choice(len(CATEGORIES), p=p))]
        colour = cat.colours[0] if (len(cat.colours) == 1 or rng.random() < 0.6) else str(rng.choice(cat.colours[1:]))
        longest = float(rng.uniform(lo, hi))
        ratio = max(cat.aspect, 1 / cat.aspect)
        longest = min(max(longest, 7.0 * ratio), IMAGE_SIZE - 4.0)  # the short side stays >= 7 px
        w = longest if cat.aspect >= 1 else longest * cat.aspect
        h = longest / cat.aspect if cat.aspect >= 1 else longest
        w, h = int(round(w)), int(round(h))
        placed = None
        for _try in range(40):
            x = int(rng.integers(1, IMAGE_SIZE - w - 1))
            y = int(rng.integers(1, IMAGE_SIZE - h - 1))
            if _overlap_ok((x, y, w, h), boxes):
                placed = (x, y, w, h)
                break
        if placed is None:
            continue
        rgb = _colour_rgb(rng, colour)
        x, y, w, h = placed
        cat.draw(draw, (x, y, x + w - 1, y + h - 1), rgb)
        objects.append(ToyObject(cat.name, colour, placed))
        boxes.append(placed)

    captions = tuple(_captions(rng, scene, objects))
    desc = ToyScene(int(image_id), split, scene, tuple(objects), n_clutter, captions)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return desc, buf.getvalue()


# --------------------------------------------------------------------------- captions


def _captions(rng: np.random.Generator, scene: str, objects: Sequence[ToyObject]) -> list[str]:
    """:data:`N_CAPTIONS` reference captions; each names a subset of the objects, truthfully."""
    by_cat: dict[str, list[ToyObject]] = {}
    for obj in objects:
        by_cat.setdefault(obj.category, []).append(obj)
    names = list(by_cat)
    area = np.array([sum(o.bbox[2] * o.bbox[3] for o in by_cat[n]) for n in names], dtype=float)

    def word(cat: str) -> str:
        words = CATEGORY_BY_NAME[cat].words
        return cat if rng.random() < 0.55 else str(rng.choice(words))

    def phrase(cat: str, with_colour: bool) -> str:
        group = by_cat[cat]
        w = word(cat)
        if len(group) == 1:
            adj = f"{group[0].colour} " if with_colour else ""
            return f"{article(adj + w)} {adj}{w}"
        colours = {o.colour for o in group}
        adj = f"{group[0].colour} " if with_colour and len(colours) == 1 else ""
        count = number_word(len(group)) if rng.random() < 0.75 else str(rng.choice(["some", "several"]))
        return f"{count} {adj}{plural(w)}"

    def mentioned(k: int) -> list[str]:
        k = min(k, len(names))
        order = rng.choice(len(names), size=k, replace=False, p=area / area.sum())
        return [names[i] for i in order]

    out: list[str] = []
    for i in range(N_CAPTIONS):
        prep, place = SCENE_PHRASES[scene][int(rng.integers(len(SCENE_PHRASES[scene])))]
        where = f"{prep} {place}"
        k = int(rng.integers(1, 5))
        cats = mentioned(k)
        parts = [phrase(c, bool(rng.random() < 0.4)) for c in cats]
        template = (i + int(rng.integers(0, 5))) % 5
        if template == 0:
            text = f"{join_phrases(parts)} {where}."
        elif template == 1:
            text = f"{place} with {join_phrases(parts)}."
        elif template == 2:
            single = [c for c in cats if len(by_cat[c]) == 1]
            if single:
                c = single[0]
                first = phrase(c, bool(rng.random() < 0.5))
                rest = [p for cc, p in zip(cats, parts) if cc != c]
                text = f"there is {first} {position_phrase(*by_cat[c][0].centre)}"
                text += f", with {join_phrases(rest)} nearby." if rest else "."
            else:
                text = f"a picture of {join_phrases(parts)}."
        elif template == 3:
            opener = str(rng.choice(["a picture of", "an image of", "a drawing of"]))
            text = f"{opener} {join_phrases(parts)} {where}."
        else:
            if len(parts) >= 2:
                text = f"{parts[0]} next to {join_phrases(parts[1:])}."
            else:
                text = f"{parts[0]} {where}."
        out.append(text[0].upper() + text[1:])
    return out


# --------------------------------------------------------------------------- COCO files


def coco_instances(scenes: Sequence[ToyScene], split: str) -> dict:
    """COCO instances JSON for ``scenes`` (standard fields; extra "scene" per image and "color"
    per annotation). Segmentations are the box outlines as polygons; areas are box areas."""
    images, annotations = [], []
    for s in scenes:
        images.append({
            "id": s.image_id, "file_name": s.file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE,
            "license": 0, "scene": s.scene, "n_clutter": s.n_clutter,
        })
        for k, obj in enumerate(s.objects):
            x, y, w, h = obj.bbox
            annotations.append({
                "id": _annotation_id(s.image_id, k), "image_id": s.image_id, "category_id": CATEGORY_BY_NAME[obj.category].id,
                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0,
                "segmentation": [[float(x), float(y), float(x + w), float(y), float(x + w), float(y + h), float(x), float(y + h)]],
                "color": obj.colour,
            })
    return {
        "info": {"description": f"visprune toy world, {split} split", "version": str(GENERATOR_VERSION), "year": 2026},
        "licenses": [{"id": 0, "name": "generated data, no restrictions", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CATEGORIES],
    }


def _annotation_id(image_id: int, k: int) -> int:
    return image_id * 100 + k + 1  # unique: at most 8 objects per image


def coco_captions(scenes: Sequence[ToyScene], split: str) -> dict:
    """COCO captions JSON for ``scenes``."""
    images = [{"id": s.image_id, "file_name": s.file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE, "license": 0} for s in scenes]
    annotations = [
        {"image_id": s.image_id, "id": s.image_id * 100 + k + 1, "caption": cap}
        for s in scenes for k, cap in enumerate(s.captions)
    ]
    return {
        "info": {"description": f"visprune toy world captions, {split} split", "version": str(GENERATOR_VERSION), "year": 2026},
        "licenses": [{"id": 0, "name": "generated data, no restrictions", "url": ""}],
        "images": images,
        "annotations": annotations,
    }


# --------------------------------------------------------------------------- the whole world

SPLITS = ("train", "val", "test")
POPE_STRATEGIES = ("random", "popular", "adversarial")


@dataclass(frozen=True)
class ToyPaths:
    """Where the toy world's files are (layout written by :func:`generate_toyworld`)."""

    root: Path

    def images(self, split: str = "test") -> Path:
        return self.root / "images" / split

    def instances(self, split: str = "test") -> Path:
        return self.root / "annotations" / f"instances_{split}.json"

    def captions(self, split: str = "test") -> Path:
        return self.root / "annotations" / f"captions_{split}.json"

    def pope(self, strategy: str = "random", split: str = "test") -> Path:
        """``pope/toy_pope_{strategy}.json`` (test images) or ``pope/toy_pope_val_{strategy}.json``."""
        if strategy not in POPE_STRATEGIES:
            raise ValueError(f"strategy: expected one of {POPE_STRATEGIES}, got {strategy!r}")
        if split == "test":
            return self.root / "pope" / f"toy_pope_{strategy}.json"
        return self.root / "pope" / f"toy_pope_{split}_{strategy}.json"

    @property
    def scienceqa(self) -> Path:
        return self.root / "scienceqa"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def synonyms(self) -> Path:
        """The toy CHAIR synonym table (shipped: ``visprune/assets/chair/toy_synonyms.txt``)."""
        return _paths.asset(_paths.TOY_SYNONYMS)


def default_data_dir() -> Path:
    """Where generated data goes (``visprune._paths.data_root``: ``$VISPRUNE_DATA``, a checkout's
    ``data/``, or the user cache)."""
    return _paths.data_root()


def toy_paths(root: str | os.PathLike | None = None) -> ToyPaths:
    """The standard file locations of a toy world (default ``data/toyworld`` of the repository)."""
    return ToyPaths(Path(root) if root is not None else default_data_dir() / "toyworld")


def split_sizes(n_images: int, fractions: Sequence[float]) -> dict[str, int]:
    """Images per split: ``fractions`` (train, val, test) of ``n_images``, rounded, summing up."""
    want = "three fractions (train, val, test), each a number in [0, 1], summing to 1"
    try:
        fractions = tuple(fractions)
    except TypeError:
        raise ValueError(f"split_fractions: {want}, got {fractions!r}") from None
    if len(fractions) != 3 or not all(_is_real(f) for f in fractions):
        raise ValueError(f"split_fractions: {want}, got {fractions!r}")
    if any(not 0.0 <= f <= 1.0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split_fractions: {want}, got {tuple(float(f) for f in fractions)} (sum {sum(fractions):g})")
    n_train = int(round(n_images * fractions[0]))
    n_val = int(round(n_images * fractions[1]))
    return {"train": n_train, "val": n_val, "test": n_images - n_train - n_val}


def _is_real(x) -> bool:
    """A finite real number that is not a bool."""
    return (not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, float, np.integer, np.floating))
            and math.isfinite(x))


def _is_count(x, low: int) -> bool:
    """An int (not a bool) >= ``low``."""
    return not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, np.integer)) and x >= low


def generate_toyworld(
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    n_images: int = 2000,
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
    pope_images: int | None = 500,
    sqa_per_image: int = 1,
    sqa_text_only: float = 0.08,
    force: bool = False,
) -> dict:
    """Write the toy world under ``out`` (default ``data/toyworld``); return its manifest.

    Layout (see :class:`ToyPaths`)::

        images/{split}/toy_{split}_{image_id:012d}.png
        annotations/instances_{split}.json, captions_{split}.json      (COCO format)
        pope/toy_pope_{random,popular,adversarial}.json                 (test images, official format)
        pope/toy_pope_val_{random,popular,adversarial}.json             (validation images)
        scienceqa/problems.json, pid_splits.json, {split}/{pid}/image.png (ScienceQA format)
        manifest.json                                                   (parameters, file list, content hash)

    Image ids run from 1 over train, then val, then test. POPE files follow POPE's rules
    (:func:`visprune.data.pope.build_pope`) with at most ``pope_images`` images each.
    ScienceQA problems (:func:`visprune.data.scienceqa.toy_problems`): ``sqa_per_image`` per
    image plus a ``sqa_text_only`` fraction without an image.

    The folder may hold other files: they are the user's and are never replaced or removed.

    - **Up to date**: if ``manifest.json`` records the same parameters and the files it lists
      still hash to its content hash, nothing is written (``force=True`` skips this check).
    - **Completed or repaired**: otherwise the world is rendered in memory and compared with
      the folder file by file; only the generator's missing or different files are written,
      and files of an earlier world that the new one does not have are removed, where the
      manifest lists them as the generator's. A folder whose ``manifest.json`` is missing is
      completed the same way, provided that each file already at one of the world's paths is
      identical to the one the generator would write there.
    - **Never the user's files**: a file at one of the world's paths that the manifest does not
      list and that differs stops the call (ValueError naming it) before anything is written,
      as does a non-empty folder that holds no toy world.
    - **Atomic**: each file is written to a temporary name and renamed into place, and the
      manifest is marked incomplete until the last file is in place, so a run that is killed
      leaves a world that never passes as complete; the next call completes it.

    An ``OSError`` while writing (a full disk) names the file; the world is left marked
    incomplete.
    """
    for name, value, low in (("seed", seed, 0), ("n_images", n_images, 1), ("sqa_per_image", sqa_per_image, 0)):
        if not _is_count(value, low):
            raise ValueError(f"generate_toyworld: {name} must be an integer >= {low}, got {value!r}")
    if pope_images is not None and not _is_count(pope_images, 1):
        raise ValueError(f"generate_toyworld: pope_images must be a positive integer or None, got {pope_images!r}")
    if not _is_real(sqa_text_only) or not 0.0 <= sqa_text_only < 1.0:
        raise ValueError(f"generate_toyworld: sqa_text_only must be a number in [0, 1), got {sqa_text_only!r}")
    if not isinstance(force, (bool, np.bool_)):
        raise ValueError(f"generate_toyworld: force must be True or False, got {force!r}")
    sizes = split_sizes(n_images, split_fractions)
    paths = toy_paths(out)
    current, on_disk = _check_world_folder(paths, "out")
    params = {
        "generator_version": GENERATOR_VERSION, "seed": int(seed), "n_images": int(n_images),
        "split_fractions": [float(f) for f in split_fractions], "split_sizes": sizes,
        "pope_images": None if pope_images is None else int(pope_images), "sqa_per_image": int(sqa_per_image),
        "sqa_text_only": float(sqa_text_only), "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
    }

    owned = _owned_files(current, on_disk)
    if (not force and current is not None and current.get("complete", True)
            and current.get("params") == params and _intact(paths.root, current, owned)):
        return current

    files, links, manifest = _render_world(params)
    _sync_world(paths, files, links, manifest, owned)
    return manifest


def check_world_folder(out: str | os.PathLike | None = None, name: str = "out") -> Path:
    """Check, before any work, that a toy world may be written at ``out``; return its folder.

    ValueError naming ``name`` (an argument, or a command-line option such as ``--world``) when
    ``out`` is a file or cannot be written, when its ``manifest.json`` is not a toy world's, or
    when it is a non-empty folder that holds no toy world. Nothing is written.
    """
    paths = toy_paths(out)
    _check_world_folder(paths, name)
    return paths.root


def _check_world_folder(paths: ToyPaths, name: str) -> tuple[dict | None, set[str]]:
    """:func:`check_world_folder`; returns the manifest (or None) and the files on disk."""
    v.output_folder(paths.root, name)
    current = _read_manifest(paths, name)
    on_disk = _files_on_disk(paths)
    if current is None and on_disk and not any(_LAYOUT.fullmatch(rel) for rel in on_disk):
        raise ValueError(
            f"{name}: {paths.root} is a non-empty folder that holds no toy world (no manifest.json, none of its files); "
            "refusing to write into it. Pass an empty or new folder"
        )
    return current, on_disk


def _render_world(params: dict) -> tuple[dict[str, bytes], dict[str, str], dict]:
    """Every file of the world described by ``params``, in memory: (files, links, manifest).

    ``files`` maps relative path -> content; ``links`` maps the ScienceQA image paths to the
    image under ``images/`` with the same content (written as hard links).
    """
    from visprune.data import coco as coco_mod
    from visprune.data import pope as pope_mod
    from visprune.data import scienceqa as sqa_mod

    seed, sizes, pope_images = params["seed"], params["split_sizes"], params["pope_images"]
    files: dict[str, bytes] = {}  # relative path -> content
    indexes: dict[str, object] = {}
    image_path: dict[str, str] = {}  # file name -> relative path under images/
    next_id = 1
    for split in SPLITS:
        scenes = []
        for image_id in range(next_id, next_id + sizes[split]):
            desc, png = render_scene(seed, image_id, split)
            scenes.append(desc)
            files[f"images/{split}/{desc.file_name}"] = png
            image_path[desc.file_name] = f"images/{split}/{desc.file_name}"
        next_id += sizes[split]
        instances = coco_instances(scenes, split)
        files[f"annotations/instances_{split}.json"] = _json_bytes(instances)
        files[f"annotations/captions_{split}.json"] = _json_bytes(coco_captions(scenes, split))
        indexes[split] = coco_mod.CocoIndex.from_dict(instances, source=f"instances_{split}.json")

    for split, prefix in (("test", "toy_pope_"), ("val", "toy_pope_val_")):
        index = indexes[split]
        if not any(len(index.image_categories(i)) >= pope_mod.N_POSITIVE for i in index.images):
            raise ValueError(
                f"generate_toyworld: the {split} split ({sizes[split]} images) has no image with "
                f"{pope_mod.N_POSITIVE} or more object categories, so POPE has no questions for it; "
                "use more images (n_images) or a larger share for that split (split_fractions)"
            )
        for strategy in POPE_STRATEGIES:
            questions = pope_mod.build_pope(index, strategy, n_images=pope_images, seed=seed)
            files[f"pope/{prefix}{strategy}.json"] = pope_mod.pope_lines(questions).encode()

    problems, pid_splits, pid_image = sqa_mod.toy_problems(
        indexes, seed=seed, per_image=params["sqa_per_image"], text_only_fraction=params["sqa_text_only"]
    )
    files["scienceqa/problems.json"] = _json_bytes(problems)
    files["scienceqa/pid_splits.json"] = _json_bytes(pid_splits)
    links: dict[str, str] = {}  # ScienceQA image -> the same image under images/ (hard link, else copy)
    for pid, file_name in pid_image.items():
        links[f"scienceqa/{problems[pid]['split']}/{pid}/image.png"] = image_path[file_name]

    manifest = {
        "generator": GENERATOR, "params": params,
        "n_files": len(files) + len(links),
        "content_sha256": _content_hash([*files.items(), *((rel, files[src]) for rel, src in links.items())]),
        "counts": {
            "images": sizes,
            "pope_questions": {
                name.split("/")[-1]: data.count(b"\n") for name, data in files.items() if name.startswith("pope/")
            },
            "scienceqa_problems": {s: len(pid_splits[s]) for s in SPLITS},
        },
        "complete": True,
        "files": sorted([*files, *links]),  # every file the generator wrote here, manifest.json aside
    }
    return files, links, manifest


GENERATOR = "visprune.data.toyworld"
MANIFEST = "manifest.json"
#: Paths a toy world's files have (for manifests written before they listed their files, and to
#: recognise a toy world whose manifest.json is missing).
_LAYOUT = re.compile(
    r"images/(train|val|test)/toy_(train|val|test)_\d{12}\.png"
    r"|annotations/(instances|captions)_(train|val|test)\.json"
    r"|pope/toy_pope_(val_)?(random|popular|adversarial)\.json"
    r"|scienceqa/(problems|pid_splits)\.json"
    r"|scienceqa/(train|val|test)/\d+/image\.png"
)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=None, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _content_hash(items) -> str:
    """SHA-256 over (relative path, SHA-256 of content) pairs in path order."""
    return _digest_hash((rel, hashlib.sha256(data).hexdigest()) for rel, data in items)


def _digest_hash(items) -> str:
    """:func:`_content_hash` from (relative path, SHA-256 hex digest of content) pairs."""
    h = hashlib.sha256()
    for rel, digest in sorted(items):
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()


def _read_manifest(paths: ToyPaths, name: str = "out") -> dict | None:
    """The world's manifest; None if there is no ``manifest.json``.

    A ``manifest.json`` that is not a toy world's (unreadable, or written by something else) is
    not ours to replace: ValueError naming it.
    """
    path = paths.manifest
    if not path.exists():
        return None
    problem = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("generator") != GENERATOR:
            problem = "it was not written by visprune.data.toyworld"
    except (OSError, ValueError) as err:
        problem = f"it cannot be read: {v.error_line(err)}"
    if problem is None:
        return data
    raise ValueError(
        f"{name}: {path} is not a toy-world manifest ({problem}); the generator writes only into a folder whose files it "
        "can account for. Move it away if it is yours, or delete it if it is a damaged toy-world manifest, and rerun"
    )


def _files_on_disk(paths: ToyPaths) -> set[str]:
    """Relative paths of the files under the world's folder, ``manifest.json`` aside."""
    root = paths.root
    if not root.is_dir():
        return set()
    found = set()
    for folder, _, names in os.walk(root):
        base = Path(folder)
        for name in names:
            rel = (base / name).relative_to(root).as_posix()
            if rel != MANIFEST:
                found.add(rel)
    return found


def _owned_files(manifest: dict | None, on_disk: set[str]) -> set[str]:
    """The files the generator wrote: those the manifest lists (older manifests, which list
    none: the files at the world's paths). None without a manifest."""
    if manifest is None:
        return set()
    listed = manifest.get("files")
    if isinstance(listed, list) and all(isinstance(rel, str) for rel in listed):
        return set(listed)
    return {rel for rel in on_disk if _LAYOUT.fullmatch(rel)}


def _intact(root: Path, manifest: dict, owned: set[str]) -> bool:
    """Whether the generator's files are all there and hash to the manifest's content hash."""
    digests = []
    for rel in owned:
        try:
            digests.append((rel, hashlib.sha256((root / rel).read_bytes()).hexdigest()))
        except OSError:
            return False
    return len(digests) == manifest.get("n_files", -1) and _digest_hash(digests) == manifest.get("content_sha256")


def _sync_world(paths: ToyPaths, files: dict[str, bytes], links: dict[str, str], manifest: dict,
                owned: set[str]) -> None:
    """Make the folder hold the rendered world, touching only the generator's files.

    First every path is checked and nothing is written if one is the user's (see
    :func:`generate_toyworld`). Then the manifest is marked incomplete, the missing and
    different files are written (each atomically), files of the earlier world that the new one
    lacks are removed, and the complete manifest is written last.
    """
    root = paths.root
    wanted = {**files, **{rel: files[src] for rel, src in links.items()}}
    to_write: list[str] = []
    conflicts: list[str] = []
    parent_ok: dict[Path, bool] = {}
    for rel in sorted(wanted):
        target = root / rel
        blocker = _file_in_the_way(root, target.parent, parent_ok)
        if blocker is not None:
            conflicts.append(f"{blocker} is a file where the toy world needs a folder")
        elif target.is_dir():
            conflicts.append(f"{target} is a folder where the toy world writes a file")
        elif not target.exists():
            to_write.append(rel)
        elif not _same_content(target, wanted[rel]):
            if rel in owned:
                to_write.append(rel)  # the generator's own file, damaged or from other parameters
            else:
                conflicts.append(f"{target} is not listed in the toy world's manifest and differs from the file "
                                 "the generator writes there")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ValueError(f"out: refusing to overwrite what the toy world did not write: {conflicts[0]}{more}; "
                         "move it away and rerun")
    to_remove = sorted(rel for rel in owned - set(wanted) if (root / rel).is_file())
    final = _json_bytes(manifest)
    if not to_write and not to_remove and paths.manifest.is_file() and _same_content(paths.manifest, final):
        return

    pending = dict(manifest, complete=False, files=sorted(set(manifest["files"]) | owned))
    made: set[Path] = set()
    _write_file(paths.manifest, _json_bytes(pending), made)  # from here on the world is "incomplete"
    for rel in to_write:
        if rel not in links:
            _write_file(root / rel, wanted[rel], made)
    for rel in to_write:
        if rel in links:
            _link_file(root / links[rel], root / rel, wanted[rel], made)
    for rel in to_remove:
        _remove_file(root, root / rel)
    _write_file(paths.manifest, final, made)


def _file_in_the_way(root: Path, folder: Path, cache: dict[Path, bool]) -> Path | None:
    """The first existing non-folder among ``folder`` and its parents below ``root``, if any."""
    chain = []
    probe = folder
    while probe != root and root in probe.parents:
        chain.append(probe)
        probe = probe.parent
    for d in reversed(chain):  # from the root down
        if d not in cache:
            cache[d] = not (d.exists() and not d.is_dir())
        if not cache[d]:
            return d
    return None


def _same_content(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


_INCOMPLETE = "the toy world is left marked incomplete: fix this and rerun to complete it"


def _write_error(target: Path, err: OSError, hint: str = _INCOMPLETE) -> OSError:
    return OSError(err.errno, f"cannot write {target} ({err.strerror or err}); {hint}")


def write_atomically(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through a temporary file and a rename.

    The file is either the old one or the complete new one, never half written; an ``OSError``
    (a full disk) names the path and leaves no temporary file behind.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    _write_file(path, raw, set(), hint=f"{path} was left as it was")
    return path


def _write_file(target: Path, data: bytes, made: set[Path], hint: str = _INCOMPLETE) -> None:
    """Write ``data`` to ``target`` atomically: a temporary file beside it, then a rename."""
    tmp = _temporary(target)
    try:
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(target, err, hint) from err
        raise


def _link_file(src: Path, target: Path, data: bytes, made: set[Path]) -> None:
    """``target`` as a hard link to ``src`` (a copy of ``data`` where links are not possible)."""
    tmp = _temporary(target)
    try:
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        try:
            os.link(src, tmp)
        except OSError:
            tmp.unlink(missing_ok=True)
            tmp.write_bytes(data)
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(target, err) from err
        raise


def _remove_file(root: Path, path: Path) -> None:
    """Remove one of the generator's files, then its folders if that left them empty."""
    path.unlink(missing_ok=True)
    folder = path.parent
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            break
        folder = folder.parent
