"""Train the toy LLaVA: LLaVA's recipe in miniature (DESIGN.md section 3).

1. **The vision tower learns to see** (standing in for CLIP pretraining). The CLIP tower is
   trained from scratch on the train images plus 8,000 extra scenes rendered by the same
   generator with a different seed (CLIP's data is separate from LLaVA's; a ViT trained from
   scratch on the 1,400 train images alone recognised under half of the object patches):

   - multi-label classification of the categories present, from the CLS token at the last
     layer (the pooled output) and, with half the weight, from the CLS token at the feature
     layer (-2); so the CLS token gathers the objects, and its attention over the patches is a
     saliency signal;
   - per patch of the feature layer: which object covers it (or background), its colour, and
     whether an object's box centre lies in it; so the patch tokens the language model will
     read carry what is where.

   Horizontal flips (targets flipped too) are the only augmentation.

2. **Projector and language model learn from conversations** (LLaVA's instruction tuning).
   The vision tower is frozen, as LLaVA freezes CLIP, so its feature-layer outputs are
   computed once per image. Projector and language model (from scratch) are trained with the
   next-token loss on the answer tokens only (a weighted mean over answer tokens), on
   captions, POPE-style yes/no questions and ScienceQA-format problems about the train images
   (:mod:`visprune.toymodel.corpus`), newly drawn every epoch: per image 3 yes/no pairs and 4
   problems in one conversation, and a caption conversation for half of the images.

   **Multiple-choice answers weigh 3** in that mean (``choice_weight``; every other answer
   token weighs 1, as in LLaVA's plain mean). A letter answer is two tokens (letter, EOS)
   against a caption's dozen or more, so with equal weights the letters got a few percent of
   the gradient, and the model learned to ground the options better than it learned to name
   the right one (see below). Measured with the shipped vision tower, seed 0, language stage
   only, 10 epochs, 4 problems per image, captions for half of the images, 1 thread: weight 1
   reached validation ScienceQA 41.5% after 6 epochs, weight 3 reached 49% after 6 and 70%
   after 10 (test 71.8% by the card's command), POPE unchanged (90/92/90% validation). The
   previous recipe (weight 1, 2 problems per image, a caption for every image, 8 epochs)
   ended at 45% validation and 45.0% test. The shipped model (this recipe, whole pipeline,
   2 threads): validation 68.5%, test 72.2%. The recipe is near the edge of the target: the
   same language stage with seed 1 (shipped vision tower) ended at validation 62.5% and test
   62.5%, still rising at the last epoch (55.5% the epoch before).

   A training aid, discarded afterwards like the vision heads: two linear *probes* read the
   language model's hidden state after decoder layer 2 and are trained with it. One reads the
   last token of a yes/no question's object name ("Is there a traffic cone") and predicts
   whether that object is in the image; the other reads the last token of each option line of
   a multiple-choice problem and predicts whether it is the right option. Without them the
   answer's loss must discover two attention hops at once (answer -> object word -> image
   patches). Measured with the previous recipe, probes off (the same seed and data):
   validation POPE stayed at 50% on all three splits for all 8 epochs (1,400 steps), while
   with them it left 50% at epoch 3 and reached 90/93/86%. The probes train the first hop
   directly. At test time the model answers with its own next-token distribution only.

   Tried for ScienceQA and not adopted (previous recipe, same vision tower and seed, language
   stage only): a linear probe fitted afterwards on the previous model's layer-2 states at the
   option ends picks the right option for 67% of the test problems (presence 90%, counting
   75%, colour 54%, position 43%), while that model answered 45%, which pointed at the
   answer's hop to the right option. Supervising one head of the third decoder layer to attend
   from the answer position to the correct option (and to a yes/no question's object word),
   plus a letter probe at each option and a probe of count, colour and centre at every object
   a problem names, with 3 problems per image: validation POPE left 50% only at epoch 5 and
   ended 80/91/84%, ScienceQA 38.5%. Fine-tuning with the attention supervision alone for 3
   epochs: validation ScienceQA 45.5% (45% before). Adding, at the end of each conversation,
   two problems whose ``Context:`` line states the answer (weight 3 recipe with 3 + 2
   problems): POPE still at 50% after 2 epochs (stopped after 3, not conclusive).

   After every epoch the validation split's POPE files and ScienceQA problems are scored with
   the first-token rule of DESIGN.md section 5.

The run is seeded and deterministic on CPU for a fixed thread count (2 by default).

Length: over 400 lines because the two stages share one schedule, one set of frozen features
and one validation loop, and this docstring keeps the measurements behind the recipe's
choices beside the code they justify (README.md points here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visprune.instrument import prompts
from visprune import toyworld
from visprune.datasets import pope, read_pope, read_scienceqa
from visprune.toyworld.annotations import coco_captions, coco_instances
from visprune.toymodel import build, corpus


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Training lengths and rates. ``FULL_SCHEDULE`` trains the shipped model."""

    vision_epochs: int = 7
    vision_batch: int = 32
    vision_lr: float = 1e-3
    pretrain_images: int = 8000  # extra scenes rendered for vision pretraining (world seed + 1)
    lm_epochs: int = 10
    lm_batch: int = 16
    lm_lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    yes_no_pairs: int = 3  # yes/no question pairs per image per epoch
    sqa_per_image: int = 4  # multiple-choice problems per image per epoch
    caption_fraction: float = 0.5  # share of images with a caption conversation per epoch
    choice_weight: float = 3.0  # loss weight of multiple-choice answer tokens (others: 1)
    val_pope_per_rule: int = 300  # validation POPE questions scored per rule (None: all)
    val_every: int | None = None  # also validate every this many language steps
    probe_weight: float = 1.0  # auxiliary probes on object words and options (0: off)
    probe_layer: int = 2  # ... read from the hidden states after this decoder layer
    max_lm_steps: int | None = None  # stop early (small test runs)
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("vision_batch", "lm_batch", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"schedule: {name} must be at least 1")
        for name in ("vision_epochs", "lm_epochs", "pretrain_images", "yes_no_pairs", "sqa_per_image"):
            if getattr(self, name) < 0:
                raise ValueError(f"schedule: {name} must not be negative")
        if not 0.0 <= self.caption_fraction <= 1.0:
            raise ValueError(f"schedule: caption_fraction must be in [0, 1], got {self.caption_fraction!r}")
        if not self.choice_weight > 0:
            raise ValueError(f"schedule: choice_weight must be positive, got {self.choice_weight!r}")


