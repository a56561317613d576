"""Joint image+mask transforms (torchvision transforms v2): one random crop and flip is
applied to the image and its mask together; the mask is a ``tv_tensors.Mask`` and so is
resized with nearest neighbour and never interpolated.

The mask travels as one uint8 map: 0 background, 1 foreground, 255 ignore
(``generic.IGNORE_VALUE``), so the ignore region follows the same crop and flip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["joint_train_transform", "joint_eval_transform", "resize_for_crop"]


def resize_for_crop(crop_size: int, ratio: float = 256 / 224) -> int:
    """The paper's resize before a crop (256 for 224), scaled to other input sizes."""
    return int(round(crop_size * ratio))


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std))]


def joint_train_transform(crop_size: int, mean: Sequence[float], std: Sequence[float],
                          *, resize_ratio: float = 256 / 224, hflip: float = 0.5) -> v2.Compose:
    """Resize((s, s)) -> RandomCrop(crop) -> horizontal flip (p=hflip), image and mask
    together, then scale and normalise the image only (the paper's train transform)."""
    size = resize_for_crop(crop_size, resize_ratio)
    steps: list[v2.Transform] = [v2.Resize((size, size), antialias=True),
                                 v2.RandomCrop(crop_size)]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    return v2.Compose(steps + _finish(mean, std))


def joint_eval_transform(crop_size: int, mean: Sequence[float], std: Sequence[float],
                         *, resize_ratio: float = 256 / 224) -> v2.Compose:
    """Resize(short side s) -> CenterCrop(crop), image and mask together (the paper's
    evaluation transform), then scale and normalise the image."""
    size = resize_for_crop(crop_size, resize_ratio)
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(crop_size)]
                      + _finish(mean, std))
