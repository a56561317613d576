"""The generic images+masks layout any user can produce, and the seeded selection of
fine-tuning files from it.

Layout::

    <root>/images/<class>/<name>.<jpg|jpeg|png|...>   any of layout.IMAGE_EXTENSIONS
    <root>/masks/<class>/<name>.png        single-channel; 0 = background, nonzero = foreground

Masks are read by :func:`robustft.data.image_files.decode_binary_mask` (re-exported here;
a palette mask by index; docs/image_modes.md).

Class labels are the positions of the class folders in sorted order, or, with a class
index (the model's class names in head order, e.g. the ImageNet wnids), the position of
each folder's name in it. Selection takes
``train_per_class`` images from a seeded ``class_fraction`` of the classes and
``val_per_class`` from each remaining class (validation on held-out classes). Files are
sorted before the seeded draw, so the same seed picks the same files on any filesystem,
and the choice is written to a selection file (:func:`write_selection`,
``selection_manifest.csv`` in a run directory; ``data.manifest`` names one to reuse) that
:func:`read_selection` reads back to reuse it exactly.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustft.data.image_files import decode_binary_mask
from robustft.data.layout import (
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    check_known_folders,
    first_stem_clash,
    list_class_folders,
    list_images,
)

__all__ = [
    "ImageMaskRecord",
    "Selection",
    "scan_generic_layout",
    "select_records",
    "write_selection",
    "read_selection",
    "read_class_index",
    "decode_binary_mask",
    "orphan_mask_folders",
    "orphan_mask_files",
]

log = logging.getLogger(__name__)
IGNORE_VALUE = 255  # value of ignored pixels in the joint uint8 mask (see transforms.py)


@dataclass(frozen=True)
class ImageMaskRecord:
    """One fine-tuning pair: an image, its mask, its label and class folder name, and its
    free-text prompt when the data has captions (``robustft.data.captions``)."""

    image_path: Path
    mask_path: Path
    label: int
    class_name: str
    caption: str | None = None


@dataclass(frozen=True)
class Selection:
    """Records chosen for fine-tuning (``train``) and validation (``val``)."""

    train: list[ImageMaskRecord]
    val: list[ImageMaskRecord]
    class_names: list[str]


def read_class_index(spec: str) -> list[str]:
    """The model's class names in head order: ``"imagenet"`` (timm's ImageNet-1k wnids) or a
    text file with one name per line (``data.class_index``)."""
    if spec == "imagenet":
        from robustft.labels import imagenet_synsets

        return imagenet_synsets()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"data.class_index: {path} is not a file (expected 'imagenet' or "
                                "a text file with one class name per line, in head order)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"data.class_index: {path} lists a class name twice")
    return names


def scan_generic_layout(
    root: str | os.PathLike[str], only_images: set[str] | None = None,
    class_index: Sequence[str] | None = None,
) -> dict[str, list[ImageMaskRecord]]:
    """All image/mask pairs under ``root``, per class in sorted class order.

    ``only_images``: when given, only images whose path relative to ``root`` (POSIX) is in
    the set are kept (e.g. the masks a TokenCut run kept); others need no mask.
    ``class_index``: the model's class names in head order; a folder's label is the
    position of its name there (default: its position among the sorted folders).
    Raises ``FileNotFoundError`` naming the folder or file when ``images/`` or ``masks/``
    is missing, a class folder is empty, or a kept image has no mask, and
    ``DatasetLayoutError`` (a ``ValueError``) naming the folder when it is not in
    ``class_index`` or when a ``masks/<class>/`` folder has no ``images/<class>/`` (its
    masks would be ignored). Mask files without an image are counted in one warning: they
    are never read, and users often keep spare masks.
    """
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist: expected the layout <root>/images/<class>/<name>.jpg "
                "and <root>/masks/<class>/<name>.png"
            )
    class_names = list_class_folders(images_dir)
    if not class_names:
        raise FileNotFoundError(f"{images_dir} has no class folders")
    orphans = orphan_mask_folders(root, class_names)
    if orphans:
        raise DatasetLayoutError(
            f"mask folder {orphans[0]} has no image folder {images_dir / orphans[0].name} "
            f"({len(orphans)} such folder(s)); add the images or move the folder out of "
            f"{masks_dir}"
        )
    labels = {name: position for position, name in enumerate(class_names)}
    if class_index is not None:
        position_of = {name: position for position, name in enumerate(class_index)}
        check_known_folders(images_dir, class_names, position_of, dataset=str(root),
                            known_as=f"in data.class_index ({len(class_index)} names, e.g. "
                                     f"{list(class_index[:3])})")
        labels = {name: position_of[name] for name in class_names}
    records: dict[str, list[ImageMaskRecord]] = {}
    spare_masks: list[Path] = []
    for class_name in class_names:
        label = labels[class_name]
        images = list_images(images_dir / class_name)
        spare_masks += orphan_mask_files(root, class_name, images)
        if only_images is not None:
            images = [p for p in images if p.relative_to(root).as_posix() in only_images]
            if not images:
                continue  # every image of this class was filtered out
        if not images:
            raise FileNotFoundError(
                f"class folder {images_dir / class_name} has no images "
                f"({'/'.join(sorted(IMAGE_EXTENSIONS))})"
            )
        clash = first_stem_clash(images)
        if clash is not None:
            raise ValueError(
                f"{clash[0]} and {clash[1]} both pair with the mask "
                f"{masks_dir / class_name / (clash[1].stem + '.png')}; rename one of them"
            )
        class_records = []
        missing = []
        for image in images:
            mask = masks_dir / class_name / f"{image.stem}.png"
            if not mask.is_file():
                missing.append(mask)
            class_records.append(ImageMaskRecord(image, mask, label, class_name))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"missing mask file {missing[0]}{more} (every image in {images_dir / class_name} "
                "needs <root>/masks/<class>/<same name>.png)"
            )
        records[class_name] = class_records
    if not records:
        raise FileNotFoundError(f"no image of {images_dir} passed the image filter")
    if spare_masks:
        log.warning("%d mask file%s have no image and are not used (e.g. %s)", len(spare_masks),
                    "" if len(spare_masks) == 1 else "s", spare_masks[0])
    return records


def orphan_mask_folders(root: Path, class_names: Sequence[str]) -> list[Path]:
    """``<root>/masks/<class>/`` folders with no ``<root>/images/<class>/`` (sorted)."""
    if not (root / "masks").is_dir():
        return []
    known = set(class_names)
    return [root / "masks" / name for name in list_class_folders(root / "masks")
            if name not in known]


def orphan_mask_files(root: Path, class_name: str, images: Sequence[Path]) -> list[Path]:
    """Files in ``<root>/masks/<class>/`` (listed like images: hidden files skipped) that
    are not the mask of any of ``images``, the class's images."""
    mask_folder = root / "masks" / class_name
    if not mask_folder.is_dir():
        return []
    wanted = {f"{image.stem}.png" for image in images}
    return [mask for mask in list_images(mask_folder) if mask.name not in wanted]


