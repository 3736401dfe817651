"""The toy LLaVA's training data, drawn from the toy world's train split (DESIGN.md section 3).

Two kinds of data, one per training stage:

- **Vision pretraining** (stands in for CLIP's): per image, which categories are present
  (multi-label targets for the CLS token) and, per patch of the 12 x 12 grid, which object
  covers it, its colour and whether an object's box centre falls in it (:class:`PatchTargets`).
- **Instruction tuning**: LLaVA-1.5 conversations about the same images, in the exact prompt
  format of :mod:`visprune.instrument.prompts`:

  - captions: ``CAPTION_PROMPT`` answered by one of the image's reference captions;
  - POPE-style yes/no questions ("Is there a {name} in the image?" + POPE's short-answer cue)
    with positives from the image's annotations and negatives drawn, per question, with one of
    POPE's three rules (random, popular, adversarial), answered "Yes" or "No";
  - ScienceQA-format multiple choice, made by the toy world's own problem generator
    (:func:`visprune.toyworld.toy_problems`) on train images, answered by the option letter.

  As in LLaVA's instruction data, one image's yes/no and multiple-choice questions form one
  multi-turn conversation (``"{system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2}
  ASSISTANT: {a2}</s>..."``), so the image's tokens are paid once per several answers; its
  first turn is exactly the single-turn format the model is evaluated with. Captions are
  single-turn conversations of their own (a caption would give the other answers away).

Everything is drawn from a seeded ``numpy`` generator, a fresh draw per epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from visprune.instrument import prompts
from visprune import toyworld
from visprune.datasets import coco, pope
from visprune.datasets.samples import load_rgb

POPE_RULES = pope.STRATEGIES
YES, NO = "Yes", "No"  # LLaVA-1.5's short answers start with a capital letter
COLOUR_NAMES = tuple(toyworld.COLOURS)
PATCH_COVER = 0.3  # a patch belongs to an object when the object's box covers this much of it


@dataclasses.dataclass
class WorldSplit:
    """One split of a toy world (or any COCO-format image set), ready for training.

    - ``image_ids`` (n,), ``paths`` (n,): COCO image ids and image files, in file order;
    - ``present`` (n, C) bool: category c is annotated in image i (``categories`` order);
    - ``objects[i]``: image i's annotations as ``(category index, colour index or -1, x, y, w, h)``,
      in annotation (drawing) order, so later objects cover earlier ones;
    - ``captions[i]``: image i's reference captions;
    - ``index``: the parsed COCO instances (for the problem generator).
    """

    image_ids: list[int]
    paths: list[Path]
    categories: list[str]
    present: np.ndarray
    objects: list[list[tuple[int, int, float, float, float, float]]]
    captions: list[list[str]]
    index: coco.CocoIndex

    def __len__(self) -> int:
        return len(self.image_ids)


def load_split(world: str | Path, split: str) -> WorldSplit:
    """Read ``split`` of the toy world at ``world`` (COCO instances and captions, image paths)."""
    paths = toyworld.toy_paths(world)
    index = coco.load_instances(paths.instances(split))
    captions = coco.load_captions(paths.captions(split))
    categories = list(index.categories.values())
    column = {cid: j for j, cid in enumerate(index.categories)}
    colour_index = {name: j for j, name in enumerate(COLOUR_NAMES)}
    image_ids = list(index.images)
    present = np.zeros((len(image_ids), len(categories)), dtype=bool)
    objects = []
    for i, image_id in enumerate(image_ids):
        rows = []
        for ann in index.annotations[image_id]:
            c = column[ann["category_id"]]
            present[i, c] = True
            x, y, w, h = (float(v) for v in ann["bbox"])
            rows.append((c, colour_index.get(ann.get("color"), -1), x, y, w, h))
        objects.append(rows)
    image_dir = paths.images(split)
    files = [image_dir / index.images[i]["file_name"] for i in image_ids]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"image not found: {missing[0]} ({len(missing)} of {len(files)} images of split {split!r} are missing). "
            f"Regenerate the toy world: python -m visprune.toyworld --out {paths.root}"
        )
    return WorldSplit(
        image_ids=image_ids,
        paths=files,
        categories=categories,
        present=present,
        objects=objects,
        captions=[captions.get(i, []) for i in image_ids],
        index=index,
    )


# --------------------------------------------------------------------------- vision targets


@dataclasses.dataclass
class PatchTargets:
    """Per-patch targets of the vision pretraining, for n images on a g x g grid.

    - ``category`` (n, g*g) long: index of the top-most object covering the patch, or C
      (background);
    - ``colour`` (n, g*g) long: that object's colour index, or -1 (background / unknown);
    - ``centre`` (n, g*g) float: 1 where some object's box centre falls in the patch.
    """

    category: np.ndarray
    colour: np.ndarray
    centre: np.ndarray


def patch_targets(split: WorldSplit, grid: int, image_size: float = toyworld.IMAGE_SIZE) -> PatchTargets:
    """Rasterise every image's boxes onto the ``grid`` x ``grid`` patch grid (row-major order)."""
    n, n_cat = split.present.shape
    cell = image_size / grid
    category = np.full((n, grid, grid), n_cat, dtype=np.int64)
    colour = np.full((n, grid, grid), -1, dtype=np.int64)
    centre = np.zeros((n, grid, grid), dtype=np.float32)
    edges = np.arange(grid + 1) * cell  # (g+1,) patch borders in pixels
    for i, rows in enumerate(split.objects):
        for c, col, x, y, w, h in rows:  # drawing order: later objects overwrite earlier ones
            cover_x = np.clip(np.minimum(edges[1:], x + w) - np.maximum(edges[:-1], x), 0, None) / cell  # (g,)
            cover_y = np.clip(np.minimum(edges[1:], y + h) - np.maximum(edges[:-1], y), 0, None) / cell  # (g,)
            covered = np.outer(cover_y, cover_x) >= PATCH_COVER  # (g rows, g cols)
            category[i][covered] = c
            colour[i][covered] = col
            r = min(int((y + h / 2) / cell), grid - 1)
            q = min(int((x + w / 2) / cell), grid - 1)
            centre[i, r, q] = 1.0
    return PatchTargets(category.reshape(n, -1), colour.reshape(n, -1), centre.reshape(n, -1))