FULL_SCHEDULE = Schedule()
SMALL_SCHEDULE = Schedule(
    vision_epochs=2, vision_batch=8, pretrain_images=0, lm_epochs=3, lm_batch=4, lm_lr=3e-3, warmup_steps=2,
    yes_no_pairs=1, sqa_per_image=1, val_pope_per_rule=6, threads=1,
)

#: Parameters of the toy world a small test run generates when none exists.
SMALL_WORLD = {"n_images": 40, "pope_images": None, "sqa_per_image": 1}

Log = Callable[[str], None]

# An option line of a ScienceQA-format prompt: "A. text".
OPTION_LINE = re.compile(r"^([A-J])\. ")


# --------------------------------------------------------------------------- images


def pixel_values(processor, images: Sequence, batch: int = 256) -> torch.Tensor:
    """Images -> (n, 3, H, W) float32 pixel values through the checkpoint's image processor."""
    chunks = []
    for start in range(0, len(images), batch):
        chunk = processor.image_processor(images=list(images[start : start + batch]), return_tensors="pt")
        chunks.append(chunk["pixel_values"].float())
    return torch.cat(chunks)


@torch.no_grad()
def feature_layer_outputs(model, pixels: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """(n, N, d_vision) patch features at ``config.vision_feature_layer``, CLS dropped (LLaVA's input)."""
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    tower.eval()
    out = []
    for start in range(0, len(pixels), batch):
        hidden = tower(pixels[start : start + batch], output_hidden_states=True).hidden_states
        out.append(hidden[layer][:, 1:].float())
    return torch.cat(out)


def rendered_pretraining_split(world_seed: int, n_images: int, folder: Path) -> corpus.WorldSplit:
    """``n_images`` extra scenes drawn by the toy world's generator with seed ``world_seed + 1``.

    They are written to ``folder`` (a scratch directory) in the toy world's layout, so they load
    like a split; they never coincide with the world's own images, which use ``world_seed``.
    """
    scenes = []
    image_dir = folder / "images" / "pretrain"
    image_dir.mkdir(parents=True, exist_ok=True)
    for image_id in range(1, n_images + 1):
        scene, png = toyworld.render_scene(world_seed + 1, image_id, "pretrain")
        (image_dir / scene.file_name).write_bytes(png)
        scenes.append(scene)
    (folder / "annotations").mkdir(exist_ok=True)
    (folder / "annotations" / "instances_pretrain.json").write_text(json.dumps(coco_instances(scenes, "pretrain")))
    (folder / "annotations" / "captions_pretrain.json").write_text(json.dumps(coco_captions(scenes, "pretrain")))
    return corpus.load_split(folder, "pretrain")


# --------------------------------------------------------------------------- stage 1: vision


class VisionHeads(nn.Module):
    """Pretraining heads on the CLIP tower (discarded afterwards; LLaVA keeps only the tower).

    - ``cls_last``: categories present, from the pooled CLS of the last layer;
    - ``cls_feature``: categories present, from the CLS of the feature layer;
    - ``patch``: per feature-layer patch, C + 1 category logits (C = background), then one
      logit per colour, then one centre logit.
    """

    def __init__(self, dim: int, n_categories: int, n_colours: int):
        super().__init__()
        self.n_categories = n_categories
        self.n_colours = n_colours
        self.cls_last = nn.Linear(dim, n_categories)
        self.cls_feature = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_categories))
        self.patch = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_categories + 1 + n_colours + 1))

    def forward(self, pooled: torch.Tensor, feature_layer: torch.Tensor):
        # pooled (B, d); feature_layer (B, 1 + N, d)
        patch = self.patch(feature_layer[:, 1:])  # (B, N, C + 1 + colours + 1)
        c = self.n_categories + 1
        return (
            self.cls_last(pooled),  # (B, C)
            self.cls_feature(feature_layer[:, 0]),  # (B, C)
            patch[..., :c],  # (B, N, C + 1)
            patch[..., c : c + self.n_colours],  # (B, N, colours)
            patch[..., -1],  # (B, N)
        )