def _take(items: Sequence[ImageMaskRecord], count: int | None,
          rng: np.random.Generator) -> list[ImageMaskRecord]:
    if count is None or count >= len(items):
        return list(items)
    order = rng.permutation(len(items))[:count]
    return [items[i] for i in sorted(order)]


def select_records(
    records: dict[str, list[ImageMaskRecord]],
    *,
    train_per_class: int | None,
    val_per_class: int | None,
    class_fraction: float,
    seed: int,
    holdout_per_class: int | None = None,
) -> Selection:
    """Seeded selection: ``round(class_fraction * C)`` classes (at least 1) for training,
    the rest for validation; ``None`` per class means all images. Seed 0 is a seed.

    ``holdout_per_class`` (``data.holdout_per_class``; None or 0 = none) also holds out that
    many pairs of every training class for validation, never trained on: drawn from the
    class's images left after the training draw, which is then exactly the draw without a
    holdout; with ``train_per_class`` None (all) the held-out pairs are drawn first and the
    class's other images train."""
    if not 0.0 < class_fraction <= 1.0:
        raise ValueError(f"data.class_fraction must be in (0, 1], got {class_fraction}")
    if holdout_per_class is not None and holdout_per_class < 0:
        raise ValueError(f"data.holdout_per_class must be >= 0 or null, got {holdout_per_class}")
    class_names = sorted(records)
    rng = np.random.default_rng(seed)
    num_train = max(1, round(class_fraction * len(class_names)))
    train_classes = sorted(class_names[i] for i in rng.permutation(len(class_names))[:num_train])
    train, val = [], []
    for class_name in class_names:
        # One generator per class, derived from the seed and the class position, so a
        # class's draw does not depend on how many files other classes have.
        position = class_names.index(class_name)
        class_rng = np.random.default_rng([seed, position])
        if class_name not in train_classes:
            val += _take(records[class_name], val_per_class, class_rng)
        elif not holdout_per_class:
            train += _take(records[class_name], train_per_class, class_rng)
        else:
            trained, held_out = _split_holdout(records[class_name], train_per_class,
                                               holdout_per_class, class_rng,
                                               np.random.default_rng([seed, position, 1]))
            train += trained
            val += held_out
    return Selection(train=train, val=val, class_names=class_names)


