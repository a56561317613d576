"""Images without masks, for the classification term alone (``data.unmasked_root``).

A user who has masks for a few images usually has many more images of the same classes
without masks (the model's own training set). Fine-tuning on the masked pairs alone keeps
the model's decisions on those pairs only; the classification term on these images as well
keeps them on the distribution the model was trained on (docs/method.md §2, "Images
without masks"). They are an ImageFolder (``<root>/<class>/<image>``) whose class folders
are those of the masked layout; ``per_class`` of each are drawn with the run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from robustft.data.datasets import transform_seeded
from robustft.data.layout import DatasetLayoutError, list_class_folders, list_images, load_rgb
from robustft.data.samplers import SampleKey, derived_seed

__all__ = ["UnmaskedRecord", "UnmaskedImageDataset", "batch_size_for_steps",
           "select_unmasked_images"]


@dataclass(frozen=True)
class UnmaskedRecord:
    """One image without a mask, its label and class folder name."""

    image_path: Path
    label: int
    class_name: str


def select_unmasked_images(root: str | Path, labels: dict[str, int], *, per_class: int | None,
                           seed: int, exclude: Sequence[Path] = (), stream: str = "unmasked",
                           key: str = "data.unmasked_root") -> list[UnmaskedRecord]:
    """``per_class`` images (None = all) of each class folder of ``root``, drawn with a
    generator per class derived from ``seed`` and ``stream`` (the held-out draw has its
    own); ``labels`` maps the masked layout's class folder names to their labels, and
    every folder of ``root`` must be one of them (a folder the model has no label for
    would be dropped silently otherwise). Images in ``exclude`` (the masked selection,
    when ``root`` is the masked layout's own image folder; the training draw, for the
    held-out one) are never drawn. ``key`` names the setting in errors."""
    root = Path(root)
    folders = list_class_folders(root)
    if not folders:
        raise DatasetLayoutError(f"{key}: {root} has no class folders "
                                 "(expected <root>/<class>/<image>)")
    unknown = [name for name in folders if name not in labels]
    if unknown:
        raise DatasetLayoutError(
            f"{key}: class folder {root / unknown[0]} is not a class of the masked "
            f"images ({len(unknown)} unknown: {unknown[:5]}; known e.g. {sorted(labels)[:5]})")
    excluded = {Path(path).resolve() for path in exclude}
    records: list[UnmaskedRecord] = []
    for name in folders:
        images = [path for path in list_images(root / name) if path.resolve() not in excluded]
        if not images:
            raise DatasetLayoutError(f"{key}: class folder {root / name} has no images (besides "
                                     "the masked selection's and those drawn before)")
        if per_class is not None and per_class < len(images):
            generator = np.random.default_rng(derived_seed(stream, seed, labels[name]))
            chosen = sorted(generator.choice(len(images), size=per_class, replace=False))
            images = [images[i] for i in chosen]
        records.extend(UnmaskedRecord(path, labels[name], name) for path in images)
    return records


def batch_size_for_steps(num_images: int, steps: int) -> int:
    """The batch size that shows every one of ``num_images`` once in at most ``steps``
    batches: the unmasked images are spread over the masked pairs' steps of an epoch."""
    return max(1, -(-num_images // max(1, steps)))


class UnmaskedImageDataset(Dataset):
    """Yields ``{"image": (3, H, W) float, "label": int}``; indexed by a ``SampleKey``, the
    transform's random draws come from the key's seed alone (as ``ImageMaskDataset``)."""

    def __init__(self, records: Sequence[UnmaskedRecord], transform: v2.Transform, *,
                 cache_decoded: bool = False) -> None:
        if len(records) == 0:
            raise ValueError("UnmaskedImageDataset got no records")
        self.records = list(records)
        self.transform = transform
        self._decoded: dict[int, np.ndarray] | None = {} if cache_decoded else None

    def __len__(self) -> int:
        return len(self.records)

    def _pixels(self, index: int) -> np.ndarray:
        if self._decoded is None:
            return np.array(load_rgb(self.records[index].image_path))
        if index not in self._decoded:
            self._decoded[index] = np.array(load_rgb(self.records[index].image_path))
        return self._decoded[index]

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor | int]:
        index, augmentation_seed = (key.index, key.seed) if isinstance(key, SampleKey) else (key, None)
        image = tv_tensors.Image(torch.from_numpy(self._pixels(index)).permute(2, 0, 1))
        image = transform_seeded(self.transform, augmentation_seed, image)
        return {"image": image.as_subclass(torch.Tensor), "label": self.records[index].label}
