"""A generated spurious-background benchmark: the stand-in for ImageNet in robustft's demo.

K classes of simple filled geometric shapes (the *objects*) are pasted onto K procedural
background textures. In the tied splits the background type goes with the class with
probability ``tie`` (a shortcut a ViT trained from scratch picks up readily); in the
evaluation splits the tie is removed or inverted, so a model that relies on the background
fails there while a model that looks at the object does not.

Two generic-layout splits play ImageNet and ImageNet-S: ``pretrain`` (tied scenes plus a
``plain_prob`` share of objects on plain backdrops; the stand-in is trained on it) and
``train`` (tied scenes only; the pool the few fine-tuning masks are drawn from).

Design choices (why they matter: ``docs/method.md`` §9; what each alternative measured:
``docs/demo_measurements.md``, "The benchmark's design"):

* Objects are big, simple, distinct shapes (no pair differs only by rotation or mirroring),
  so that a tiny ViT at 64 px learns them in a few CPU minutes. The fill colour is drawn
  per image, independent of the class, light and pale against darker backgrounds: with a
  polarity that flips from image to image, a small ViT learned no shape at all.
  ``min_contrast`` keeps the fill away from the background's shades.
* Backgrounds are K procedural textures, each with its own hue family and pattern
  (stripes, checker, dots, blobs, waves): an easy, strong cue to tie to the class.
* Each class carries its own markings inside the object (``marking_contrast``), so its
  evidence lies inside the object and not only on the outline, which at the 8-px patch
  grid is half background.
* ``pretrain`` ties the background to the class (``tie``) but shows a ``plain_prob``
  share of objects on plain backdrops: the stand-in learns the objects there and still
  follows the background when the two disagree, the premise of the method.
* ``train`` has no plain images: a plain image says nothing about ignoring a background.
* Masks are exact: each shape is an analytic region evaluated at the pixel centres in the
  shape's own (rotated, scaled, translated) coordinates, with hard edges, and the image is
  ``where(mask, foreground, background)``. Every masked pixel is foreground, every other
  pixel background.
* Everything is deterministic by seed: each image draws from
  ``np.random.default_rng([seed, split_id, label, index, stream])``, so the files do not
  depend on generation order, worker count, or on how many images other classes have.

Layout written by :func:`generate_benchmark` (``<name>`` is e.g. ``disk_00017.png``)::

    <root>/benchmark.json                  config, counts, format version
    <root>/classes.txt                     class folder names, one per line, label order
    <root>/pretrain/images/<class>/<name>  pre-training split (generic images+masks layout)
    <root>/pretrain/masks/<class>/<name>   uint8 single-channel PNG, 0 = bg, 255 = object
    <root>/pretrain/metadata.csv
    <root>/train/images|masks/<class>/...  the fine-tuning pool, same layout
    <root>/train/metadata.csv
    <root>/<split>/<class>/<name>          every split in EVAL_SPLITS, ImageFolder style
    <root>/<split>_masks/<class>/<name>
    <root>/<split>/metadata.csv            every split (always present for SWEEP_SPLITS)

``metadata.csv`` columns: ``path`` (relative to the split directory), ``mask_path``
(relative to the root), ``class``, ``label``, ``shape``, ``background`` (background id,
-1 = ``PLAIN_BACKGROUND`` for a plain backdrop or the board of ``rendition``),
``own_background`` (1 if the background is the class's own), ``area`` (requested object
area as a fraction of the image), ``x``, ``y`` (object centre as a fraction of width /
height), ``rotation`` (degrees, counter-clockwise as seen on screen), ``mask_fraction``
(actual mask pixels / image pixels, lower when the object is clipped by the border).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "EVAL_SPLITS",
    "FORMAT_VERSION",
    "GENERIC_SPLITS",
    "PLAIN_BACKGROUND",
    "SHAPE_NAMES",
    "SPLITS",
    "SWEEP_SPLITS",
    "SynthConfig",
    "background_spec",
    "marking_spec",
    "class_names",
    "generate_benchmark",
    "read_benchmark",
    "render_background",
    "render_sample",
    "render_split_item",
    "shape_mask",
]

FORMAT_VERSION = 1

#: Splits written ImageFolder style (``<root>/<split>/<class>/<name>.png``).
EVAL_SPLITS: tuple[str, ...] = (
    "in_distribution",
    "shuffled",
    "anti_correlated",
    "rendition",
    "size",
    "location",
    "rotation",
)
#: The SI-Score-style sweeps: one factor on a grid, ``metadata.csv`` holds its value.
SWEEP_SPLITS: tuple[str, ...] = ("size", "location", "rotation")
#: Splits in the generic images+masks layout (``<root>/<split>/images|masks/<class>/``):
#: ``pretrain`` (the stand-in's pre-training set) and ``train`` (the pool the fine-tuning
#: masks are chosen from).
GENERIC_SPLITS: tuple[str, ...] = ("train", "pretrain")
#: Every split, in the order they are generated; the position is the split's seed id,
#: so it must never change (append new splits at the end).
SPLITS: tuple[str, ...] = ("train",) + EVAL_SPLITS + ("pretrain",)
_SPLIT_ID = {name: i for i, name in enumerate(SPLITS)}
#: Background id of an untextured backdrop: the plain share of pretrain / in_distribution
#: (``SynthConfig.plain_prob``) and the board of the rendition split.
PLAIN_BACKGROUND = -1
#: The splits with a ``plain_prob`` share of plain backdrops: the pre-training distribution.
_PLAIN_SPLITS = ("pretrain", "in_distribution")

_MARKER = ".synth_incomplete"  # written before generation, removed when benchmark.json is
_CSV_FIELDS = (
    "path",
    "mask_path",
    "class",
    "label",
    "shape",
    "background",
    "own_background",
    "area",
    "x",
    "y",
    "rotation",
    "mask_fraction",
)


# --------------------------------------------------------------------------------------
# Shapes: analytic regions in unit coordinates (u right, v down, circumradius about 1).
# --------------------------------------------------------------------------------------


def _polygon(
    vertices: Sequence[tuple[float, float]],
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Even-odd point-in-polygon test, vectorised over points (works for concave shapes)."""
    vx = np.array([p[0] for p in vertices], dtype=np.float64)
    vy = np.array([p[1] for p in vertices], dtype=np.float64)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        result = np.zeros(u.shape, dtype=bool)
        n = len(vx)
        for i in range(n):
            x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
            if y0 == y1:
                continue  # horizontal edges never cross a horizontal ray
            crosses = (y0 > v) != (y1 > v)
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
            result ^= crosses & (u < x_at)
        return result

    return inside


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    """Vertices of a regular star with outer radius 1, first point straight up."""
    verts = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -np.pi / 2 + k * np.pi / points
        verts.append((r * np.cos(a), r * np.sin(a)))
    return verts


