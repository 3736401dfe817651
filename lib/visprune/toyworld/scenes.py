"""One toy scene: its objects and their placement, and its image (DESIGN.md section 3).

Every image is drawn from ``(seed, image_id)`` alone, so the world is identical on every
machine. Simple to complex: one to eight objects per image, smaller when there are more, with
partial occlusion (an object may cover up to 30% of another's box, :data:`MAX_OVERLAP`),
clutter marks (dots, strokes, specks that are no category) and background texture that grow
with the object count. :func:`render_scene` returns the scene's description (with its
reference captions, :func:`visprune.toyworld.language.reference_captions`) and its PNG bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from visprune.toyworld.categories import CATEGORIES, SCENES, STRAY_WEIGHT
from visprune.toyworld.glyphs import COLOURS, SKY  # colour names -> RGB
from visprune.toyworld.language import reference_captions
from visprune.toyworld.sizes import IMAGE_SIZE

# Number of objects per image, 1..8, roughly uniform with a slight tilt towards fewer.
N_OBJECTS_WEIGHTS = np.array([14, 14, 14, 13, 12, 12, 11, 10], dtype=float)
MAX_OVERLAP = 0.30  # an object may cover at most this fraction of another's box (and vice versa)
#: Bump when drawing or sampling (scenes, captions, problems) changes: it invalidates generated
#: worlds (their manifests record it).
GENERATOR_VERSION = 1


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

    captions = tuple(reference_captions(rng, scene, objects))
    desc = ToyScene(int(image_id), split, scene, tuple(objects), n_clutter, captions)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return desc, buf.getvalue()

