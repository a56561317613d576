"""The third benchmark's backgrounds: random crops of real photographs, the ones that
scikit-image bundles (no download), instead of procedural patterns.

Background k is class k's own photo (``PHOTO_NAMES[k]``, the shortcut), as the other
families' backgrounds are; every image shows a fresh crop of it (:func:`crop_photo`: a
square of random side ``photo_crop`` x the photo's shorter side at a random position,
mirrored left-right half of the time, area-averaged down to the image size), so what is
shared by one class's backgrounds is the photo's content (its colours, textures, objects),
not a repeated pattern. The photo's values are mapped linearly onto
``[bg_dark_value[0], bg_light_value[1]]`` (x 255): the same darker-than-the-objects range as
the procedural backgrounds, the polarity a small ViT can learn shapes from
(docs/demo_measurements.md). Photos carry no class markings (``marking_contrast`` must be 0,
checked by ``SynthConfig``); the plain backdrops are the flat ones of ``textures``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from robustft.synth.config import PHOTO_NAMES, PLAIN_BACKGROUND, SynthConfig
from robustft.synth.textures import render_background as render_plain

__all__ = ["crop_photo", "load_photo", "marking_field", "photo_background_spec",
           "render_background"]


@cache
def load_photo(name: str) -> np.ndarray:
    """scikit-image's bundled photo ``name`` (``skimage.data.<name>()``) as uint8 RGB
    (greyscale photos repeated over the three channels); read-only."""
    if name not in PHOTO_NAMES:
        raise ValueError(f"unknown photo {name!r}; known: {', '.join(PHOTO_NAMES)}")
    import skimage.data  # imported here: only this family needs it, and it loads slowly

    photo = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    photo = np.ascontiguousarray(photo[..., :3])
    photo.setflags(write=False)
    return photo


def photo_background_spec(background: int, num_backgrounds: int) -> dict[str, Any]:
    """The fixed identity of background ``background``: its photo (written to
    benchmark.json)."""
    if not 0 <= background < min(num_backgrounds, len(PHOTO_NAMES)):
        raise ValueError(f"background must be in [0, {min(num_backgrounds, len(PHOTO_NAMES))}),"
                         f" got {background}")
    name = PHOTO_NAMES[background]
    height, width = load_photo(name).shape[:2]
    return {"photo": name, "source": f"skimage.data.{name}", "size": [height, width]}


def crop_photo(
    background: int, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """A random crop of photo ``PHOTO_NAMES[background]``, area-averaged to the image size,
    before the value mapping: uint8 (size, size, 3), and the crop (``box`` = left, top,
    right, bottom in the photo's pixels, ``flip`` = mirrored left-right)."""
    photo = load_photo(PHOTO_NAMES[background])
    height, width = photo.shape[:2]
    side = float(rng.uniform(*config.photo_crop)) * min(height, width)
    left, top = float(rng.uniform(0, width - side)), float(rng.uniform(0, height - side))
    flip = bool(rng.uniform() < 0.5)
    box = (left, top, left + side, top + side)
    size = config.image_size
    # BOX: each output pixel the mean of the photo's pixels it covers (exact area weights)
    pixels = np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.BOX,
                                                      box=box))
    if flip:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels), {"box": box, "flip": flip}


def map_values(pixels: np.ndarray, config: SynthConfig) -> np.ndarray:
    """Photo values [0, 255] -> ``[bg_dark_value[0], bg_light_value[1]]`` x 255 (float)."""
    low, high = config.bg_dark_value[0], config.bg_light_value[1]
    return 255.0 * low + (high - low) * pixels.astype(np.float64)


def render_background(
    background: int, config: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One background as float RGB (size, size, 3) in [0, 255] and the two colours the
    object's fill must stand out from: the crop's darkest and lightest pixels (its 5th and
    95th percentile of brightness). ``PLAIN_BACKGROUND`` is the flat backdrop of
    ``textures``."""
    if background == PLAIN_BACKGROUND:
        return render_plain(background, config, rng)
    if not 0 <= background < config.num_classes:
        raise ValueError(f"background must be in [0, {config.num_classes}) or "
                         f"PLAIN_BACKGROUND ({PLAIN_BACKGROUND}), got {background}")
    pixels, _crop = crop_photo(background, config, rng)
    img = map_values(pixels, config)
    flat = img.reshape(-1, 3)
    order = np.argsort(flat.sum(axis=1), kind="stable")
    dark, light = flat[order[len(order) // 20]], flat[order[(len(order) * 19) // 20]]
    if config.bg_noise > 0:
        img = img + rng.normal(0.0, config.bg_noise, size=img.shape)
    return img, (light.copy(), dark.copy())


def marking_field(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Photos have no class markings; ``SynthConfig`` refuses ``marking_contrast > 0`` with
    them, so this is reached only by a direct call."""
    raise ValueError("backgrounds=photos draws no class markings: set marking_contrast to 0")