def _flip(pixels: torch.Tensor, grid_targets: list[torch.Tensor], grid: int):
    """Mirror images left-right, and the per-patch targets (B, N) with them."""
    flipped = [t.reshape(t.shape[0], grid, grid).flip(-1).reshape(t.shape[0], -1) for t in grid_targets]
    return pixels.flip(-1), flipped


def vision_losses(heads_out, present, category, colour, centre) -> dict[str, torch.Tensor]:
    """The pretraining losses (see :class:`VisionHeads`)."""
    cls_last, cls_feature, patch_cat, patch_colour, patch_centre = heads_out
    return {
        "cls_last": F.binary_cross_entropy_with_logits(cls_last, present),
        "cls_feature": 0.5 * F.binary_cross_entropy_with_logits(cls_feature, present),
        "patch_category": F.cross_entropy(patch_cat.flatten(0, 1), category.flatten()),
        "patch_colour": 0.5 * F.cross_entropy(patch_colour.flatten(0, 1), colour.flatten(), ignore_index=-1)
        if bool((colour >= 0).any()) else patch_colour.sum() * 0.0,
        "patch_centre": 0.5 * F.binary_cross_entropy_with_logits(
            patch_centre, centre, pos_weight=torch.tensor(8.0)
        ),
    }


def _cosine_lr(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def vision_scores(model, heads: VisionHeads, pixels, present, targets: corpus.PatchTargets) -> dict[str, float]:
    """Validation: F1 of the last-layer CLS classifier, patch category accuracy on object patches."""
    tower = model.model.vision_tower
    tower.eval()
    heads.eval()
    tp = fp = fn = 0
    hit = total = 0
    for start in range(0, len(pixels), 128):
        out = tower(pixels[start : start + 128], output_hidden_states=True)
        cls_last, _, patch_cat, _, _ = heads(out.pooler_output, out.hidden_states[model.config.vision_feature_layer])
        pred = cls_last > 0
        truth = torch.as_tensor(present[start : start + 128])
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
        cat = torch.as_tensor(targets.category[start : start + 128])
        on_object = cat < heads.n_categories
        hit += int(((patch_cat.argmax(-1) == cat) & on_object).sum())
        total += int(on_object.sum())
    return {"cls_f1": 2 * tp / max(1, 2 * tp + fp + fn), "patch_object_accuracy": hit / max(1, total)}


def pretrain_vision(
    model,
    train_pixels: torch.Tensor,
    train: corpus.WorldSplit,
    val_pixels: torch.Tensor,
    val: corpus.WorldSplit,
    size: build.ToyLlavaSize,
    schedule: Schedule,
    seed: int,
    log: Log,
) -> list[dict]:
    """Stage 1: train the vision tower in place; returns the per-epoch history."""
    grid = size.grid
    targets = corpus.patch_targets(train, grid)
    val_targets = corpus.patch_targets(val, grid)
    tower = model.model.vision_tower
    torch.manual_seed(seed)
    heads = VisionHeads(size.vision_hidden, len(train.categories), len(corpus.COLOUR_NAMES))
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=schedule.vision_lr, weight_decay=0.05)
    n = len(train_pixels)
    steps_per_epoch = math.ceil(n / schedule.vision_batch)
    total = steps_per_epoch * schedule.vision_epochs
    rng = np.random.default_rng([seed, 1])
    present = torch.as_tensor(train.present, dtype=torch.float32)
    category = torch.as_tensor(targets.category)
    colour = torch.as_tensor(targets.colour)
    centre = torch.as_tensor(targets.centre)
    history = []
    step = 0
    for epoch in range(schedule.vision_epochs):
        tower.train()
        heads.train()
        order = torch.as_tensor(rng.permutation(n))
        flips = torch.as_tensor(rng.random(n) < 0.5)
        sums: dict[str, float] = {}
        start_time = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * schedule.vision_batch : (b + 1) * schedule.vision_batch]
            pix = train_pixels[idx]
            cat, col, cen = category[idx], colour[idx], centre[idx]
            flip = flips[idx]
            if bool(flip.any()):
                fp, (fc, fcol, fcen) = _flip(pix[flip], [cat[flip], col[flip], cen[flip]], grid)
                pix, cat, col, cen = pix.clone(), cat.clone(), col.clone(), cen.clone()
                pix[flip], cat[flip], col[flip], cen[flip] = fp, fc, fcol, fcen
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(step, total, min(100, total // 10 + 1), schedule.vision_lr)
            out = tower(pix, output_hidden_states=True)
            losses = vision_losses(
                heads(out.pooler_output, out.hidden_states[model.config.vision_feature_layer]),
                present[idx], cat, col, cen,
            )
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        record = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - start_time, 1)}
        record.update({k: round(v / steps_per_epoch, 4) for k, v in sums.items()})
        record["loss"] = round(sum(v for k, v in record.items() if k in sums), 4)
        record.update({f"val_{k}": round(v, 4) for k, v in vision_scores(model, heads, val_pixels, val.present, val_targets).items()})
        history.append(record)
        log(f"vision epoch {epoch + 1}/{schedule.vision_epochs}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"))
    for p in tower.parameters():
        p.requires_grad_(False)
    tower.eval()
    return history


