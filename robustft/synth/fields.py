"""The second benchmark's backgrounds and markings: smooth grey-level fields (gratings,
plaids, ripples, value noise, pixel grain) instead of the two-colour binary patterns of
``textures``, and fine hatching as the class markings.

Background k is class k's own (the shortcut), with a fixed field, variant and hue
(:func:`background_spec`). A field in [0, 1] blends the background's two shades
continuously, so its statistics (orientation, spatial frequency, smoothness) differ from
the sharp-edged stripes / checks / dots / blobs / waves of ``textures``. The colours follow
the same scheme as ``textures`` (two shades of one hue, darker than the light, pale
objects), the polarity a small ViT can learn shapes from (docs/demo_measurements.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustft.synth.config import PLAIN_BACKGROUND, SynthConfig
from robustft.synth.shapes import pixel_grid
from robustft.synth.textures import background_colours
from robustft.synth.textures import render_background as render_texture

__all__ = ["FIELD_NAMES", "background_spec", "field", "hatch_spec", "marking_field",
           "render_background"]

FIELD_NAMES = ("grating", "plaid", "ripple", "noise", "grain")


def background_spec(background: int, num_backgrounds: int) -> dict[str, Any]:
    """The fixed identity of background ``background``: field, variant and hue (field
    types cycle, hues spread over the wheel by a co-prime stride, as in ``textures``)."""
    pattern = FIELD_NAMES[background % len(FIELD_NAMES)]
    variant = background // len(FIELD_NAMES)
    stride = 3 if num_backgrounds % 3 else 1
    hue = ((background * stride) % num_backgrounds) / num_backgrounds
    return {"pattern": pattern, "variant": variant, "hue": hue}


def _grating(px: np.ndarray, py: np.ndarray, angle_deg: float, period: float,
             phase: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return 0.5 + 0.5 * np.sin(2 * np.pi * ((px * np.cos(a) + py * np.sin(a)) / period + phase))


def field(pattern: str, variant: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth [0, 1] field: where between the background's two shades each pixel lies."""
    px, py = pixel_grid(size)
    unit = size / 64.0  # periods are tuned at 64 px and scale with the image
    v = variant % 2
    if pattern == "grating":  # one sinusoid, oblique
        angle = [30.0, 120.0][v] + rng.uniform(-8, 8)
        period = [14.0, 9.0][v] * unit * rng.uniform(0.9, 1.1)
        return _grating(px, py, angle, period, rng.uniform())
    if pattern == "plaid":  # two crossed sinusoids, multiplied
        angle = [0.0, 45.0][v] + rng.uniform(-8, 8)
        period = [12.0, 16.0][v] * unit * rng.uniform(0.9, 1.1)
        return (_grating(px, py, angle, period, rng.uniform())
                * _grating(px, py, angle + 90.0, period, rng.uniform()))
    if pattern == "ripple":  # concentric sinusoidal rings around a random centre
        period = [10.0, 6.0][v] * unit * rng.uniform(0.9, 1.1)
        cx, cy = rng.uniform(0, size, size=2)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (np.hypot(px - cx, py - cy) / period + rng.uniform()))
    if pattern == "noise":  # bicubic-smooth value noise, not thresholded
        cells = [3, 6][v]
        grid = rng.uniform(0, 1, size=(cells + 2, cells + 2))
        g, h = px / size * cells + 0.5, py / size * cells + 0.5
        i, j = np.floor(h).astype(int), np.floor(g).astype(int)
        fh, fg = h - i, g - j
        fh, fg = fh * fh * (3 - 2 * fh), fg * fg * (3 - 2 * fg)  # smoothstep
        val = (grid[i, j] * (1 - fh) * (1 - fg) + grid[i + 1, j] * fh * (1 - fg)
               + grid[i, j + 1] * (1 - fh) * fg + grid[i + 1, j + 1] * fh * fg)
        return (val - val.min()) / max(float(val.max() - val.min()), 1e-9)
    if pattern == "grain":  # random grey levels on square grains of 2 or 4 px
        grain = [2, 4][v] * max(1, size // 64)
        cells = -(-size // grain)
        values = rng.uniform(0, 1, size=(cells, cells))
        return np.kron(values, np.ones((grain, grain)))[:size, :size]
    raise ValueError(f"unknown field {pattern!r}; known: {', '.join(FIELD_NAMES)}")


def hatch_spec(label: int) -> tuple[float, float]:
    """(angle in degrees, period in px at 64 px) of class ``label``'s hatching: ten angles
    18 degrees apart, with the period alternating so that neighbouring angles differ in
    frequency too."""
    return (18.0 * (label % 10) + 9.0, [3.0, 4.5][label % 2] + 1.5 * (label // 10))


def marking_field(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``label``'s markings: binary hatching (lines 40 % of the period wide) at the
    class's angle and period, random phase; 1 where the darker shade goes."""
    angle, period = hatch_spec(label)
    px, py = pixel_grid(size)
    a = np.deg2rad(angle)
    t = (px * np.cos(a) + py * np.sin(a)) / (period * size / 64.0) + rng.uniform()
    return (np.mod(t, 1.0) < 0.4).astype(np.float64)


def render_background(
    background: int, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One background as float RGB (size, size, 3) in [0, 255] and its two colours;
    ``PLAIN_BACKGROUND`` is the same flat backdrop as in ``textures``."""
    if background == PLAIN_BACKGROUND:
        return render_texture(background, config, rng)
    if not 0 <= background < config.num_classes:
        raise ValueError(f"background must be in [0, {config.num_classes}) or "
                         f"PLAIN_BACKGROUND ({PLAIN_BACKGROUND}), got {background}")
    spec = background_spec(background, config.num_classes)
    light, dark = background_colours(spec["hue"], config, rng)
    f = field(spec["pattern"], spec["variant"], config.image_size, rng)[..., None]
    img = light * (1 - f) + dark * f
    if config.bg_noise > 0:
        img = img + rng.normal(0.0, config.bg_noise, size=img.shape)
    return img, (light, dark)
