"""The generator's interchangeable parts: object families (``SynthConfig.objects``) and
background families (``SynthConfig.backgrounds``). Rendering, placement, splits and
writing are shared; a family supplies only its masks or its fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustft.synth import fields, glyphs, photos, pictograms, shapes, textures
from robustft.synth.config import SynthConfig

__all__ = ["BACKGROUND_FAMILIES", "OBJECT_FAMILIES", "BackgroundFamily", "ObjectFamily",
           "background_family", "object_family"]


@dataclass(frozen=True)
class ObjectFamily:
    names: tuple[str, ...]
    #: (name, size, area, x, y, rotation) -> exact bool mask
    mask: Callable[[str, int, float, float, float, float], np.ndarray]
    #: name -> (area, circumradius) in unit coordinates
    geometry: Callable[[str], tuple[float, float]]


@dataclass(frozen=True)
class BackgroundFamily:
    #: (background, config, rng) -> (float RGB image, its two colours)
    render: Callable[[int, SynthConfig, np.random.Generator],
                     tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]
    #: (background, num_backgrounds) -> its identity, as written to benchmark.json
    spec: Callable[[int, int], dict[str, Any]]
    #: (label, size, rng) -> [0, 1] field of the class's markings
    marking: Callable[[int, int, np.random.Generator], np.ndarray]


OBJECT_FAMILIES: dict[str, ObjectFamily] = {
    "shapes": ObjectFamily(shapes.SHAPE_NAMES, shapes.shape_mask, shapes.unit_geometry),
    "glyphs": ObjectFamily(glyphs.GLYPH_NAMES, glyphs.glyph_mask, glyphs.glyph_geometry),
    "pictograms": ObjectFamily(pictograms.PICTOGRAM_NAMES, pictograms.pictogram_mask,
                               pictograms.pictogram_geometry),
}
BACKGROUND_FAMILIES: dict[str, BackgroundFamily] = {
    "textures": BackgroundFamily(textures.render_background, textures.background_spec,
                                 textures.marking_field),
    "fields": BackgroundFamily(fields.render_background, fields.background_spec,
                               fields.marking_field),
    "photos": BackgroundFamily(photos.render_background, photos.photo_background_spec,
                               photos.marking_field),
}


def object_family(config: SynthConfig) -> ObjectFamily:
    return OBJECT_FAMILIES[config.objects]


def background_family(config: SynthConfig) -> BackgroundFamily:
    return BACKGROUND_FAMILIES[config.backgrounds]