# --------------------------------------------------------------------------- stage 2: language


class ConversationEncoder:
    """Token ids and answer masks for :class:`~visprune.toymodel.corpus.Conversation` s.

    The first turn is ``build.PROMPT_FORMAT.conversation(question)`` (the toy model's format)
    tokenised with BOS (for this byte-level tokenizer the same ids as LLaVA's chunk-wise
    ``tokenizer_image_token``, ``PrunedLlava.prompt_token_ids``), the image token
    expanded to the model's N visual tokens (as ``LlavaProcessor`` does); each answer is
    ``" " + answer`` followed by EOS; later turns are ``"USER: {question} ASSISTANT:"``
    (LLaVA-1.5's multi-turn format, whose turns are separated by EOS).
    """

    def __init__(self, tokenizer, image_token_id: int, num_patches: int, choice_weight: float = 1.0):
        self.tokenizer = tokenizer
        self.choice_weight = choice_weight
        self.image_token_id = image_token_id
        self.num_patches = num_patches
        self.eos = tokenizer.eos_token_id
        self._cache: dict[tuple[str, str], list[int]] = {}
        self._probe_cache: dict[tuple[str, str, str], list[tuple[int, float, int]]] = {}

    def _ids(self, kind: str, text: str) -> list[int]:
        key = (kind, text)
        if key not in self._cache:
            if kind == "first":
                ids = self._expand(self.tokenizer(build.PROMPT_FORMAT.conversation(text)).input_ids)
            elif kind == "next":
                ids = self.tokenizer(f"USER: {text} ASSISTANT:", add_special_tokens=False).input_ids
            else:
                ids = self.tokenizer(f" {text}", add_special_tokens=False).input_ids + [self.eos]
            self._cache[key] = ids
        return self._cache[key]

    def _expand(self, ids: list[int]) -> list[int]:
        expanded: list[int] = []
        for t in ids:
            expanded.extend([t] * self.num_patches if t == self.image_token_id else [t])
        return expanded

    def _end_position(self, head: str, first: bool) -> int:
        """Index, within a turn's prompt ids, of the last token of ``head`` (a prefix of the question)."""
        if first:
            text = build.PROMPT_FORMAT.conversation(head).rsplit(" ASSISTANT:", 1)[0]
            return len(self._expand(self.tokenizer(text).input_ids)) - 1
        return len(self.tokenizer(f"USER: {head}", add_special_tokens=False).input_ids) - 1

    def probe_positions(self, question: str, answer: str, first: bool) -> list[tuple[int, float, int]]:
        """Targets of the auxiliary probes in one turn: ``(position, label, kind)``.

        - kind 0, a POPE question ("Is there a {name} in the image?..."): the last token of the
          name; label 1 if the answer is "Yes".
        - kind 1, a ScienceQA-format question: the last token of each option line; label 1 for
          the correct option.
        Positions index the turn's prompt ids; other questions have no probes.
        """
        key = (str(first), question, answer)
        if key not in self._probe_cache:
            found: list[tuple[int, float, int]] = []
            span = pope.object_span(question)
            if span:
                found.append((self._end_position(question[: span[1]], first), float(answer == corpus.YES), 0))
            elif question.endswith(prompts.SCIENCEQA_SUFFIX):
                lines = question.split("\n")
                for k, line in enumerate(lines):
                    option = OPTION_LINE.match(line)
                    if option:
                        head = "\n".join(lines[: k + 1])
                        found.append((self._end_position(head, first), float(option.group(1) == answer), 1))
            self._probe_cache[key] = found
        return self._probe_cache[key]

    def prompt(self, question: str) -> list[int]:
        """Single-turn prompt ids (what evaluation feeds the model)."""
        return self._ids("first", question)

    def encode(self, conv: corpus.Conversation) -> tuple[list[int], list[float], list[tuple[int, float, int]]]:
        """``(ids, weights, probes)``: weight 1 on each answer token (EOS included), 0 elsewhere;
        probes = ``(position in ids, label, kind)`` targets of the auxiliary probes
        (:meth:`probe_positions`)."""
        ids: list[int] = []
        weights: list[float] = []
        probes: list[tuple[int, float, int]] = []
        for t, (question, answer) in enumerate(conv.turns):
            p = self._ids("first" if t == 0 else "next", question)
            a = self._ids("answer", answer)
            probes += [(len(ids) + pos, label, kind) for pos, label, kind in self.probe_positions(question, answer, t == 0)]
            ids += p + a
            w = self.choice_weight if question.endswith(prompts.SCIENCEQA_SUFFIX) else 1.0
            weights += [0.0] * len(p) + [w] * len(a)
        return ids, weights, probes


