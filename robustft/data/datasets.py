"""Torch datasets of image/mask pairs for fine-tuning."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from robustft.data.generic import IGNORE_VALUE, ImageMaskRecord, decode_binary_mask
from robustft.data.layout import CorruptImageError, load_rgb
from robustft.data.samplers import SampleKey

__all__ = ["ImageMaskDataset", "MaskDecoder", "transform_seeded"]

# A mask decoder reads one mask file into uint8 (H, W): 0 background, 1 foreground,
# IGNORE_VALUE ignored (counted in neither loss term).
MaskDecoder = Callable[[Path], np.ndarray]


def transform_seeded(transform: v2.Transform, seed: int | None, *inputs):
    """``transform(*inputs)``; with a ``seed``, its random draws come from that seed alone.
    torchvision v2 draws from the global RNG: it is seeded for this call only, and the
    caller's stream (the main process's, when num_workers is 0) is left as it was."""
    if seed is None:
        return transform(*inputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(*inputs)


class ImageMaskDataset(Dataset):
    """Yields ``{"image": (3, H, W) float, "mask": (H, W) float in {0, 1},
    "ignore": (H, W) bool, "label": int}`` after a joint transform, and ``"caption": str``
    when the records have captions (collated into a list, in the batch's image order).

    Indexed by an int, the transform's random draws come from torch's global RNG; indexed
    by a ``SampleKey`` (``EpochSeededSampler``), they come from the key's seed alone, so
    the same key gives the same crop and flip in any process, epoch or resumed run.
    """

    def __init__(self, records: Sequence[ImageMaskRecord], transform: v2.Transform,
                 mask_decoder: MaskDecoder = decode_binary_mask, *,
                 cache_decoded: bool = False) -> None:
        """``cache_decoded``: keep every decoded image and mask in memory after its first
        read (per process), for small datasets read for many epochs; the transform still
        runs on every access."""
        if len(records) == 0:
            raise ValueError("ImageMaskDataset got no records (is the selection empty?)")
        self.records = list(records)
        self.transform = transform
        self.mask_decoder = mask_decoder
        self._decoded: dict[int, tuple[np.ndarray, np.ndarray]] | None = (
            {} if cache_decoded else None)

    def __len__(self) -> int:
        return len(self.records)

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and joint mask of record ``index``; a file that does not decode is a
        ``CorruptImageError`` naming it (PIL's own errors, e.g. "image file is truncated",
        name no file)."""
        record = self.records[index]
        pixels = np.array(load_rgb(record.image_path))
        try:
            joint_mask = self.mask_decoder(record.mask_path)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            if isinstance(error, FileNotFoundError) or str(record.mask_path) in str(error):
                raise  # already names the file
            raise CorruptImageError(record.mask_path, f"{type(error).__name__}: {error}") from error
        if joint_mask.shape != pixels.shape[:2]:
            raise ValueError(
                f"mask {record.mask_path} is {joint_mask.shape[1]}x{joint_mask.shape[0]} but its "
                f"image {record.image_path} is {pixels.shape[1]}x{pixels.shape[0]}"
            )
        return pixels, joint_mask

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor | int]:
        index, augmentation_seed = (key.index, key.seed) if isinstance(key, SampleKey) else (key, None)
        record = self.records[index]
        if self._decoded is None:
            pixels, joint_mask = self._decode(index)
        else:
            if index not in self._decoded:
                self._decoded[index] = self._decode(index)
            pixels, joint_mask = self._decoded[index]
        image_t = tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(torch.from_numpy(joint_mask))
        image_t, mask_t = transform_seeded(self.transform, augmentation_seed, image_t, mask_t)
        ignore = mask_t == IGNORE_VALUE
        sample = {
            "image": image_t.as_subclass(torch.Tensor),
            "mask": (mask_t == 1).float().as_subclass(torch.Tensor),
            "ignore": ignore.as_subclass(torch.Tensor),
            "label": record.label,
        }
        if record.caption is not None:
            sample["caption"] = record.caption
        return sample
