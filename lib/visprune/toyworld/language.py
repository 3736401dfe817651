"""The toy world's English: articles, plurals, number words, phrases and reference captions.

DESIGN.md section 3 ("Text"): :data:`N_CAPTIONS` reference captions per image from templates
that mention a subset of the objects, truthfully, with synonyms, plurals, counts, colours and
positions (:func:`reference_captions`). The word helpers also serve the ScienceQA-style
problems (:mod:`visprune.toyworld.problems`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from visprune.toyworld.categories import CATEGORY_BY_NAME, SCENE_PHRASES
from visprune.toyworld.sizes import IMAGE_SIZE

if TYPE_CHECKING:
    from visprune.toyworld.scenes import ToyObject

N_CAPTIONS = 5

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
    """ "zero" to "ten" in words, larger numbers in digits."""
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


def reference_captions(rng: np.random.Generator, scene: str, objects: Sequence["ToyObject"]) -> list[str]:
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