def lm_hidden(
    model, ids: torch.Tensor, attention: torch.Tensor, features: torch.Tensor, layer: int | None = None
):
    """Language-model hidden states (B, T, D) with projected visual features at the image tokens.

    Same computation as ``LlavaForConditionalGeneration.forward`` (embed, scatter the projected
    features into the image-token positions in order, run the decoder) from precomputed
    feature-layer outputs ``features`` (B, N, d_vision). With ``layer``, returns
    ``(last hidden states, hidden states after decoder layer ``layer``)``.
    """
    decoder = model.model.language_model
    embeds = decoder.embed_tokens(ids)  # (B, T, D)
    visual = model.model.multi_modal_projector(features)  # (B, N, D)
    mask = (ids == model.config.image_token_id).unsqueeze(-1)  # (B, T, 1)
    embeds = embeds.masked_scatter(mask, visual.to(embeds.dtype))
    out = decoder(inputs_embeds=embeds, attention_mask=attention, output_hidden_states=layer is not None)
    if layer is None:
        return out.last_hidden_state
    return out.last_hidden_state, out.hidden_states[layer]


def _pad(rows: Sequence[Sequence], value) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows])


def make_batches(lengths: Sequence[int], batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle, sort by length within windows of 8 batches (less padding), shuffle the batches."""
    order = rng.permutation(len(lengths))
    batches = []
    window = batch * 8
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda i: lengths[i])
        batches += [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
    return [batches[int(i)] for i in rng.permutation(len(batches))]


def answer_token_ids(tokenizer, answers: Sequence[str]) -> list[list[int]]:
    """Per answer, the single-token ids of its surface variants after ``"ASSISTANT:"`` (section 5)."""
    prefix = tokenizer("ASSISTANT:", add_special_tokens=False).input_ids
    out = []
    for answer in answers:
        ids = set()
        for form in prompts.answer_variants(answer):
            full = tokenizer("ASSISTANT:" + form, add_special_tokens=False).input_ids
            if full[: len(prefix)] == prefix and len(full) == len(prefix) + 1:
                ids.add(full[-1])
        out.append(sorted(ids))
    return out


@torch.no_grad()
def first_token_accuracy(
    model, encoder: ConversationEncoder, questions: Sequence[str], answer_sets: Sequence[Sequence[str]],
    labels: Sequence[int], features: torch.Tensor, batch: int = 32,
) -> float:
    """Accuracy of the argmax of the first-token distribution over each answer set (section 5)."""
    model.eval()
    tokenizer = encoder.tokenizer
    cache: dict[tuple, list[list[int]]] = {}
    correct = 0
    for start in range(0, len(questions), batch):
        rows = [encoder.prompt(q) for q in questions[start : start + batch]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])  # left padding
        attention = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
        hidden = lm_hidden(model, ids, attention, features[start : start + batch])
        probs = model.lm_head(hidden[:, -1]).float().softmax(-1)  # (B, V)
        for j, answers in enumerate(answer_sets[start : start + batch]):
            key = tuple(answers)
            if key not in cache:
                cache[key] = answer_token_ids(tokenizer, answers)
            mass = [float(probs[j, ids_].sum()) for ids_ in cache[key]]
            correct += int(int(np.argmax(mass)) == labels[start + j])
    return correct / max(1, len(questions))


@dataclasses.dataclass
class ValidationSet:
    """Validation questions with the visual features of their images."""

    name: str
    questions: list[str]
    answer_sets: list[tuple[str, ...]]
    labels: list[int]
    features: torch.Tensor  # (n questions, N, d_vision): features of each question's image


def validation_sets(model, processor, world: Path, schedule: Schedule) -> list[ValidationSet]:
    """The val split's POPE files (first ``val_pope_per_rule`` questions each) and ScienceQA-IMG."""
    paths = toyworld.toy_paths(world)
    sets = []
    cache: dict[Path, torch.Tensor] = {}

    def feats(samples) -> torch.Tensor:
        files = [s.image_path for s in samples]
        todo = sorted({f for f in files if f not in cache})
        if todo:
            computed = feature_layer_outputs(model, pixel_values(processor, corpus.load_images(todo)))
            cache.update(zip(todo, computed))
        return torch.stack([cache[f] for f in files])

    for rule in corpus.POPE_RULES:
        file = paths.pope(rule, split="val")
        if not file.is_file():
            continue
        samples = read_pope(file, paths.images("val"))[: schedule.val_pope_per_rule]
        sets.append(ValidationSet(f"pope_{rule}", [s.prompt for s in samples], [s.answers for s in samples],
                                  [s.label for s in samples], feats(samples)))
    sqa_dir = paths.scienceqa
    if (sqa_dir / "problems.json").is_file():
        samples = read_scienceqa(sqa_dir, "val")
        if samples:
            sets.append(ValidationSet("scienceqa", [s.prompt for s in samples], [s.answers for s in samples],
                                      [s.label for s in samples], feats(samples)))
    return sets


def train_language(
    model,
    tokenizer,
    train: corpus.WorldSplit,
    train_features: torch.Tensor,
    val_sets: list[ValidationSet],
    size: build.ToyLlavaSize,
    schedule: Schedule,
    seed: int,
    log: Log,
) -> list[dict]:
    """Stage 2: train projector and language model on conversations; returns the history."""
    encoder = ConversationEncoder(tokenizer, model.config.image_token_id, size.num_patches, schedule.choice_weight)
    sampler = corpus.QuestionSampler(train)
    torch.manual_seed(seed + 2)
    rng = np.random.default_rng([seed, 2])
    # The probes: a training aid (discarded afterwards, like the vision heads). One asks the hidden
    # state of a POPE question's object word, a few layers up, whether the object is in the image;
    # the other asks each option of a multiple-choice question whether it is the right one. They
    # give the language model a one-step route to learning to look, instead of waiting for two
    # attention hops (word -> image, answer -> word) to appear together by chance.
    probe = nn.Linear(size.text_hidden, 2)
    params = list(model.model.multi_modal_projector.parameters()) + list(model.model.language_model.parameters())
    params += list(model.lm_head.parameters()) + list(probe.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=schedule.lm_lr, betas=(0.9, 0.98),
    )
    # one epoch = a caption (for caption_fraction of the images) + one Q&A conversation per image
    est_steps = math.ceil((1 + schedule.caption_fraction) * len(train) / schedule.lm_batch) * schedule.lm_epochs
    total = min(est_steps, schedule.max_lm_steps or est_steps)
    def validate() -> dict[str, float]:
        return {
            f"val_{vs.name}_accuracy": round(
                first_token_accuracy(model, encoder, vs.questions, vs.answer_sets, vs.labels, vs.features), 4
            )
            for vs in val_sets
        }

    history = []
    step = 0
    for epoch in range(schedule.lm_epochs):
        model.model.multi_modal_projector.train()
        model.model.language_model.train()
        convs = corpus.epoch_conversations(
            train, sampler, rng, sqa_seed=seed * 100 + epoch,
            yes_no_pairs=schedule.yes_no_pairs, sqa_per_image=schedule.sqa_per_image,
            caption_fraction=schedule.caption_fraction,
        )
        encoded = [encoder.encode(c) for c in convs]
        batches = make_batches([len(e[0]) for e in encoded], schedule.lm_batch, rng)
        loss_sum = answers = probe_sum = 0.0
        probe_steps = 0
        start_time = time.perf_counter()
        for batch in batches:
            if schedule.max_lm_steps is not None and step >= schedule.max_lm_steps:
                break
            ids = _pad([encoded[i][0] for i in batch], tokenizer.pad_token_id)  # (B, T) right padding
            weights = _pad([encoded[i][1] for i in batch], 0.0).float()  # (B, T)
            attention = _pad([[1] * len(encoded[i][0]) for i in batch], 0)  # (B, T)
            features = train_features[[convs[i].image for i in batch]]  # (B, N, d_vision)
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(step, total, schedule.warmup_steps, schedule.lm_lr)
            hidden, middle = lm_hidden(model, ids, attention, features, layer=schedule.probe_layer)  # (B, T, D) each
            target_weights = weights[:, 1:]  # token t+1 is predicted at position t
            where = target_weights > 0
            logits = model.lm_head(hidden[:, :-1][where])  # (n answer tokens, V)
            token_loss = F.cross_entropy(logits.float(), ids[:, 1:][where], reduction="none")
            n_answers = float(target_weights.sum())  # answer tokens in the batch
            loss = (token_loss * target_weights[where]).sum() / n_answers  # mean over answer tokens
            probes = [(row, pos, label, kind) for row, i in enumerate(batch) for pos, label, kind in encoded[i][2]]
            if schedule.probe_weight > 0 and probes:
                rows, positions, labels, kinds = (torch.tensor(v) for v in zip(*probes))
                probe_logits = probe(middle[rows, positions]).gather(1, kinds[:, None]).squeeze(1)  # (n probes,)
                probe_loss = F.binary_cross_entropy_with_logits(probe_logits, labels.float())
                loss = loss + schedule.probe_weight * probe_loss
                probe_sum += float(probe_loss.detach())
                probe_steps += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * n_answers
            answers += n_answers
            if schedule.val_every and step % schedule.val_every == 0:
                running = {"train_loss": round(loss_sum / max(1.0, answers), 4),
                           "probe_loss": round(probe_sum / max(1, probe_steps), 4)}
                log(f"  step {step}: " + ", ".join(f"{k}={v}" for k, v in {**running, **validate()}.items()))
                model.model.multi_modal_projector.train()
                model.model.language_model.train()
        record = {
            "epoch": epoch + 1, "steps": step, "seconds": round(time.perf_counter() - start_time, 1),
            "train_loss": round(loss_sum / max(1.0, answers), 4),
            "probe_loss": round(probe_sum / max(1, probe_steps), 4),
        }
        record.update(validate())
        history.append(record)
        log(f"language epoch {epoch + 1}/{schedule.lm_epochs}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"))
        if schedule.max_lm_steps is not None and step >= schedule.max_lm_steps:
            break
    model.eval()
    return history


