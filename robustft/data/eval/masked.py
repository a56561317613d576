"""Evaluation datasets of image/mask pairs, for the explanation metrics that need masks
(segmentation test, foreground share): the generic images+masks layout and ImageNet-S.
The generated benchmark's splits carry their masks in ``robustft.synth.read`` and the
ImageNet-segmentation file in ``imagenet_segmentation`` beside this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustft.data.eval.base import EvalDatasetType, EvalImageDataset
from robustft.data.generic import decode_binary_mask, read_class_index, scan_generic_layout
from robustft.data.imagenet import MASK_FOLDER, imagenet_s_mask_decoder, scan_imagenet_s
from robustft.labels import check_protocol_kind, identity_protocol, imagenet_protocol

__all__ = ["DATASET_TYPES", "generic_pairs", "imagenet_s_pairs"]


def generic_pairs(
    root: str | os.PathLike[str],
    *,
    protocol: str = "standard",
    name: str = "generic",
    class_index: str | None = None,
    num_classes: int | None = None,
) -> EvalImageDataset:
    """Every pair of the generic layout ``<root>/images/<class>/<name>.<ext>`` +
    ``<root>/masks/<class>/<name>.png`` (see ``robustft.data.generic``).

    Labels as in fine-tuning: the sorted class-folder positions, scored over
    ``num_classes`` (default: the folder count); with ``class_index`` (``imagenet`` or a
    file of the head's class names) each folder's position in it, scored over the index
    (``imagenet``: the 1000-way ImageNet protocol)."""
    names = None if class_index is None else read_class_index(class_index)
    records = [record for class_records in scan_generic_layout(root, class_index=names).values()
               for record in class_records]
    if class_index == "imagenet":
        label = imagenet_protocol(check_protocol_kind(protocol))
    elif names is not None:
        label = identity_protocol(len(names), class_names=names)
    else:
        folders = sorted({record.class_name for record in records})
        width = num_classes or len(folders)
        label = identity_protocol(width, class_names=folders if width == len(folders) else ())
    samples = [(record.image_path, record.label, {}) for record in records]
    return EvalImageDataset(name, label, samples, root=Path(root),
                            mask_paths=[record.mask_path for record in records],
                            mask_decoder=decode_binary_mask)


def imagenet_s_pairs(
    root: str | os.PathLike[str],
    *,
    imagenet_root: str,
    protocol: str = "standard",
    name: str = "imagenet-s",
) -> EvalImageDataset:
    """ImageNet-S919's training masks (``<root>/train-semi-segmentation/<wnid>/<name>.png``)
    with their ImageNet train images (``<imagenet_root>/train/<wnid>/<name>.JPEG``),
    1000-way; the ignore pixels (id 1000) are not labelled. The paper fine-tunes on some of
    these pairs: leave them out when comparing a model fine-tuned on them."""
    records = [record for folder_records in scan_imagenet_s(imagenet_root, root).values()
               for record in folder_records]
    samples = [(record.image_path, record.label, {}) for record in records]
    return EvalImageDataset(name, imagenet_protocol(check_protocol_kind(protocol)), samples,
                            root=Path(root) / MASK_FOLDER,
                            mask_paths=[record.mask_path for record in records],
                            mask_decoder=imagenet_s_mask_decoder)


def _imagenet_s_folder(root: Path, options: Mapping[str, Any]) -> Path:
    del options
    return root / "train-semi-segmentation"


DATASET_TYPES: tuple[EvalDatasetType, ...] = (
    EvalDatasetType("generic", generic_pairs),
    EvalDatasetType("imagenet-s", imagenet_s_pairs, _imagenet_s_folder),
)
