"""ImageNet val and its shifted copies as they ship, folder per class: ImageNet-A/-R
(scored on their 200 classes under the standard protocol), Sketch, and V2 (folders named
by class index). The dataset interface and the bad-input policy are in
``robustft.data.eval.base``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from robustft.data.eval.base import EvalDatasetType, EvalImageDataset, Sample
from robustft.data.layout import (
    DatasetLayoutError,
    check_known_folders,
    list_class_folders,
    list_images,
)
from robustft.labels import (
    IMAGENET_NUM_CLASSES,
    LabelProtocol,
    check_protocol_kind,
    class_subset_protocol,
    imagenet_protocol,
    imagenet_synsets,
    timm_subset_info,
)

__all__ = ["DATASET_TYPES", "imagenet_a", "imagenet_r", "imagenet_sketch", "imagenet_v2", "imagenet_val"]


def _wnid_folder_dataset(
    root: str | os.PathLike[str], name: str, protocol: LabelProtocol,
    target_of_wnid: Mapping[str, int],
) -> EvalImageDataset:
    """A ``<root>/<wnid>/<image>`` copy; an unknown wnid folder is an error."""
    root = Path(root)
    folders = list_class_folders(root)
    check_known_folders(root, folders, target_of_wnid, dataset=name,
                        known_as=f"one of the dataset's {len(target_of_wnid)} wnids")
    samples: list[Sample] = []
    for folder in folders:
        target = target_of_wnid[folder]
        samples.extend((path, target, {}) for path in list_images(root / folder))
    return EvalImageDataset(name, protocol, samples, root=root)


def _imagenet_1k(root: str | os.PathLike[str], name: str, protocol: str) -> EvalImageDataset:
    label = imagenet_protocol(check_protocol_kind(protocol))
    target_of_wnid = {wnid: index for index, wnid in enumerate(imagenet_synsets())}
    return _wnid_folder_dataset(root, name, label, target_of_wnid)


def imagenet_val(
    root: str | os.PathLike[str], *, protocol: str = "standard", name: str = "imagenet-val"
) -> EvalImageDataset:
    """ImageNet val as ``<root>/<wnid>/*.JPEG`` (root = the ``val`` folder), 1000-way."""
    return _imagenet_1k(root, name, protocol)


def imagenet_sketch(
    root: str | os.PathLike[str], *, protocol: str = "standard", name: str = "imagenet-sketch"
) -> EvalImageDataset:
    """ImageNet-Sketch as ``<root>/<wnid>/*`` (root = the ``sketch`` folder), 1000-way."""
    return _imagenet_1k(root, name, protocol)


def _imagenet_subset(
    root: str | os.PathLike[str], subset: str, *, protocol: str, name: str
) -> EvalImageDataset:
    indices, wnids = timm_subset_info(subset)
    if check_protocol_kind(protocol) == "legacy":
        label = imagenet_protocol("legacy")
        target_of_wnid = dict(zip(wnids, indices, strict=True))
    else:
        label = class_subset_protocol(subset)
        target_of_wnid = {wnid: position for position, wnid in enumerate(wnids)}
    return _wnid_folder_dataset(root, name, label, target_of_wnid)


def imagenet_a(
    root: str | os.PathLike[str], *, protocol: str = "standard", name: str = "imagenet-a"
) -> EvalImageDataset:
    """ImageNet-A as ``<root>/<wnid>/*.jpg``: standard = scored on its 200 classes
    (target = position in timm's ``imagenet_a_synsets.txt``); legacy = 1000-way."""
    return _imagenet_subset(root, "a", protocol=protocol, name=name)


def imagenet_r(
    root: str | os.PathLike[str], *, protocol: str = "standard", name: str = "imagenet-r"
) -> EvalImageDataset:
    """ImageNet-R as ``<root>/<wnid>/*``: standard = its 200 classes; legacy = 1000-way."""
    return _imagenet_subset(root, "r", protocol=protocol, name=name)


def imagenet_v2(
    root: str | os.PathLike[str], *, protocol: str = "standard", name: str = "imagenet-v2"
) -> EvalImageDataset:
    """ImageNet-V2 (any variant) as ``<root>/<0..999>/*.jpeg``: label = int(folder name).

    The folders are numbers; a string sort ("0", "1", "10", "100", ...) must not decide
    the label. A folder that is not an integer in [0, 999] is a layout error.
    """
    root = Path(root)
    label = imagenet_protocol(check_protocol_kind(protocol))
    samples: list[Sample] = []
    for folder in list_class_folders(root):
        if not folder.isdigit() or not 0 <= int(folder) < IMAGENET_NUM_CLASSES:
            raise DatasetLayoutError(
                f"{name}: folder {root / folder} is not a class number 0..999 "
                "(ImageNet-V2 folders are named by ImageNet class index)"
            )
        target = int(folder)
        samples.extend((path, target, {}) for path in list_images(root / folder))
    return EvalImageDataset(name, label, samples, root=root)


DATASET_TYPES: tuple[EvalDatasetType, ...] = (
    EvalDatasetType("imagenet-val", imagenet_val),
    EvalDatasetType("imagenet-a", imagenet_a),
    EvalDatasetType("imagenet-r", imagenet_r),
    EvalDatasetType("imagenet-sketch", imagenet_sketch),
    *(EvalDatasetType(variant, partial(imagenet_v2, name=variant))
      for variant in ("imagenet-v2-matched-frequency", "imagenet-v2-threshold0.7",
                      "imagenet-v2-top-images")),
)
