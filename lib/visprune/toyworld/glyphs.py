"""Glyphs of the toy world: one drawing function per object category, and the colour names.

Each ``draw_*`` function draws one object into its box ``(x0, y0, x1, y1)`` (integer pixel
corners, inclusive) on a ``PIL.ImageDraw`` canvas, filled with the given RGB colour. The shapes
are distinct at the toy world's scale (objects 12 to 46 px on a 96 px image) and carry a few
details (handles, wheels, windows, stems) so that a small vision tower has something to learn.
Used by :mod:`visprune.toyworld.categories` (DESIGN.md section 3).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import ImageDraw

# --------------------------------------------------------------------------- colours

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (245, 135, 25),
    "yellow": (245, 215, 40),
    "green": (45, 155, 55),
    "blue": (40, 85, 215),
    "purple": (135, 55, 175),
    "pink": (245, 125, 185),
    "brown": (125, 75, 35),
    "white": (246, 246, 246),
    "black": (28, 28, 28),
    "gray": (135, 135, 140),
}


def _darker(rgb: Sequence[int], f: float = 0.45) -> tuple[int, int, int]:
    return tuple(int(c * f) for c in rgb)  # type: ignore[return-value]


def _outline(rgb: Sequence[int]) -> tuple[int, int, int]:
    """A contrasting outline: dark for light fills, light gray for very dark ones."""
    return (170, 170, 170) if sum(rgb) < 150 else _darker(rgb)


# --------------------------------------------------------------------------- glyphs
# Each glyph draws one object into its box (x0, y0, x1, y1), integer pixel corners inclusive.

Box = tuple[int, int, int, int]
SKY = (150, 200, 245)


def draw_cup(d: ImageDraw.ImageDraw, b: Box, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    bx1 = x0 + int(0.74 * w)
    d.ellipse((x0 + int(0.55 * w), y0 + int(0.3 * h), x1, y0 + int(0.75 * h)), outline=_outline(c), width=max(2, w // 8))
    d.polygon([(x0, y0 + int(0.15 * h)), (bx1, y0 + int(0.15 * h)), (bx1 - w // 10, y1), (x0 + w // 10, y1)], fill=c, outline=_outline(c))
    d.line((x0, y0 + int(0.15 * h), bx1, y0 + int(0.15 * h)), fill=_outline(c), width=2)


def draw_plate(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.ellipse(b, fill=c, outline=_outline(c))
    d.ellipse((x0 + w // 5, y0 + h // 5, x1 - w // 5, y1 - h // 5), outline=_outline(c))


def draw_apple(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) // 2
    d.ellipse((x0, y0 + int(0.2 * h), x1, y1), fill=c, outline=_outline(c))
    d.line((cx, y0 + int(0.28 * h), cx, y0), fill=COLOURS["brown"], width=max(1, w // 10))
    leaf = COLOURS["green"] if c != COLOURS["green"] else (120, 200, 60)
    d.ellipse((cx + 1, y0, cx + w // 3, y0 + int(0.18 * h)), fill=leaf)


def draw_banana(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, y0
    outer = [(cx + (w / 2) * math.cos(t), cy + h * math.sin(t)) for t in np.linspace(0.15, math.pi - 0.15, 14)]
    inner = [(cx + (w / 2) * 0.82 * math.cos(t), cy + h * 0.5 * math.sin(t)) for t in np.linspace(math.pi - 0.15, 0.15, 14)]
    d.polygon(outer + inner, fill=c, outline=_outline(c))
    for p in (outer[0], outer[-1]):
        d.ellipse((p[0] - 1, p[1] - 1, p[0] + 1, p[1] + 1), fill=COLOURS["brown"])


def draw_bottle(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0, y0 + int(0.38 * h), x1, y1), fill=c, outline=_outline(c))
    d.polygon([(x0, y0 + int(0.38 * h)), (x0 + int(0.33 * w), y0 + int(0.22 * h)), (x1 - int(0.33 * w), y0 + int(0.22 * h)), (x1, y0 + int(0.38 * h))], fill=c, outline=_outline(c))
    d.rectangle((x0 + int(0.33 * w), y0 + int(0.06 * h), x1 - int(0.33 * w), y0 + int(0.22 * h)), fill=c, outline=_outline(c))
    d.rectangle((x0 + int(0.3 * w), y0, x1 - int(0.3 * w), y0 + int(0.07 * h)), fill=_darker(c, 0.3))
    d.rectangle((x0 + 1, y0 + int(0.55 * h), x1 - 1, y0 + int(0.75 * h)), fill=(235, 235, 225))


def draw_egg(d, b, c) -> None:
    x0, y0, x1, y1 = b
    h = y1 - y0
    d.ellipse((x0, y0, x1, y1), fill=c, outline=_outline(c))
    d.ellipse((x0 + 1, y0 + int(0.35 * h), x1 - 1, y1), fill=c)


def draw_clock(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w = x1 - x0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    d.ellipse(b, fill=c, outline=COLOURS["black"], width=max(2, w // 9))
    for t in (0, math.pi / 2, math.pi, 3 * math.pi / 2):
        px, py = cx + 0.33 * w * math.cos(t), cy + 0.33 * w * math.sin(t)
        d.point((px, py), fill=COLOURS["black"])
    d.line((cx, cy, cx, cy - 0.32 * w), fill=COLOURS["black"], width=max(1, w // 14))
    d.line((cx, cy, cx + 0.22 * w, cy + 0.05 * w), fill=COLOURS["black"], width=max(1, w // 14))


def draw_tree(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.rectangle((cx - w * 0.12, y0 + 0.75 * h, cx + w * 0.12, y1), fill=COLOURS["brown"])
    d.polygon([(cx, y0), (x1, y0 + 0.5 * h), (x0, y0 + 0.5 * h)], fill=c, outline=_outline(c))
    d.polygon([(cx, y0 + 0.25 * h), (x1, y0 + 0.8 * h), (x0, y0 + 0.8 * h)], fill=c, outline=_outline(c))


def draw_flower(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, y0 + 0.35 * h
    d.line((cx, cy, cx, y1), fill=COLOURS["green"], width=max(1, w // 10))
    r = 0.2 * w
    for k in range(5):
        t = 2 * math.pi * k / 5 - math.pi / 2
        px, py = cx + 0.28 * w * math.cos(t), cy + 0.28 * w * math.sin(t)
        d.ellipse((px - r, py - r, px + r, py + r), fill=c, outline=_outline(c))
    centre = COLOURS["yellow"] if c != COLOURS["yellow"] else COLOURS["brown"]
    d.ellipse((cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8), fill=centre)


def draw_kite(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, y0 + 0.35 * h
    by = y0 + 0.75 * h
    d.polygon([(cx, y0), (x1, cy), (cx, by), (x0, cy)], fill=c, outline=_outline(c))
    d.line((cx, y0, cx, by), fill=_outline(c))
    d.line((x0, cy, x1, cy), fill=_outline(c))
    pts = [(cx, by), (cx + w * 0.15, by + h * 0.08), (cx - w * 0.05, by + h * 0.16), (cx + w * 0.12, y1)]
    d.line(pts, fill=COLOURS["black"], width=1)


def draw_bird(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0, y0 + 0.2 * h), (x0 + 0.3 * w, y0 + 0.5 * h), (x0, y0 + 0.75 * h)], fill=_darker(c, 0.7))
    d.ellipse((x0 + 0.15 * w, y0 + 0.3 * h, x0 + 0.8 * w, y1), fill=c, outline=_outline(c))
    d.ellipse((x0 + 0.6 * w, y0, x1 - 0.1 * w, y0 + 0.55 * h), fill=c, outline=_outline(c))
    d.polygon([(x1 - 0.12 * w, y0 + 0.2 * h), (x1, y0 + 0.3 * h), (x1 - 0.12 * w, y0 + 0.38 * h)], fill=COLOURS["orange"])
    d.point((x1 - 0.22 * w, y0 + 0.22 * h), fill=COLOURS["black"])
    d.polygon([(x0 + 0.3 * w, y0 + 0.55 * h), (x0 + 0.55 * w, y0 + 0.1 * h), (x0 + 0.62 * w, y0 + 0.6 * h)], fill=_darker(c, 0.7))


def draw_ball(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w = x1 - x0
    d.ellipse(b, fill=c, outline=_outline(c))
    stripe = COLOURS["white"] if c != COLOURS["white"] else COLOURS["red"]
    d.arc((x0 - w * 0.3, y0 + w * 0.25, x1 - w * 0.25, y1 + w * 0.6), 280, 350, fill=stripe, width=max(2, w // 7))


def draw_umbrella(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.pieslice((x0, y0, x1, y0 + 1.0 * h), 180, 360, fill=c, outline=_outline(c))
    d.line((cx, y0 + 0.5 * h, cx, y1 - 0.1 * h), fill=COLOURS["black"], width=max(1, w // 14))
    d.arc((cx - 0.16 * w, y1 - 0.22 * h, cx, y1), 0, 180, fill=COLOURS["black"], width=max(1, w // 14))


def draw_car(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0 + 0.22 * w, y0 + 0.42 * h), (x0 + 0.32 * w, y0), (x0 + 0.68 * w, y0), (x0 + 0.8 * w, y0 + 0.42 * h)], fill=c, outline=_outline(c))
    d.polygon([(x0 + 0.3 * w, y0 + 0.4 * h), (x0 + 0.36 * w, y0 + 0.12 * h), (x0 + 0.64 * w, y0 + 0.12 * h), (x0 + 0.72 * w, y0 + 0.4 * h)], fill=SKY)
    d.rectangle((x0, y0 + 0.4 * h, x1, y0 + 0.8 * h), fill=c, outline=_outline(c))
    r = 0.18 * h
    for wx in (x0 + 0.22 * w, x0 + 0.78 * w):
        d.ellipse((wx - r, y1 - 2 * r, wx + r, y1), fill=COLOURS["black"])


def draw_bus(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0, y0, x1, y0 + 0.82 * h), fill=c, outline=_outline(c))
    n = 5
    for k in range(n):
        wx0 = x0 + 0.05 * w + k * 0.9 * w / n
        d.rectangle((wx0, y0 + 0.12 * h, wx0 + 0.12 * w, y0 + 0.42 * h), fill=SKY)
    r = 0.17 * h
    for wx in (x0 + 0.18 * w, x0 + 0.82 * w):
        d.ellipse((wx - r, y1 - 2 * r, wx + r, y1), fill=COLOURS["black"])


def draw_traffic_cone(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.polygon([(cx - 0.1 * w, y0), (cx + 0.1 * w, y0), (x1 - 0.1 * w, y0 + 0.88 * h), (x0 + 0.1 * w, y0 + 0.88 * h)], fill=c, outline=_outline(c))
    for t0, t1 in ((0.3, 0.42), (0.6, 0.72)):
        half0, half1 = 0.1 + 0.4 * t0 * 0.9, 0.1 + 0.4 * t1 * 0.9
        d.polygon([(cx - half0 * w, y0 + t0 * h), (cx + half0 * w, y0 + t0 * h), (cx + half1 * w, y0 + t1 * h), (cx - half1 * w, y0 + t1 * h)], fill=COLOURS["white"])
    d.rectangle((x0, y0 + 0.88 * h, x1, y1), fill=_darker(c, 0.5))


def draw_stop_sign(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.rectangle((cx - max(1, w * 0.06), y0 + 0.6 * h, cx + max(1, w * 0.06), y1), fill=COLOURS["gray"])
    r = 0.5 * w
    cy = y0 + r
    octagon = [(cx + r * math.cos(math.pi / 8 + k * math.pi / 4), cy + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
    d.polygon(octagon, fill=c, outline=COLOURS["white"])
    d.line((cx - 0.28 * w, cy, cx + 0.28 * w, cy), fill=COLOURS["white"], width=max(1, w // 10))


def draw_house(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0 + 0.1 * w, y0 + 0.45 * h, x1 - 0.1 * w, y1), fill=c, outline=_outline(c))
    roof = COLOURS["red"] if c != COLOURS["red"] else COLOURS["brown"]
    d.polygon([((x0 + x1) / 2, y0), (x1, y0 + 0.47 * h), (x0, y0 + 0.47 * h)], fill=roof, outline=_darker(roof))
    d.rectangle((x0 + 0.42 * w, y0 + 0.7 * h, x0 + 0.58 * w, y1), fill=COLOURS["brown"])
    d.rectangle((x0 + 0.2 * w, y0 + 0.55 * h, x0 + 0.34 * w, y0 + 0.68 * h), fill=SKY)


def draw_boat(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = x0 + 0.5 * w
    d.line((cx, y0, cx, y0 + 0.68 * h), fill=COLOURS["brown"], width=max(1, w // 16))
    d.polygon([(cx + 1, y0 + 0.05 * h), (cx + 1, y0 + 0.62 * h), (x1 - 0.08 * w, y0 + 0.62 * h)], fill=COLOURS["white"], outline=(160, 160, 160))
    d.polygon([(cx - 1, y0 + 0.15 * h), (cx - 1, y0 + 0.62 * h), (x0 + 0.15 * w, y0 + 0.62 * h)], fill=(230, 230, 220), outline=(160, 160, 160))
    d.polygon([(x0, y0 + 0.68 * h), (x1, y0 + 0.68 * h), (x1 - 0.15 * w, y1), (x0 + 0.15 * w, y1)], fill=c, outline=_outline(c))


def draw_fish(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0, y0 + 0.1 * h), (x0 + 0.32 * w, y0 + 0.5 * h), (x0, y0 + 0.9 * h)], fill=_darker(c, 0.75), outline=_outline(c))
    d.ellipse((x0 + 0.22 * w, y0, x1, y1), fill=c, outline=_outline(c))
    e = max(1, h * 0.1)
    ex, ey = x1 - 0.2 * w, y0 + 0.38 * h
    d.ellipse((ex - e, ey - e, ex + e, ey + e), fill=COLOURS["black"])


def draw_starfish(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, y0 + 0.53 * h
    pts = []
    for k in range(10):
        t = -math.pi / 2 + k * math.pi / 5
        r = (0.5 if k % 2 == 0 else 0.2) * w
        pts.append((cx + r * math.cos(t), cy + r * math.sin(t)))
    d.polygon(pts, fill=c, outline=_outline(c))


def draw_laptop(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.rectangle((x0 + 0.12 * w, y0, x1 - 0.12 * w, y0 + 0.66 * h), fill=c, outline=_outline(c))
    d.rectangle((x0 + 0.18 * w, y0 + 0.08 * h, x1 - 0.18 * w, y0 + 0.58 * h), fill=(90, 150, 220))
    d.polygon([(x0 + 0.1 * w, y0 + 0.7 * h), (x1 - 0.1 * w, y0 + 0.7 * h), (x1, y1), (x0, y1)], fill=c, outline=_outline(c))


def draw_book(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w = x1 - x0
    d.rectangle(b, fill=(240, 235, 220), outline=_outline(c))
    d.rectangle((x0, y0, x1 - 0.14 * w, y1), fill=c, outline=_outline(c))
    d.rectangle((x0, y0, x0 + 0.16 * w, y1), fill=_darker(c, 0.65))


def draw_lamp(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.line((cx, y0 + 0.45 * h, cx, y1 - 0.08 * h), fill=COLOURS["gray"], width=max(1, w // 10))
    d.ellipse((x0 + 0.15 * w, y1 - 0.14 * h, x1 - 0.15 * w, y1), fill=(70, 70, 70))
    d.polygon([(x0 + 0.28 * w, y0), (x1 - 0.28 * w, y0), (x1, y0 + 0.45 * h), (x0, y0 + 0.45 * h)], fill=c, outline=_outline(c))


def draw_pencil(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    tip = x1 - 0.2 * w
    d.rectangle((x0, y0, x0 + 0.1 * w, y1), fill=COLOURS["pink"])
    d.rectangle((x0 + 0.1 * w, y0, tip, y1), fill=c, outline=_outline(c))
    d.polygon([(tip, y0), (x1, y0 + h / 2), (tip, y1)], fill=(235, 200, 150))
    d.polygon([(x1 - 0.07 * w, y0 + 0.35 * h), (x1, y0 + h / 2), (x1 - 0.07 * w, y0 + 0.65 * h)], fill=COLOURS["black"])


def draw_teddy_bear(d, b, c) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    hr = 0.26 * w
    hy = y0 + 0.1 * h + hr
    for ex in (cx - 0.8 * hr, cx + 0.8 * hr):
        d.ellipse((ex - 0.4 * hr, y0, ex + 0.4 * hr, y0 + 0.8 * hr), fill=_darker(c, 0.8))
    d.ellipse((x0 + 0.08 * w, y0 + 0.48 * h, x1 - 0.08 * w, y1), fill=c, outline=_outline(c))
    d.ellipse((cx - hr, hy - hr, cx + hr, hy + hr), fill=c, outline=_outline(c))
    d.ellipse((cx - 0.4 * hr, hy, cx + 0.4 * hr, hy + 0.6 * hr), fill=(235, 215, 185))
    for ex in (cx - 0.4 * hr, cx + 0.4 * hr):
        d.point((ex, hy - 0.25 * hr), fill=COLOURS["black"])
