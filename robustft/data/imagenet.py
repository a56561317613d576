"""ImageNet train images paired with ImageNet-S919 masks, and the paper's split.

Layout: masks ``<imagenet_s_root>/train-semi-segmentation/<folder>/<name>.png`` (RGB,
class id = R + 256 * G, as int32 — uint8 * 256 overflows under NumPy 2), images
``<imagenet_root>/train/<wnid>/<name>.JPEG`` where ``wnid`` is the mask file name's
prefix (``n01440764_10026`` -> ``n01440764``). For the 5 merged ImageNet-S classes the
folder is the class it was folded into; the prefix is the true wnid, and the label
(ImageNet-1k index from timm's packaged synset list) follows the prefix.

Mask decoding (:func:`decode_imagenet_s_mask`): id 0 = background, id 1000 = ignore (the
losses must skip those pixels, not count them as background), any other id = foreground.
The "other id" rule (rather than "id == this image's class") is deliberate: the ImageNet-S
ids are ImageNet-S's own class numbering, the merged classes share an id, and an image's
annotated object is the only non-zero, non-ignore label it carries.

The paper's split (:func:`make_paper_split`): 3 images per class from 500 classes for
training, 1 image from each remaining class for validation (914 classes once the 5 merged
folders are dropped, as the official code does). Everything is sorted before the seeded
choice (``seed=0`` is a real seed), and the result is written as a JSON split file of exact
relative paths (:func:`write_imagenet_s_split`; ``data.manifest`` names one to reuse), so
the split is the same on any filesystem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# The generic layout (data/generic.py) defines the record type and the uint8 mask convention the
# training data module consumes; ImageNet-S produces exactly those.
from robustft.data.generic import IGNORE_VALUE, ImageMaskRecord
from robustft.data.layout import (
    DatasetLayoutError,
    list_class_folders,
    list_images,
    resolve_inside,
)
from robustft.labels import imagenet_synsets

__all__ = [
    "BACKGROUND_ID",
    "IGNORE_ID",
    "MERGED_CLASSES",
    "ImageMaskRecord",
    "ImageNetSSplit",
    "decode_imagenet_s_ids",
    "decode_imagenet_s_mask",
    "imagenet_s_mask_decoder",
    "make_paper_split",
    "read_imagenet_s_split",
    "scan_imagenet_s",
    "write_imagenet_s_split",
]

BACKGROUND_ID = 0
IGNORE_ID = 1000
MASK_FOLDER = "train-semi-segmentation"
IMAGE_FOLDER = "train"
IMAGE_SUFFIX = ".JPEG"
SPLIT_FILE_VERSION = 1

#: merged ImageNet-S class (true wnid) -> the folder it was folded into
MERGED_CLASSES: dict[str, str] = {
    "n04356056": "n04355933",
    "n04493381": "n02808440",
    "n03642806": "n03832673",
    "n04008634": "n03773504",
    "n03887697": "n15075141",
}


@dataclass(frozen=True)
class ImageNetSSplit:
    train: list[ImageMaskRecord]
    val: list[ImageMaskRecord]
    seed: int


def decode_imagenet_s_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """The (H, W) int32 ImageNet-S class-id map of an RGB mask PNG: R + 256 * G."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode != "RGB":
                raise DatasetLayoutError(
                    f"ImageNet-S mask {path} has mode {image.mode!r}; expected an RGB PNG "
                    "(id = R + 256 * G)"
                )
            pixels = np.asarray(image, dtype=np.int32)
    except (OSError, SyntaxError) as error:
        raise DatasetLayoutError(f"cannot decode ImageNet-S mask {path}: {error}") from error
    return pixels[..., 0] + 256 * pixels[..., 1]


