"""Evaluation datasets of the user's own folders: the generated benchmark's splits
(``generated``: ``<root>/<split>/<class>/<image>``, its classes from ``classes.txt``) and
plain class folders (``imagefolder``: ``<root>/<class>/<image>``), both read by the
generated benchmark's reader (``robustft.synth.read``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustft.data.eval.base import EvalDatasetType, EvalImageDataset
from robustft.data.layout import list_class_folders
from robustft.synth.read import ImageFolderSplit

__all__ = ["DATASET_TYPES"]


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


def _split_folder(root: Path, options: Mapping[str, Any]) -> Path:
    """The split's folder (the root itself until a split is named)."""
    return root / str(options["split"]) if options.get("split") else root


DATASET_TYPES: tuple[EvalDatasetType, ...] = (
    EvalDatasetType("generated", _generated, _split_folder),
    EvalDatasetType("imagefolder", _image_folder),
)
