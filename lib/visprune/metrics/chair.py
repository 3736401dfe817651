"""Hallucination in captions: the COCO synonym table, the object parser and CHAIR (ALGORITHMS.md,
"CHAIR")."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from visprune import _paths


# ---------------------------------------------------------------------------------------------
# CHAIR (ALGORITHMS.md, "Metrics": CHAIR; Rohrbach et al., EMNLP 2018)
# ---------------------------------------------------------------------------------------------

#: Where the shipped COCO synonym list lives, relative to the repository root.

#: Words that qualify a following object and are not an object themselves: "baby elephant" is an
#: elephant, not a person; "passenger train" is a train (Rohrbach et al.'s rules).
QUALIFIER_WORDS = frozenset({"baby", "adult", "passenger"})

#: Phrases whose words must not be read as objects ("train tracks" do not show a train).
NON_OBJECT_PHRASES = ("train track",)

# Irregular plurals of words that occur in object names; regular ones are handled by rules.
_IRREGULAR_PLURALS = {
    "people": "person",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "oxen": "ox",
    "teeth": "tooth",
    "feet": "foot",
    "dice": "die",
}


def _normalise_phrase(text: str) -> str:
    return " ".join(text.lower().split())


def _default_synonyms_path() -> Path:
    """The shipped COCO list (package data: ``visprune/assets/chair/coco_synonyms.txt``)."""
    return _paths.asset(_paths.COCO_SYNONYMS)


def _add_synonym(table: dict[str, str], word: str, canonical: str, where: str) -> None:
    known = table.get(word)
    if known is not None and known != canonical:
        raise ValueError(f"{where}: '{word}' is listed under both '{known}' and '{canonical}'; keep it under one category")
    table[word] = canonical


def _read_synonym_file(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            names = [_normalise_phrase(part) for part in line.split(",")]
            names = [name for name in names if name]
            canonical = names[0]
            for name in names:
                _add_synonym(table, name, canonical, f"synonyms file {path}, line {line_no}")
    if not table:
        raise ValueError(f"synonyms file {path}: holds no categories; expected lines 'canonical, synonym, ...'")
    return table


def load_synonyms(source: str | os.PathLike | Mapping | None = None) -> dict[str, str]:
    """The CHAIR object vocabulary as ``{word or phrase: canonical category}`` (lower case).

    ``source``:

    - ``None``: the shipped COCO list ``lib/visprune/assets/chair/coco_synonyms.txt`` (80 categories after
      Rohrbach et al.'s ``synonyms.txt``), found by walking up from this module to the
      repository root.
    - a path to a file in the same format: one category per line, ``canonical, synonym, ...``;
      blank lines and lines starting with ``#`` are skipped.
    - a mapping ``canonical -> iterable of synonyms``, or a mapping ``word -> canonical`` (string
      values; e.g. the output of this function).

    Every canonical name maps to itself. A word listed under two categories is a ValueError.

    >>> table = load_synonyms({"dog": ["puppy", "hound"], "hot dog": []})
    >>> table["puppy"], table["hot dog"]
    ('dog', 'hot dog')
    """
    if source is None:
        return _read_synonym_file(_default_synonyms_path())
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"synonyms file not found: {path}. Pass a file with lines 'canonical, synonym, ...', a mapping, or None for COCO"
            )
        return _read_synonym_file(path)
    if not isinstance(source, Mapping):
        raise ValueError(
            f"synonyms: expected None, a file path or a mapping, got {type(source).__name__}"
        )
    if not source:
        raise ValueError("synonyms: the mapping is empty; give at least one category")
    table: dict[str, str] = {}
    for key, value in source.items():
        if not isinstance(key, str) or not _normalise_phrase(key):
            raise ValueError(f"synonyms: keys must be non-empty strings, got {key!r}")
        key_n = _normalise_phrase(key)
        if isinstance(value, str):  # word -> canonical
            canonical = _normalise_phrase(value)
            if not canonical:
                raise ValueError(f"synonyms: the category of {key!r} is an empty string")
            _add_synonym(table, canonical, canonical, "synonyms")
            _add_synonym(table, key_n, canonical, "synonyms")
        elif isinstance(value, Iterable):  # canonical -> synonyms
            _add_synonym(table, key_n, key_n, "synonyms")
            for word in value:
                if not isinstance(word, str) or not _normalise_phrase(word):
                    raise ValueError(f"synonyms: synonyms of {key!r} must be non-empty strings, got {word!r}")
                _add_synonym(table, _normalise_phrase(word), key_n, "synonyms")
        else:
            raise ValueError(
                f"synonyms: the value for {key!r} must be a category name or a list of synonyms, got {type(value).__name__}"
            )
    return table


class _ObjectFinder:
    """Finds the object mentions of a caption for one synonym table (see ``caption_objects``)."""

    def __init__(self, table: Mapping[str, str]):
        self.categories = frozenset(table.values())
        # (token, token, ...) -> canonical, or None for a phrase that blocks its words
        self.phrases: dict[tuple[str, ...], str | None] = {tuple(k.split()): c for k, c in table.items()}
        if "toilet" in self.categories:
            self.phrases.setdefault(("toilet", "seat"), "toilet")  # a toilet seat is not a chair
        for phrase in NON_OBJECT_PHRASES:
            self.phrases[tuple(phrase.split())] = None
        self.max_len = max(len(k) for k in self.phrases)
        self.words = frozenset(w for k in self.phrases for w in k)  # every word of every phrase

    def singular(self, word: str) -> str:
        """The first singular candidate of ``word`` that occurs in the vocabulary, else ``word``.

        Candidates: the word itself, an irregular plural, then suffix rules (-men -> -man,
        -ies -> -y/-ie, -ves -> -f/-fe/-ve, -oes -> -o, sibilant + -es -> drop -es, -s -> drop -s).
        Only vocabulary words count, so "skies" never becomes "ski" and "glass" stays "glass".
        """
        if word in self.words:
            return word
        candidates = []
        if word in _IRREGULAR_PLURALS:
            candidates.append(_IRREGULAR_PLURALS[word])
        if word.endswith("men"):
            candidates.append(word[:-3] + "man")
        if word.endswith("ies"):
            candidates += [word[:-3] + "y", word[:-1]]
        elif word.endswith("ves"):
            candidates += [word[:-3] + "f", word[:-3] + "fe", word[:-1]]
        elif word.endswith("oes"):
            candidates += [word[:-2], word[:-1]]
        elif re.search(r"(s|x|z|ch|sh)es$", word):
            candidates += [word[:-2], word[:-1]]
        elif word.endswith("s") and not word.endswith("ss"):
            candidates.append(word[:-1])
        for candidate in candidates:
            if candidate in self.words:
                return candidate
        return word

    def tokens(self, caption: str) -> list[str]:
        text = caption.lower().replace("\u2019", "'")
        text = re.sub(r"'s\b", " ", text)  # possessive: "dog's" -> "dog"
        return [self.singular(w) for w in re.findall(r"[a-z]+", text)]

    def mentions(self, caption: str) -> list[tuple[tuple[str, ...], str]]:
        """(matched phrase, canonical) of every object mention, in order of appearance."""
        tokens = self.tokens(caption)
        found: list[tuple[int, tuple[str, ...], str]] = []  # (start token, phrase, canonical)
        i = 0
        while i < len(tokens):
            for length in range(min(self.max_len, len(tokens) - i), 0, -1):  # longest match first
                phrase = tuple(tokens[i : i + length])
                if phrase in self.phrases:
                    if self.phrases[phrase] is not None:
                        found.append((i, phrase, self.phrases[phrase]))
                    i += length
                    break
            else:
                i += 1
        # A qualifier directly followed by another object only qualifies it ("baby elephant").
        starts = {start for start, _, _ in found}
        found = [
            (start, phrase, canonical)
            for start, phrase, canonical in found
            if not (len(phrase) == 1 and phrase[0] in QUALIFIER_WORDS and start + 1 in starts)
        ]
        # Rohrbach et al.: when a caption mentions a toilet, "seat" is the toilet's, not a chair.
        if any(canonical == "toilet" for _, _, canonical in found):
            found = [f for f in found if f[1] != ("seat",)]
        return [(phrase, canonical) for _, phrase, canonical in found]


def object_parser(synonyms: Any = None) -> _ObjectFinder:
    """A reusable caption parser for a synonym table (anything ``load_synonyms`` accepts).

    Building the parser indexes the table's phrases once; pass the result as ``synonyms`` to
    :func:`caption_objects` (or :func:`chair`) when parsing many captions with one table.
    """
    return synonyms if isinstance(synonyms, _ObjectFinder) else _ObjectFinder(load_synonyms(synonyms))


def caption_objects(caption: str, synonyms: Any = None) -> list[str]:
    """Canonical categories of the objects a caption mentions, in order, repeats kept.

    The CHAIR parser (ALGORITHMS.md, "Metrics"; Rohrbach et al., EMNLP 2018): lower-case, drop
    possessive 's, split into letter runs; singularise each word against the vocabulary
    ("dogs" -> "dog", "buses" -> "bus", "knives" -> "knife", "mice" -> "mouse", "people" ->
    "person"); match the longest phrase of the synonym table at each position ("hot dog",
    "traffic light", "stove top oven"), then map it to its category. Rules as in Rohrbach et
    al.'s code: a qualifier ("baby", "adult", "passenger") directly before an object is not a
    person; "train track" is not a train; "seat" is not a chair when a toilet is mentioned.

    ``synonyms``: anything ``load_synonyms`` accepts (``None`` = the COCO list).

    >>> caption_objects("Two dogs and a man eat hot dogs near the traffic lights.")
    ['dog', 'person', 'hot dog', 'traffic light']
    """
    if not isinstance(caption, str):
        raise ValueError(f"caption: must be a string, got {type(caption).__name__}")
    return [canonical for _, canonical in object_parser(synonyms).mentions(caption)]


def _caption_length(caption: str) -> int:
    """Number of words: runs of letters/digits, with inner apostrophes or hyphens ("dog's", "t-shirt")."""
    return len(re.findall(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*", caption))


def chair(
    captions: Mapping[Any, str],
    ground_truth: Mapping[Any, Iterable[str]],
    synonyms: Any = None,
    count_repeats: bool = True,
) -> dict[str, Any]:
    """CHAIR hallucination scores of generated captions (ALGORITHMS.md, "Metrics").

    ``captions``: mapping id -> caption. ``ground_truth``: mapping id -> category names present in
    that image (its annotated instance categories plus the objects named in its reference
    captions; synonyms are mapped to their category). Every caption id must be in
    ``ground_truth``. ``synonyms``: as in ``load_synonyms`` (None = COCO).

    Mentions come from ``caption_objects``. With ``count_repeats=True`` (the default, as in
    Rohrbach et al.'s code) every mention counts, so "a dog next to another dog" is two mentions;
    with ``False`` each distinct category counts once per caption.

        CHAIR_I = hallucinated mentions / all mentions            (0.0 if there are no mentions)
        CHAIR_S = captions with >= 1 hallucinated mention / captions
        recall  = sum_i |mentioned_i & GT_i| / sum_i |GT_i|       (0.0 if no ground truth at all)
        length  = mean number of words per caption

    Returns a dict with ``chair_s``, ``chair_i``, ``recall``, ``length``, the counts
    ``n_captions``, ``n_mentions``, ``n_hallucinated`` (mentions), ``n_hallucinated_captions``,
    ``n_ground_truth``, and ``per_caption``: a DataFrame with one row per caption (``id``,
    ``n_words``, ``mentioned``, ``hallucinated``, ``ground_truth`` (sorted), ``chair_s``,
    ``chair_i``, ``recall``).

    >>> out = chair({1: "A cat on a couch with a dog."}, {1: ["cat", "couch"]})
    >>> out["chair_i"], out["chair_s"], out["recall"]
    (0.3333333333333333, 1.0, 1.0)
    """
    if not isinstance(captions, Mapping):
        raise ValueError(f"captions: must be a mapping id -> caption string, got {type(captions).__name__}")
    if not isinstance(ground_truth, Mapping):
        raise ValueError(f"ground_truth: must be a mapping id -> category names, got {type(ground_truth).__name__}")
    if len(captions) == 0:
        raise ValueError("captions: is empty; need at least one caption")
    missing = [key for key in captions if key not in ground_truth]
    if missing:
        raise ValueError(
            f"ground_truth: has no entry for {len(missing)} caption id(s), e.g. {missing[:3]!r}; "
            "give the ground-truth objects of every captioned image"
        )
    finder = object_parser(synonyms)
    table = {" ".join(k): c for k, c in finder.phrases.items() if c is not None}

    rows = []
    for key, caption in captions.items():
        if not isinstance(caption, str):
            raise ValueError(f"captions: the caption of id {key!r} must be a string, got {type(caption).__name__}")
        names = ground_truth[key]
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise ValueError(f"ground_truth: the entry of id {key!r} must be a list of category names, got {names!r}")
        truth = set()
        for name in names:
            name_n = _normalise_phrase(name) if isinstance(name, str) else None
            if name_n not in table:
                raise ValueError(
                    f"ground_truth: id {key!r} lists {name!r}, which is not a category or synonym of the synonym table; "
                    "use the table's category names or pass synonyms=..."
                )
            truth.add(table[name_n])
        mentioned = [canonical for _, canonical in finder.mentions(caption)]
        if not count_repeats:
            mentioned = list(dict.fromkeys(mentioned))
        hallucinated = [m for m in mentioned if m not in truth]
        hits = set(mentioned) & truth
        rows.append(
            {
                "id": key,
                "n_words": _caption_length(caption),
                "mentioned": mentioned,
                "hallucinated": hallucinated,
                "ground_truth": sorted(truth),
                "chair_s": int(len(hallucinated) > 0),
                "chair_i": len(hallucinated) / len(mentioned) if mentioned else 0.0,
                "recall": len(hits) / len(truth) if truth else 0.0,
                "_hits": len(hits),
            }
        )
    per_caption = pd.DataFrame(rows)
    n_mentions = int(sum(len(r["mentioned"]) for r in rows))
    n_hallucinated = int(sum(len(r["hallucinated"]) for r in rows))
    n_ground_truth = int(sum(len(r["ground_truth"]) for r in rows))
    n_hits = int(per_caption["_hits"].sum())
    return {
        "chair_s": float(per_caption["chair_s"].mean()),
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "recall": n_hits / n_ground_truth if n_ground_truth else 0.0,
        "length": float(per_caption["n_words"].mean()),
        "n_captions": len(rows),
        "n_mentions": n_mentions,
        "n_hallucinated": n_hallucinated,
        "n_hallucinated_captions": int(per_caption["chair_s"].sum()),
        "n_ground_truth": n_ground_truth,
        "per_caption": per_caption.drop(columns="_hits"),
    }
