"""The held-out measures of one validation pass, collected batch by batch
(docs/method.md §10): the fine-tuned model's and the original model's maps on the held-out
pairs, both models' decisions on every held-out image, and, at the end of the pass, both
models' top-1 on the pairs recombined onto each other's backgrounds
(:func:`robustft.training.heldout.swap_backgrounds`).

Plain PyTorch: the Lightning module (:mod:`robustft.training.module`) calls it from its
validation hooks and logs what :meth:`HeldOutRecorder.summary` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from robustft.training.heldout import (
    BACKGROUNDS_PER_PAIR,
    HeldOutSummary,
    background_partners,
    decision_measures,
    map_measures,
    summarize_heldout,
    swap_backgrounds,
)

__all__ = ["HeldOutRecorder"]

#: (model, pair batch) -> (logits, the map upsampled to the masks and normalised)
Explain = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, Tensor]]
#: (model, images) -> class scores
Scores = Callable[[nn.Module, Tensor], Tensor]
#: a per-image tensor of this process -> every process's (identity in one process)
Gather = Callable[[Tensor], Tensor]


class HeldOutRecorder:
    """Collects one validation pass's held-out measures.

    Args:
        explain: how the fine-tuning computes a model's map on a pair batch.
        scores: a model's class scores on images.

    The original model's maps, the composites and the original's top-1 on them are computed
    once (its weights never change, the held-out images neither), so every epoch pays for the
    fine-tuned model's alone.
    """

    def __init__(self, explain: Explain, scores: Scores) -> None:
        self.explain, self.scores = explain, scores
        self._original_maps: dict[tuple[int, tuple[int, ...]], dict[str, Tensor]] = {}
        self._swaps: dict[tuple[int, ...], tuple[Tensor, Tensor, Tensor] | None] = {}
        self.reset()

    def reset(self) -> None:
        """Start a validation pass."""
        self.measures: dict[str, dict[str, list[Tensor]]] = {
            "pairs": {}, "original": {}, "decisions": {}}
        self._pairs: dict[str, list[Tensor]] = {"image": [], "mask": [], "ignore": [], "label": []}
        self._batch_size = 1

    def record_pairs(self, model: nn.Module, original: nn.Module, batch: dict[str, Tensor],
                     batch_idx: int, relevance: Tensor | None, logits: Tensor | None) -> None:
        """The measures of a held-out pair batch, the model's (``relevance`` / ``logits``
        from its validation step, or computed here when its objective made no map) and the
        original's."""
        if relevance is None or logits is None:
            logits, relevance = self.explain(model, batch)
        # a validation batch is the same images every epoch (no shuffling); its labels make
        # sure of it should another validation set come through the same module
        key = (batch_idx, tuple(batch["label"].tolist()))
        if key not in self._original_maps:
            original_logits, original_maps = self.explain(original, batch)
            self._original_maps[key] = {
                **map_measures(original_maps, batch["mask"], batch["ignore"]),
                "logits": original_logits.detach()}
        cached = self._original_maps[key]
        for name, value in map_measures(relevance, batch["mask"], batch["ignore"]).items():
            self.measures["pairs"].setdefault(name, []).append(value)
        for name in ("share", "ap", "iou"):
            self.measures["original"].setdefault(name, []).append(cached[name])
        self.record_decisions(logits, original, batch, cached["logits"])
        for name in self._pairs:
            self._pairs[name].append(batch[name].detach().cpu())
        self._batch_size = max(self._batch_size, int(batch["label"].numel()))

    def record_decisions(self, logits: Tensor, original: nn.Module, batch: dict[str, Any],
                         original_logits: Tensor | None = None) -> None:
        """Agreement, KL and (with labels) correctness of a batch's decisions."""
        if original_logits is None:
            with torch.no_grad():
                original_logits = self.scores(original, batch["image"])
        for name, value in decision_measures(logits, original_logits, batch.get("label")).items():
            self.measures["decisions"].setdefault(name, []).append(value)

    def _swap_correct(self, model: nn.Module, original: nn.Module) -> dict[str, Tensor]:
        """Both models' per-composite correctness on this process's held-out pairs. The
        composites, like the original's answers on them, are built once: the held-out pairs
        are the same images every pass."""
        if not self._pairs["label"]:
            return {}
        labels = torch.cat(self._pairs["label"])
        key = tuple(labels.tolist())
        if key not in self._swaps:
            self._swaps[key] = self._build_swaps(original, labels)
        if self._swaps[key] is None:  # one class: there is no other background
            return {}
        composites, targets, original_correct = self._swaps[key]
        return {"correct": self._top1_correct(model, composites, targets),
                "correct_original": original_correct}

    def _build_swaps(self, original: nn.Module,
                     labels: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """(composites, their target classes, the original's correctness on them), or None
        when the pairs have one class."""
        partners = background_partners(labels, BACKGROUNDS_PER_PAIR)
        if not bool((partners >= 0).any()):
            return None
        pairs = {name: torch.cat(self._pairs[name]) for name in ("image", "mask", "ignore")}
        composites, sources = swap_backgrounds(pairs["image"], pairs["mask"], pairs["ignore"],
                                               partners)
        targets = labels[sources]
        return composites, targets, self._top1_correct(original, composites, targets)

    def _top1_correct(self, model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        device = next(model.parameters()).device
        found = []
        with torch.no_grad():
            for start in range(0, len(images), self._batch_size):
                chunk = images[start:start + self._batch_size].to(device)
                found.append(self.scores(model, chunk).argmax(-1).cpu())
        return (torch.cat(found) == targets).double()

    def summary(self, model: nn.Module, original: nn.Module,
                gather: Gather = lambda values: values) -> HeldOutSummary | None:
        """The pass's summary over every process's images, or None without held-out pairs.
        The composites recombine each process's own pairs (all of them in one process)."""
        if not self.measures.get("pairs"):
            return None
        gathered = {group: {name: [gather(torch.cat(values))] for name, values in found.items()}
                    for group, found in self.measures.items()}
        swaps = {name: [gather(value)] for name, value in self._swap_correct(model, original).items()}
        return summarize_heldout(gathered["pairs"], gathered["original"], gathered["decisions"],
                                 swaps)
