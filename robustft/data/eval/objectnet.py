"""ObjectNet 1.0 as shipped: ``objectnet-1.0/images/<folder>/*.png`` + ``mappings/``.

Mapping files (all four are required; a missing one is a ``DatasetLayoutError`` naming it):

- ``folder_to_objectnet_label.json``: ``{folder: ObjectNet label}`` (313 folders);
- ``objectnet_to_imagenet_1k.json``: ``{ObjectNet label: "imagenet name; imagenet name"}``
  for the 113 ObjectNet classes that overlap ImageNet (split on ``"; "``);
- ``imagenet_to_label_2012_v2``: one ImageNet class name per line (line index = id);
- ``pytorch_to_imagenet_2012_id.json``: ``{pytorch class index: line index}``.

Only images of the 113 overlapping classes are evaluated (the other 200 folders are
skipped on purpose; that is the protocol, not data loss).

- standard protocol: per ObjectNet class, the max over its mapped ImageNet logits, argmax
  over the 113 classes (sorted by ObjectNet label); the 2-pixel border of every image is
  cropped (ObjectNet's images carry a red frame).
- legacy protocol (public RobustViT code): 1000-way, target = the FIRST mapped ImageNet
  class only, no border crop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from robustft.data.eval.base import EvalDatasetType, EvalImageDataset, Sample
from robustft.data.layout import (
    DatasetLayoutError,
    check_known_folders,
    list_class_folders,
    list_images,
)
from robustft.labels import (
    IMAGENET_NUM_CLASSES,
    check_protocol_kind,
    legacy_protocol,
    projection_protocol,
)

__all__ = ["BORDER_PIXELS", "DATASET_TYPES", "MAPPING_FILES", "crop_border", "objectnet",
           "objectnet_class_map"]

MAPPING_FILES: tuple[str, ...] = (
    "folder_to_objectnet_label.json",
    "objectnet_to_imagenet_1k.json",
    "imagenet_to_label_2012_v2",
    "pytorch_to_imagenet_2012_id.json",
)
BORDER_PIXELS = 2


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetLayoutError(
            f"ObjectNet mapping file {path} is not valid JSON: {error}"
        ) from error


def objectnet_class_map(mappings_dir: Path) -> tuple[dict[str, str], dict[str, list[int]]]:
    """``(folder -> ObjectNet label, ObjectNet label -> PyTorch ImageNet indices)`` for the
    overlapping classes, read from the four mapping files in ``mappings_dir``."""
    missing = [name for name in MAPPING_FILES if not (mappings_dir / name).is_file()]
    if missing:
        raise DatasetLayoutError(
            f"ObjectNet mapping file(s) missing: {[str(mappings_dir / name) for name in missing]}"
        )
    folder_to_label: dict[str, str] = _read_json(mappings_dir / "folder_to_objectnet_label.json")
    label_to_names: dict[str, str] = _read_json(mappings_dir / "objectnet_to_imagenet_1k.json")
    pytorch_to_line: dict[str, int] = _read_json(mappings_dir / "pytorch_to_imagenet_2012_id.json")
    lines = (mappings_dir / "imagenet_to_label_2012_v2").read_text(encoding="utf-8").splitlines()
    line_of_name = {line.strip(): index for index, line in enumerate(lines) if line.strip()}
    pytorch_of_line = {int(line): int(pytorch) for pytorch, line in pytorch_to_line.items()}

    label_to_indices: dict[str, list[int]] = {}
    for label, names in label_to_names.items():
        indices = []
        for name in names.split("; "):
            if name not in line_of_name:
                raise DatasetLayoutError(
                    f"{mappings_dir / 'objectnet_to_imagenet_1k.json'}: ImageNet name {name!r} "
                    f"(of ObjectNet class {label!r}) is not a line of imagenet_to_label_2012_v2"
                )
            line = line_of_name[name]
            if line not in pytorch_of_line:
                raise DatasetLayoutError(
                    f"{mappings_dir / 'pytorch_to_imagenet_2012_id.json'}: no PyTorch index "
                    f"for ImageNet line {line} ({name!r})"
                )
            index = pytorch_of_line[line]
            if not 0 <= index < IMAGENET_NUM_CLASSES:
                raise DatasetLayoutError(
                    f"ObjectNet: PyTorch index {index} of {name!r} out of range"
                )
            indices.append(index)
        label_to_indices[label] = indices
    return folder_to_label, label_to_indices


def crop_border(image: Image.Image, border: int = BORDER_PIXELS) -> Image.Image:
    """Remove ``border`` pixels on every side (ObjectNet's red frame)."""
    width, height = image.size
    if width <= 2 * border or height <= 2 * border:
        raise ValueError(f"image of size {image.size} is too small to crop a {border}-px border")
    return image.crop((border, border, width - border, height - border))


def objectnet(
    root: str | os.PathLike[str], *, protocol: str = "standard", name: str = "objectnet"
) -> EvalImageDataset:
    """ObjectNet from ``root`` = the ``objectnet-1.0`` folder (``images/``, ``mappings/``).

    An image folder that ``folder_to_objectnet_label.json`` does not know is a layout error
    (it would otherwise be silently dropped); folders of the 200 non-overlapping classes
    are skipped by protocol.
    """
    kind = check_protocol_kind(protocol)
    root = Path(root)
    images_dir = root / "images"
    folder_to_label, label_to_indices = objectnet_class_map(root / "mappings")
    folders = list_class_folders(images_dir)
    check_known_folders(images_dir, folders, folder_to_label, dataset=name,
                        known_as="in mappings/folder_to_objectnet_label.json")
    class_labels = sorted(label_to_indices)
    position_of_label = {label: position for position, label in enumerate(class_labels)}
    samples: list[Sample] = []
    for folder in folders:
        label = folder_to_label[folder]
        if label not in label_to_indices:
            continue  # not one of the 113 ImageNet-overlapping classes
        target = position_of_label[label] if kind == "standard" else label_to_indices[label][0]
        samples.extend((path, target, {}) for path in list_images(images_dir / folder))
    if kind == "legacy":
        return EvalImageDataset(name, legacy_protocol(), samples, root=root)
    label_protocol = projection_protocol(
        [label_to_indices[label] for label in class_labels],
        name=f"objectnet-{len(class_labels)}-max-over-mapped",
        class_names=class_labels,
    )
    return EvalImageDataset(name, label_protocol, samples, root=root, transform_image=crop_border)


DATASET_TYPES: tuple[EvalDatasetType, ...] = (EvalDatasetType("objectnet", objectnet),)
