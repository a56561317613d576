"""The segmentation test of relevance maps (the ImageNet-segmentation protocol of Chefer et
al., CVPR 2021; docs/method.md §6): how well the thresholded map segments the object.

For each image the map ``S`` is min-max normalised (as ``upsample_and_normalize`` leaves
it) and thresholded at its own mean: foreground = ``S > mean(S)``. Against the
ground-truth mask (uint8: 0 background, 1 foreground, ``IGNORE_VALUE`` = not labelled):

- pixel accuracy = correct labelled pixels / labelled pixels, both SUMMED over the dataset
  (an image with many pixels weighs more; not the mean of per-image accuracies);
- mIoU = mean over the two classes {background, foreground} of the dataset-summed
  intersection / dataset-summed union;
- mAP = mean over images of the average precision of the scores ``[1 - S, S]`` against
  the one-hot mask ``[1 - M, M]`` (both channels flattened together, ignored pixels left
  out), computed by torchmetrics' exact ``binary_average_precision`` (sum over the
  score thresholds of recall increase x precision, as the field's scikit-learn call).

A map without information — the same value at every pixel, e.g. ``attn_gradcam`` when
every head weight is negative and the clamp leaves zeros — scores the AP of chance, 0.5:
exactly half of the two-channel targets are positive, and a constant score ranks none
above another. This is what the public segmentation script gives such a map (its min-max
normalisation divides 0 by 0, and the NaNs it sets to 0 make both channels 0). Scored as
``[1 - S, S]`` with ``S = 0`` it would instead get ``(1 - f)^2 + f / 2`` for an object
covering ``f`` of the labelled pixels (0.64 at f = 30 %, better the smaller the object),
an AP earned by saying nothing. Pixel accuracy and IoU need no such rule: a constant map
is all background under its own mean, as in the public script. The constant maps are
counted (:attr:`SegmentationScores.constant_maps`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_average_precision

__all__ = ["CHANCE_AVERAGE_PRECISION", "IGNORE_VALUE", "SegmentationScores", "average_precision",
           "constant_maps", "threshold_at_mean"]

IGNORE_VALUE = 255  # the mask value of unlabelled pixels (robustft.data.generic.IGNORE_VALUE)
CHANCE_AVERAGE_PRECISION = 0.5  # half the two-channel targets are positive


def constant_maps(relevance: Tensor) -> Tensor:
    """(B,) bool: the maps of ``relevance`` (B, H, W) with one value at every pixel (no
    information about where the object is)."""
    flat = relevance.flatten(1)
    return flat.amax(1) == flat.amin(1)


def threshold_at_mean(relevance: Tensor) -> Tensor:
    """(B, H, W) bool: each image's pixels above that image's mean relevance."""
    mean = relevance.flatten(1).mean(1)[:, None, None]
    return relevance > mean


def average_precision(relevance: Tensor, mask: Tensor) -> float:
    """AP of the two-channel scores ``[1 - S, S]`` against ``[1 - M, M]`` for ONE image
    (``relevance`` (H, W) in [0, 1], ``mask`` (H, W) uint8), labelled pixels only; a
    constant map scores :data:`CHANCE_AVERAGE_PRECISION` (module docstring)."""
    labelled = mask != IGNORE_VALUE
    scores = relevance[labelled].double()
    foreground = (mask[labelled] == 1).long()
    if scores.numel() == 0:
        return 0.0
    if bool(constant_maps(relevance[None])[0]):
        return CHANCE_AVERAGE_PRECISION
    value = binary_average_precision(torch.cat([1 - scores, scores]),
                                     torch.cat([1 - foreground, foreground]))
    return float(torch.nan_to_num(value, nan=0.0))


class SegmentationScores:
    """Running sums of the segmentation test over a dataset (see module docstring)."""

    def __init__(self) -> None:
        self.correct = 0
        self.labelled = 0
        self.intersection = [0, 0]  # background, foreground
        self.union = [0, 0]
        self.precisions: list[float] = []
        self.constant_maps = 0  # maps with one value everywhere, scored AP = chance

    def update(self, relevance: Tensor, masks: Tensor) -> None:
        """``relevance`` (B, H, W) min-max normalised maps, ``masks`` (B, H, W) uint8."""
        if relevance.shape != masks.shape:
            raise ValueError(f"relevance {tuple(relevance.shape)} and masks {tuple(masks.shape)} "
                             "differ in shape: upsample the map to the mask first")
        relevance, masks = relevance.detach().float().cpu(), masks.cpu()
        predicted = threshold_at_mean(relevance)
        labelled = masks != IGNORE_VALUE
        truth = masks == 1
        self.correct += int(((predicted == truth) & labelled).sum())
        self.labelled += int(labelled.sum())
        for index, (pred, true) in enumerate(((~predicted, ~truth), (predicted, truth))):
            self.intersection[index] += int((pred & true & labelled).sum())
            self.union[index] += int(((pred | true) & labelled).sum())
        self.precisions += [average_precision(s, m) for s, m in zip(relevance, masks)]
        self.constant_maps += int(constant_maps(relevance).sum())

    def pixel_accuracy(self) -> float:
        """Percent of labelled pixels classified right, over the dataset."""
        return 100.0 * self.correct / max(self.labelled, 1)

    def iou(self) -> tuple[float, float]:
        """(background, foreground) IoU in percent from the dataset-summed counts."""
        return tuple(100.0 * i / max(u, 1) for i, u in zip(self.intersection, self.union))  # type: ignore[return-value]

    def mean_iou(self) -> float:
        return sum(self.iou()) / 2

    def mean_average_precision(self) -> float:
        """Mean over images of the per-image AP, in percent."""
        if not self.precisions:
            raise ValueError("no image was scored")
        return 100.0 * sum(self.precisions) / len(self.precisions)
