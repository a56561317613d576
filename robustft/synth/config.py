"""What a generated benchmark is: its splits, and ``SynthConfig``, every knob of the
generator (equal configs give byte-identical files), with the class folder names."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from robustft.synth.glyphs import GLYPH_NAMES
from robustft.synth.pictograms import PICTOGRAM_NAMES
from robustft.synth.shapes import SHAPE_NAMES

__all__ = ["BACKGROUND_KINDS", "EVAL_SPLITS", "GENERIC_SPLITS", "OBJECT_NAMES", "PHOTO_NAMES",
           "PLAIN_BACKGROUND", "PLAIN_SPLITS", "SPLITS", "SPLIT_ID", "SWEEP_SPLITS", "SynthConfig",
           "class_names"]

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
SPLIT_ID = {name: i for i, name in enumerate(SPLITS)}
#: Background id of an untextured backdrop: the plain share of pretrain / in_distribution
#: (``SynthConfig.plain_prob``) and the board of the rendition split.
PLAIN_BACKGROUND = -1
#: The splits with a ``plain_prob`` share of plain backdrops: the pre-training distribution.
PLAIN_SPLITS = ("pretrain", "in_distribution")
#: The object families (``SynthConfig.objects``) and their object names, in label order.
OBJECT_NAMES: dict[str, tuple[str, ...]] = {"shapes": SHAPE_NAMES, "glyphs": GLYPH_NAMES,
                                            "pictograms": PICTOGRAM_NAMES}
#: The background families (``SynthConfig.backgrounds``): ``textures.py``, ``fields.py`` and
#: ``photos.py``.
BACKGROUND_KINDS: tuple[str, ...] = ("textures", "fields", "photos")
#: The photos of ``backgrounds="photos"`` in background order (background k, class k's own,
#: is ``PHOTO_NAMES[k]``): photographs that scikit-image bundles, so none is downloaded.
PHOTO_NAMES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass",
                                "gravel", "coins", "camera", "moon")
#: Fields added after format 1 with defaults that reproduce what format 1 drew; written to
#: benchmark.json only when they differ from the default, so a benchmark of the first
#: generator stays byte-identical (and its cached stand-in valid).
_ADDED_AFTER_FORMAT_1 = ("objects", "backgrounds", "photo_crop")


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generated benchmark. Equal configs give byte-identical files.

    Attributes:
        image_size: side of the square images in pixels.
        num_classes: K; classes are the first K of ``shapes`` (or of the object family's
            names), and there are K backgrounds, background k being class k's own.
        shapes: optional explicit object names in label order (default: the first K of
            ``OBJECT_NAMES[objects]``).
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
            of them gained nothing (measured, see docs/demo_measurements.md).
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
            learned no shape at all in 24k images even without any tie (chance on every
            split), with a fixed polarity it did; see docs/demo_measurements.md.
        fg_grey_prob: probability that the fill is a grey (value from ``fg_value``).
        bg_light_value, bg_dark_value: HSV value ranges of a background's two shades.
        marking_contrast: strength of class-specific markings inside the object (a fine
            pattern of the class's own, like a cow's patches, drawn in a shade this much
            darker than the fill, 0-1); 0 = a plain fill, so the class shows only in the
            silhouette, whose evidence lies on the outline (half background at patch scale).
        objects: the object family: ``"shapes"`` (filled silhouettes, ``shapes.py``),
            ``"glyphs"`` (thick-stroked letters, ``glyphs.py``; the second benchmark) or
            ``"pictograms"`` (chess pieces, umbrella, airplane, ... from the DejaVu font,
            ``pictograms.py``; the third benchmark).
        backgrounds: the background and marking family: ``"textures"`` (two-colour binary
            patterns, ``textures.py``), ``"fields"`` (smooth gratings, plaids, ripples,
            noise and grain, with hatched markings, ``fields.py``; the second benchmark) or
            ``"photos"`` (random crops of real photographs, no markings, ``photos.py``; the
            third benchmark).
        photo_crop: with ``backgrounds="photos"``, the side of a crop as a fraction of the
            photo's shorter side, drawn uniformly (larger: coarser detail at image scale).

    Why the defaults (measured with the demo-sized ViT, see docs/demo_measurements.md): tie 1.0,
    20 % plain backdrops in ``pretrain``, large, pale objects with class markings give a
    model that knows the objects (~96 % with the background replaced by grey) yet follows
    the background when the two disagree (~11 % anti-correlated), and whose relevance can
    lie inside the objects.
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
    objects: str = "shapes"
    backgrounds: str = "textures"
    photo_crop: tuple[float, float] = (0.3, 0.7)

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
            "photo_crop",
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if self.objects not in OBJECT_NAMES:
            raise ValueError(f"objects must be one of {', '.join(OBJECT_NAMES)}, "
                             f"got {self.objects!r}")
        if self.backgrounds not in BACKGROUND_KINDS:
            raise ValueError(f"backgrounds must be one of {', '.join(BACKGROUND_KINDS)}, "
                             f"got {self.backgrounds!r}")
        known = OBJECT_NAMES[self.objects]
        names = self.class_shapes
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate shapes: {names}")
        unknown = [s for s in names if s not in known]
        if unknown:
            raise ValueError(f"unknown shapes {unknown} for objects={self.objects}; "
                             f"known: {', '.join(known)}")
        if self.num_classes < 2:
            raise ValueError(
                "num_classes must be >= 2 (the anti-correlated split needs another class)"
            )
        if self.shapes is not None and len(self.shapes) != self.num_classes:
            raise ValueError(f"len(shapes)={len(self.shapes)} != num_classes={self.num_classes}")
        if self.shapes is None and self.num_classes > len(known):
            raise ValueError(
                f"num_classes={self.num_classes} > {len(known)} available {self.objects}"
            )
        if not 0.0 <= self.tie <= 1.0:
            raise ValueError(f"tie must be in [0, 1], got {self.tie}")
        if not 0.0 <= self.plain_prob <= 1.0:
            raise ValueError(f"plain_prob must be in [0, 1], got {self.plain_prob}")
        if not 0.0 <= self.marking_contrast <= 1.0:
            raise ValueError(f"marking_contrast must be in [0, 1], got {self.marking_contrast}")
        if self.backgrounds == "photos":
            if self.marking_contrast > 0:
                raise ValueError(f"backgrounds=photos draws no class markings: marking_contrast "
                                 f"must be 0, got {self.marking_contrast}")
            if self.num_classes > len(PHOTO_NAMES):
                raise ValueError(f"num_classes={self.num_classes} > {len(PHOTO_NAMES)} photos "
                                 f"available for backgrounds=photos")
        lo, hi = self.photo_crop
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"photo_crop must satisfy 0 < lo <= hi <= 1, got {self.photo_crop}")
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
        """Object name of each label."""
        if self.shapes is not None:
            return self.shapes
        return OBJECT_NAMES[self.objects][: self.num_classes]

    @property
    def default_area(self) -> float:
        """Area used by the sweeps that do not vary it: the middle of ``area_range``."""
        return 0.5 * (self.area_range[0] + self.area_range[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); the fields added after format 1 only when
        they are not their defaults."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(self)}))
        for name in _ADDED_AFTER_FORMAT_1:
            if data[name] == defaults[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise TypeError."""
        return cls(**data)


def class_names(config: SynthConfig) -> list[str]:
    """Class folder names, e.g. ``00_disk``; they sort in label order."""
    width = max(2, len(str(config.num_classes - 1)))
    return [f"{i:0{width}d}_{s}" for i, s in enumerate(config.class_shapes)]
