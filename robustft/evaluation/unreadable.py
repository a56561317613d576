"""Evaluation images that do not decode: counted, logged and listed, never fatal and never
dropped silently (see ``robustft.evaluation.runner``)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["UNREADABLE_NAME", "UnreadableImage", "report_unreadable", "write_unreadable_images"]

log = logging.getLogger(__name__)

UNREADABLE_NAME = "unreadable_images.csv"
COLUMNS = ("dataset", "path", "error")


@dataclass(frozen=True)
class UnreadableImage:
    """An evaluation image that did not decode, skipped for every model."""

    dataset: str
    path: str
    error: str


class _Skipped(Protocol):
    path: str
    error: str


def report_unreadable(dataset_name: str, total: int, skipped: Sequence[_Skipped]) -> None:
    """One log line for a dataset's unreadable images; none readable is a ``ValueError``
    (an accuracy over no image would read as 0 %)."""
    if not skipped:
        return
    first = skipped[0]
    if len(skipped) == total:
        raise ValueError(f"dataset {dataset_name!r}: none of its {total} images decodes, "
                         f"e.g. {first.path}: {first.error}")
    log.warning("%s: %d of %d images are unreadable and were skipped for every model "
                "(accuracy over the other %d), e.g. %s: %s", dataset_name, len(skipped), total,
                total - len(skipped), first.path, first.error)


def write_unreadable_images(path: str | os.PathLike[str], evaluated: Iterable[str],
                            images: Iterable[UnreadableImage]) -> Path:
    """(Re)write the CSV ``path`` (columns dataset, path, error): the rows of the datasets in
    ``evaluated`` are replaced by ``images``, those of other datasets (finished by an
    earlier run that this one resumes) are kept."""
    path = Path(path)
    evaluated = set(evaluated)
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["dataset"] not in evaluated]
    rows += [{"dataset": image.dataset, "path": image.path, "error": image.error}
             for image in images]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
