"""What the toy world holds: object categories (with synonyms and colours) and scene types.

DESIGN.md section 3. 26 categories (:data:`CATEGORIES`), each a distinct glyph
(:mod:`visprune.toyworld.glyphs`) with a typical colour, other colours now and then, and a few
synonyms (:func:`toy_synonyms_text`, written to ``lib/visprune/assets/chair/toy_synonyms.txt`` for
CHAIR by ``python -m visprune.toyworld synonyms``). Three names start with a vowel ("apple",
"egg", "umbrella": POPE's "an") and three are two words ("traffic cone", "stop sign", "teddy
bear"). Six scene types (:data:`SCENES`), each with a frequency profile over the categories,
so objects co-occur (which gives POPE's popular and adversarial negatives, and a captioner's
priors, something to work with); any category can still turn up in any scene, rarely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from visprune.toyworld import glyphs
from visprune.toyworld.glyphs import COLOURS  # colour names -> RGB

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


def toy_synonyms_text() -> str:
    """The text of ``lib/visprune/assets/chair/toy_synonyms.txt`` ("canonical, synonym, ..." lines)."""
    lines = [
        "# CHAIR object vocabulary for the visprune toy world: one category per line, \"canonical, synonym, ...\".",
        "# Written by `python -m visprune.toyworld synonyms` from visprune.toyworld.categories.CATEGORIES; do not edit by hand.",
        "# Plurals are matched by visprune.metrics, which singularises caption words before looking them up here.",
    ]
    lines += [", ".join(c.words) for c in CATEGORIES]
    return "\n".join(lines) + "\n"

