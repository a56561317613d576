"""The DataLoader side of mask generation: each image read, checked, resized to the
model's input size and normalised, in worker processes; a bad image becomes an item with
an ``error`` (the run skips and reports it) instead of an exception that would end the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from timm.data.transforms import str_to_pil_interp
from torch.utils.data import Dataset

from robustft.data.image_files import CorruptImageError, load_rgb
from robustft.masks.inputs import ImageEntry

__all__ = ["ResizedImageDataset", "collate_as_list"]


class ResizedImageDataset(Dataset):
    """Reads an image, checks it, resizes to the model's input size and normalises."""

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str,
        patch_size: tuple[int, int],
        keep_rgb: bool,
    ) -> None:
        self.entries = list(entries)
        self.input_size = input_size
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.interpolation = str_to_pil_interp(interpolation)
        self.patch_size = patch_size
        self.keep_rgb = keep_rgb

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        item: dict[str, Any] = {"index": index, "pixels": None, "rgb": None, "size": None}
        try:
            image = load_rgb(entry.path)  # the one image reader: each mode as training reads it
        except CorruptImageError as error:
            item["error"] = f"unreadable image: {error.reason}"
            return item
        # anything else PIL raises for a corrupt file also means a skip
        except Exception as error:  # noqa: BLE001
            item["error"] = f"unreadable image: {type(error).__name__}: {error}"
            return item
        width, height = image.size
        item["size"] = (height, width)
        ph, pw = self.patch_size
        if height < ph or width < pw:
            item["error"] = f"image {width}x{height} is smaller than one {pw}x{ph} patch"
            return item
        resized = image.resize((self.input_size[1], self.input_size[0]), self.interpolation)
        array = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
        item["pixels"] = torch.from_numpy((array - self.mean) / self.std)
        if self.keep_rgb:
            item["rgb"] = np.asarray(image, dtype=np.uint8)
        item["error"] = None
        return item


def collate_as_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items as they are: sizes differ and skipped items carry no pixels, so
    the run stacks the good ones itself."""
    return items