def _split_holdout(items: Sequence[ImageMaskRecord], train_per_class: int | None, holdout: int,
                   train_rng: np.random.Generator, holdout_rng: np.random.Generator
                   ) -> tuple[list[ImageMaskRecord], list[ImageMaskRecord]]:
    """(training pairs, held-out pairs) of one class; see :func:`select_records`."""
    class_folder = items[0].image_path.parent
    if train_per_class is None:
        if holdout >= len(items):
            raise ValueError(f"data.holdout_per_class={holdout} leaves no training pair in "
                             f"{class_folder} ({len(items)} images)")
        held_out = _take(items, holdout, holdout_rng)
        kept_out = frozenset(held_out)
        return [r for r in items if r not in kept_out], held_out
    trained = _take(items, train_per_class, train_rng)
    drawn = frozenset(trained)
    rest = [r for r in items if r not in drawn]
    if not rest:
        raise ValueError(f"data.holdout_per_class={holdout}: every image of {class_folder} "
                         f"({len(items)}) is drawn for training (data.train_per_class="
                         f"{train_per_class}); lower data.train_per_class, or set it to null to "
                         "hold out first and train on the rest")
    if len(rest) < holdout:
        log.warning("data.holdout_per_class=%d: %s has only %d image(s) beyond its %d training "
                    "pairs; holding out %d", holdout, class_folder, len(rest), len(trained),
                    len(rest))
    return trained, _take(rest, holdout, holdout_rng)


def short_classes_warning(selection: Selection, *, train_per_class: int | None,
                          val_per_class: int | None) -> str | None:
    """One line naming the classes that had fewer images than ``data.train_per_class`` /
    ``data.val_per_class`` asked for (all of theirs were taken), with their counts; None
    when every class had enough. (A training class's held-out pairs, among the validation
    records with ``data.holdout_per_class``, are not a validation class's draw.)"""
    parts = []
    training_classes = {record.class_name for record in selection.train}
    validation = [r for r in selection.val if r.class_name not in training_classes]
    for split, records, wanted in (("train", selection.train, train_per_class),
                                   ("val", validation, val_per_class)):
        if wanted is None:
            continue
        counts: dict[str, int] = {}
        for record in records:
            counts[record.class_name] = counts.get(record.class_name, 0) + 1
        short = {name: count for name, count in counts.items() if count < wanted}
        if short:
            named = ", ".join(f"{name} ({count})" for name, count in sorted(short.items()))
            parts.append(f"data.{split}_per_class={wanted}: {len(short)} of {len(counts)} "
                         f"{'training' if split == 'train' else 'validation'} classes have fewer "
                         f"images, all of them taken: {named}")
    return "; ".join(parts) or None


SELECTION_COLUMNS = ("split", "label", "class_name", "image", "mask")
# the optional last column of a selection file: each image's free-text prompt
CAPTION_COLUMN = "caption"


def write_selection(selection: Selection, root: str | os.PathLike[str],
                   path: str | os.PathLike[str]) -> Path:
    """Write the chosen files as a selection file: CSV with :data:`SELECTION_COLUMNS`, paths
    relative to ``root`` (``data.manifest`` reads one back), and a ``caption`` column when
    the records have captions."""
    root, path = Path(root), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    captioned = any(r.caption is not None for r in (*selection.train, *selection.val))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SELECTION_COLUMNS + ((CAPTION_COLUMN,) if captioned else ()))
        for split, records in (("train", selection.train), ("val", selection.val)):
            for r in records:
                writer.writerow([split, r.label, r.class_name,
                                 r.image_path.relative_to(root).as_posix(),
                                 r.mask_path.relative_to(root).as_posix()]
                                + ([r.caption] if captioned else []))
    return path


def _inside(root: Path, relative: str, manifest: Path) -> Path:
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ValueError(f"manifest {manifest} names {relative!r}, which points outside {root}")
    if not resolved.is_file():
        raise FileNotFoundError(f"manifest {manifest} names {resolved}, which does not exist")
    return root / relative


def read_selection(path: str | os.PathLike[str], root: str | os.PathLike[str],
                  class_names: Sequence[str]) -> Selection:
    """Read a selection file written by :func:`write_selection` back (paths resolved under
    ``root``, which they must not leave). With a last ``caption`` column, every row needs a
    non-empty caption: a ``ValueError`` naming the file and line otherwise."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise FileNotFoundError(f"selection manifest not found: {path} (data.manifest)")
    splits: dict[str, list[ImageMaskRecord]] = {"train": [], "val": []}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = tuple(reader.fieldnames or ())
        if columns not in (SELECTION_COLUMNS, SELECTION_COLUMNS + (CAPTION_COLUMN,)):
            raise ValueError(f"{path}: expected columns {SELECTION_COLUMNS} (and optionally a "
                             f"last column {CAPTION_COLUMN!r}), got {reader.fieldnames}")
        for row in reader:
            if row["split"] not in splits:
                raise ValueError(f"{path}: unknown split {row['split']!r}")
            caption = row.get(CAPTION_COLUMN)
            if caption is not None and not caption.strip():
                raise ValueError(f"{path} line {reader.line_num}: empty caption for "
                                 f"{row['image']}; expected a non-empty prompt in column "
                                 f"{CAPTION_COLUMN!r}")
            splits[row["split"]].append(ImageMaskRecord(
                _inside(root, row["image"], path), _inside(root, row["mask"], path),
                int(row["label"]), row["class_name"],
                None if caption is None else caption.strip()))
    return Selection(train=splits["train"], val=splits["val"], class_names=list(class_names))
