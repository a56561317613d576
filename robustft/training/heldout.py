"""What a fine-tuning run is for, measured on data it never trained on (docs/method.md §10).

On held-out image/mask pairs (``data.holdout_per_class``: pairs of the user's own masked
classes, drawn apart from the training pairs), per image:

- ``share``: the share of the normalised relevance map on the object, ``sum(S*M)/sum(S)``
  (:func:`robustft.losses.foreground_share`), the quantity the relevance loss moves;
- ``ap``: the average precision of the map against the mask, and ``iou``: the foreground
  IoU of the map thresholded at its mean (the segmentation test's per-image measures).

On every held-out image (the pairs' images and ``data.unmasked_holdout_per_class`` images
without masks), what must not move: ``agreement`` (the fine-tuned model's top-1 equals the
original's), ``kl`` (KL(original || fine-tuned) of the class probabilities) and, where labels
exist, ``correct`` (top-1 equals the label).

On the held-out pairs recombined, what the method is for in the model's decisions:
``swap_accuracy``, the top-1 accuracy on composites that paste each pair's object (its mask)
onto the background of a pair of another class, with that pair's own object filled in from
its surroundings (:func:`robustft.swaps.swap_backgrounds`): the background now argues for another class,
so a model that follows the background gets it wrong. It is the user's-data counterpart of
the benchmarks' shuffled split, built from nothing but the held-out masks.

The original model's values come from the same images in the same batches, so the change of
the share is measured pairwise: its mean ``share_gain`` and the margin beyond which it is
clearly above zero, ``share_margin = z * std(d) / sqrt(n)`` for the per-image differences d
(z = 2, about a 95 % one-sided bound): the held-out set's size decides what "clearly" means.
Functions only: Lightning calls them (``robustft.training.module``), nothing here knows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robustft.evaluation.metrics.segmentation_scores import IGNORE_VALUE, average_precision, threshold_at_mean
from robustft.losses import foreground_share
from robustft.swaps import background_partners, fill_from_surroundings, swap_backgrounds

__all__ = ["BACKGROUNDS_PER_PAIR", "MARGIN_Z", "HeldOutSummary", "background_partners", "decision_measures",
           "fill_from_surroundings", "map_measures", "share_change", "summarize_heldout",
           "swap_backgrounds"]

#: z of the margin the share's gain must clear to count as clearly above the original's.
MARGIN_Z = 2.0
#: backgrounds each held-out object is pasted on: four times the pairs' count of composites,
#: so that which background an object met weighs less in the swapped top-1 (with 80 pairs one
#: background each, one composite is 1.25 points), for four forward passes of the pairs per
#: validation pass
BACKGROUNDS_PER_PAIR = 4


def map_measures(relevance: Tensor, masks: Tensor, ignore: Tensor | None = None) -> dict[str, Tensor]:
    """Per-image ``share``, ``ap`` and ``iou`` of normalised maps ``relevance`` (B, H, W) in
    [0, 1] against binary ``masks`` (B, H, W); ``ignore`` (B, H, W) bool pixels count in
    none. Returns (B,) float64 tensors on the CPU."""
    relevance, masks = relevance.detach().float(), masks.detach()
    ignore = torch.zeros_like(masks, dtype=torch.bool) if ignore is None else ignore.bool()
    share = foreground_share(relevance, masks, ignore)
    labelled_mask = torch.where(ignore, torch.full_like(masks, IGNORE_VALUE), masks).to(torch.uint8)
    ap = torch.tensor([average_precision(s.cpu(), m.cpu())
                       for s, m in zip(relevance, labelled_mask)], dtype=torch.float64)
    predicted = threshold_at_mean(relevance) & ~ignore
    truth = (masks == 1) & ~ignore
    intersection = (predicted & truth).flatten(1).sum(1)
    union = (predicted | truth).flatten(1).sum(1)
    iou = intersection.double() / union.clamp_min(1).double()
    return {"share": share.double().cpu(), "ap": ap, "iou": iou.cpu()}


def decision_measures(logits: Tensor, original_logits: Tensor,
                      labels: Tensor | None = None) -> dict[str, Tensor]:
    """Per-image ``agreement`` (1.0 where both models' top-1 agree), ``kl``
    (KL(p_original || p) in nats) and, with ``labels``, ``correct`` and
    ``correct_original``. Returns (B,) float64 tensors on the CPU."""
    logits, original_logits = logits.detach().double(), original_logits.detach().double()
    predicted, original = logits.argmax(-1), original_logits.argmax(-1)
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(original_logits, -1),
                  log_target=True, reduction="none").sum(-1)
    measures = {"agreement": (predicted == original).double(), "kl": kl}
    if labels is not None:
        measures["correct"] = (predicted == labels).double()
        measures["correct_original"] = (original == labels).double()
    return {name: value.cpu() for name, value in measures.items()}


def share_change(share: Tensor, original_share: Tensor, z: float = MARGIN_Z) -> tuple[float, float]:
    """(mean gain, margin) of the per-image share over the original's (see module doc); a
    single image has an infinite margin (nothing is clear from one image)."""
    differences = share.double() - original_share.double()
    count = differences.numel()
    if count == 0:
        return math.nan, math.nan
    if count == 1:
        return float(differences[0]), math.inf
    return float(differences.mean()), z * float(differences.std(correction=1)) / math.sqrt(count)


@dataclass(frozen=True)
class HeldOutSummary:
    """One model's held-out measures (means over the held-out set; NaN where there was
    nothing to measure), as logged under ``heldout/<name>``."""

    share: float
    share_original: float
    share_gain: float
    share_margin: float
    ap: float
    iou: float
    agreement: float
    kl: float
    accuracy: float
    accuracy_original: float
    pairs: int
    images: int
    # defaults keep records written before these existed (a resumed run's) readable
    swap_accuracy: float = math.nan
    swap_accuracy_original: float = math.nan

    def as_metrics(self, prefix: str = "heldout/") -> dict[str, float]:
        return {f"{prefix}{name}": float(value) for name, value in asdict(self).items()}


def _mean(values: Sequence[Tensor]) -> float:
    joined = torch.cat(list(values)) if values else torch.empty(0)
    return float(joined.mean()) if joined.numel() else math.nan


def summarize_heldout(pairs: Mapping[str, Sequence[Tensor]], originals: Mapping[str, Sequence[Tensor]],
                      decisions: Mapping[str, Sequence[Tensor]],
                      swaps: Mapping[str, Sequence[Tensor]] | None = None) -> HeldOutSummary:
    """The summary of one validation pass: ``pairs`` holds the model's per-image
    :func:`map_measures` batches, ``originals`` the original model's on the same pairs in
    the same order, ``decisions`` the :func:`decision_measures` batches of every held-out
    image (pairs and images without masks), ``swaps`` the per-composite ``correct`` and
    ``correct_original`` of :func:`swap_backgrounds`' images."""
    swaps = swaps or {}
    share = torch.cat(list(pairs.get("share", []))) if pairs.get("share") else torch.empty(0)
    original = (torch.cat(list(originals.get("share", []))) if originals.get("share")
                else torch.empty(0))
    if share.shape != original.shape:
        raise ValueError(f"held-out shares of the model ({share.numel()}) and of the original "
                         f"({original.numel()}) are not of the same images")
    gain, margin = share_change(share, original)
    agreement = decisions.get("agreement", [])
    return HeldOutSummary(
        share=_mean([share]), share_original=_mean([original]), share_gain=gain,
        share_margin=margin, ap=_mean(pairs.get("ap", [])), iou=_mean(pairs.get("iou", [])),
        agreement=_mean(agreement), kl=_mean(decisions.get("kl", [])),
        accuracy=_mean(decisions.get("correct", [])),
        accuracy_original=_mean(decisions.get("correct_original", [])),
        pairs=int(share.numel()), images=int(sum(value.numel() for value in agreement)),
        swap_accuracy=_mean(swaps.get("correct", [])),
        swap_accuracy_original=_mean(swaps.get("correct_original", [])))