# --------------------------------------------------------------------------- the whole recipe


def ensure_world(world: Path, seed: int, world_params: dict | None, log: Log) -> dict:
    """The toy world's manifest; generates the world first if ``world`` has none."""
    manifest_file = toyworld.toy_paths(world).manifest
    if manifest_file.is_file():
        return json.loads(manifest_file.read_text())
    log(f"no toy world at {world}: generating it (seed {seed})")
    return toyworld.generate_toyworld(world, seed=seed, **(world_params or {}))


def train_toy_llava(
    world: str | Path,
    out: str | Path,
    seed: int = 0,
    size: build.ToyLlavaSize = build.FULL,
    schedule: Schedule = FULL_SCHEDULE,
    world_params: dict | None = None,
    scratch: str | Path | None = None,
    log: Log = print,
) -> dict:
    """Train the toy LLaVA on the toy world at ``world`` and save it to ``out``; return the log.

    ``world_params`` are passed to :func:`visprune.toyworld.generate_toyworld` when ``world`` has
    no toy world yet. ``scratch`` is a folder for extra pretraining scenes (default: ``out``'s
    sibling ``.pretrain-scenes``, removed afterwards). Writes the checkpoint
    (``save_pretrained`` layout) and ``training_log.json`` to ``out``.
    """
    import shutil

    world, out = Path(world), Path(out)
    started = time.perf_counter()
    cpu_started = time.process_time()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(schedule.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        manifest = ensure_world(world, seed, world_params, log)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        train = corpus.load_split(world, "train")
        val = corpus.load_split(world, "val")
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"world: {world} needs images in both its train and val splits")
        tokenizer = build.train_tokenizer(corpus.corpus_texts(train), size.vocab_size)
        processor = build.build_processor(tokenizer, size)
        config = build.build_config(tokenizer, size)
        model = build.build_model(config, seed)
        train_pixels = pixel_values(processor, corpus.load_images(train.paths))
        val_pixels = pixel_values(processor, corpus.load_images(val.paths))
        timings["prepare_s"] = time.perf_counter() - t

        t = time.perf_counter()
        vision_split, vision_pixels = train, train_pixels
        scratch_dir = Path(scratch) if scratch is not None else out.parent / f".{out.name}-pretrain-scenes"
        if schedule.pretrain_images:
            extra = rendered_pretraining_split(int(manifest["params"]["seed"]), schedule.pretrain_images, scratch_dir)
            vision_split = _concat_splits(train, extra)
            vision_pixels = torch.cat([train_pixels, pixel_values(processor, corpus.load_images(extra.paths))])
            if scratch is None:
                shutil.rmtree(scratch_dir, ignore_errors=True)
        vision_history = pretrain_vision(model, vision_pixels, vision_split, val_pixels, val, size, schedule, seed, log)
        timings["vision_s"] = time.perf_counter() - t

        t = time.perf_counter()
        train_features = feature_layer_outputs(model, train_pixels)
        val_sets = validation_sets(model, processor, world, schedule)
        timings["features_s"] = time.perf_counter() - t

        t = time.perf_counter()
        language_history = train_language(model, tokenizer, train, train_features, val_sets, size, schedule, seed, log)
        timings["language_s"] = time.perf_counter() - t

        build.save_pretrained(model, processor, out)
        timings["total_s"] = time.perf_counter() - started
        timings["cpu_total_s"] = time.process_time() - cpu_started  # all threads; about 2x wall when idle
        record = {
            "seed": seed,
            "world": str(world),
            "world_params": manifest.get("params"),
            "size": dataclasses.asdict(size),
            "schedule": dataclasses.asdict(schedule),
            "threads": schedule.threads,
            "torch": torch.__version__,
            "n_train_images": len(train),
            "n_pretrain_images": len(vision_split),
            "vocab_size": len(tokenizer),
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "vision": vision_history,
            "language": language_history,
        }
        (out / "training_log.json").write_text(json.dumps(record, indent=1) + "\n")
        log(f"saved {out} ({build.directory_size_bytes(out) / 1e6:.1f} MB) in {timings['total_s'] / 60:.1f} min")
        return record
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(False)


def _concat_splits(a: corpus.WorldSplit, b: corpus.WorldSplit) -> corpus.WorldSplit:
    if a.categories != b.categories:
        raise ValueError("pretraining scenes and the world disagree on the category list")
    return corpus.WorldSplit(
        image_ids=a.image_ids + b.image_ids,
        paths=a.paths + b.paths,
        categories=a.categories,
        present=np.concatenate([a.present, b.present]),
        objects=a.objects + b.objects,
        captions=a.captions + b.captions,
        index=a.index,
    )
