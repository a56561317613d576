"""The TokenCut manifest (``tokencut_manifest.csv``), the file ``robustft-masks`` writes
beside its masks: one row per image with its mask, size, foreground fraction and whether
the minimum-foreground filter kept it. The data side reads it (``data.mask_manifest``) to
fine-tune on the kept masks only; ``robustft.masks`` writes it."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TOKENCUT_MANIFEST_FIELDS",
    "TOKENCUT_MANIFEST_NAME",
    "TokenCutRow",
    "kept_mask_pairs",
    "read_tokencut_manifest",
    "write_tokencut_manifest",
]

TOKENCUT_MANIFEST_NAME = "tokencut_manifest.csv"
TOKENCUT_MANIFEST_FIELDS = (
    "image",  # path relative to input_dir (posix)
    "mask",  # path relative to output_dir (posix); empty when skipped
    "class_name",
    "width",  # the image's own size (the mask's size)
    "height",
    "foreground_fraction",  # foreground pixels / all pixels of the final mask
    "kept",  # True/False by the minimum-foreground filter; empty when skipped
    "refined",  # True/False: bilateral-solver refinement applied; empty = unknown/skipped
    "features",  # what was cut: keys | centred_keys | queries | values | output (with block)
    "tau",  # the affinity threshold used (tau=auto: the image's median cosine)
    "eigenvalue",  # second generalised eigenvalue of the graph (1 = complete graph)
    "share_below_tau",  # share of patch pairs below tau (0 = complete graph)
    "status",  # written | resumed | skipped
    "reason",  # why skipped, or why not kept
)


@dataclass
class TokenCutRow:
    image: str
    mask: str = ""
    class_name: str = ""
    width: int | None = None
    height: int | None = None
    foreground_fraction: float | None = None
    kept: bool | None = None
    refined: bool | None = None
    features: str = ""
    tau: float | None = None
    eigenvalue: float | None = None
    share_below_tau: float | None = None
    status: str = ""
    reason: str = ""

    def to_csv(self) -> dict[str, str]:
        def text(value: Any) -> str:
            if value is None:
                return ""
            if isinstance(value, float):
                return f"{value:.6f}"
            return str(value)

        return {name: text(getattr(self, name)) for name in TOKENCUT_MANIFEST_FIELDS}

    @classmethod
    def from_csv(cls, record: dict[str, str]) -> TokenCutRow:
        def optional(value: str | None, cast: Any) -> Any:
            if value is None or value == "":
                return None
            if cast is bool:
                return value.strip().lower() == "true"
            return cast(value)

        return cls(
            image=record["image"],
            mask=record.get("mask", "") or "",
            class_name=record.get("class_name", "") or "",
            width=optional(record.get("width"), int),
            height=optional(record.get("height"), int),
            foreground_fraction=optional(record.get("foreground_fraction"), float),
            kept=optional(record.get("kept"), bool),
            refined=optional(record.get("refined"), bool),
            features=record.get("features", "") or "",
            tau=optional(record.get("tau"), float),
            eigenvalue=optional(record.get("eigenvalue"), float),
            share_below_tau=optional(record.get("share_below_tau"), float),
            status=record.get("status", "") or "",
            reason=record.get("reason", "") or "",
        )


def read_tokencut_manifest(path: str | os.PathLike[str]) -> list[TokenCutRow]:
    """Rows of a ``tokencut_manifest.csv``."""
    with open(path, newline="") as handle:
        return [TokenCutRow.from_csv(record) for record in csv.DictReader(handle)]


def kept_mask_pairs(output_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(image relative to input_dir, mask relative to output_dir)`` for every mask the
    minimum-foreground filter kept: what a fine-tuning data config should use."""
    rows = read_tokencut_manifest(Path(output_dir) / TOKENCUT_MANIFEST_NAME)
    return [(row.image, row.mask) for row in rows if row.kept and row.mask]


def write_tokencut_manifest(path: Path, rows: Iterable[TokenCutRow]) -> None:
    """Write the rows sorted by image, atomically (a temporary file, then a rename), so
    an interrupted run leaves the previous manifest whole."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TOKENCUT_MANIFEST_FIELDS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r.image):
            writer.writerow(row.to_csv())
    os.replace(temporary, path)
