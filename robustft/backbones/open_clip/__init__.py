"""The OpenCLIP family: an OpenCLIP model built by name, tag or local weights file into a
zero-shot classifier (:mod:`robustft.backbones.open_clip.load`), whose ViT image tower is
explained by recomputing its attention (:mod:`robustft.backbones.open_clip.adapter`,
:mod:`robustft.backbones.open_clip.attention`).

Registering the family imports no ``open_clip``: it is imported when a model is built,
and :func:`~robustft.backbones.registry.backbone_of` loads the adapters once it is.
"""

from __future__ import annotations

import importlib
from typing import Any

from robustft.backbones.registry import Family, lazy, register_family

__all__ = ["FAMILY"]

_MODULES = ("robustft.backbones.open_clip.adapter", "robustft.backbones.open_clip.load",
            "robustft.backbones.open_clip.attention", "robustft.backbones.open_clip.text")


def _adapters():
    from robustft.backbones.open_clip.adapter import ADAPTERS

    return ADAPTERS


FAMILY = register_family(Family(
    name="open_clip", build=lazy("robustft.backbones.open_clip.load", "build_open_clip"),
    adapters=_adapters, library="open_clip", fields=("tag", "zero_shot"),
    weights_identity=lazy("robustft.backbones.open_clip.load", "open_clip_weights_identity"),
    image_text=lazy("robustft.backbones.open_clip.text", "build_open_clip_image_text")))


def __getattr__(name: str) -> Any:
    """The adapter's, the loader's and the capture's names
    (``robustft.backbones.open_clip.zero_shot_classifier``...), imported on first use."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in _MODULES:
        loaded = importlib.import_module(module)
        if name in getattr(loaded, "__all__", ()):
            return getattr(loaded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
