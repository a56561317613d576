"""``perturbation``: the perturbation test (:mod:`robustft.evaluation.metrics.perturbation_curves`) of the
maps of ``perturbation.target``'s class: top-1 after removing the most (positive) or the
least (negative) relevant pixels, per removed fraction, and the AUC over the fractions.
Rows ``perturbation_positive|negative`` per ``removed_fraction`` value and their ``_auc``.
A map with one value everywhere has no order: its pixels are removed in pixel order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from robustft.evaluation.metrics.base import MapBatch, MapMetric, Result, register_metric
from robustft.evaluation.metrics.perturbation_curves import (
    PerturbationCurves,
    PerturbationDirection,
    normalized_fill,
)
from robustft.evaluation.metrics.segmentation_scores import constant_maps
from robustft.relevance import ExplainedClass

if TYPE_CHECKING:
    from robustft.evaluation.metrics.map_scoring import ExplanationSettings

__all__ = ["FRACTION_FACTOR", "PerturbationTest"]

FRACTION_FACTOR = "removed_fraction"


@register_metric
class PerturbationTest(MapMetric):
    name = "perturbation"
    quantity = "perturbation"
    label = "perturbation test"
    titles = {
        "perturbation_positive_auc": "perturbation test, positive (most relevant removed "
                                     "first): AUC of top-1 % over the removed fraction, lower "
                                     "is better",
        "perturbation_negative_auc": "perturbation test, negative (least relevant removed "
                                     "first): AUC of top-1 % over the removed fraction, higher "
                                     "is better",
    }
    constant_maps_scoring = "removed in pixel order"

    def __init__(self, settings: ExplanationSettings, *, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__(settings, mean=mean, std=std)
        self.curves = PerturbationCurves(settings.fractions,
                                         normalized_fill(settings.removal_value, mean, std))

    @classmethod
    def explained_class(cls, settings: ExplanationSettings) -> ExplainedClass:
        return settings.perturbation_target

    @classmethod
    def label_requirement(cls, settings: ExplanationSettings) -> str | None:
        del settings
        return cls.name  # top-1 of the perturbed images

    @classmethod
    def fingerprint_inputs(cls, settings: ExplanationSettings) -> dict[str, Any] | None:
        return {"fractions": list(settings.fractions), "removal_value": settings.removal_value,
                "target": settings.perturbation_target.value}

    @classmethod
    def note(cls, settings: ExplanationSettings) -> str | None:
        return (f"Perturbation: removed pixels set to {settings.removal_value:g} in every "
                f"channel before normalisation; pixels ordered by the relevance of the "
                f"{settings.perturbation_target.value} class.")

    def update(self, batch: MapBatch) -> None:
        self.curves.update(batch.images, batch.relevance, batch.labels, batch.classify)
        self.constant_maps += int(constant_maps(batch.relevance).sum())

    def results(self) -> list[Result]:
        results: list[Result] = []
        for direction in PerturbationDirection:
            quantity = f"perturbation_{direction.value}"
            results.append((f"{quantity}_auc", "", "", self.curves.auc(direction)))
            for fraction, accuracy in zip(self.curves.fractions,
                                          self.curves.accuracies(direction)):
                results.append((quantity, FRACTION_FACTOR, f"{fraction:g}", accuracy))
        return results
