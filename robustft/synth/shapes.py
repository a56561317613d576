"""The benchmark's object shapes: analytic regions with exact masks at any pose.

Each shape is a membership function f(u, v) -> bool in its own unit coordinates (u right,
v down, circumradius about 1); :func:`shape_mask` maps every pixel centre back into them,
so rotated and scaled edges stay exact (no raster resampling) and the mask is the object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

__all__ = ["SHAPE_NAMES", "measure_geometry", "pixel_grid", "pose_mask", "scale_for_area",
           "shape_mask", "unit_geometry"]

Region = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polygon(vertices: Sequence[tuple[float, float]]) -> Region:
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
_SHAPES: dict[str, Region] = {
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


def measure_geometry(inside: Region) -> tuple[float, float]:
    """(area, circumradius) of a region in unit coordinates, measured on a fine grid.

    Numerical rather than analytic so every region (including boolean combinations) is
    handled the same way; 1200^2 samples give the area to ~0.1 %.
    """
    n, half = 1200, 1.25
    c = (np.arange(n) + 0.5) / n * 2 * half - half
    u, v = np.meshgrid(c, c)
    hit = inside(u, v)
    area = float(hit.mean() * (2 * half) ** 2)
    radius = float(np.sqrt((u[hit] ** 2 + v[hit] ** 2).max()))
    return area, radius


@cache
def unit_geometry(shape: str) -> tuple[float, float]:
    """(area, circumradius) of a shape in unit coordinates (:func:`measure_geometry`)."""
    return measure_geometry(_SHAPES[shape])


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x, y coordinates of the pixel centres (x right, y down), shape (size, size)."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(c, c)


def scale_for_area(shape: str, area: float, size: int) -> float:
    """Pixels per unit so that the shape covers ``area`` of a size x size image."""
    unit_area, _ = unit_geometry(shape)
    return float(np.sqrt(area * size * size / unit_area))


def pose_mask(
    inside: Region, unit_area: float, size: int, area: float, x: float, y: float,
    rotation: float,
) -> np.ndarray:
    """Exact boolean mask (size x size) of a region of ``unit_area`` (in its unit
    coordinates) posed at ``area`` / centre ``x``, ``y`` / ``rotation``: each pixel centre
    is mapped back into the unit coordinates and tested analytically, so rotated edges stay
    exact (no raster resampling). Shared by every object family (shapes, glyphs)."""
    s = float(np.sqrt(area * size * size / unit_area))
    px, py = pixel_grid(size)
    dx, dy = px - x * size, py - y * size
    t = np.deg2rad(rotation)
    # Image y points down, so an on-screen counter-clockwise rotation maps local (u, v) to
    # (u cos t + v sin t, -u sin t + v cos t); this is its inverse.
    u = (dx * np.cos(t) - dy * np.sin(t)) / s
    v = (dx * np.sin(t) + dy * np.cos(t)) / s
    return inside(u, v)


def shape_mask(
    shape: str, size: int, area: float, x: float, y: float, rotation: float
) -> np.ndarray:
    """Exact boolean mask (size x size) of a shape.

    ``area`` is the object's area as a fraction of the image (before clipping), ``x``, ``y``
    its centre as fractions of width / height, ``rotation`` degrees counter-clockwise as
    seen on screen (:func:`pose_mask`).
    """
    if shape not in _SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_NAMES)}")
    return pose_mask(_SHAPES[shape], unit_geometry(shape)[0], size, area, x, y, rotation)