_TRIANGLE = [(np.cos(a), np.sin(a)) for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
_S = 1 / np.sqrt(2)


def _disk(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= _S) & (np.abs(v) <= _S)


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av, t = np.abs(u), np.abs(v), 0.34
    return ((au <= t) & (av <= 1.0)) | ((av <= t) & (au <= 1.0))


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55**2)


def _bar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.3)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # A disk with an off-centre bite: thick on the left, two horns pointing right.
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.8**2)


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    m = np.maximum(np.abs(u), np.abs(v))
    return (m <= _S) & (m >= 0.38)


#: Registry of shape name -> membership function f(u, v) -> bool. The first ten are the
#: default classes; the order is the default label order.
_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disk": _disk,
    "square": _square,
    "triangle": _polygon(_TRIANGLE),
    "plus": _plus,
    "ring": _ring,
    "bar": _bar,
    "star": _polygon(_star(5, 0.45)),
    "crescent": _crescent,
    # Two triangles meeting at their tips (a bow-tie lying on its side).
    "hourglass": _polygon(
        [(-1.0, -0.7), (0.0, 0.0), (1.0, -0.7), (1.0, 0.7), (0.0, 0.0), (-1.0, 0.7)]
    ),
    # An "L": asymmetric, so no rotation of it equals another class.
    "ell": _polygon([(-0.6, -0.9), (-0.1, -0.9), (-0.1, 0.4), (0.7, 0.4), (0.7, 0.9), (-0.6, 0.9)]),
    # Extras for num_classes > 10.
    "chevron": _polygon(
        [(-1.0, 0.45), (0.0, -0.55), (1.0, 0.45), (0.6, 0.75), (0.0, 0.15), (-0.6, 0.75)]
    ),
    "frame": _frame,
}
SHAPE_NAMES: tuple[str, ...] = tuple(_SHAPES)


@cache
def _unit_geometry(shape: str) -> tuple[float, float]:
    """(area, circumradius) of a shape in unit coordinates, measured on a fine grid.

    Numerical rather than analytic so every shape (including boolean combinations) is
    handled the same way; 1200^2 samples give the area to ~0.1 %.
    """
    n, half = 1200, 1.25
    c = (np.arange(n) + 0.5) / n * 2 * half - half
    u, v = np.meshgrid(c, c)
    inside = _SHAPES[shape](u, v)
    area = float(inside.mean() * (2 * half) ** 2)
    radius = float(np.sqrt((u[inside] ** 2 + v[inside] ** 2).max()))
    return area, radius


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x, y coordinates of the pixel centres (x right, y down), shape (size, size)."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(c, c)


def _scale_for_area(shape: str, area: float, size: int) -> float:
    """Pixels per unit so that the shape covers ``area`` of a size x size image."""
    unit_area, _ = _unit_geometry(shape)
    return float(np.sqrt(area * size * size / unit_area))


