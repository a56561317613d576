"""Objects moved onto other images' backgrounds, from their masks (docs/method.md §2.1, §10).

A pair's object (its mask, with the ignored border) is pasted onto the image of a pair of
another class whose own object, grown by one pixel, is first filled in from its surroundings,
so that no silhouette of it is left: the background now argues for another class than the
object. Used twice: as a training term (:func:`swapped_background_loss`, ``loss.lambda_swap``:
the cross-entropy of such composites of a training batch against the object's label) and as a
held-out measure (``heldout/swap_accuracy``, :mod:`robustft.training.heldout`).

Partners are chosen without randomness (:func:`background_partners`), so a training step is
a function of its batch alone and an exact resume stays exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["background_partners", "fill_from_surroundings", "swap_backgrounds",
           "swapped_background_loss", "swapped_background_term"]


def background_partners(labels: Tensor, backgrounds: int = 1) -> Tensor:
    """(N, backgrounds): for each image, the indices of the images whose backgrounds it is
    pasted on, each of another class, chosen without randomness so that every epoch
    recombines the same pairs: in the label-sorted order, background k is the first image of
    another label at or after ``(k + 1) / (backgrounds + 1)`` of the set ahead (half the set
    for one background), so the backgrounds come from classes spread over the label order;
    -1 where every image has the same label."""
    labels = labels.cpu()
    count = labels.numel()
    order = torch.argsort(labels, stable=True)
    partners = torch.full((count, backgrounds), -1, dtype=torch.long)
    for position, index in enumerate(order.tolist()):
        for k in range(backgrounds):
            offset = (k + 1) * count // (backgrounds + 1)
            for step in range(count):
                candidate = int(order[(position + offset + step) % count])
                if labels[candidate] != labels[index]:
                    partners[index, k] = candidate
                    break
    return partners


def fill_from_surroundings(images: Tensor, holes: Tensor) -> Tensor:
    """``images`` (B, C, H, W) with the ``holes`` (B, H, W) bool pixels replaced by the
    average of the known pixels around them (normalised box filtering, the window doubled
    until every hole pixel has a known neighbour): a smooth fill that keeps the surrounding
    colours and leaves no outline of what was removed. An image that is all hole keeps its
    own values."""
    if not bool(holes.any()):
        return images
    known = (~holes)[:, None].to(images.dtype)
    size = max(3, (min(images.shape[-2:]) // 4) | 1)
    while True:
        numerator = F.avg_pool2d(images * known, size, stride=1, padding=size // 2)
        weight = F.avg_pool2d(known, size, stride=1, padding=size // 2)
        reached = weight > 1e-6
        if bool(reached.all()) or size >= 2 * max(images.shape[-2:]):
            fill = torch.where(reached, numerator / weight.clamp_min(1e-6), images)
            return torch.where(known.bool(), images, fill)
        size = 2 * size + 1


def swap_backgrounds(images: Tensor, masks: Tensor, ignore: Tensor | None,
                     partners: Tensor) -> tuple[Tensor, Tensor]:
    """(composites (M, C, H, W), the index of each composite's object image (M,)) for every
    image and partner of ``partners`` ((N,) or (N, K), -1 = none) in row order: image i's
    object (mask 1, and its ignored border) over partner j's image whose own object, grown by
    one pixel, is filled from its surroundings (:func:`fill_from_surroundings`)."""
    ignore = torch.zeros_like(masks, dtype=torch.bool) if ignore is None else ignore.bool()
    objects = (masks > 0.5) | ignore
    grown = F.max_pool2d(objects[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    backgrounds = fill_from_surroundings(images, grown)
    partners = partners.reshape(len(images), -1).cpu()
    sources = torch.arange(len(images)).repeat_interleave(partners.shape[1])
    chosen = partners.flatten()
    sources, chosen = sources[chosen >= 0], chosen[chosen >= 0]
    device = images.device
    composites = torch.where(objects[sources.to(device)][:, None], images[sources.to(device)],
                             backgrounds[chosen.to(device)])
    return composites, sources

def swapped_background_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the composites' ``logits`` (M, K) against their objects' ``labels``
    (M,); 0 for a batch without composites (one class only)."""
    if not len(labels):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


def swapped_background_term(class_scores: Callable[[Tensor], Tensor], images: Tensor,
                            masks: Tensor, ignore: Tensor | None, labels: Tensor) -> Tensor:
    """The training term (``loss.lambda_swap``): a batch's objects, each pasted on the
    background of the pair of another class half the batch ahead in label order
    (:func:`background_partners`), scored by ``class_scores`` and classified as the
    object's label (:func:`swapped_background_loss`)."""
    composites, sources = swap_backgrounds(images, masks, ignore, background_partners(labels, 1))
    logits = class_scores(composites)
    return swapped_background_loss(logits, labels[sources.to(logits.device)])
