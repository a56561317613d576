"""The images ``robustft-masks`` reads, in either input layout (``layout="auto"`` picks
the first that applies):

- ``generic``: ``<input_dir>/images/<class>/<name>.<ext>``
- ``imagefolder`` (ImageNet-style): ``<input_dir>/<class>/<name>.<ext>``

Each image's mask goes to ``masks/<class>/<stem>.png`` under the output folder, so two
images of one class with the same stem are refused here, before any work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from robustft.data.layout import (
    IMAGE_EXTENSIONS,
    first_stem_clash,
    list_class_folders,
    list_images,
)

__all__ = ["ImageEntry", "find_images"]


@dataclass(frozen=True)
class ImageEntry:
    """One input image: absolute path, path relative to the input root, class folder and
    the mask's path relative to the output root."""

    path: Path
    relative: str
    class_name: str
    mask_relative: str



def find_images(
    input_dir: str | os.PathLike[str], layout: str = "auto"
) -> tuple[str, list[ImageEntry]]:
    """List the images of a dataset folder. Returns ``(layout, entries)``, entries sorted.

    ``layout``: ``"generic"`` (``<root>/images/<class>/<name>``), ``"imagefolder"``
    (``<root>/<class>/<name>``) or ``"auto"`` (generic when ``<root>/images`` is a
    folder). Hidden files and files with other extensions are ignored. Two images of one
    class with the same stem (``a.jpg``, ``a.png``) would share a mask file: ``ValueError``.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input_dir is not a folder: {root}")
    if layout == "auto":
        layout = "generic" if (root / "images").is_dir() else "imagefolder"
    if layout == "generic":
        image_root = root / "images"
        if not image_root.is_dir():
            raise FileNotFoundError(f"generic layout needs {image_root}/<class>/<name>.<ext>")
    elif layout == "imagefolder":
        image_root = root
    else:
        raise ValueError(f"layout must be 'auto', 'generic' or 'imagefolder', got {layout!r}")

    entries: list[ImageEntry] = []
    for class_name in list_class_folders(image_root):
        images = list_images(image_root / class_name)
        clash = first_stem_clash(images)
        if clash is not None:
            first, second = (p.relative_to(root).as_posix() for p in clash)
            raise ValueError(
                f"{first} and {second} would both write masks/{class_name}/{clash[1].stem}.png; "
                "rename one of them"
            )
        for path in images:
            entries.append(ImageEntry(path, path.relative_to(root).as_posix(), class_name,
                                      f"masks/{class_name}/{path.stem}.png"))
    if not entries:
        raise FileNotFoundError(
            f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {image_root}/<class>/ "
            f"(layout {layout!r})"
        )
    return layout, entries
