"""The images ``robustft-explain`` explains, from what the ``image`` key names.

``image`` is a file, a list, or a folder; a folder is read as

- the generic layout (it has an ``images/`` sub-folder): ``<root>/images/<class>/<name>``;
- loose images (image files directly in it): unlabelled;
- a split of class folders (an ImageFolder split, a split of the generated benchmark):
  ``<split>/<class>/<name>``, class order from ``<split>/../classes.txt`` when present
  (the benchmark's label order), else the sorted folders
  (:class:`robustft.synth.read.ImageFolderSplit` reads both).

Images in class folders carry their folder's name as their label (``target=label``).
Nothing is decoded here; an image that cannot be read is an error naming it when it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustft.data.layout import IMAGE_EXTENSIONS, list_class_folders, list_images
from robustft.synth.read import ImageFolderSplit

__all__ = ["ExplainImage", "ImageSet", "collect_images"]


@dataclass(frozen=True)
class ExplainImage:
    path: Path
    name: str  # unique among the run's images, safe as a file name: the outputs' stem
    label: str | None  # the class folder it sits in (a dataset's class name), None if loose


@dataclass(frozen=True)
class ImageSet:
    images: list[ExplainImage]
    # the dataset's class names in label order, when every image came from one dataset
    class_names: list[str] | None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


LAYOUTS = "image files, class folders <class>/<name>, or images/<class>/<name>"


def _no_images(folder: Path, key: str, looked_in: str) -> FileNotFoundError:
    return FileNotFoundError(f"{key}: no images found under {folder} ({looked_in}); expected "
                             f"{LAYOUTS}, with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}")


def _class_folder_images(split_dir: Path) -> int:
    return sum(len(list_images(split_dir / name)) for name in list_class_folders(split_dir))


def _from_folder(folder: Path, key: str) -> tuple[list[tuple[Path, str, str | None]], list[str] | None]:
    """(path, name, label) of every image the folder holds, and its class names."""
    if (folder / "images").is_dir():
        if not _class_folder_images(folder / "images"):
            raise _no_images(folder, key, "its images/ folder holds no class folder with images")
        split = ImageFolderSplit(folder, "images", name=str(folder))
    else:
        loose = list_images(folder)
        if loose:
            return [(path, path.stem, None) for path in loose], None
        if not _class_folder_images(folder):
            raise _no_images(folder, key, "no image files in it or in its sub-folders")
        split = ImageFolderSplit(folder.parent, folder.name, name=str(folder))
    classes = list(split.class_names)
    return [(path, f"{classes[target]}_{path.stem}", classes[target])
            for path, target, _meta in split.samples], classes


def collect_images(image: str | Sequence[str], *, max_images: int | None = None,
                   key: str = "image") -> ImageSet:
    """The images named by ``image`` (see module docstring), in order; ``max_images`` keeps
    that many, evenly spaced (so a split's classes all appear). Errors name ``key``."""
    sources = [image] if isinstance(image, (str, Path)) else list(image)
    if not sources:
        raise ValueError(f"{key}: no image given; set {key}=<file>, a list [a.jpg,b.jpg] or a folder")
    found: list[tuple[Path, str, str | None]] = []
    class_lists: list[list[str] | None] = []
    for source in sources:
        path = Path(str(source)).expanduser()
        if path.is_dir():
            images, classes = _from_folder(path, key)
            found += images
            class_lists.append(classes)
        elif path.is_file():
            found.append((path, path.stem, None))
            class_lists.append(None)
        else:
            raise FileNotFoundError(f"{key}: no such image file or folder: {path}")
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or null (all), got {max_images}")
        if len(found) > max_images:
            keep = np.unique(np.linspace(0, len(found) - 1, max_images).round().astype(int))
            found = [found[i] for i in keep]
    names: set[str] = set()
    images = []
    for path, stem, label in found:
        name, count = _safe(stem), 1
        while name in names:
            count += 1
            name = f"{_safe(stem)}_{count}"
        names.add(name)
        images.append(ExplainImage(path, name, label))
    single = class_lists[0] if len(class_lists) == 1 else None
    return ImageSet(images, single)
