"""Evaluation datasets by name: the registry ``robustft-eval`` and the manifests use.

``build_eval_dataset("imagenet-a", "/data/imagenet-a", protocol="legacy")`` returns the
dataset object (see ``robustft.data.eval.base`` for the interface). ``root`` is always the
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
                                 (and ``class_names=[...]`` in training order); its
                                 ``<split>_masks/`` (when present) gives the masks
generic                          an images+masks folder (``images/``, ``masks/``;
                                 ``class_index=imagenet|<file>``, ``num_classes``)
imagefolder                      class folders ``<class>/<image>`` (top-1 only)
imagenet-s                       the ImageNet-S919 folder holding
                                 ``train-semi-segmentation/``; needs ``imagenet_root=``
                                 (the folder holding ImageNet's ``train/``)
imagenet-segmentation            the folder holding ``gtsegs_ijcv.mat`` (no labels)
===============================  =========================================================

Each type is one :class:`~robustft.data.eval.base.EvalDatasetType` record (its name, its
builder, its folder rule), declared in its reader's file (``DATASET_TYPES``) and listed
once below; :func:`register_dataset` adds one from elsewhere (docs/extending.md).
``has_masks(dataset)`` says whether a built dataset carries segmentation masks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from robustft.data.eval import (
    folders,
    imagenet,
    imagenet_segmentation,
    masked,
    objectnet,
    si_score,
)
from robustft.data.eval.base import EvalDatasetType, EvalImageDataset

__all__ = ["EVAL_DATASETS", "EvalDatasetType", "build_eval_dataset", "dataset_folder",
           "has_labels", "has_masks", "register_dataset"]

EVAL_DATASETS: dict[str, EvalDatasetType] = {}


def register_dataset(dataset_type: EvalDatasetType) -> EvalDatasetType:
    """Make ``dataset_type`` readable by its name (a later registration of the same name
    replaces it)."""
    EVAL_DATASETS[dataset_type.name] = dataset_type
    return dataset_type


# one entry per reader file: its records
for _module in (imagenet, objectnet, si_score, folders, masked, imagenet_segmentation):
    for _dataset_type in _module.DATASET_TYPES:
        register_dataset(_dataset_type)


def has_masks(dataset: Any) -> bool:
    """Whether ``dataset`` gives a segmentation mask per image (``load_mask``)."""
    return bool(getattr(dataset, "has_masks", False))


def has_labels(dataset: Any) -> bool:
    """Whether ``dataset``'s targets are ground-truth classes."""
    return bool(getattr(dataset, "has_labels", True))


def _dataset_type(kind: str) -> EvalDatasetType:
    if kind not in EVAL_DATASETS:
        raise KeyError(f"unknown evaluation dataset {kind!r}; known: {sorted(EVAL_DATASETS)}")
    return EVAL_DATASETS[kind]


def build_eval_dataset(
    kind: str, root: str | os.PathLike[str], *, protocol: str = "standard", **kwargs: Any
) -> EvalImageDataset:
    """The evaluation dataset of type ``kind`` (a key of :data:`EVAL_DATASETS`) read from
    ``root`` under ``protocol``; ``name=...`` sets the name reports use."""
    return _dataset_type(kind).build(root, protocol=protocol, **kwargs)


def dataset_folder(kind: str, root: str | os.PathLike[str], **kwargs: Any) -> Path:
    """The folder that dataset type ``kind`` reads its images from (its record's folder
    rule): ``root`` itself, the subset folder for SI-Score (all three subsets share one
    root), the split folder for the generated benchmark. When it does not exist the
    dataset is missing, which ``skip_missing`` skips (a root that exists does not mean its
    subset does)."""
    return _dataset_type(kind).folder(Path(root), kwargs)
