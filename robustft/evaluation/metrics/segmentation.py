"""``segmentation``: the segmentation test (:mod:`robustft.evaluation.metrics.segmentation_scores`) of the
predicted class's maps against the masks (as the field does): pixel accuracy and mIoU of
the map thresholded at its mean, summed over the dataset, and the mean per-image AP. A map
with one value everywhere scores the AP of chance, 50 %."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from robustft.evaluation.metrics.base import MapBatch, MapMetric, Result, register_metric
from robustft.evaluation.metrics.segmentation_scores import SegmentationScores

if TYPE_CHECKING:
    from robustft.evaluation.metrics.map_scoring import ExplanationSettings

__all__ = ["SegmentationTest"]


@register_metric
class SegmentationTest(MapMetric):
    name = "segmentation"
    needs_masks = True
    quantity = "segmentation"
    label = "segmentation test"
    titles = {
        "segmentation_pixel_accuracy": "segmentation test: pixel accuracy (%), summed over the "
                                       "dataset",
        "segmentation_miou": "segmentation test: mIoU (%) of background and foreground, "
                             "dataset-summed intersection / union",
        "segmentation_map": "segmentation test: mAP (%), mean over images of the AP of [1-S, S]",
    }
    constant_maps_scoring = "AP scored as chance, 50 %"

    def __init__(self, settings: ExplanationSettings, *, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__(settings, mean=mean, std=std)
        self.scores = SegmentationScores()

    def update(self, batch: MapBatch) -> None:
        assert batch.masks is not None  # the scorer skips batches without masks
        before = self.scores.constant_maps
        self.scores.update(batch.relevance.cpu(), batch.masks.cpu())
        self.constant_maps += self.scores.constant_maps - before

    def results(self) -> list[Result]:
        return [("segmentation_pixel_accuracy", "", "", self.scores.pixel_accuracy()),
                ("segmentation_miou", "", "", self.scores.mean_iou()),
                ("segmentation_map", "", "", self.scores.mean_average_precision())]