def load_images(files: Sequence[Path]) -> list:
    """The images as RGB PIL images (fully decoded)."""
    return [load_rgb(f) for f in files]


# --------------------------------------------------------------------------- conversations


@dataclasses.dataclass
class Conversation:
    """One training conversation about one image: ``turns`` of (question, answer) text.

    ``image`` indexes the split's images (and their precomputed visual features).
    """

    image: int
    turns: list[tuple[str, str]]
    kind: str  # "caption" or "qa"


def pope_turn(name: str, answer: str) -> tuple[str, str]:
    """A POPE question about category ``name`` in LLaVA-1.5's evaluation format."""
    return prompts.pope_question(pope.question_text(name)), answer


class QuestionSampler:
    """Draws yes/no questions about a split's images with POPE's negative rules.

    Category frequency and co-occurrence are counted over the split itself
    (:func:`visprune.datasets.pope.category_statistics`), as POPE counts them over its annotation
    file. Unlike the POPE files, any present category may be asked (not only the first three),
    and the popular and adversarial rules pick among the ``top`` best-scoring absent
    categories rather than always the best one, so that training sees some variety.
    """

    def __init__(self, split: WorldSplit, top: int = 3):
        names, freq, co = pope.category_statistics(split.index)
        if names != split.categories:
            raise ValueError("split: category order of the instances file changed while loading")
        self.split = split
        self.freq = freq.astype(float)
        self.co = co.astype(float)
        self.top = top

    def negative(self, rng: np.random.Generator, image: int, positive: int, rule: str, used: set[int]) -> int | None:
        """One absent category for ``image`` by ``rule``, not in ``used``; None if none is left."""
        absent = [c for c in range(len(self.split.categories)) if not self.split.present[image, c] and c not in used]
        if not absent:
            return None
        if rule == "random":
            return absent[int(rng.integers(len(absent)))]
        score = self.freq if rule == "popular" else self.co[positive]
        ranked = sorted(absent, key=lambda c: (-score[c], c))[: self.top]
        return ranked[int(rng.integers(len(ranked)))]

    def questions(self, rng: np.random.Generator, image: int, n_pairs: int) -> list[tuple[str, str]]:
        """Up to ``n_pairs`` (yes, no) question pairs about ``image``, in random order."""
        names = self.split.categories
        present = np.flatnonzero(self.split.present[image])
        if len(present) == 0:
            return []
        positives = rng.permutation(present)[:n_pairs]
        used: set[int] = set()
        turns = []
        for p in positives:
            turns.append(pope_turn(names[int(p)], YES))
            neg = self.negative(rng, image, int(p), POPE_RULES[int(rng.integers(3))], used)
            if neg is not None:
                used.add(neg)
                turns.append(pope_turn(names[neg], NO))
        order = rng.permutation(len(turns))
        return [turns[int(i)] for i in order]