def shape_mask(
    shape: str, size: int, area: float, x: float, y: float, rotation: float
) -> np.ndarray:
    """Exact boolean mask (size x size) of a shape.

    ``area`` is the object's area as a fraction of the image (before clipping), ``x``, ``y``
    its centre as fractions of width / height, ``rotation`` degrees counter-clockwise as
    seen on screen. Each pixel centre is mapped back into the shape's unit coordinates and
    tested analytically, so rotated edges stay exact (no raster resampling).
    """
    if shape not in _SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_NAMES)}")
    s = _scale_for_area(shape, area, size)
    px, py = _pixel_grid(size)
    dx, dy = px - x * size, py - y * size
    t = np.deg2rad(rotation)
    # Image y points down, so an on-screen counter-clockwise rotation maps local (u, v) to
    # (u cos t + v sin t, -u sin t + v cos t); this is its inverse.
    u = (dx * np.cos(t) - dy * np.sin(t)) / s
    v = (dx * np.sin(t) + dy * np.cos(t)) / s
    return _SHAPES[shape](u, v)


# --------------------------------------------------------------------------------------
# Colours and backgrounds
# --------------------------------------------------------------------------------------


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> RGB float in [0, 255]."""
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float64) * 255.0


_PATTERNS = ("stripes", "checker", "dots", "blobs", "waves")


def background_spec(background: int, num_backgrounds: int) -> dict[str, Any]:
    """The fixed identity of background ``background``: pattern, variant and hue.

    Pattern types cycle so neighbouring ids differ in pattern; hues are spread evenly over
    the colour wheel (stepping by a co-prime stride so ids with the same pattern get far
    apart hues); the variant changes orientation / frequency between repeats of a pattern.
    """
    pattern = _PATTERNS[background % len(_PATTERNS)]
    variant = background // len(_PATTERNS)
    stride = 3 if num_backgrounds % 3 else 1
    hue = ((background * stride) % num_backgrounds) / num_backgrounds
    return {"pattern": pattern, "variant": variant, "hue": hue}


def marking_spec(label: int) -> tuple[str, int]:
    """Pattern and variant of class ``label``'s markings: the background patterns' family
    with variants 2 and 3, which no background of up to 10 classes uses."""
    return _PATTERNS[(label + 2) % len(_PATTERNS)], (label // len(_PATTERNS) + 2) % 4


def _pattern_field(pattern: str, variant: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [0, 1] field (mostly binary) defining where the background's second colour goes."""
    px, py = _pixel_grid(size)
    unit = size / 64.0  # pattern periods are tuned at 64 px and scale with the image
    if pattern == "stripes":
        angle = np.deg2rad([0.0, 90.0, 45.0, 135.0][variant % 4] + rng.uniform(-8, 8))
        period = [8.0, 12.0, 6.0, 10.0][variant % 4] * unit * rng.uniform(0.9, 1.1)
        t = (px * np.cos(angle) + py * np.sin(angle)) / period + rng.uniform(0, 1)
        return (np.mod(t, 1.0) < 0.5).astype(np.float64)
    if pattern == "checker":
        period = [8.0, 14.0, 5.0, 11.0][variant % 4] * unit * rng.uniform(0.9, 1.1)
        angle = np.deg2rad([0.0, 45.0, 20.0, 65.0][variant % 4] + rng.uniform(-5, 5))
        ox, oy = rng.uniform(0, period, size=2)
        a = (px * np.cos(angle) + py * np.sin(angle) + ox) / period
        b = (-px * np.sin(angle) + py * np.cos(angle) + oy) / period
        return ((np.floor(a) + np.floor(b)) % 2).astype(np.float64)
    if pattern == "dots":
        period = [9.0, 6.0, 13.0, 7.5][variant % 4] * unit * rng.uniform(0.9, 1.1)
        radius = period * [0.28, 0.3, 0.25, 0.33][variant % 4]
        ox, oy = rng.uniform(0, period, size=2)
        # Hexagonal lattice: every other row shifted by half a period.
        row = np.floor((py + oy) / period)
        fx = np.mod(px + ox + 0.5 * period * (row % 2), period) - period / 2
        fy = np.mod(py + oy, period) - period / 2
        return (fx * fx + fy * fy <= radius * radius).astype(np.float64)
    if pattern == "blobs":
        # Thresholded low-frequency value noise (camouflage); cells get finer per variant.
        cells = [4, 7, 3, 5][variant % 4]
        grid = rng.uniform(0, 1, size=(cells + 2, cells + 2))
        g = px / size * cells + 0.5
        h = py / size * cells + 0.5
        i, j = np.floor(h).astype(int), np.floor(g).astype(int)
        fh, fg = h - i, g - j
        fh, fg = fh * fh * (3 - 2 * fh), fg * fg * (3 - 2 * fg)  # smoothstep
        val = (
            grid[i, j] * (1 - fh) * (1 - fg)
            + grid[i + 1, j] * fh * (1 - fg)
            + grid[i, j + 1] * (1 - fh) * fg
            + grid[i + 1, j + 1] * fh * fg
        )
        return (val > np.median(val)).astype(np.float64)
    if pattern == "waves":
        # Sinusoidal stripes: wavy horizontal (variant 0), concentric rings (1), ...
        kind = variant % 4
        period = [9.0, 8.0, 12.0, 6.0][kind] * unit * rng.uniform(0.9, 1.1)
        phase = rng.uniform(0, 1)
        if kind in (0, 2):
            amp, wl = rng.uniform(2.5, 4.0) * unit, rng.uniform(18, 26) * unit
            a, b = (px, py) if kind == 0 else (py, px)
            t = (b + amp * np.sin(2 * np.pi * a / wl)) / period + phase
        else:
            cx, cy = rng.uniform(0, size, size=2)
            t = np.hypot(px - cx, py - cy) / period + phase
        return (np.mod(t, 1.0) < 0.5).astype(np.float64)
    raise ValueError(pattern)


