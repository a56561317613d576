"""Evaluation datasets read from the layouts they ship in.

Common interface (what ``robustft.evaluation.runner.evaluate_models`` consumes): a
``torch.utils.data.Dataset`` whose ``__getitem__`` returns ``(image: PIL RGB, target: int,
meta: dict[str, str])`` with attributes ``name``, ``protocol`` (a ``LabelProtocol``; the
targets index its classes) and ``samples`` (list of ``(path, target, meta)``). ``meta``
holds factor values (SI-Score area / location / rotation, the generated benchmark's
sweeps) and is ``{}`` otherwise.

Bad input policy (the same for every dataset here):
- missing root / mapping file / metadata file, an unknown class folder, a metadata row
  naming a file outside the root, an empty dataset: ``DatasetLayoutError`` at construction,
  naming the path or key and what was expected;
- a corrupt (undecodable: bad bytes, truncated PNG/JPEG) image: ``CorruptImageError``
  naming the file when it is read (decoded in full, so a truncated file never passes as
  half grey). The evaluation runner skips such an image for every model, counts it in
  its log and lists it in the run's ``unreadable_images.csv``, and ``num_images`` says
  over how many images an accuracy is: nothing is dropped silently, since a shrunk
  dataset gives numbers that are not comparable with anyone else's.
  ``robustft-data verify`` lists every unreadable file up front.

This module holds the common dataset class and the folder-per-class datasets (ImageNet
val, ImageNet-A/-R, Sketch, V2, the generated benchmark); ObjectNet and SI-Score live in
``robustft.data.eval.objectnet`` and ``robustft.data.eval.si_score``, the file-layout primitives and
the two errors in ``robustft.data.layout``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from robustft.data.layout import (
    DatasetLayoutError,
    check_known_folders,
    list_class_folders,
    list_images,
    load_rgb,
    resolve_inside,
)
from robustft.labels import (
    IMAGENET_NUM_CLASSES,
    LabelProtocol,
    check_protocol_kind,
    class_subset_protocol,
    identity_protocol,
    imagenet_protocol,
    imagenet_synsets,
    timm_subset_info,
)

__all__ = [
    "EvalImageDataset",
    "ImageFolderSplit",
    "Sample",
    "imagenet_a",
    "imagenet_r",
    "imagenet_sketch",
    "imagenet_v2",
    "imagenet_val",
]

Sample = tuple[Path, int, dict[str, str]]


class EvalImageDataset(Dataset):
    """A list of ``(path, target, meta)`` samples with a label protocol.

    ``transform_image`` (optional) is applied to the decoded RGB image before it is
    returned, e.g. ObjectNet's border crop; it is part of the dataset, not of a model's
    preprocessing.
    """

    def __init__(
        self,
        name: str,
        protocol: LabelProtocol,
        samples: Sequence[Sample],
        *,
        root: Path | None = None,
        transform_image: Callable[[Image.Image], Image.Image] | None = None,
    ) -> None:
        if not samples:
            where = f" under {root}" if root is not None else ""
            raise DatasetLayoutError(f"dataset {name!r} is empty: no images found{where}")
        bad = [s for s in samples if not 0 <= s[1] < protocol.num_classes]
        if bad:
            raise DatasetLayoutError(
                f"dataset {name!r}: target {bad[0][1]} of {bad[0][0]} is outside the "
                f"protocol's {protocol.num_classes} classes ({protocol.label})"
            )
        self.name = name
        self.protocol = protocol
        self.samples: list[Sample] = list(samples)
        self.root = root
        self.transform_image = transform_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, dict[str, str]]:
        path, target, meta = self.samples[index]
        image = load_rgb(path)
        if self.transform_image is not None:
            image = self.transform_image(image)
        return image, target, dict(meta)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, "
            f"protocol={self.protocol.label!r}, root={str(self.root)!r})"
        )


# --------------------------------------------------------------------------- ImageNet-style


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


# --------------------------------------------------------------------------- generated benchmark

SWEEP_FACTOR_COLUMNS: tuple[str, ...] = ("area", "x", "y", "rotation")
CLASSES_FILE = "classes.txt"


class ImageFolderSplit(EvalImageDataset):
    """One split of the generated benchmark (``robustft.benchmark.write``):
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
        protocol = identity_protocol(
            num_classes or len(classes),
            name=f"{num_classes or len(classes)}-way",
            class_names=classes if not num_classes or num_classes == len(classes) else (),
        )
        super().__init__(name or f"{root.name}/{split}", protocol, samples, root=split_dir)
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