def scienceqa_turns(split: WorldSplit, seed: int, split_name: str = "train") -> dict[int, list[tuple[str, str]]]:
    """Multiple-choice turns per image, from the toy world's ScienceQA problem generator.

    Returns image position -> [(ScienceQA-IMG prompt, answer letter), ...] (one problem per
    image, as the toy world's own ``problems.json`` has; a new ``seed`` gives new problems).
    """
    problems, _, _ = toyworld.toy_problems({split_name: split.index}, seed=seed, per_image=1, text_only_fraction=0.0)
    position = {image_id: i for i, image_id in enumerate(split.image_ids)}
    turns: dict[int, list[tuple[str, str]]] = {}
    for prob in problems.values():
        image_id = split.index.image_id_of(prob["toy_meta"]["file_name"])
        text = prompts.scienceqa_question(prob["question"], prob["choices"], prob["hint"])
        letter = prompts.OPTION_LETTERS[prob["answer"]]
        turns.setdefault(position[image_id], []).append((text, letter))
    return turns


def epoch_conversations(
    split: WorldSplit,
    sampler: QuestionSampler,
    rng: np.random.Generator,
    sqa_seed: int,
    yes_no_pairs: int,
    sqa_per_image: int,
    caption_fraction: float = 1.0,
) -> list[Conversation]:
    """One epoch of conversations: per image, one caption and one multi-turn Q&A conversation.

    With ``caption_fraction`` below 1, each image gets its caption conversation with that
    probability (one draw per image; at 1 no draw is made, so the stream is unchanged).
    """
    if not 0.0 <= caption_fraction <= 1.0:
        raise ValueError(f"caption_fraction must be in [0, 1], got {caption_fraction!r}")
    sqa = [scienceqa_turns(split, sqa_seed * 1000 + k) for k in range(sqa_per_image)]
    out: list[Conversation] = []
    for i in range(len(split)):
        if split.captions[i] and (caption_fraction >= 1.0 or rng.random() < caption_fraction):
            caption = split.captions[i][int(rng.integers(len(split.captions[i])))]
            out.append(Conversation(i, [(prompts.CAPTION_PROMPT, caption)], "caption"))
        turns = sampler.questions(rng, i, yes_no_pairs)
        for table in sqa:
            turns += table.get(i, [])
        if turns:
            order = rng.permutation(len(turns))
            out.append(Conversation(i, [turns[int(j)] for j in order], "qa"))
    return out


def corpus_texts(split: WorldSplit, problems_file_texts: Sequence[str] = ()) -> list[str]:
    """Text the tokenizer is trained on: every prompt and answer the model will meet."""
    from visprune.toymodel.build import PROMPT_FORMAT  # the toy model's format, declared with the checkpoint

    texts = [PROMPT_FORMAT.system, prompts.CAPTION_PROMPT, prompts.POPE_SUFFIX, prompts.SCIENCEQA_SUFFIX]
    for name in split.categories:
        texts.append(pope.question_text(name))
    for caps in split.captions:
        texts.extend(caps)
    for turns in scienceqa_turns(split, seed=0).values():
        texts.extend(q for q, _ in turns)
    texts.extend(problems_file_texts)
    texts.extend([YES, NO])
    # later turns of a multi-turn conversation start with "USER:" right after EOS
    texts.extend(f"USER: {pope.question_text(name)} ASSISTANT: {YES}" for name in split.categories)
    return texts
