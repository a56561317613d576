"""File-layout primitives shared by every dataset reader: class folders, image files,
paths named by manifests and metadata files, and the two errors that bad input raises
(the image reader itself, ``load_rgb``, lives in ``robustft.data.image_files`` and is
re-exported here).

Nothing here knows a label protocol, so the training-side readers (``robustft.data.generic``)
and the evaluation datasets (``robustft.data.eval`` and ``robustft.synth.read``) both build
on it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

from robustft.data.image_files import CorruptImageError, load_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptImageError",
    "DatasetLayoutError",
    "check_known_folders",
    "first_stem_clash",
    "list_class_folders",
    "list_images",
    "load_rgb",
    "resolve_inside",
]

# The one list of image extensions every reader uses (training layout, evaluation datasets,
# TokenCut mask generation), so a file one part reads is never skipped by another.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)


class DatasetLayoutError(ValueError):
    """A dataset copy does not have the expected layout (message names the path/key)."""


def list_class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (hidden ones skipped)."""
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    return sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def check_known_folders(root: Path, folders: Sequence[str], known: Collection[str], *,
                        dataset: str, known_as: str) -> None:
    """A class folder the dataset's class list does not know is a layout error (it would
    otherwise be dropped silently); ``known_as`` names that list in the message."""
    unknown = [folder for folder in folders if folder not in known]
    if unknown:
        raise DatasetLayoutError(
            f"{dataset}: folder {root / unknown[0]} is not {known_as} "
            f"({len(unknown)} unknown folder(s): {unknown[:5]})"
        )


def list_images(folder: Path) -> list[Path]:
    """Sorted image files directly in ``folder`` (by extension, case-insensitive; hidden
    files such as macOS ``._name.jpg`` resource forks skipped)."""
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file()
        and not entry.name.startswith(".")
        and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
    )


def first_stem_clash(images: Sequence[Path]) -> tuple[Path, Path] | None:
    """The first two of ``images`` (one class folder) that share a stem (``a.jpg``,
    ``a.png``), or None: masks are named by stem, so such images would share one mask."""
    first_with_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in first_with_stem:
            return first_with_stem[image.stem], image
        first_with_stem[image.stem] = image
    return None


def resolve_inside(root: Path, relative: str, *, source: str) -> Path:
    """``root / relative``, refusing a path that leaves ``root`` (absolute paths, ``..``,
    symlinks pointing out) — a manifest or metadata file must name files of its copy."""
    root_resolved = root.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root_resolved):
        raise DatasetLayoutError(
            f"{source}: path {relative!r} points outside the dataset root {root}"
        )
    return candidate
