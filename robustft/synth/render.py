"""Rendering: one image and its exact mask from the object's factors
(:func:`render_sample`), and the factors of every image of a split, drawn from a generator
of its own per image (:func:`render_split_item`), so that no file depends on generation
order, worker count or the other classes' counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robustft.synth.config import PLAIN_BACKGROUND, PLAIN_SPLITS, SPLIT_ID, SynthConfig
from robustft.synth.families import background_family, object_family
from robustft.synth.shapes import pixel_grid
from robustft.synth.textures import hsv_to_rgb, object_colour

__all__ = ["render_sample", "render_split_item"]


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
        config: benchmark config (image size, noise, contrast, object and background
            families).
        label: class index; the object is ``config.class_shapes[label]`` of the family
            ``config.objects``.
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
    region = object_family(config).mask(shape, size, area, x, y, rotation)
    backgrounds = background_family(config)
    if style == "filled":
        bg, bg_colours = backgrounds.render(background, config, rng)
        colour = object_colour(bg_colours, config, rng)
        fg = np.broadcast_to(colour, bg.shape).copy()
        if config.marking_contrast > 0:
            field = backgrounds.marking(label, size, rng)[..., None]
            fg = fg * (1.0 - config.marking_contrast * field)
        if config.fg_noise > 0:
            fg = fg + rng.normal(0.0, config.fg_noise, size=fg.shape)
        mask = region
    elif style == "rendition":
        if config.rendition_style == "chalk":
            # Light strokes on a plain dark board: the same light-on-darker polarity as the
            # filled objects, so only the drawing style (and the missing texture) changes.
            paper = hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.08, 0.3))
            ink = hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.85, 1.0))
        else:  # "ink": dark strokes on light paper (polarity reversed as well)
            paper = hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.12), rng.uniform(0.9, 1.0))
            ink = hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.8), rng.uniform(0.05, 0.35))
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
    px, py = pixel_grid(size)
    spacing = float(rng.uniform(5.0, 7.0)) * size / 64.0
    direction = 1.0 if rng.uniform() < 0.5 else -1.0
    hatch = np.mod(px + direction * py + rng.uniform(0, spacing), spacing) < 1.2 * size / 64.0
    return outline | (inner & hatch)




def _sample_factors(config: SynthConfig, split: str, label: int, index: int) -> dict[str, Any]:
    """Background and object factors of image ``index`` of class ``label`` in ``split``.

    Uses its own generator (stream 0), separate from the rendering one (stream 1), so a test
    can re-render any image from its metadata row alone.
    """
    rng = np.random.default_rng([config.seed, SPLIT_ID[split], label, index, 0])
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
        unit_area, unit_radius = object_family(config).geometry(config.class_shapes[label])
        size = config.image_size
        # the circumradius in image fractions: unit radius x pixels per unit / image size
        r = unit_radius * float(np.sqrt(area * size * size / unit_area)) / size
        lo, hi = min(r, 0.5), max(1 - r, 0.5)
        x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    # Drawn after every other factor, so the images that keep their texture are the same
    # for any plain_prob.
    if split in PLAIN_SPLITS and rng.uniform() < config.plain_prob:
        background = PLAIN_BACKGROUND
    return {"background": background, "area": area, "x": x, "y": y, "rotation": rotation}


def _render_rng(config: SynthConfig, split: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, SPLIT_ID[split], label, index, 1])


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
