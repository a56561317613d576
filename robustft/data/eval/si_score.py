"""SI-Score (Djolonga et al. 2020) subsets as shipped: ``<subset>/<class_name>/<id>.jpg``
with ``<subset>/metadata.csv`` and ``<subset>/foreground_classes.csv``.

- ``foreground_classes.csv``: columns ``int, label`` — the ImageNet class index of each
  of the 61 foreground class names (the folder names). The target is that index; all
  1000 logits compete (standard and legacy alike: SI-Score is defined 1000-way).
- ``metadata.csv``: ``image_id, x_coord, y_coord, area, rotation, foreground_class, ...``;
  image ``<class_name>/<image_id>.jpg``. The factor columns that take more than one
  value in a subset (``area`` in ``area/``, ``rotation`` in ``rotation/``, ``x_coord`` and
  ``y_coord`` in ``location20_area02_min0pc/``) become each sample's meta, so the runner
  reports accuracy per factor value.

An image with no metadata row, a class folder missing from ``foreground_classes.csv`` or
a missing CSV is a ``DatasetLayoutError`` naming the file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from robustft.data.eval.base import EvalDatasetType, EvalImageDataset, Sample
from robustft.data.layout import DatasetLayoutError, list_class_folders, list_images
from robustft.labels import IMAGENET_NUM_CLASSES, imagenet_protocol

__all__ = ["DATASET_TYPES", "FACTOR_COLUMNS", "SI_SCORE_SUBSETS", "SI_SCORE_SUBSET_OF_TYPE",
           "si_score"]

SI_SCORE_SUBSETS: tuple[str, ...] = ("area", "rotation", "location20_area02_min0pc")
FACTOR_COLUMNS: tuple[str, ...] = ("area", "x_coord", "y_coord", "rotation")


def _read_csv(path: Path, required: set[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetLayoutError(f"SI-Score file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not required <= columns:
            raise DatasetLayoutError(
                f"{path}: missing column(s) {sorted(required - columns)} (has {sorted(columns)})"
            )
        return list(reader)


def si_score(
    root: str | os.PathLike[str],
    subset: str,
    *,
    protocol: str = "standard",
    name: str | None = None,
) -> EvalImageDataset:
    """One SI-Score subset from ``root/<subset>`` (``subset`` one of
    :data:`SI_SCORE_SUBSETS`, or any folder with the same files)."""
    subset_dir = Path(root) / subset
    if not subset_dir.is_dir():
        raise DatasetLayoutError(
            f"SI-Score subset folder not found: {subset_dir} (expected one of {SI_SCORE_SUBSETS})"
        )
    classes_csv = subset_dir / "foreground_classes.csv"
    target_of_class: dict[str, int] = {}
    for row in _read_csv(classes_csv, {"int", "label"}):
        index = int(row["int"])
        if not 0 <= index < IMAGENET_NUM_CLASSES:
            raise DatasetLayoutError(f"{classes_csv}: ImageNet index {index} out of range")
        target_of_class[row["label"]] = index

    metadata_csv = subset_dir / "metadata.csv"
    rows = _read_csv(metadata_csv, {"image_id", *FACTOR_COLUMNS})
    factors = [c for c in FACTOR_COLUMNS if len({row[c] for row in rows}) > 1]
    meta_of_id = {row["image_id"]: {factor: row[factor] for factor in factors} for row in rows}

    samples: list[Sample] = []
    for class_name in list_class_folders(subset_dir):
        if class_name not in target_of_class:
            raise DatasetLayoutError(
                f"SI-Score: class folder {subset_dir / class_name} is not in {classes_csv}"
            )
        for path in list_images(subset_dir / class_name):
            if path.stem not in meta_of_id:
                raise DatasetLayoutError(
                    f"SI-Score: image {path} has no row (image_id {path.stem!r}) in {metadata_csv}"
                )
            samples.append((path, target_of_class[class_name], meta_of_id[path.stem]))
    return EvalImageDataset(
        name or f"si-score-{subset}",
        imagenet_protocol(protocol),
        samples,
        root=subset_dir,  # type: ignore[arg-type]
    )


# The SI-Score types read one sub-folder of the SI-Score root.
SI_SCORE_SUBSET_OF_TYPE: dict[str, str] = {
    "si-score-area": "area",
    "si-score-rotation": "rotation",
    "si-score-location": "location20_area02_min0pc",
}


def _subset_folder(subset: str, root: Path, options: Mapping[str, Any]) -> Path:
    """All three subsets share one root: a root that exists does not mean its subset does."""
    del options
    return root / subset


DATASET_TYPES: tuple[EvalDatasetType, ...] = tuple(
    EvalDatasetType(kind, partial(si_score, subset=subset, name=kind),
                    partial(_subset_folder, subset))
    for kind, subset in SI_SCORE_SUBSET_OF_TYPE.items())
