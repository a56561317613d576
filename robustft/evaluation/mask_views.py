"""What a model's eval transform does to a mask, and the normalisation it applies.

The explanation metrics compare a relevance map at the model's input with the image's
mask, so the mask must go through exactly the image's geometry (resize, centre crop) with
nearest-neighbour resampling and no normalisation. :func:`mask_geometry` reads that
geometry off the image transform itself (timm's eval transform or the legacy one: a
Compose of Resize, CenterCrop, ToTensor, Normalize), so the two can never drift apart;
:func:`transform_normalization` reads its mean and std (the perturbation test removes a
pixel by setting it to a value *before* normalisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

__all__ = ["MaskTransform", "mask_geometry", "transform_normalization"]

MaskTransform = Callable[[np.ndarray], Tensor]
_NO_GEOMETRY = ("ToTensor", "MaybeToTensor", "Normalize", "ToDtype", "PILToTensor",
                "MaybePILToTensor", "ToImage", "ConvertImageDtype")


def _steps(transform: Callable) -> Sequence[Callable]:
    steps = getattr(transform, "transforms", None)
    if steps is None:
        raise TypeError(f"cannot apply {type(transform).__name__} to masks: expected a Compose "
                        "of Resize / CenterCrop / ToTensor / Normalize (an eval transform)")
    return steps


def mask_geometry(transform: Callable) -> MaskTransform:
    """uint8 (H, W) mask -> uint8 (h, w) tensor at the model input, resampled like the
    image by ``transform`` (nearest neighbour: the values 0 / 1 / 255 stay as they are).
    A transform step that moves pixels and is not a Resize or CenterCrop is a TypeError
    naming it."""
    geometry: list[Callable] = []
    for step in _steps(transform):
        kind = type(step).__name__
        if isinstance(step, T.Resize):
            geometry.append(T.Resize(step.size, interpolation=T.InterpolationMode.NEAREST,
                                     max_size=step.max_size))
        elif isinstance(step, T.CenterCrop):
            geometry.append(step)
        elif kind not in _NO_GEOMETRY:
            raise TypeError(f"cannot apply the eval transform step {kind} to masks (only Resize "
                            "and CenterCrop are; use preprocessing.crop_mode=center or squash)")
    compose = T.Compose(geometry)

    def apply(mask: np.ndarray) -> Tensor:
        picture = compose(Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)))
        return torch.from_numpy(np.array(picture, dtype=np.uint8))

    return apply


def transform_normalization(transform: Callable) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the transform's Normalize step; (0, 1) per channel when it has none."""
    for step in _steps(transform):
        if isinstance(step, T.Normalize):
            mean = torch.as_tensor(step.mean, dtype=torch.float64).flatten().tolist()
            std = torch.as_tensor(step.std, dtype=torch.float64).flatten().tolist()
            return tuple(mean), tuple(std)
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
