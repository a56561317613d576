"""The Hugging Face transformers family: ``AutoModelForImageClassification`` ViTs (model
types vit, deit, dinov2, dinov2_with_registers, beit) from a hub id or a ``save_pretrained``
folder (:mod:`robustft.backbones.hf.load`), explained through an attention function
registered with transformers (:mod:`robustft.backbones.hf.adapter`,
:mod:`robustft.backbones.hf.attention`).

Registering the family imports no ``transformers``: it is imported when a model is built,
and :func:`~robustft.backbones.registry.backbone_of` loads the adapters once it is.
"""

from __future__ import annotations

import importlib
from typing import Any

from robustft.backbones.hf.load import build_hf, check_hf_spec, hf_weights_identity
from robustft.backbones.registry import Family, register_family

__all__ = ["FAMILY"]


def _adapters():
    from robustft.backbones.hf.adapter import ADAPTERS

    return ADAPTERS


FAMILY = register_family(Family(name="hf", build=build_hf, adapters=_adapters,
                                library="transformers", fields=("hf_id", "hf_path"),
                                source_fields=("hf_path", "hf_id"), check=check_hf_spec,
                                weights_identity=hf_weights_identity))


def __getattr__(name: str) -> Any:
    """The adapter's and the loader's names (``robustft.backbones.hf.HuggingFaceViT``...),
    imported on first use."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in ("robustft.backbones.hf.adapter", "robustft.backbones.hf.load"):
        loaded = importlib.import_module(module)
        if name in getattr(loaded, "__all__", ()):
            return getattr(loaded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
