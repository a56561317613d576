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

``has_masks(dataset)`` says whether a built dataset carries segmentation masks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from robustft.benchmark.read import ImageFolderSplit
from robustft.data.eval.base import EvalImageDataset
from robustft.data.eval.imagenet import (
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenet_v2,
    imagenet_val,
)
from robustft.data.eval.imagenet_segmentation import imagenet_segmentation
from robustft.data.eval.masked import generic_pairs, imagenet_s_pairs
from robustft.data.eval.objectnet import objectnet
from robustft.data.eval.si_score import si_score
from robustft.data.layout import list_class_folders

__all__ = ["EVAL_DATASETS", "build_eval_dataset", "dataset_folder", "has_labels", "has_masks"]


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


def _image_folder(
    root: str | os.PathLike[str],
    *,
    protocol: str = "standard",
    name: str | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
) -> EvalImageDataset:
    """Class folders ``<root>/<class>/<image>`` (a user's own labelled images): labels are
    the sorted folder positions, as in fine-tuning, unless ``class_names`` gives the order."""
    del protocol  # the folders' own classes
    root = Path(root)
    # given explicitly, so that a classes.txt beside the folder (the generated benchmark's
    # convention) cannot reorder a user's classes
    classes = class_names if class_names is not None else list_class_folders(root)
    return ImageFolderSplit(root.parent, root.name, class_names=classes,
                            num_classes=num_classes, name=name or root.name)


# The SI-Score types read one sub-folder of the SI-Score root.
SI_SCORE_SUBSET_OF_TYPE: dict[str, str] = {
    "si-score-area": "area",
    "si-score-rotation": "rotation",
    "si-score-location": "location20_area02_min0pc",
}

EVAL_DATASETS: dict[str, Callable[..., EvalImageDataset]] = {
    "imagenet-val": imagenet_val,
    "imagenet-a": imagenet_a,
    "imagenet-r": imagenet_r,
    "imagenet-sketch": imagenet_sketch,
    "imagenet-v2-matched-frequency": partial(imagenet_v2, name="imagenet-v2-matched-frequency"),
    "imagenet-v2-threshold0.7": partial(imagenet_v2, name="imagenet-v2-threshold0.7"),
    "imagenet-v2-top-images": partial(imagenet_v2, name="imagenet-v2-top-images"),
    "objectnet": objectnet,
    **{
        kind: partial(si_score, subset=subset, name=kind)
        for kind, subset in SI_SCORE_SUBSET_OF_TYPE.items()
    },
    "generated": _generated,
    "generic": generic_pairs,
    "imagefolder": _image_folder,
    "imagenet-s": imagenet_s_pairs,
    "imagenet-segmentation": imagenet_segmentation,
}


def has_masks(dataset: Any) -> bool:
    """Whether ``dataset`` gives a segmentation mask per image (``load_mask``)."""
    return bool(getattr(dataset, "has_masks", False))


def has_labels(dataset: Any) -> bool:
    """Whether ``dataset``'s targets are ground-truth classes."""
    return bool(getattr(dataset, "has_labels", True))


def build_eval_dataset(
    kind: str, root: str | os.PathLike[str], *, protocol: str = "standard", **kwargs: Any
) -> EvalImageDataset:
    """The evaluation dataset of type ``kind`` (a key of :data:`EVAL_DATASETS`) read from
    ``root`` under ``protocol``; ``name=...`` sets the name reports use."""
    if kind not in EVAL_DATASETS:
        raise KeyError(f"unknown evaluation dataset {kind!r}; known: {sorted(EVAL_DATASETS)}")
    return EVAL_DATASETS[kind](root, protocol=protocol, **kwargs)


def dataset_folder(kind: str, root: str | os.PathLike[str], **kwargs: Any) -> Path:
    """The folder that dataset type ``kind`` reads its images from: ``root`` itself, the
    subset folder for SI-Score (all three subsets share one root), the split folder for
    the generated benchmark. When it does not exist the dataset is missing, which
    ``skip_missing`` skips (a root that exists does not mean its subset does)."""
    if kind not in EVAL_DATASETS:
        raise KeyError(f"unknown evaluation dataset {kind!r}; known: {sorted(EVAL_DATASETS)}")
    root = Path(root)
    if kind in SI_SCORE_SUBSET_OF_TYPE:
        return root / SI_SCORE_SUBSET_OF_TYPE[kind]
    if kind == "generated" and kwargs.get("split"):
        return root / str(kwargs["split"])
    if kind == "imagenet-s":
        return root / "train-semi-segmentation"
    return root