def decode_imagenet_s_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(foreground, ignore)`` boolean (H, W) arrays of an ImageNet-S mask.

    foreground = id not in {0, 1000}; ignore = id == 1000; background = neither.
    """
    ids = decode_imagenet_s_ids(path)
    ignore = ids == IGNORE_ID
    foreground = (ids != BACKGROUND_ID) & ~ignore
    return foreground, ignore


def imagenet_s_mask_decoder(path: str | os.PathLike[str]) -> np.ndarray:
    """ImageNet-S mask in the training data module's convention (``MaskDecoder``): uint8
    (H, W) with 1 = foreground, 0 = background, ``IGNORE_VALUE`` = ignore."""
    foreground, ignore = decode_imagenet_s_mask(path)
    mask = foreground.astype(np.uint8)
    mask[ignore] = IGNORE_VALUE
    return mask


def _wnid_of(mask_name: str) -> str:
    return mask_name.split("_", 1)[0]


def scan_imagenet_s(
    imagenet_root: str | os.PathLike[str], imagenet_s_root: str | os.PathLike[str]
) -> dict[str, list[ImageMaskRecord]]:
    """All mask/image pairs by ImageNet-S folder, each list sorted by file name.

    A mask whose image is missing, whose prefix is not an ImageNet-1k wnid, or that is
    another image file than ``.png``, is a ``DatasetLayoutError`` naming it.
    """
    imagenet_root, imagenet_s_root = Path(imagenet_root), Path(imagenet_s_root)
    mask_root = imagenet_s_root / MASK_FOLDER
    label_of_wnid = {wnid: index for index, wnid in enumerate(imagenet_synsets())}
    records: dict[str, list[ImageMaskRecord]] = {}
    for folder in list_class_folders(mask_root):
        if folder not in label_of_wnid:
            raise DatasetLayoutError(
                f"ImageNet-S folder {mask_root / folder} is not an ImageNet-1k wnid"
            )
        folder_records = []
        # listed like every reader lists images (hidden files such as ._x.png skipped)
        for mask_path in list_images(mask_root / folder):
            if mask_path.suffix != ".png":
                raise DatasetLayoutError(
                    f"ImageNet-S mask {mask_path}: expected a .png file (id = R + 256 * G)"
                )
            wnid = _wnid_of(mask_path.stem)
            if wnid not in label_of_wnid:
                raise DatasetLayoutError(
                    f"ImageNet-S mask {mask_path}: file-name prefix {wnid!r} is not an "
                    "ImageNet-1k wnid"
                )
            if wnid != folder and MERGED_CLASSES.get(wnid) != folder:
                raise DatasetLayoutError(
                    f"ImageNet-S mask {mask_path}: prefix {wnid} does not belong in folder {folder}"
                )
            image_path = imagenet_root / IMAGE_FOLDER / wnid / f"{mask_path.stem}{IMAGE_SUFFIX}"
            if not image_path.is_file():
                raise DatasetLayoutError(
                    f"ImageNet image {image_path} for mask {mask_path} not found"
                )
            folder_records.append(ImageMaskRecord(image_path, mask_path, label_of_wnid[wnid], wnid))
        if folder_records:
            records[folder] = folder_records
    if not records:
        raise DatasetLayoutError(f"no ImageNet-S masks found under {mask_root}/<wnid>/*.png")
    return records


def make_paper_split(
    imagenet_root: str | os.PathLike[str],
    imagenet_s_root: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_train_classes: int = 500,
    train_per_class: int = 3,
    val_per_class: int = 1,
    drop_merged: bool = True,
) -> ImageNetSSplit:
    """The paper's split, chosen from sorted lists with ``numpy.random.default_rng(seed)``.

    Classes (= ImageNet-S folders, minus the 5 merged-into folders when ``drop_merged``)
    are permuted; the first ``num_train_classes`` give ``train_per_class`` images each,
    every remaining class gives ``val_per_class`` images.
    """
    by_folder = scan_imagenet_s(imagenet_root, imagenet_s_root)
    merged_into = set(MERGED_CLASSES.values())
    folders = sorted(f for f in by_folder if not (drop_merged and f in merged_into))
    if len(folders) <= num_train_classes:
        raise ValueError(
            f"only {len(folders)} ImageNet-S classes; the split needs more than "
            f"num_train_classes={num_train_classes} (the rest are validation)"
        )
    rng = np.random.default_rng(seed)
    order = [folders[i] for i in rng.permutation(len(folders))]

    def pick(folder: str, count: int) -> list[ImageMaskRecord]:
        candidates = by_folder[folder]
        if len(candidates) < count:
            raise ValueError(f"ImageNet-S class {folder} has {len(candidates)} masks, need {count}")
        chosen = sorted(rng.choice(len(candidates), size=count, replace=False).tolist())
        return [candidates[i] for i in chosen]

    train = [
        r for folder in sorted(order[:num_train_classes]) for r in pick(folder, train_per_class)
    ]
    val = [r for folder in sorted(order[num_train_classes:]) for r in pick(folder, val_per_class)]
    return ImageNetSSplit(train=train, val=val, seed=seed)


def _record_to_json(record: ImageMaskRecord, imagenet_root: Path, imagenet_s_root: Path) -> dict:
    return {
        "image": record.image_path.relative_to(imagenet_root).as_posix(),
        "mask": record.mask_path.relative_to(imagenet_s_root).as_posix(),
        "label": record.label,
        "class_name": record.class_name,
    }


def write_imagenet_s_split(
    split: ImageNetSSplit,
    path: str | os.PathLike[str],
    imagenet_root: str | os.PathLike[str],
    imagenet_s_root: str | os.PathLike[str],
) -> Path:
    """Write ``split`` as JSON with paths relative to the two roots (portable)."""
    imagenet_root, imagenet_s_root, path = Path(imagenet_root), Path(imagenet_s_root), Path(path)
    payload = {
        "version": SPLIT_FILE_VERSION,
        "seed": split.seed,
        "image_root": "imagenet_root",
        "mask_root": "imagenet_s_root",
        "train": [_record_to_json(r, imagenet_root, imagenet_s_root) for r in split.train],
        "val": [_record_to_json(r, imagenet_root, imagenet_s_root) for r in split.val],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def read_imagenet_s_split(
    path: str | os.PathLike[str],
    imagenet_root: str | os.PathLike[str],
    imagenet_s_root: str | os.PathLike[str],
    *,
    check_files: bool = True,
) -> ImageNetSSplit:
    """Read a split file written by :func:`write_imagenet_s_split` against the given roots.

    A path that leaves its root, a missing file, or a label that disagrees with the
    class name is a ``DatasetLayoutError`` naming the manifest entry.
    """
    path = Path(path)
    imagenet_root, imagenet_s_root = Path(imagenet_root), Path(imagenet_s_root)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as error:
        raise DatasetLayoutError(f"split manifest {path} is not valid JSON: {error}") from error
    label_of_wnid = {wnid: index for index, wnid in enumerate(imagenet_synsets())}

    def load(part: str) -> list[ImageMaskRecord]:
        if part not in payload:
            raise DatasetLayoutError(f"split manifest {path}: missing key {part!r}")
        records = []
        for index, entry in enumerate(payload[part]):
            source = f"split manifest {path} [{part}][{index}]"
            image = resolve_inside(imagenet_root, entry["image"], source=source)
            mask = resolve_inside(imagenet_s_root, entry["mask"], source=source)
            if check_files:
                for file in (image, mask):
                    if not file.is_file():
                        raise DatasetLayoutError(f"{source}: file not found: {file}")
            wnid = entry["class_name"]
            if label_of_wnid.get(wnid) != entry["label"]:
                raise DatasetLayoutError(
                    f"{source}: label {entry['label']} does not match class {wnid!r}"
                )
            records.append(ImageMaskRecord(image, mask, int(entry["label"]), wnid))
        return records

    return ImageNetSSplit(train=load("train"), val=load("val"), seed=int(payload.get("seed", -1)))

