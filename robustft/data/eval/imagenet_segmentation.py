"""The ImageNet-segmentation test set (Guillaumin et al., IJCV 2014), as the explainability
field uses it: one MATLAB v7.3 file ``gtsegs_ijcv.mat`` (an HDF5 file) holding 4,276
images and their binary object masks, without class labels.

HDF5 layout (MATLAB stores arrays column-major, so every array reads transposed):

- ``/value/img``: (N, 1) object references; image ``i`` is ``f[f['/value/img'][i, 0]]``,
  a (3, W, H) uint8 array -> ``.transpose(2, 1, 0)`` = (H, W, 3) RGB;
- ``/value/gt``: (N, 1) references to (1, 1) cells of references; mask ``i`` is
  ``f[f[f['/value/gt'][i, 0]][0, 0]]``, a (W, H) array -> ``.transpose(1, 0)`` = (H, W),
  nonzero = object.

The dataset follows ``robustft.data.eval.base``'s interface with ``has_labels = False``
(targets are -1: metrics that need a label refuse it) and ``has_masks = True``. The file
is opened lazily in each process that reads it (DataLoader workers included): an open
h5py file does not survive pickling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from robustft.data.eval.base import EvalDatasetType
from robustft.data.layout import CorruptImageError, DatasetLayoutError
from robustft.labels import check_protocol_kind, imagenet_protocol

__all__ = ["DATASET_TYPES", "GTSEGS_FILE", "ImageNetSegmentation", "imagenet_segmentation"]

GTSEGS_FILE = "gtsegs_ijcv.mat"


def _open(path: Path) -> Any:
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"ImageNet-segmentation file not found: {path} "
                                f"(expected {GTSEGS_FILE}, MATLAB v7.3)")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DatasetLayoutError(f"{path} is not a MATLAB v7.3 (HDF5) file: {error}") from None


class ImageNetSegmentation(Dataset):
    """Images and masks of ``gtsegs_ijcv.mat`` (see module docstring)."""

    has_labels = False
    has_masks = True

    def __init__(self, path: str | os.PathLike[str], protocol: str = "standard",
                 name: str = "imagenet-segmentation") -> None:
        self.path = Path(path)
        with _open(self.path) as handle:
            for key in ("/value/img", "/value/gt"):
                if key not in handle:
                    raise DatasetLayoutError(f"{self.path}: no dataset {key} (expected the "
                                             "gtsegs_ijcv.mat layout /value/img, /value/gt)")
            count, masks = len(handle["/value/img"]), len(handle["/value/gt"])
        if count == 0 or count != masks:
            raise DatasetLayoutError(f"{self.path}: {count} images and {masks} masks; "
                                     "expected the same positive number")
        self.name = name
        self.protocol = imagenet_protocol(check_protocol_kind(protocol))
        self.root = self.path.parent
        self.samples = [(self.path, -1, {}) for _ in range(count)]
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def _handle(self) -> Any:
        if self._file is None:
            self._file = _open(self.path)
        return self._file

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, what: str, index: int) -> np.ndarray:
        handle = self._handle()
        try:
            if what == "image":
                return np.asarray(handle[handle["/value/img"][index, 0]]).transpose(2, 1, 0)
            cell = handle[handle["/value/gt"][index, 0]]
            return np.asarray(handle[cell[0, 0]]).transpose(1, 0)
        except (KeyError, OSError, ValueError, TypeError) as error:
            raise CorruptImageError(self.path, f"{what} {index}: {type(error).__name__}: "
                                               f"{error}") from error

    def __getitem__(self, index: int) -> tuple[Image.Image, int, dict[str, str]]:
        pixels = self._read("image", index)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise CorruptImageError(self.path, f"image {index} has shape {pixels.shape}, "
                                               "expected (H, W, 3)")
        return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)), -1, {}

    def load_mask(self, index: int) -> np.ndarray:
        """uint8 (H, W): 1 = object, 0 = background."""
        return (self._read("mask", index) != 0).astype(np.uint8)

    def __repr__(self) -> str:
        return f"ImageNetSegmentation(path={str(self.path)!r}, images={len(self)})"


def imagenet_segmentation(root: str | os.PathLike[str], *, protocol: str = "standard",
                          name: str = "imagenet-segmentation", file: str = GTSEGS_FILE
                          ) -> ImageNetSegmentation:
    """``<root>/<file>`` (default ``gtsegs_ijcv.mat``)."""
    return ImageNetSegmentation(Path(root) / file, protocol=protocol, name=name)


DATASET_TYPES: tuple[EvalDatasetType, ...] = (
    EvalDatasetType("imagenet-segmentation", imagenet_segmentation),)
