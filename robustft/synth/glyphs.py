"""The second benchmark's objects: procedural block glyphs (letters drawn with thick
strokes), with exact masks at any pose.

Each glyph is a union of capsule strokes (line segments with round ends) in its own unit
coordinates (u right, v down); :func:`glyph_mask` poses it with the shapes' machinery
(:func:`robustft.synth.shapes.pose_mask`), so edges stay exact at any rotation. Unlike
the filled silhouettes of ``shapes``, a glyph is thin: the object is a stroke about one
8-px patch wide at the second benchmark's sizes, and classes differ in where the strokes
run. No glyph is a rotation of another (no W beside the M), since the rotation sweep turns
them by up to 315 degrees; mirrored glyphs are different glyphs (no flips).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from robustft.synth.shapes import Region, measure_geometry, pose_mask

__all__ = ["GLYPH_NAMES", "STROKE_HALF_WIDTH", "glyph_geometry", "glyph_mask"]

#: Half the stroke width in unit coordinates (strokes run in a 1.12 x 1.6 box).
STROKE_HALF_WIDTH = 0.2
_SCALE = 0.8  # the strokes below are drawn in a [-0.7, 0.7] x [-1, 1] box, then scaled

Segment = tuple[tuple[float, float], tuple[float, float]]


def _capsules(segments: Sequence[Segment], half_width: float = STROKE_HALF_WIDTH) -> Region:
    """Points within ``half_width`` of any of the segments (vectorised over points)."""
    starts = np.array([s[0] for s in segments], dtype=np.float64) * _SCALE
    ends = np.array([s[1] for s in segments], dtype=np.float64) * _SCALE

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        result = np.zeros(u.shape, dtype=bool)
        for (ax, ay), (bx, by) in zip(starts, ends, strict=True):
            dx, dy = bx - ax, by - ay
            t = np.clip(((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
            result |= (u - ax - t * dx) ** 2 + (v - ay - t * dy) ** 2 <= half_width**2
        return result

    return inside


#: Registry of glyph name -> strokes; the order is the default label order.
_GLYPH_STROKES: dict[str, list[Segment]] = {
    "T": [((-0.7, -1.0), (0.7, -1.0)), ((0.0, -1.0), (0.0, 1.0))],
    "H": [((-0.6, -1.0), (-0.6, 1.0)), ((0.6, -1.0), (0.6, 1.0)), ((-0.6, 0.0), (0.6, 0.0))],
    "X": [((-0.7, -1.0), (0.7, 1.0)), ((0.7, -1.0), (-0.7, 1.0))],
    "Y": [((-0.7, -1.0), (0.0, 0.0)), ((0.7, -1.0), (0.0, 0.0)), ((0.0, 0.0), (0.0, 1.0))],
    "K": [((-0.6, -1.0), (-0.6, 1.0)), ((0.6, -1.0), (-0.6, 0.15)),
          ((-0.15, -0.25), (0.6, 1.0))],
    "E": [((-0.6, -1.0), (-0.6, 1.0)), ((-0.6, -1.0), (0.6, -1.0)), ((-0.6, 0.0), (0.4, 0.0)),
          ((-0.6, 1.0), (0.6, 1.0))],
    "F": [((-0.6, -1.0), (-0.6, 1.0)), ((-0.6, -1.0), (0.6, -1.0)), ((-0.6, 0.0), (0.4, 0.0))],
    "A": [((-0.7, 1.0), (0.0, -1.0)), ((0.0, -1.0), (0.7, 1.0)), ((-0.37, 0.3), (0.37, 0.3))],
    "Z": [((-0.6, -1.0), (0.6, -1.0)), ((0.6, -1.0), (-0.6, 1.0)), ((-0.6, 1.0), (0.6, 1.0))],
    "M": [((-0.7, 1.0), (-0.7, -1.0)), ((-0.7, -1.0), (0.0, 0.2)), ((0.0, 0.2), (0.7, -1.0)),
          ((0.7, -1.0), (0.7, 1.0))],
}
_GLYPHS: dict[str, Region] = {name: _capsules(s) for name, s in _GLYPH_STROKES.items()}
GLYPH_NAMES: tuple[str, ...] = tuple(_GLYPHS)


@cache
def glyph_geometry(glyph: str) -> tuple[float, float]:
    """(area, circumradius) of a glyph in unit coordinates."""
    return measure_geometry(_GLYPHS[glyph])


def glyph_mask(
    glyph: str, size: int, area: float, x: float, y: float, rotation: float
) -> np.ndarray:
    """Exact boolean mask (size x size) of a glyph: ``area`` (ink pixels as a fraction of
    the image, before clipping), centre ``x``, ``y`` and ``rotation`` as for the shapes."""
    if glyph not in _GLYPHS:
        raise ValueError(f"unknown glyph {glyph!r}; known: {', '.join(GLYPH_NAMES)}")
    return pose_mask(_GLYPHS[glyph], glyph_geometry(glyph)[0], size, area, x, y, rotation)
