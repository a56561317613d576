"""``share``: the foreground share of relevance (``robustft.losses.foreground_share``,
sum(S*M)/sum(S) over the labelled pixels) of ``share.target``'s class, mean over images,
in percent. A map with one value everywhere scores a uniform map's share, the object's
share of the labelled pixels (chance), not the 0 a zero map's mass gives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from robustft.evaluation.metrics.base import MapBatch, MapMetric, Result, register_metric
from robustft.evaluation.metrics.segmentation_scores import IGNORE_VALUE, constant_maps
from robustft.losses import foreground_share
from robustft.relevance import ExplainedClass

if TYPE_CHECKING:
    from robustft.evaluation.metrics.map_scoring import ExplanationSettings

__all__ = ["ForegroundShare"]


@register_metric
class ForegroundShare(MapMetric):
    name = "share"
    needs_masks = True
    quantity = "foreground_share"
    label = "foreground share"
    titles = {"foreground_share": "foreground share of relevance (%), mean over images of "
                                  "sum(S*M)/sum(S)"}
    constant_maps_scoring = "scored as the object's area"

    def __init__(self, settings: ExplanationSettings, *, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__(settings, mean=mean, std=std)
        self.shares: list[Tensor] = []

    @classmethod
    def explained_class(cls, settings: ExplanationSettings) -> ExplainedClass:
        return settings.share_target

    @classmethod
    def label_requirement(cls, settings: ExplanationSettings) -> str | None:
        return "share.target=label" if settings.share_target is ExplainedClass.label else None

    @classmethod
    def fingerprint_inputs(cls, settings: ExplanationSettings) -> dict[str, Any] | None:
        return {"target": settings.share_target.value}

    @classmethod
    def note(cls, settings: ExplanationSettings) -> str | None:
        return f"Foreground share: relevance of the {settings.share_target.value} class."

    def update(self, batch: MapBatch) -> None:
        assert batch.masks is not None  # the scorer skips batches without masks
        relevance = batch.relevance
        masks = batch.masks.to(relevance.device)
        ignore = masks == IGNORE_VALUE
        shares = foreground_share(relevance, masks == 1, ignore=ignore)
        constant = constant_maps(relevance)
        self.constant_maps += int(constant.sum())
        if constant.any():
            uniform = foreground_share(torch.ones_like(relevance), masks == 1, ignore=ignore)
            shares = torch.where(constant, uniform, shares)
        self.shares.append(shares.cpu())

    def results(self) -> list[Result]:
        share = 100.0 * float(torch.cat(self.shares).mean()) if self.shares else 0.0
        return [("foreground_share", "", "", share)]
