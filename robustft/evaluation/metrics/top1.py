"""``top1``: top-1 and top-5 accuracy of the class scores (top-5 only when the protocol has
more than 5 classes), overall (torchmetrics ``MulticlassAccuracy``, micro average) and per
factor value (SI-Score's: exact counts of per-sample hits). Scored on the runner's own
forward of each batch (``robustft.evaluation.runner``), not on relevance maps; its rows
are ``top1`` / ``top5`` and carry no method name."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from robustft.evaluation.metrics.base import EvalMetric, register_metric

if TYPE_CHECKING:
    from robustft.evaluation.metrics.map_scoring import ExplanationSettings

__all__ = ["TOP_KS", "TopKAccuracy"]

TOP_KS: tuple[int, ...] = (1, 5)


@register_metric
class TopKAccuracy(EvalMetric):
    """Running top-k accuracies of one model on one dataset."""

    name = "top1"
    uses_maps = False

    @classmethod
    def label_requirement(cls, settings: ExplanationSettings) -> str | None:
        del settings
        return cls.name

    def __init__(self, num_classes: int, track_samples: bool) -> None:
        self.top_ks = tuple(k for k in TOP_KS if k == 1 or k < num_classes)
        self.metrics = {
            k: MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro")
            for k in self.top_ks
        }
        self.track_samples = track_samples
        self.hits: dict[int, list[Tensor]] = {k: [] for k in self.top_ks}
        self.count = 0

    def update(self, scores: Tensor, targets: Tensor) -> None:
        scores = scores.detach().float().cpu()
        for metric in self.metrics.values():
            metric.update(scores, targets)
        if self.track_samples:
            top = scores.topk(max(self.top_ks), dim=1).indices
            for k in self.top_ks:
                self.hits[k].append((top[:, :k] == targets[:, None]).any(dim=1))
        self.count += len(targets)

    def overall(self) -> dict[int, float]:
        return {k: float(metric.compute()) * 100.0 for k, metric in self.metrics.items()}

    def per_factor(
        self, metas: Sequence[Mapping[str, str]]
    ) -> list[tuple[str, str, int, float, int]]:
        """``(factor, value, k, accuracy %, count)`` for every factor value in ``metas``."""
        rows: list[tuple[str, str, int, float, int]] = []
        if not self.track_samples or not metas:
            return rows
        hits = {k: torch.cat(parts) for k, parts in self.hits.items()}
        positions: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, meta in enumerate(metas):
            for factor, value in meta.items():
                positions[(factor, str(value))].append(index)
        for (factor, value), where in sorted(positions.items(), key=_factor_sort_key):
            index = torch.tensor(where)
            for k in self.top_ks:
                accuracy = hits[k][index].double().mean().item() * 100.0
                rows.append((factor, value, k, accuracy, len(where)))
        return rows


def _factor_sort_key(item: tuple[tuple[str, str], list[int]]) -> tuple[str, float, str]:
    (factor, value), _ = item
    try:
        return factor, float(value), value
    except ValueError:
        return factor, math.inf, value
