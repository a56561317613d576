"""Evaluation datasets read from the layouts they ship in.

Common interface (what ``robustft.evaluation.runner.evaluate_models`` consumes): a
``torch.utils.data.Dataset`` whose ``__getitem__`` returns ``(image: PIL RGB, target: int,
meta: dict[str, str])`` with attributes ``name``, ``protocol`` (a ``LabelProtocol``; the
targets index its classes) and ``samples`` (list of ``(path, target, meta)``). ``meta``
holds factor values (SI-Score area / location / rotation, the generated benchmark's
sweeps) and is ``{}`` otherwise.

Datasets with segmentation masks (the generated benchmark's splits, the generic
images+masks layout, ImageNet-S, ImageNet-segmentation) say so with ``has_masks`` and give
``load_mask(index)``: a uint8 (H, W) array of the image's size, 0 = background, 1 =
foreground, 255 = not labelled. A dataset without ground-truth classes (ImageNet-
segmentation) has ``has_labels = False``; its targets are ``-1``.

Bad input policy (the same for every dataset here):
- missing root / mapping file / metadata file, an unknown class folder, a metadata row
  naming a file outside the root, an empty dataset: ``DatasetLayoutError`` at construction,
  naming the path or key and what was expected;
- a corrupt (undecodable: bad bytes, truncated PNG/JPEG) image: ``CorruptImageError``
  naming the file when it is read (decoded in full, so a truncated file never passes as
  half grey). The evaluation runner skips such an image for every model, counts it in
  its log and lists it in the run's ``unreadable_images.csv``, and ``num_images`` says
  over how many images an accuracy is: nothing is dropped silently, since a shrunk
  dataset gives numbers that are not comparable with anyone else's.
  ``robustft-data verify`` lists every unreadable file up front.

A dataset type (what ``eval.datasets.<name>.type`` names) is one
:class:`EvalDatasetType` record, declared in the reader's file and listed in
``robustft.data.eval.registry``: its name, how to build it, and the folder its images
are read from.

This module holds the common dataset class and the record; the readers are ``imagenet`` (val, A, R,
Sketch, V2), ``objectnet`` and ``si_score`` beside it and ``robustft.synth.read`` (the
generated benchmark); the file-layout primitives and the two errors are in
``robustft.data.layout``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from robustft.data.layout import DatasetLayoutError, load_rgb
from robustft.labels import LabelProtocol

__all__ = ["EvalDatasetType", "EvalImageDataset", "MaskDecoder", "Sample", "images_at_root"]

Sample = tuple[Path, int, dict[str, str]]
# a mask file -> uint8 (H, W): 0 background, 1 foreground, 255 not labelled
MaskDecoder = Callable[[str | os.PathLike[str]], np.ndarray]


class EvalImageDataset(Dataset):
    """A list of ``(path, target, meta)`` samples with a label protocol.

    ``transform_image`` (optional) is applied to the decoded RGB image before it is
    returned, e.g. ObjectNet's border crop; it is part of the dataset, not of a model's
    preprocessing. ``mask_paths`` (one per sample, decoded by ``mask_decoder``) makes it a
    dataset with masks.
    """

    has_labels = True

    def __init__(
        self,
        name: str,
        protocol: LabelProtocol,
        samples: Sequence[Sample],
        *,
        root: Path | None = None,
        transform_image: Callable[[Image.Image], Image.Image] | None = None,
        mask_paths: Sequence[Path] | None = None,
        mask_decoder: MaskDecoder | None = None,
    ) -> None:
        if not samples:
            where = f" under {root}" if root is not None else ""
            raise DatasetLayoutError(f"dataset {name!r} is empty: no images found{where}")
        bad = [s for s in samples if not 0 <= s[1] < protocol.num_classes]
        if bad:
            raise DatasetLayoutError(
                f"dataset {name!r}: target {bad[0][1]} of {bad[0][0]} is outside the "
                f"protocol's {protocol.num_classes} classes ({protocol.label})"
            )
        self.name = name
        self.protocol = protocol
        self.samples: list[Sample] = list(samples)
        self.root = root
        self.transform_image = transform_image
        if mask_paths is not None and len(mask_paths) != len(self.samples):
            raise ValueError(f"dataset {name!r}: {len(mask_paths)} mask paths for "
                             f"{len(self.samples)} images")
        if mask_paths is not None and mask_decoder is None:
            raise ValueError(f"dataset {name!r}: mask paths without a mask decoder")
        self.mask_paths = None if mask_paths is None else list(mask_paths)
        self.mask_decoder = mask_decoder

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None

    def load_mask(self, index: int) -> np.ndarray:
        """The mask of sample ``index`` (see module docstring); a ``ValueError`` when the
        dataset has none."""
        if self.mask_paths is None or self.mask_decoder is None:
            raise ValueError(f"dataset {self.name!r} has no segmentation masks")
        return self.mask_decoder(self.mask_paths[index])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, dict[str, str]]:
        path, target, meta = self.samples[index]
        image = load_rgb(path)
        if self.transform_image is not None:
            image = self.transform_image(image)
        return image, target, dict(meta)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, "
            f"protocol={self.protocol.label!r}, root={str(self.root)!r})"
        )


def images_at_root(root: Path, options: Mapping[str, Any]) -> Path:
    """The folder rule of most types: the images hang from ``root`` itself."""
    del options
    return root


@dataclass(frozen=True)
class EvalDatasetType:
    """One evaluation dataset type by ``name``. ``build(root, *, protocol, name=None,
    **options)`` returns the dataset (``options``: the suite entry's keys beyond ``type``
    and ``root``); ``folder(root, options)`` is the folder it reads its images from, which
    robustft-eval checks (a missing one is a missing dataset, which ``skip_missing``
    skips) and counts for the fingerprint before anything is built."""

    name: str
    build: Callable[..., Dataset]
    folder: Callable[[Path, Mapping[str, Any]], Path] = images_at_root
