"""How close written TokenCut masks are to true masks (ImageNet-S, the generated
benchmark's ``train`` split): the yardstick the mask benchmark and its tests use."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from robustft.data.image_files import decode_binary_mask
from robustft.data.mask_manifest import TOKENCUT_MANIFEST_NAME, read_tokencut_manifest

__all__ = ["IOU_TABLE_NAME", "compare_with_true_masks", "write_iou_table"]

IOU_TABLE_NAME = "tokencut_iou.csv"


def compare_with_true_masks(
    output_dir: str | os.PathLike[str], true_root: str | os.PathLike[str]
) -> dict[str, float]:
    """Intersection over union of every written mask against a true mask in the generic
    layout, ``<true_root>/masks/<class>/<stem>.png`` (nonzero = foreground; resized
    nearest to the mask's size if they differ). Returns ``{image: IoU}`` for the images
    that have both; e.g. ImageNet-S or the generated benchmark's ``train`` split."""
    scores: dict[str, float] = {}
    for row in read_tokencut_manifest(Path(output_dir) / TOKENCUT_MANIFEST_NAME):
        truth_path = Path(true_root) / row.mask
        if not row.mask or not truth_path.is_file():
            continue
        with Image.open(Path(output_dir) / row.mask) as image:
            predicted = np.asarray(image.convert("L")) > 127
        truth = decode_binary_mask(truth_path)  # a palette mask by index, as training reads it
        if truth.shape != predicted.shape:
            truth = np.asarray(Image.fromarray(truth).resize(
                (predicted.shape[1], predicted.shape[0]), Image.NEAREST))
        truth = truth > 0
        union = np.logical_or(predicted, truth).sum()
        scores[row.image] = 1.0 if union == 0 else float((predicted & truth).sum() / union)
    return scores


def write_iou_table(scores: dict[str, float], path: str | os.PathLike[str]) -> Path:
    """``image,iou`` rows (sorted) and a last ``mean`` row."""
    path = Path(path)
    lines = ["image,iou"] + [f"{image},{iou:.6f}" for image, iou in sorted(scores.items())]
    lines.append(f"mean,{sum(scores.values()) / max(len(scores), 1):.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path
