"""Where models look: the foreground share of relevance on images with known masks, and
a PNG grid of relevance overlays (image | mask | relevance of each model)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from robustft.data.image_files import decode_binary_mask, load_rgb
from robustft.evaluation.explain.overlay_grid import denormalize, draw_grid, heat_overlay, mask_picture
from robustft.losses import foreground_share
from robustft.relevance import relevance_map, upsample_and_normalize

__all__ = [
    "foreground_share_and_top1",
    "mean_foreground_share",
    "patch_coverage_share",
    "replace_background",
    "relevance_overlay_grid",
    "load_pairs",
]

ImageTransform = Callable[[Image.Image], Tensor]


def load_pairs(pairs: Sequence[tuple[Path, Path]], transform: ImageTransform
               ) -> tuple[Tensor, Tensor]:
    """Images (transformed, stacked) and their binary masks (resized to the input), read by
    the one image and mask reader (``robustft.data.image_files``)."""
    images, masks = [], []
    for image_path, mask_path in pairs:
        tensor = transform(load_rgb(image_path))
        mask = Image.fromarray(decode_binary_mask(mask_path)).resize(tensor.shape[-1:-3:-1],
                                                                     Image.NEAREST)
        images.append(tensor)
        masks.append(torch.from_numpy(np.array(mask) > 0).float())
    return torch.stack(images), torch.stack(masks)


def foreground_share_and_top1(model: nn.Module, images: Tensor, masks: Tensor, labels: Tensor,
                              *, batch_size: int = 64) -> tuple[float, float]:
    """Mean foreground share (see :func:`mean_foreground_share`) and top-1 in percent, both
    from one relevance pass: the forward that gives the relevance also gives the logits."""
    model.eval()
    shares, correct = [], 0
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        out = relevance_map(model, images[batch], labels[batch])
        relevance = upsample_and_normalize(out.relevance.detach(), masks.shape[-2:])
        shares.append(foreground_share(relevance, masks[batch]))
        correct += int((out.logits.detach().argmax(-1) == labels[batch]).sum())
    return float(torch.cat(shares).mean()), 100.0 * correct / len(images)


def mean_foreground_share(model: nn.Module, images: Tensor, masks: Tensor, labels: Tensor,
                          *, batch_size: int = 64) -> float:
    """Mean over images of ``sum(S*M) / sum(S)`` for the normalised relevance ``S`` of the
    ground-truth class at mask resolution."""
    return foreground_share_and_top1(model, images, masks, labels, batch_size=batch_size)[0]


def patch_coverage_share(masks: Tensor, patch_size: tuple[int, int]) -> float:
    """Mean foreground share of a reference map that equals each patch's object coverage
    (the mask averaged over the patch), upsampled and normalised like a relevance map: what
    a token-level map that weighs each patch by how much object it holds reaches at this
    patch grid. A yardstick for shares at coarse grids, where patches on the object's edge
    hold background too; only a map that lights interior patches alone scores higher."""
    coverage = F.avg_pool2d(masks[:, None].float(), kernel_size=patch_size)[:, 0]
    reference = upsample_and_normalize(coverage, masks.shape[-2:])
    return float(foreground_share(reference, masks.float()).mean())


def replace_background(images: Tensor, masks: Tensor, *, fill: float, mean: Sequence[float],
                       std: Sequence[float]) -> Tensor:
    """The images with every background pixel (mask 0) replaced by the flat grey ``fill``
    (in [0, 1], before normalisation; ``mean``/``std`` are the model's normalisation)."""
    grey = ((fill - torch.tensor(mean)) / torch.tensor(std))[None, :, None, None]
    keep = masks[:, None].to(images.dtype)
    return images * keep + grey.to(images.dtype) * (1 - keep)


def relevance_overlay_grid(models: Mapping[str, nn.Module], images: Tensor, masks: Tensor,
                           labels: Tensor, path: str | os.PathLike[str], *,
                           mean: Sequence[float], std: Sequence[float],
                           scale: int = 3) -> Path:
    """One row per image: image | mask | each model's relevance (ground-truth class) over
    the image, as a PNG. Returns the path."""
    maps = {}
    for name, model in models.items():
        model.eval()
        out = relevance_map(model, images, labels)
        maps[name] = upsample_and_normalize(out.relevance.detach(), masks.shape[-2:])
    rows = []
    for i in range(len(images)):
        picture = denormalize(images[i], mean, std)
        rows.append([picture, mask_picture(masks[i]),
                     *(heat_overlay(picture, maps[name][i]) for name in models)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_grid(rows, column_titles=["image", "mask", *models], scale=scale).save(path)
    return path
