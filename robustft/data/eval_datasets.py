"""Evaluation datasets by name: the registry ``robustft-eval`` and the manifests use.

``build_eval_dataset("imagenet-a", "/data/imagenet-a", protocol="legacy")`` returns the
dataset object (see ``robustft.data.shifted`` for the interface). ``root`` is always the
folder the dataset's files hang from:

===============================  =========================================================
name                             root
===============================  =========================================================
imagenet-val                     ``val/`` (holds ``<wnid>/*.JPEG``)
imagenet-a / imagenet-r          ``imagenet-a/`` / ``imagenet-r/``
imagenet-sketch                  ``sketch/``
imagenet-v2-matched-frequency    ``imagenetv2-matched-frequency-format-val/`` (and the
imagenet-v2-threshold0.7         ``-threshold0.7-`` / ``-top-images-`` variants)
imagenet-v2-top-images
objectnet                        ``objectnet-1.0/`` (``images/``, ``mappings/``)
si-score-area / -rotation /      the SI-Score folder holding ``area/``, ``rotation/``,
si-score-location                ``location20_area02_min0pc/``
generated                        the generated benchmark's root; needs ``split=...``
                                 (and ``class_names=[...]`` in training order)
===============================  =========================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from robustft.data.objectnet import objectnet
from robustft.data.shifted import (
    EvalImageDataset,
    ImageFolderSplit,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenet_v2,
    imagenet_val,
)
from robustft.data.si_score import si_score

__all__ = ["EVAL_DATASETS", "build_eval_dataset"]


def _generated(
    root: str | os.PathLike[str],
    *,
    split: str,
    protocol: str = "standard",
    name: str | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    factors: list[str] | None = None,
) -> EvalImageDataset:
    # The generated benchmark has its own K classes: "legacy" has no meaning there.
    del protocol
    return ImageFolderSplit(
        root, split, class_names=class_names, num_classes=num_classes, name=name, factors=factors
    )


EVAL_DATASETS: dict[str, Callable[..., EvalImageDataset]] = {
    "imagenet-val": imagenet_val,
    "imagenet-a": imagenet_a,
    "imagenet-r": imagenet_r,
    "imagenet-sketch": imagenet_sketch,
    "imagenet-v2-matched-frequency": partial(imagenet_v2, name="imagenet-v2-matched-frequency"),
    "imagenet-v2-threshold0.7": partial(imagenet_v2, name="imagenet-v2-threshold0.7"),
    "imagenet-v2-top-images": partial(imagenet_v2, name="imagenet-v2-top-images"),
    "objectnet": objectnet,
    "si-score-area": partial(si_score, subset="area", name="si-score-area"),
    "si-score-rotation": partial(si_score, subset="rotation", name="si-score-rotation"),
    "si-score-location": partial(
        si_score, subset="location20_area02_min0pc", name="si-score-location"
    ),
    "generated": _generated,
}


def build_eval_dataset(
    kind: str, root: str | os.PathLike[str], *, protocol: str = "standard", **kwargs: Any
) -> EvalImageDataset:
    """The evaluation dataset of type ``kind`` (a key of :data:`EVAL_DATASETS`) read from
    ``root`` under ``protocol``; ``name=...`` sets the name reports use."""
    if kind not in EVAL_DATASETS:
        raise KeyError(f"unknown evaluation dataset {kind!r}; known: {sorted(EVAL_DATASETS)}")
    return EVAL_DATASETS[kind](root, protocol=protocol, **kwargs)
