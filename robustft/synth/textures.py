"""Colours of the benchmark: the K background textures, the class markings inside the
objects, and object fill colours drawn to stand out from their background.

Background k is class k's own (the shortcut); each has a fixed pattern, variant and hue
(:func:`background_spec`). Fills are light and pale on darker backgrounds, a fixed
polarity that a small ViT can learn shapes from (docs/demo_measurements.md says why).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustft.synth.config import PLAIN_BACKGROUND, SynthConfig
from robustft.synth.shapes import pixel_grid

__all__ = ["background_colours", "background_spec", "hsv_to_rgb", "marking_field", "marking_spec",
           "object_colour", "pattern_field", "render_background"]


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
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


def marking_field(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The [0, 1] field of class ``label``'s markings (where the darker shade goes)."""
    pattern, variant = marking_spec(label)
    return pattern_field(pattern, variant, size, rng)


def pattern_field(pattern: str, variant: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [0, 1] field (mostly binary) defining where the background's second colour goes."""
    px, py = pixel_grid(size)
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


def background_colours(
    hue: float, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two shades of one hue family (lighter and darker), jittered per image."""
    h = hue + rng.uniform(-0.02, 0.02)
    light = hsv_to_rgb(h, rng.uniform(0.45, 0.6), rng.uniform(*config.bg_light_value))
    dark = hsv_to_rgb(h, rng.uniform(0.7, 0.9), rng.uniform(*config.bg_dark_value))
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
        colour = hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5),
                             rng.uniform(config.bg_dark_value[0], config.bg_light_value[1]))
        img = np.broadcast_to(colour, (size, size, 3)).astype(np.float64)
        if config.bg_noise > 0:
            img = img + rng.normal(0.0, config.bg_noise, size=img.shape)
        return img, (colour, colour)
    if not 0 <= background < config.num_classes:
        raise ValueError(f"background must be in [0, {config.num_classes}) or "
                         f"PLAIN_BACKGROUND ({PLAIN_BACKGROUND}), got {background}")
    spec = background_spec(background, config.num_classes)
    light, dark = background_colours(spec["hue"], config, rng)
    f = pattern_field(spec["pattern"], spec["variant"], size, rng)[..., None]
    img = light * (1 - f) + dark * f
    if config.bg_noise > 0:
        img = img + rng.normal(0.0, config.bg_noise, size=img.shape)
    return img, (light, dark)


def _segment_distance(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean RGB distance from colour c to the segment a-b (all shades between them)."""
    d = b - a
    t = float(np.clip(np.dot(c - a, d) / max(np.dot(d, d), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(c - (a + t * d)))


def object_colour(
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
            c = hsv_to_rgb(
                rng.uniform(), rng.uniform(*config.fg_saturation), rng.uniform(*config.fg_value)
            )
        d = _segment_distance(c, *bg_colours)
        if d >= config.min_contrast:
            return c
        if d > best_d:
            best, best_d = c, d
    return best  # type: ignore[return-value]
