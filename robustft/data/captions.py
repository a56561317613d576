"""Free-text prompts per image (docs/method.md §11, "Fine-tuning on free prompts"): a
captions file for a folder dataset, and the check that a selection is captioned whole.

A captions file (``data.captions``) is a CSV with the header ``image,caption``: per row, an
image path relative to the dataset root (as the selection manifest writes it,
``images/<class>/<name>.jpg``) and its prompt. A selection manifest can carry the prompts
itself in a last ``caption`` column (``robustft.data.generic.read_selection``); a run with
captions writes one, so ``data.manifest`` reuses the prompts with the files.

Every bad row is one ``ValueError`` (or ``FileNotFoundError``) naming the file, its line and
what was expected: a wrong header, an empty caption, an image that is not under the root, an
image captioned twice, and a selected image without a caption.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from robustft.data.generic import ImageMaskRecord, Selection

__all__ = ["CAPTION_FILE_COLUMNS", "attach_captions", "check_captioned", "is_captioned",
           "read_captions", "selection_captions"]

CAPTION_FILE_COLUMNS = ("image", "caption")


def read_captions(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> dict[str, str]:
    """``{image path relative to root (POSIX): caption}`` from a captions file; see the
    module docstring for what is refused."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise FileNotFoundError(f"data.captions: captions file not found: {path} (expected a CSV "
                                f"with the header {','.join(CAPTION_FILE_COLUMNS)})")
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CAPTION_FILE_COLUMNS:
            raise ValueError(f"data.captions: {path} line 1: expected the header "
                             f"{','.join(CAPTION_FILE_COLUMNS)}, got {header}")
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != 2:
                raise ValueError(f"data.captions: {path} line {line}: expected 2 fields "
                                 f"(image,caption; quote a caption that has a comma), got "
                                 f"{len(row)}")
            image, caption = row[0].strip(), row[1].strip()
            if not caption:
                raise ValueError(f"data.captions: {path} line {line}: empty caption for "
                                 f"{image}; every image needs a prompt")
            resolved = (root / image).resolve()
            if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
                raise FileNotFoundError(f"data.captions: {path} line {line}: {image!r} is not an "
                                        f"image under {root} (expected a path relative to the "
                                        "root, e.g. images/<class>/<name>.jpg)")
            key = Path(image).as_posix()
            if key in captions:
                raise ValueError(f"data.captions: {path} line {line}: {image} is captioned "
                                 f"again (first at line {first_line[key]}); give one caption "
                                 "per image")
            captions[key], first_line[key] = caption, line
    if not captions:
        raise ValueError(f"data.captions: {path} has no caption rows")
    return captions


def attach_captions(selection: Selection, captions: Mapping[str, str],
                    root: str | os.PathLike[str], source: str) -> Selection:
    """``selection`` with each record's caption from ``captions`` (keyed as
    :func:`read_captions` keys them); a ``ValueError`` naming ``source`` and the first
    selected image that has none."""
    root = Path(root)

    def captioned(record: ImageMaskRecord, split: str) -> ImageMaskRecord:
        key = record.image_path.relative_to(root).as_posix()
        if key not in captions:
            raise ValueError(f"data.captions: {source} has no caption for {key} (selected for "
                             f"{split}); every selected image needs a row image,caption")
        return replace(record, caption=captions[key])

    return Selection(train=[captioned(r, "train") for r in selection.train],
                     val=[captioned(r, "val") for r in selection.val],
                     class_names=selection.class_names)


def is_captioned(selection: Selection) -> bool:
    """Whether the selection's records carry captions (all of them: see
    :func:`check_captioned`)."""
    return any(r.caption is not None for r in (*selection.train, *selection.val))


def check_captioned(selection: Selection, source: str) -> Selection:
    """``selection`` unchanged when all or none of its records have a caption; a
    ``ValueError`` naming ``source`` and the first uncaptioned image otherwise."""
    records = [*selection.train, *selection.val]
    if any(r.caption is not None for r in records):
        missing = next((r for r in records if r.caption is None), None)
        if missing is not None:
            raise ValueError(f"{source}: {missing.image_path} has no caption while other images "
                             "have one; give every image a caption")
    return selection


def selection_captions(selection: Selection, captions_file: str | os.PathLike[str] | None,
                       root: str | os.PathLike[str], manifest: str | None) -> Selection:
    """``selection`` with its captions: from ``captions_file`` (``data.captions``) when one is
    given, every selected image needing a row; else as the ``manifest`` carried them (all
    records or none)."""
    if captions_file:
        selection = attach_captions(selection, read_captions(captions_file, root), root,
                                    str(captions_file))
    return check_captioned(selection, f"data.manifest: {manifest}")