def _background_colours(
    hue: float, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two shades of one hue family (lighter and darker), jittered per image."""
    h = hue + rng.uniform(-0.02, 0.02)
    light = _hsv_to_rgb(h, rng.uniform(0.45, 0.6), rng.uniform(*config.bg_light_value))
    dark = _hsv_to_rgb(h, rng.uniform(0.7, 0.9), rng.uniform(*config.bg_dark_value))
    return light, dark


def render_background(
    background: int, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One background texture as float RGB (size, size, 3) in [0, 255] and its two colours.

    ``PLAIN_BACKGROUND`` gives a flat backdrop of one random colour (any hue, the textures'
    range of brightness), returned as both colours: it carries no class information.
    """
    size = config.image_size
    if background == PLAIN_BACKGROUND:
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5),
                             rng.uniform(config.bg_dark_value[0], config.bg_light_value[1]))
        img = np.broadcast_to(colour, (size, size, 3)).astype(np.float64)
        if config.bg_noise > 0:
            img = img + rng.normal(0.0, config.bg_noise, size=img.shape)
        return img, (colour, colour)
    if not 0 <= background < config.num_classes:
        raise ValueError(f"background must be in [0, {config.num_classes}) or "
                         f"PLAIN_BACKGROUND ({PLAIN_BACKGROUND}), got {background}")
    spec = background_spec(background, config.num_classes)
    light, dark = _background_colours(spec["hue"], config, rng)
    f = _pattern_field(spec["pattern"], spec["variant"], size, rng)[..., None]
    img = light * (1 - f) + dark * f
    if config.bg_noise > 0:
        img = img + rng.normal(0.0, config.bg_noise, size=img.shape)
    return img, (light, dark)


