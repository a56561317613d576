"""The perturbation test of relevance maps (Chefer et al., CVPR 2021; docs/method.md §6).

Remove the ``p`` most relevant pixels of each image (*positive* perturbation: a faithful
map loses accuracy fast, lower AUC is better) or the ``p`` least relevant (*negative*: a
faithful map keeps accuracy, higher AUC is better), re-classify, and record the top-1
accuracy per removed fraction ``p``. A removed pixel takes ``removal_value`` in every
channel BEFORE normalisation (0 = black, as the field's ViT protocol does); on normalised
inputs that is ``(removal_value - mean) / std`` per channel.

The number of removed pixels is ``int(p * H * W)`` of the model's input (the relevance map
is upsampled to the input first). Pixels are ranked by a stable sort, so equal relevance
is broken by pixel order and a rerun removes the same pixels.

The area under the accuracy curve is :func:`perturbation_auc`: ``np.trapezoid`` (the
trapezoid rule, NumPy 2's name of ``np.trapz``) of the accuracy in percent over the
x-grid of the fractions evaluated, ``0.0, 0.1, ..., 0.9`` by default (p = 0 included:
the unperturbed accuracy).

Plain PyTorch: the classifier is any callable from normalised images to class scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEFAULT_FRACTIONS", "PerturbationCurves", "PerturbationDirection",
           "check_fractions", "normalized_fill", "perturb", "perturbation_auc", "removal_order"]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class PerturbationDirection(StrEnum):
    """``positive`` removes the most relevant pixels first, ``negative`` the least."""

    positive = "positive"
    negative = "negative"


def check_fractions(fractions: Sequence[float], *, key: str = "perturbation.fractions"
                    ) -> tuple[float, ...]:
    """The fractions as a tuple; a ``ValueError`` naming ``key`` unless they are strictly
    increasing values in [0, 1) (the AUC's x-grid)."""
    values = tuple(float(value) for value in fractions)
    if len(values) < 2:
        raise ValueError(f"{key}: needs at least two fractions for an AUC, got {list(values)}")
    if any(not 0.0 <= value < 1.0 for value in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{key}: expected strictly increasing fractions in [0, 1), "
                         f"got {list(values)}")
    return values


def normalized_fill(removal_value: float, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(C,) value a removed pixel takes in normalised input space."""
    return (removal_value - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(
        std, dtype=torch.float32)


def removal_order(relevance: Tensor, direction: PerturbationDirection | str) -> Tensor:
    """(B, H*W) pixel indices in the order they are removed: most relevant first for
    ``positive``, least relevant first for ``negative``; ties keep pixel order."""
    flat = relevance.flatten(1)
    descending = PerturbationDirection(direction) is PerturbationDirection.positive
    return torch.sort(flat, dim=1, descending=descending, stable=True).indices


def perturb(images: Tensor, order: Tensor, fraction: float, fill: Tensor) -> Tensor:
    """A copy of ``images`` (B, C, H, W) with the first ``int(fraction * H * W)`` pixels of
    each image's ``order`` (B, H*W) set to ``fill`` (C,) in every channel."""
    batch, channels, height, width = images.shape
    count = int(fraction * height * width)
    result = images.clone()
    if count == 0:
        return result
    removed = torch.zeros(batch, height * width, dtype=torch.bool, device=images.device)
    removed.scatter_(1, order[:, :count], True)
    removed = removed.view(batch, 1, height, width)
    fill = fill.to(images.device, images.dtype).view(1, channels, 1, 1)
    return torch.where(removed, fill, result)


def perturbation_auc(fractions: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under accuracy (percent) against removed fraction: the trapezoid rule over
    exactly the given x-grid."""
    return float(np.trapezoid(np.asarray(accuracies, dtype=np.float64),
                              x=np.asarray(fractions, dtype=np.float64)))


class PerturbationCurves:
    """Running counts of correct predictions per (direction, fraction) over a dataset.

    ``update`` takes a batch of normalised images, their relevance at input resolution
    (B, H, W), the labels, and ``classify`` (normalised images -> class scores over the
    labels' classes); it runs one classification per direction and fraction > 0, batched.
    The fraction 0 is the unperturbed accuracy (one classification, shared by both
    directions)."""

    def __init__(self, fractions: Sequence[float], fill: Tensor) -> None:
        self.fractions = check_fractions(fractions)
        self.fill = fill
        self.correct = {(d, f): 0 for d in PerturbationDirection for f in self.fractions}
        self.count = 0

    @torch.no_grad()
    def update(self, images: Tensor, relevance: Tensor, labels: Tensor,
               classify: Callable[[Tensor], Tensor]) -> None:
        if relevance.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"relevance {tuple(relevance.shape)} is not at the input resolution "
                             f"{tuple(images.shape[-2:])}: upsample it first")
        labels = labels.to(images.device)
        unperturbed = None
        for direction in PerturbationDirection:
            order = removal_order(relevance.to(images.device), direction)
            for fraction in self.fractions:
                if int(fraction * images.shape[-2] * images.shape[-1]) == 0:
                    if unperturbed is None:
                        unperturbed = int((classify(images).argmax(1) == labels).sum())
                    hits = unperturbed
                else:
                    scores = classify(perturb(images, order, fraction, self.fill))
                    hits = int((scores.argmax(1) == labels).sum())
                self.correct[(direction, fraction)] += hits
        self.count += len(labels)

    def accuracies(self, direction: PerturbationDirection | str) -> list[float]:
        """Top-1 in percent at each fraction."""
        direction = PerturbationDirection(direction)
        if self.count == 0:
            raise ValueError("no image was perturbed")
        return [100.0 * self.correct[(direction, f)] / self.count for f in self.fractions]

    def auc(self, direction: PerturbationDirection | str) -> float:
        return perturbation_auc(self.fractions, self.accuracies(direction))
