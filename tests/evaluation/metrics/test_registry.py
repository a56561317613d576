"""The metric registry: the built-in metrics in their order, the results.md headings as
they were written out before the metrics were classes, and what a metric declares
(masks, labels, fingerprint) deciding the settings' checks."""

from __future__ import annotations

import pytest
import torch

from robustft.evaluation.metrics import EVAL_METRICS, MapBatch, MapMetric, register_metric
from robustft.evaluation.metrics.map_scoring import ExplanationSettings
from robustft.evaluation.metrics.report_tables import quantity_titles

# the headings' table as it stood in explanation_report.py, in its order
HEADINGS = {
    "perturbation_positive_auc": "perturbation test, positive (most relevant removed first): "
                                 "AUC of top-1 % over the removed fraction, lower is better",
    "perturbation_negative_auc": "perturbation test, negative (least relevant removed first): "
                                 "AUC of top-1 % over the removed fraction, higher is better",
    "segmentation_pixel_accuracy": "segmentation test: pixel accuracy (%), summed over the dataset",
    "segmentation_miou": "segmentation test: mIoU (%) of background and foreground, "
                         "dataset-summed intersection / union",
    "segmentation_map": "segmentation test: mAP (%), mean over images of the AP of [1-S, S]",
    "foreground_share": "foreground share of relevance (%), mean over images of sum(S*M)/sum(S)",
    "perturbation_constant_maps": "perturbation test: maps with one value at every pixel "
                                  "(no information; removed in pixel order), % of images",
    "segmentation_constant_maps": "segmentation test: maps with one value at every pixel "
                                  "(no information; AP scored as chance, 50 %), % of images",
    "foreground_share_constant_maps": "foreground share: maps with one value at every pixel "
                                      "(no information; scored as the object's area), % of images",
}


def test_built_in_metrics_in_order() -> None:
    assert list(EVAL_METRICS) == ["top1", "perturbation", "segmentation", "share"]
    assert [m for m in EVAL_METRICS if EVAL_METRICS[m].needs_masks] == ["segmentation", "share"]


def test_headings_are_the_written_out_table_in_its_order() -> None:
    assert list(quantity_titles().items()) == list(HEADINGS.items())


class MaskedLabelled(MapMetric):
    """Needs masks and, under share.target=label, labels; its fingerprint part is fixed."""

    name = "toy_masked"
    needs_masks = True
    quantity = "toy"
    label = "toy"

    @classmethod
    def label_requirement(cls, settings):
        return "toy needs" if settings.share_target.value == "label" else None

    @classmethod
    def fingerprint_inputs(cls, settings):
        return {"k": 3}

    def update(self, batch: MapBatch) -> None:
        self.constant_maps += int(batch.relevance.sum() == 0)

    def results(self):
        return [("toy", "", "", 1.0)]


@pytest.fixture
def masked_metric():
    register_metric(MaskedLabelled)
    yield
    EVAL_METRICS.pop(MaskedLabelled.name)


def test_a_registered_metric_decides_the_checks_and_the_fingerprint(masked_metric) -> None:
    settings = ExplanationSettings(metrics=("toy_masked",))
    assert settings.needs_masks and settings.explains == ("toy_masked",)
    assert settings.fingerprint_inputs() == {"metrics": ["toy_masked"],
                                             "relevance_method": "grad_rollout",
                                             "toy_masked": {"k": 3}}
    with pytest.raises(ValueError, match=r"^metrics: toy_masked needs segmentation masks, and "
                                         r"dataset 'd' has none"):
        settings.check_dataset("d", has_masks=False, has_labels=True)
    with pytest.raises(ValueError, match=r"^metrics: toy needs needs ground-truth classes"):
        settings.check_dataset("d", has_masks=True, has_labels=False)
    ExplanationSettings(metrics=("toy_masked",), share_target="predicted").check_dataset(
        "d", has_masks=True, has_labels=False)
    metric = MaskedLabelled(settings, mean=(0.5,), std=(0.5,))
    metric.update(MapBatch(torch.zeros(1, 3, 2, 2), torch.zeros(1), None,
                           torch.zeros(1, 2, 2), lambda images: images))
    assert metric.constant_maps == 1


def test_a_later_registration_of_a_name_replaces_it(masked_metric) -> None:
    class Other(MaskedLabelled):
        needs_masks = False

    register_metric(Other)
    assert EVAL_METRICS["toy_masked"] is Other
    assert not ExplanationSettings(metrics=("toy_masked",)).needs_masks
