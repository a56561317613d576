"""Reading one split of the generated benchmark back as an evaluation dataset
(``ImageFolderSplit``), with its sweep factors as each sample's meta."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from robustft.data.eval.base import EvalImageDataset, Sample
from robustft.data.generic import decode_binary_mask
from robustft.data.layout import (
    DatasetLayoutError,
    list_class_folders,
    list_images,
    resolve_inside,
)
from robustft.labels import identity_protocol

__all__ = ["CLASSES_FILE", "SWEEP_FACTOR_COLUMNS", "ImageFolderSplit"]

SWEEP_FACTOR_COLUMNS: tuple[str, ...] = ("area", "x", "y", "rotation")
CLASSES_FILE = "classes.txt"


class ImageFolderSplit(EvalImageDataset):
    """One split of the generated benchmark (``robustft.synth``):
    ``<root>/<split>/<class>/<name>.png``.

    Class order (= target index): ``class_names`` when given, else ``<root>/classes.txt``
    (one class per line, label order) when present, else the sorted class folders of the
    split. The protocol is the identity over ``num_classes`` (default
    ``len(class_names)``): a model trained on those classes.

    ``<root>/<split>/metadata.csv`` (optional) has columns ``path`` (relative to the split
    folder, or to ``root``; must stay inside ``root``), ``class``, ``label`` (must agree with
    the class order) and factor columns ``area, x, y, rotation``. ``factors`` names the
    factor columns that become each sample's meta (the runner then reports accuracy per
    factor value); by default, those that take between 2 and ``max_factor_values`` distinct
    values in the split (a sweep's grid, not a random continuous draw).

    Masks: when ``<root>/<split>_masks/`` exists (the benchmark writes it), every image
    ``<split>/<class>/<name>.<ext>`` has its mask ``<split>_masks/<class>/<name>.png``
    (a missing one is an error) and the dataset ``has_masks``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        name: str | None = None,
        factors: Sequence[str] | None = None,
        max_factor_values: int = 32,
    ) -> None:
        root = Path(root)
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetLayoutError(f"split folder not found: {split_dir}")
        folders = list_class_folders(split_dir)
        classes_file = root / CLASSES_FILE
        if class_names is not None:
            classes = list(class_names)
        elif classes_file.is_file():
            classes = [
                line.strip() for line in classes_file.read_text().splitlines() if line.strip()
            ]
        else:
            classes = folders
        repeated = sorted({name for name in classes if classes.count(name) > 1})
        if repeated:
            source = "class_names" if class_names is not None else str(classes_file)
            raise DatasetLayoutError(f"{source}: class name(s) {repeated} listed more than once; "
                                     "each class needs one name (one per line, label order)")
        index_of = {class_name: index for index, class_name in enumerate(classes)}
        unknown = [folder for folder in folders if folder not in index_of]
        if unknown:
            raise DatasetLayoutError(
                f"split {split_dir}: class folder {split_dir / unknown[0]} is not one of the "
                f"classes {classes}"
            )
        metadata = split_dir / "metadata.csv"
        if metadata.is_file():
            samples = self._samples_from_metadata(
                metadata, root, split_dir, index_of, factors, max_factor_values
            )
        else:
            samples = [
                (path, index_of[folder], {})
                for folder in folders
                for path in list_images(split_dir / folder)
            ]
        if not samples:
            raise DatasetLayoutError(f"split {split_dir}: no images found (expected "
                                     f"{split_dir}/<class>/<image>)")
        protocol = identity_protocol(
            num_classes or len(classes),
            name=f"{num_classes or len(classes)}-way",
            class_names=classes if not num_classes or num_classes == len(classes) else (),
        )
        mask_dir = root / f"{split}_masks"
        mask_paths = _mask_paths(samples, split_dir, mask_dir) if mask_dir.is_dir() else None
        super().__init__(name or f"{root.name}/{split}", protocol, samples, root=split_dir,
                         mask_paths=mask_paths,
                         mask_decoder=decode_binary_mask if mask_paths else None)
        self.split = split
        self.class_names = classes

    @staticmethod
    def _samples_from_metadata(
        metadata: Path,
        root: Path,
        split_dir: Path,
        index_of: Mapping[str, int],
        factors: Sequence[str] | None,
        max_factor_values: int,
    ) -> list[Sample]:
        with metadata.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            required = {"path", "class"}
            if not required <= columns:
                raise DatasetLayoutError(
                    f"{metadata}: missing column(s) {sorted(required - columns)}; "
                    f"expected path, class, label, {', '.join(SWEEP_FACTOR_COLUMNS)}"
                )
            rows = list(reader)
        if factors is None:
            factors = [
                column
                for column in SWEEP_FACTOR_COLUMNS
                if column in columns and 1 < len({row[column] for row in rows}) <= max_factor_values
            ]
        missing = [factor for factor in factors if factor not in columns]
        if missing:
            raise DatasetLayoutError(f"{metadata}: no factor column(s) {missing}")
        samples: list[Sample] = []
        for line, row in enumerate(rows, start=2):
            source = f"{metadata} line {line}"
            class_name = row["class"]
            if class_name not in index_of:
                raise DatasetLayoutError(f"{source}: unknown class {class_name!r}")
            target = index_of[class_name]
            if row.get("label", "") not in ("", None) and int(row["label"]) != target:
                raise DatasetLayoutError(
                    f"{source}: label {row['label']} of class {class_name!r} disagrees with "
                    f"the class order (expected {target}); pass class_names in training order"
                )
            relative = row["path"]
            path = resolve_inside(root, os.path.join(split_dir.name, relative), source=source)
            if not path.is_file():
                path = resolve_inside(root, relative, source=source)
            if not path.is_file():
                raise DatasetLayoutError(
                    f"{source}: image {relative!r} not found under {split_dir} or {root}"
                )
            samples.append((path, target, {factor: row[factor] for factor in factors}))
        return samples


def _mask_paths(samples: Sequence[Sample], split_dir: Path, mask_dir: Path) -> list[Path]:
    """``<split>_masks/<class>/<name>.png`` of each sample; a missing one is an error."""
    paths = []
    for image, _target, _meta in samples:
        relative = Path(image).resolve().relative_to(split_dir.resolve())
        mask = mask_dir / relative.with_suffix(".png")
        if not mask.is_file():
            raise DatasetLayoutError(
                f"mask {mask} of image {image} not found (every image of a split with a "
                f"{mask_dir.name}/ folder needs its mask there)")
        paths.append(mask)
    return paths