def _segment_distance(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean RGB distance from colour c to the segment a-b (all shades between them)."""
    d = b - a
    t = float(np.clip(np.dot(c - a, d) / max(np.dot(d, d), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(c - (a + t * d)))


def _object_colour(
    bg_colours: tuple[np.ndarray, np.ndarray], config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """A random fill colour from a wide palette that stands out from the background.

    Redraws (at most 64 times, deterministically) until the colour is at least
    ``min_contrast`` away, in RGB, from every mix of the background's two shades; falls back
    to the best draw. The palette is the whole HSV cylinder (greys included), independent
    of the class, so the colour carries no class information beyond avoiding the
    background's own hue family.
    """
    best, best_d = None, -1.0
    for _ in range(64):
        if rng.uniform() < config.fg_grey_prob:
            c = np.full(3, rng.uniform(*config.fg_value) * 255.0)  # greys
        else:
            c = _hsv_to_rgb(
                rng.uniform(), rng.uniform(*config.fg_saturation), rng.uniform(*config.fg_value)
            )
        d = _segment_distance(c, *bg_colours)
        if d >= config.min_contrast:
            return c
        if d > best_d:
            best, best_d = c, d
    return best  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generated benchmark. Equal configs give byte-identical files.

    Attributes:
        image_size: side of the square images in pixels.
        num_classes: K; classes are the first K of ``shapes`` (or of ``SHAPE_NAMES``), and
            there are K backgrounds, background k being class k's own.
        shapes: optional explicit shape names in label order (default: ``SHAPE_NAMES[:K]``).
        pretrain_per_class: images per class of ``pretrain``, the stand-in's pre-training
            set (the ImageNet of this benchmark).
        train_per_class: images per class of ``train``, the pool that the fine-tuning
            masks are drawn from (the ImageNet-S of this benchmark): tied scenes only.
        eval_per_class: images per class in every evaluation split.
        tie: probability that a textured ``pretrain`` / ``train`` / ``in_distribution``
            image sits on its class's own background (otherwise on a random other one).
        plain_prob: probability that a ``pretrain`` / ``in_distribution`` image shows its
            object on a plain, untextured backdrop instead (background id
            ``PLAIN_BACKGROUND``): the images from which a model can learn the objects,
            since on the textured ones the background predicts the class just as well
            (the studio shots among ImageNet's photos). ``train`` has none: a plain image
            says nothing about ignoring a background, and fine-tuning sets that drew many
            of them gained nothing (measured: docs/demo_measurements.md).
        seed: master seed.
        area_range: object area as a fraction of the image, drawn uniformly (pretrain, train
            and the non-sweep evaluation splits).
        rotation_range: object rotation in degrees, drawn uniformly (same splits).
        min_contrast: minimum RGB distance between an object's fill colour and any shade of
            its background.
        fg_noise: std of the per-pixel Gaussian noise on the object fill (0-255 scale).
        bg_noise: std of the per-pixel Gaussian noise on the background.
        size_grid: object areas of the ``size`` sweep (centre 0.5, 0.5; rotation 0).
        location_grid: centre coordinates of the ``location`` sweep; every (x, y) pair of
            the grid is used, at area ``location_area`` and rotation 0.
        location_area: object area in the ``location`` sweep.
        rotation_grid: angles (degrees) of the ``rotation`` sweep (centre, mid area).
        rendition_mask: ``"filled"`` (mask = the shape's full region, the object's extent)
            or ``"strokes"`` (mask = exactly the drawn ink pixels) for the rendition split.
        rendition_style: ``"chalk"`` (light strokes on a plain dark board, the objects'
            light-on-darker polarity) or ``"ink"`` (dark strokes on light paper: polarity
            reversed too, close to chance for a model trained on the default colours).
        fg_value, fg_saturation: HSV value / saturation ranges of the object fill (hue is
            uniform). Light, pale objects on darker backgrounds by default: with a random
            polarity (objects darker or lighter than the background at random) a tiny ViT
            learned no shape at all even without any tie, with a fixed polarity it did
            (docs/demo_measurements.md).
        fg_grey_prob: probability that the fill is a grey (value from ``fg_value``).
        bg_light_value, bg_dark_value: HSV value ranges of a background's two shades.
        marking_contrast: strength of class-specific markings inside the object (a fine
            pattern of the class's own, like a cow's patches, drawn in a shade this much
            darker than the fill, 0-1); 0 = a plain fill, so the class shows only in the
            silhouette, whose evidence lies on the outline (half background at patch scale).

    Why the defaults (measured with the demo-sized ViT, docs/demo_measurements.md): tie 1.0,
    20 % plain backdrops in ``pretrain``, large, pale objects with class markings give a
    model that knows the objects (with the background replaced by grey) yet follows the
    background when the two disagree (anti-correlated split), and whose relevance can lie
    inside the objects.
    """

    image_size: int = 64
    num_classes: int = 10
    shapes: tuple[str, ...] | None = None
    pretrain_per_class: int = 400
    train_per_class: int = 60
    eval_per_class: int = 50
    tie: float = 1.0
    plain_prob: float = 0.2
    seed: int = 0
    area_range: tuple[float, float] = (0.25, 0.4)
    rotation_range: tuple[float, float] = (-20.0, 20.0)
    min_contrast: float = 60.0
    fg_noise: float = 6.0
    bg_noise: float = 4.0
    size_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    location_grid: tuple[float, ...] = (0.25, 0.5, 0.75)
    location_area: float = 0.12
    rotation_grid: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
    rendition_mask: str = "filled"
    rendition_style: str = "chalk"
    fg_value: tuple[float, float] = (0.88, 1.0)
    fg_saturation: tuple[float, float] = (0.0, 0.3)
    fg_grey_prob: float = 0.15
    bg_light_value: tuple[float, float] = (0.5, 0.62)
    bg_dark_value: tuple[float, float] = (0.22, 0.34)
    marking_contrast: float = 0.35

    def __post_init__(self) -> None:
        # Normalise list arguments (e.g. from Hydra / JSON) to tuples so the dataclass stays
        # hashable and configs compare equal however they were built.
        for name in (
            "shapes",
            "area_range",
            "rotation_range",
            "size_grid",
            "location_grid",
            "rotation_grid",
            "fg_value",
            "fg_saturation",
            "bg_light_value",
            "bg_dark_value",
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        names = self.class_shapes
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate shapes: {names}")
        unknown = [s for s in names if s not in _SHAPES]
        if unknown:
            raise ValueError(f"unknown shapes {unknown}; known: {', '.join(SHAPE_NAMES)}")
        if self.num_classes < 2:
            raise ValueError(
                "num_classes must be >= 2 (the anti-correlated split needs another class)"
            )
        if self.shapes is not None and len(self.shapes) != self.num_classes:
            raise ValueError(f"len(shapes)={len(self.shapes)} != num_classes={self.num_classes}")
        if self.shapes is None and self.num_classes > len(SHAPE_NAMES):
            raise ValueError(
                f"num_classes={self.num_classes} > {len(SHAPE_NAMES)} available shapes"
            )
        if not 0.0 <= self.tie <= 1.0:
            raise ValueError(f"tie must be in [0, 1], got {self.tie}")
        if not 0.0 <= self.plain_prob <= 1.0:
            raise ValueError(f"plain_prob must be in [0, 1], got {self.plain_prob}")
        if not 0.0 <= self.marking_contrast <= 1.0:
            raise ValueError(f"marking_contrast must be in [0, 1], got {self.marking_contrast}")
        lo, hi = self.area_range
        if not 0 < lo <= hi < 1:
            raise ValueError(f"area_range must satisfy 0 < lo <= hi < 1, got {self.area_range}")
        if self.rendition_mask not in ("filled", "strokes"):
            raise ValueError(
                f"rendition_mask must be 'filled' or 'strokes', got {self.rendition_mask!r}"
            )
        if self.rendition_style not in ("chalk", "ink"):
            raise ValueError(
                f"rendition_style must be 'chalk' or 'ink', got {self.rendition_style!r}"
            )
        if self.image_size < 16 or min(self.pretrain_per_class, self.train_per_class,
                                       self.eval_per_class) < 0:
            raise ValueError("image_size must be >= 16 and the per-class counts >= 0")

    @property
    def class_shapes(self) -> tuple[str, ...]:
        """Shape name of each label."""
        return self.shapes if self.shapes is not None else SHAPE_NAMES[: self.num_classes]

    @property
    def default_area(self) -> float:
        """Area used by the sweeps that do not vary it: the middle of ``area_range``."""
        return 0.5 * (self.area_range[0] + self.area_range[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise TypeError."""
        return cls(**data)


def class_names(config: SynthConfig) -> list[str]:
    """Class folder names, e.g. ``00_disk``; they sort in label order."""
    width = max(2, len(str(config.num_classes - 1)))
    return [f"{i:0{width}d}_{s}" for i, s in enumerate(config.class_shapes)]


# --------------------------------------------------------------------------------------
# Rendering one sample
# --------------------------------------------------------------------------------------


def render_sample(
    config: SynthConfig,
    label: int,
    background: int,
    area: float,
    x: float,
    y: float,
    rotation: float,
    rng: np.random.Generator | int | Sequence[int] = 0,
    style: str = "filled",
    return_layers: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one image and its exact mask.

    Args:
        config: benchmark config (image size, noise, contrast, shapes).
        label: class index; the object is ``config.class_shapes[label]``.
        background: background id in ``[0, num_classes)``, or ``PLAIN_BACKGROUND`` for a
            plain untextured backdrop; ignored for ``style="rendition"``.
        area, x, y, rotation: object factors (see :func:`shape_mask`).
        rng: a Generator, or a seed for ``np.random.default_rng`` (colours, texture phase,
            noise all come from it).
        style: ``"filled"`` (a noisy random-colour fill over a texture) or ``"rendition"``
            (dark ink outline plus hatching on plain light paper).
        return_layers: also return the full foreground and background layers.

    Returns:
        ``(image, mask)``: uint8 (H, W, 3) and bool (H, W); with ``return_layers`` also the
        uint8 foreground and background layers, with ``image == where(mask, fg, bg)`` for
        the filled style. For the rendition style the mask follows ``config.rendition_mask``.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    size = config.image_size
    shape = config.class_shapes[label]
    region = shape_mask(shape, size, area, x, y, rotation)
    if style == "filled":
        bg, bg_colours = render_background(background, config, rng)
        colour = _object_colour(bg_colours, config, rng)
        fg = np.broadcast_to(colour, bg.shape).copy()
        if config.marking_contrast > 0:
            pattern, variant = marking_spec(label)
            field = _pattern_field(pattern, variant, size, rng)[..., None]
            fg = fg * (1.0 - config.marking_contrast * field)
        if config.fg_noise > 0:
            fg = fg + rng.normal(0.0, config.fg_noise, size=fg.shape)
        mask = region
    elif style == "rendition":
        if config.rendition_style == "chalk":
            # Light strokes on a plain dark board: the same light-on-darker polarity as the
            # filled objects, so only the drawing style (and the missing texture) changes.
            paper = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.08, 0.3))
            ink = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.85, 1.0))
        else:  # "ink": dark strokes on light paper (polarity reversed as well)
            paper = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.12), rng.uniform(0.9, 1.0))
            ink = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.8), rng.uniform(0.05, 0.35))
        bg = np.broadcast_to(paper, (size, size, 3)) + rng.normal(0.0, 3.0, size=(size, size, 3))
        fg = np.broadcast_to(ink, (size, size, 3)) + rng.normal(0.0, 4.0, size=(size, size, 3))
        strokes = _sketch_strokes(region, rng, size)
        mask = region if config.rendition_mask == "filled" else strokes
        # Only the ink pixels take the foreground colour; with a "filled" mask the interior
        # between strokes shows the paper but still belongs to the object.
        fg = np.where(strokes[..., None], fg, bg)
    else:
        raise ValueError(f"style must be 'filled' or 'rendition', got {style!r}")
    fg8 = np.clip(np.rint(fg), 0, 255).astype(np.uint8)
    bg8 = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    image = np.where(mask[..., None], fg8, bg8)
    if return_layers:
        return image, mask, fg8, bg8
    return image, mask


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary erosion with the 4-neighbour cross, ``iterations`` times (plain numpy).

    Outside the image counts as object (edge padding), so a clipped object is not outlined
    along the frame: the image border is not an edge of the object.
    """
    out = mask.copy()
    for _ in range(iterations):
        p = np.pad(out, 1, mode="edge")
        out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


def _sketch_strokes(region: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Ink pixels of a sketch of ``region``: a 2-3 px outline plus sparse diagonal hatching."""
    width = int(rng.integers(2, 4)) * max(1, size // 64)
    inner = _erode(region, width)
    outline = region & ~inner
    px, py = _pixel_grid(size)
    spacing = float(rng.uniform(5.0, 7.0)) * size / 64.0
    direction = 1.0 if rng.uniform() < 0.5 else -1.0
    hatch = np.mod(px + direction * py + rng.uniform(0, spacing), spacing) < 1.2 * size / 64.0
    return outline | (inner & hatch)


# --------------------------------------------------------------------------------------
# Sampling the factors of a split
# --------------------------------------------------------------------------------------


def _split_count(config: SynthConfig, split: str) -> int:
    if split == "pretrain":
        return config.pretrain_per_class
    return config.train_per_class if split == "train" else config.eval_per_class


def _sample_factors(config: SynthConfig, split: str, label: int, index: int) -> dict[str, Any]:
    """Background and object factors of image ``index`` of class ``label`` in ``split``.

    Uses its own generator (stream 0), separate from the rendering one (stream 1), so a test
    can re-render any image from its metadata row alone.
    """
    rng = np.random.default_rng([config.seed, _SPLIT_ID[split], label, index, 0])
    k = config.num_classes
    others = [b for b in range(k) if b != label]
    if split in ("train", "pretrain", "in_distribution"):
        own = rng.uniform() < config.tie
        background = label if own else int(others[rng.integers(len(others))])
    elif split == "anti_correlated":
        background = int(others[rng.integers(len(others))])
    elif split == "rendition":
        background = PLAIN_BACKGROUND
    else:  # shuffled and the sweeps: the background carries no information
        background = int(rng.integers(k))

    area = float(rng.uniform(*config.area_range))
    rotation = float(rng.uniform(*config.rotation_range))
    x = y = 0.5
    # Sweep values cycle with the image index, offset by the label so that every value is
    # used even when a class has fewer images than the grid has values.
    step = index + label
    if split == "size":
        area, rotation = config.size_grid[step % len(config.size_grid)], 0.0
    elif split == "location":
        g = config.location_grid
        pos = step % (len(g) * len(g))
        x, y = g[pos % len(g)], g[pos // len(g)]
        area, rotation = config.location_area, 0.0
    elif split == "rotation":
        area, rotation = (
            config.default_area,
            config.rotation_grid[step % len(config.rotation_grid)],
        )
    else:
        # Random placement that keeps the whole shape (its circumscribed circle) in frame.
        shape = config.class_shapes[label]
        _, unit_radius = _unit_geometry(shape)
        r = unit_radius * _scale_for_area(shape, area, config.image_size) / config.image_size
        lo, hi = min(r, 0.5), max(1 - r, 0.5)
        x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    # Drawn after every other factor, so the images that keep their texture are the same
    # for any plain_prob.
    if split in _PLAIN_SPLITS and rng.uniform() < config.plain_prob:
        background = PLAIN_BACKGROUND
    return {"background": background, "area": area, "x": x, "y": y, "rotation": rotation}


def _render_rng(config: SynthConfig, split: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, _SPLIT_ID[split], label, index, 1])


def render_split_item(
    config: SynthConfig, split: str, label: int, index: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image ``index`` of class ``label`` in ``split``, exactly as the generator writes it.

    Returns ``(image uint8 HxWx3, mask bool HxW, factors)``.
    """
    factors = _sample_factors(config, split, label, index)
    style = "rendition" if split == "rendition" else "filled"
    image, mask = render_sample(
        config,
        label,
        factors["background"],
        factors["area"],
        factors["x"],
        factors["y"],
        factors["rotation"],
        _render_rng(config, split, label, index),
        style=style,
    )
    return image, mask, factors


# --------------------------------------------------------------------------------------
# Writing the benchmark
# --------------------------------------------------------------------------------------


def _split_dirs(split: str) -> tuple[str, str]:
    """(image dir, mask dir) of a split, relative to the root."""
    if split in GENERIC_SPLITS:
        return f"{split}/images", f"{split}/masks"
    return split, f"{split}_masks"


def _write_png(path: Path, array: np.ndarray) -> None:
    # PIL writes no timestamp or other varying chunk into a PNG, so bytes are reproducible.
    Image.fromarray(array).save(path, format="PNG")


def _generate_item(args: tuple[str, SynthConfig, str, int, int]) -> dict[str, Any]:
    """Render and write one image + mask; returns its metadata row (runs in workers too)."""
    root_str, config, split, label, index = args
    root = Path(root_str)
    cls = class_names(config)[label]
    name = f"{config.class_shapes[label]}_{index:05d}.png"
    image, mask, f = render_split_item(config, split, label, index)
    img_dir, mask_dir = _split_dirs(split)
    _write_png(root / img_dir / cls / name, image)
    _write_png(root / mask_dir / cls / name, mask.astype(np.uint8) * 255)
    split_dir = split
    rel = (root / img_dir / cls / name).relative_to(root / split_dir).as_posix()
    return {
        "path": rel,
        "mask_path": f"{mask_dir}/{cls}/{name}",
        "class": cls,
        "label": label,
        "shape": config.class_shapes[label],
        "background": f["background"],
        "own_background": int(f["background"] == label),
        "area": round(f["area"], 6),
        "x": round(f["x"], 6),
        "y": round(f["y"], 6),
        "rotation": round(f["rotation"], 4),
        "mask_fraction": round(float(mask.mean()), 6),
    }


def read_benchmark(root: str | Path) -> dict[str, Any] | None:
    """The ``benchmark.json`` of a finished benchmark under ``root``, or None."""
    path = Path(root) / "benchmark.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _owned_paths(root: Path) -> list[Path]:
    paths = [root / "benchmark.json", root / "classes.txt"]
    paths += [root / split for split in GENERIC_SPLITS]
    for split in EVAL_SPLITS:
        paths += [root / split, root / f"{split}_masks"]
    return paths


def _remove_owned(root: Path) -> None:
    """Delete exactly what a generation writes (never anything else under ``root``)."""
    for p in _owned_paths(root):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _describes(stored: Any, config: SynthConfig) -> bool:
    """Whether a stored config dict is ``config``; keys added to SynthConfig since it was
    written take their defaults, which reproduce what the older generator drew."""
    try:
        return SynthConfig.from_dict(stored) == config
    except (TypeError, ValueError):
        return False


def generate_benchmark(
    root: str | Path,
    config: SynthConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
    num_workers: int = 0,
    splits: Iterable[str] = SPLITS,
) -> dict[str, Any]:
    """Generate the benchmark under ``root`` (or reuse an identical existing one).

    Args:
        root: output directory (created if needed).
        config: the benchmark parameters (default ``SynthConfig()``).
        progress: show a tqdm progress bar per split.
        overwrite: replace an existing benchmark with a different config (only the paths
            this generator writes are deleted).
        num_workers: >1 renders in that many processes; the files are identical either way.
        splits: subset of ``SPLITS`` to write (default all). Part of the recorded identity.

    Returns:
        The content of ``<root>/benchmark.json``.

    Raises:
        ValueError: ``<root>/benchmark.json`` exists with a different config (or split set,
            or format version) and ``overwrite`` is False, or ``root`` holds split folders
            that this generator did not write.
    """
    config = config or SynthConfig()
    root = Path(root)
    wanted = set(splits)
    unknown = wanted - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; known: {SPLITS}")
    splits = tuple(s for s in SPLITS if s in wanted)  # canonical order
    info_path = root / "benchmark.json"
    existing = read_benchmark(root)
    if existing is not None:
        same = (
            existing.get("format_version") == FORMAT_VERSION
            and _describes(existing.get("config"), config)
            and tuple(existing.get("splits", {})) == splits
        )
        if same:
            return existing
        if not overwrite:
            raise ValueError(
                f"{info_path} describes a benchmark with a different config (or splits / "
                f"format version); pass overwrite=True to replace it, or use another root"
            )
        _remove_owned(root)
    elif (root / _MARKER).exists() or overwrite:
        _remove_owned(root)  # an interrupted earlier run of ours: start clean
    elif any(p.exists() for p in _owned_paths(root)):
        raise ValueError(
            f"{root} already holds split folders but no benchmark.json; refusing to write "
            f"into them (pass overwrite=True to delete them first)"
        )

    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text("generation in progress\n")
    names = class_names(config)
    for split in splits:
        for d in _split_dirs(split):
            for cls in names:
                (root / d / cls).mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    counts: dict[str, int] = {}
    executor = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
    try:
        for split in splits:
            n = _split_count(config, split)
            tasks = [
                (str(root), config, split, c, i)
                for c in range(config.num_classes)
                for i in range(n)
            ]
            if executor is not None:
                it = executor.map(_generate_item, tasks, chunksize=64)
            else:
                it = map(_generate_item, tasks)
            rows = list(tqdm(it, total=len(tasks), desc=f"synth {split}", disable=not progress))
            split_dir = root / split
            with open(split_dir / "metadata.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            counts[split] = len(rows)
    finally:
        if executor is not None:
            executor.shutdown()

    (root / "classes.txt").write_text("".join(f"{c}\n" for c in names))
    info = {
        "format_version": FORMAT_VERSION,
        "generator": "robustft.data.synth",
        "seed": config.seed,
        "config": config.to_dict(),
        "classes": names,
        "backgrounds": [background_spec(b, config.num_classes) for b in range(config.num_classes)],
        "splits": {
            s: {
                "count": counts[s],
                "images": _split_dirs(s)[0],
                "masks": _split_dirs(s)[1],
                "metadata": f"{s}/metadata.csv",
            }
            for s in splits
        },
    }
    # benchmark.json last: its presence means the benchmark is complete.
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    (root / _MARKER).unlink()
    return json.loads(info_path.read_text())
