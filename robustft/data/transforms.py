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

__all__ = ["CropSize", "crop_height_width", "joint_train_transform", "joint_eval_transform",
           "resize_for_crop"]


CropSize = int | tuple[int, int]


def resize_for_crop(crop_size: int, ratio: float = 256 / 224) -> int:
    """The paper's resize before a crop (256 for 224), scaled to other input sizes."""
    return int(round(crop_size * ratio))


def crop_height_width(crop_size: CropSize | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``(h, w)`` (a non-square model input) as ``(h, w)``."""
    if isinstance(crop_size, int):
        return crop_size, crop_size
    height, width = (int(v) for v in crop_size)
    return height, width


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std))]


def joint_train_transform(crop_size: CropSize, mean: Sequence[float], std: Sequence[float],
                          *, resize_ratio: float = 256 / 224, hflip: float = 0.5) -> v2.Compose:
    """Resize((s_h, s_w)) -> RandomCrop(crop) -> horizontal flip (p=hflip), image and mask
    together, then scale and normalise the image only (the paper's train transform)."""
    height, width = crop_height_width(crop_size)
    size = (resize_for_crop(height, resize_ratio), resize_for_crop(width, resize_ratio))
    steps: list[v2.Transform] = [v2.Resize(size, antialias=True),
                                 v2.RandomCrop((height, width))]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    return v2.Compose(steps + _finish(mean, std))


def joint_eval_transform(crop_size: CropSize, mean: Sequence[float], std: Sequence[float],
                         *, resize_ratio: float = 256 / 224) -> v2.Compose:
    """Resize(short side s) -> CenterCrop(crop), image and mask together (the paper's
    evaluation transform), then scale and normalise the image. A non-square input
    (h, w) is resized to (s_h, s_w) before its centre crop."""
    height, width = crop_height_width(crop_size)
    if height == width:
        resize = v2.Resize(resize_for_crop(height, resize_ratio), antialias=True)
    else:
        resize = v2.Resize((resize_for_crop(height, resize_ratio),
                            resize_for_crop(width, resize_ratio)), antialias=True)
    return v2.Compose([resize, v2.CenterCrop((height, width))] + _finish(mean, std))
