"""Decode image/mask pairs fully and say what is wrong with each: the check every selected
fine-tuning pair passes before any model step, and the engine of
``robustft-data verify generic``.

A pair is decoded exactly as training reads it (``load_rgb`` for the image, the data
module's mask decoder for the mask), in full: ``Image.open`` is lazy and a truncated file
only fails when its pixels are read, which would otherwise happen mid-epoch.
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` stays False, so a truncated file is an error rather
than an image padded with grey.

Masks without a foreground pixel (all background, or background and ignore only) give
the foreground term and the foreground share nothing to measure: the selection check
counts them on the exact selected pairs and, per ``data.empty_masks``, excludes them
(``exclude``, the default) or keeps them as background-only examples (``background``:
the background term then pushes their relevance down).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from robustft.data.generic import ImageMaskRecord, Selection
from robustft.data.image_files import CorruptImageError, ImageModeError, load_rgb
from robustft.data.layout import DatasetLayoutError
from robustft.resources import usable_cpus

__all__ = [
    "EMPTY_MASK_POLICIES",
    "CheckedSelection",
    "EmptyMaskPolicy",
    "PairInspection",
    "PairProblem",
    "check_disjoint",
    "check_empty_mask_policy",
    "check_selection",
    "empty_mask_warning",
    "inspect_pair",
    "inspect_pairs",
    "write_empty_mask_list",
]

EmptyMaskPolicy = Literal["exclude", "background"]
EMPTY_MASK_POLICIES: tuple[str, ...] = ("exclude", "background")
FOREGROUND_VALUE = 1  # the mask decoders' foreground value (datasets.MaskDecoder)
SPLIT_NAMES = {"train": "training", "val": "validation"}


@dataclass(frozen=True)
class PairProblem:
    """One thing wrong with a pair: ``kind`` (``unreadable_image``, ``image_mode`` — the
    image decodes in a mode that is not read, e.g. 32-bit float grey — ``unreadable_mask``,
    ``mask_mode`` — the decoder refused the mask, e.g. a multi-channel generic mask —
    or ``size_mismatch``), the file it concerns, a short ``detail`` (what the decoder
    said, the two sizes) and a one-line ``message`` naming the file and what to do."""

    kind: str
    path: Path
    detail: str
    message: str


def _reason(error: Exception) -> str:
    return getattr(error, "reason", None) or f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class PairInspection:
    record: ImageMaskRecord
    problems: tuple[PairProblem, ...] = ()
    has_foreground: bool | None = None  # None when the mask could not be decoded


def inspect_pair(record: ImageMaskRecord,
                 mask_decoder: Callable[[Path], np.ndarray]) -> PairInspection:
    """Decode the image and the mask of ``record`` fully and compare their sizes."""
    problems: list[PairProblem] = []
    image_size = mask = None
    try:
        image_size = load_rgb(record.image_path).size
    except ImageModeError as error:  # decodes, in a mode that is not read (one line already)
        problems.append(PairProblem("image_mode", record.image_path, error.reason, str(error)))
    except (CorruptImageError, FileNotFoundError) as error:
        problems.append(PairProblem(
            "unreadable_image", record.image_path, _reason(error),
            f"{record.image_path}: cannot decode the image ({_reason(error)}); fix or remove it"))
    try:
        mask = mask_decoder(record.mask_path)
    except (CorruptImageError, FileNotFoundError) as error:
        problems.append(PairProblem(
            "unreadable_mask", record.mask_path, _reason(error),
            f"{record.mask_path}: cannot decode the mask ({_reason(error)}); fix or remove it"))
    except ValueError as error:  # the decoder's own one-line refusal, naming the file
        message = str(error)
        problems.append(PairProblem("mask_mode", record.mask_path,
                                    message.removeprefix(f"{record.mask_path}: "), message))
    if image_size is not None and mask is not None and mask.shape != image_size[::-1]:
        sizes = f"{mask.shape[1]}x{mask.shape[0]}, its image {image_size[0]}x{image_size[1]}"
        problems.append(PairProblem(
            "size_mismatch", record.mask_path, sizes,
            f"{record.mask_path}: the mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{record.image_path} is {image_size[0]}x{image_size[1]}"))
    has_foreground = None if mask is None else bool((mask == FOREGROUND_VALUE).any())
    return PairInspection(record, tuple(problems), has_foreground)


def inspect_pairs(records: Sequence[ImageMaskRecord], mask_decoder: Callable[[Path], np.ndarray],
                  *, num_threads: int | None = None,
                  progress: Callable | None = None) -> list[PairInspection]:
    """:func:`inspect_pair` for every record, in order, on a thread pool (the PIL decoders
    release the GIL). ``progress`` wraps the result iterator (e.g. ``tqdm``)."""
    threads = num_threads or min(8, usable_cpus())
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = pool.map(lambda record: inspect_pair(record, mask_decoder), records)
        if progress is not None:
            results = progress(results, total=len(records))
        return list(results)


def check_empty_mask_policy(policy: str) -> EmptyMaskPolicy:
    if policy not in EMPTY_MASK_POLICIES:
        raise ValueError(f"data.empty_masks must be 'exclude' or 'background', got {policy!r}")
    return policy  # type: ignore[return-value]


@dataclass(frozen=True)
class CheckedSelection:
    """``selection``: what to fine-tune and validate on (empty-mask pairs removed under
    ``exclude``); ``empty``: split -> the selected pairs whose mask has no foreground."""

    selection: Selection
    empty: dict[str, list[ImageMaskRecord]] = field(default_factory=dict)
    drawn_counts: dict[str, int] = field(default_factory=dict)


def check_selection(selection: Selection, mask_decoder: Callable[[Path], np.ndarray], *,
                    empty_masks: EmptyMaskPolicy = "exclude",
                    num_threads: int | None = None) -> CheckedSelection:
    """Decode every selected pair; the first problem is a ``DatasetLayoutError`` (one line
    naming the file, with the count of the others), and masks without foreground are
    counted per split and handled per ``empty_masks``. A split that had pairs and would
    lose all of them to ``exclude`` is an error."""
    check_empty_mask_policy(empty_masks)
    check_disjoint(selection)
    splits = {"train": selection.train, "val": selection.val}
    inspections = {split: inspect_pairs(records, mask_decoder, num_threads=num_threads)
                   for split, records in splits.items()}
    problems = [p for found in inspections.values() for i in found for p in i.problems]
    if problems:
        others = f" ({len(problems) - 1} more problem(s) among the selected pairs)" \
            if len(problems) > 1 else ""
        raise DatasetLayoutError(problems[0].message + others)
    empty = {split: [i.record for i in found if not i.has_foreground]
             for split, found in inspections.items()}
    kept = dict(splits)
    if empty_masks == "exclude":
        for split, records in splits.items():
            if records and len(empty[split]) == len(records):
                raise DatasetLayoutError(
                    f"none of the {len(records)} selected {SPLIT_NAMES[split]} masks has a "
                    f"foreground pixel (e.g. {records[0].mask_path}); fix the masks or set "
                    "data.empty_masks=background to train on them as background-only examples")
            excluded = set(empty[split])
            kept[split] = [r for r in records if r not in excluded]
    return CheckedSelection(
        Selection(train=kept["train"], val=kept["val"], class_names=selection.class_names),
        empty, {split: len(records) for split, records in splits.items()})


def check_disjoint(selection: Selection) -> None:
    """A validation pair is never trained on: an image in both splits (a hand-edited or
    merged selection manifest) is a ``DatasetLayoutError`` naming it."""
    trained = {Path(record.image_path).resolve() for record in selection.train}
    both = [record.image_path for record in selection.val
            if Path(record.image_path).resolve() in trained]
    if both:
        more = f" and {len(both) - 1} more" if len(both) > 1 else ""
        raise DatasetLayoutError(f"{both[0]}{more} is both a training and a validation pair; a "
                                 "validation pair must never be trained on (check data.manifest)")


def empty_mask_warning(checked: CheckedSelection, policy: EmptyMaskPolicy,
                       listed_in: Path | None = None) -> str | None:
    """The one warning line about masks without foreground, or None when there are none."""
    empty = [r for records in checked.empty.values() for r in records]
    if not empty:
        return None
    counts = " and ".join(f"{len(checked.empty[split])} of {checked.drawn_counts[split]} "
                          f"{SPLIT_NAMES[split]}" for split in ("train", "val")
                          if checked.drawn_counts.get(split))
    where = f"; listed in {listed_in}" if listed_in is not None else ""
    if policy == "exclude":
        action = ("excluded from fine-tuning and validation; set data.empty_masks=background "
                  "to keep them as background-only examples")
    else:
        action = "kept as background-only examples (data.empty_masks=background)"
    return f"{counts} masks have no foreground (e.g. {empty[0].mask_path}); {action}{where}"


def write_empty_mask_list(checked: CheckedSelection, policy: EmptyMaskPolicy,
                          path: str | os.PathLike[str]) -> Path:
    """CSV (split, image, mask, action) of the selected pairs whose mask has no foreground."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    action = "excluded" if policy == "exclude" else "kept_as_background"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("split", "image", "mask", "action"))
        for split in ("train", "val"):
            for record in checked.empty.get(split, []):
                writer.writerow((split, record.image_path, record.mask_path, action))
    return path
