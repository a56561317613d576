"""Explanation-quality metrics of one model on one dataset, batch by batch: the
perturbation test (:mod:`~robustft.evaluation.perturbation`), the segmentation test
(:mod:`~robustft.evaluation.segmentation`) and the foreground share of relevance
(``robustft.losses.foreground_share``), all from the maps of ONE relevance method
(``robustft.relevance.RELEVANCE_METHODS[name]``), computed once per batch and explained
class and shared by the metrics that explain the same class.

Which class a map explains: ``predicted`` = the class the dataset's label protocol
predicts (the arg-max of its scores; the segmentation test always uses it, as the field
does), ``label`` = the ground-truth class. Under a protocol that scores a class as the max
over several logits (ObjectNet), the explained logit is the one that gives the class its
score.

Maps without information (one value at every pixel, e.g. ``attn_gradcam`` when the clamp
leaves zeros) are scored as chance where a metric has one: the segmentation AP as 0.5
(:mod:`~robustft.evaluation.segmentation`), the foreground share as the share of a
uniform map, i.e. the object's area (the share of the labelled pixels on the mask; a zero
map would otherwise score 0 %). The perturbation test has no chance order: it removes such
a map's pixels in pixel order, as a stable sort of equal values does. Every metric counts
them: ``<quantity>_constant_maps`` rows, in percent of the images.

Rows (``robustft.evaluation.runner.RESULT_COLUMNS``), metric ``<method>:<quantity>``,
values in percent in the ``accuracy`` column: ``perturbation_positive|negative`` per
``removed_fraction`` factor value, their ``_auc`` (trapezoid over the fractions, see
``perturbation_auc``), ``segmentation_pixel_accuracy``, ``segmentation_miou``,
``segmentation_map``, ``foreground_share``, and ``perturbation_constant_maps``,
``segmentation_constant_maps``, ``foreground_share_constant_maps``. ``<method>`` is the
method's name, with its options when they are not the defaults
(``rollout(start_layer=1)``, :func:`robustft.relevance.method_label`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

from robustft.backbones import backbone_of
from robustft.evaluation.perturbation import (
    DEFAULT_FRACTIONS,
    PerturbationCurves,
    PerturbationDirection,
    check_fractions,
    normalized_fill,
)
from robustft.evaluation.segmentation import IGNORE_VALUE, SegmentationScores, constant_maps
from robustft.labels import LabelProtocol
from robustft.losses import foreground_share
from robustft.relevance import (
    RELEVANCE_METHODS,
    ExplainedClass,
    GradientMode,
    RelevanceBackend,
    method_label,
    method_options,
    upsample_and_normalize,
)

__all__ = ["ExplanationScorer", "ExplanationSettings", "Metric", "explained_logits",
           "metric_name"]


class Metric(StrEnum):
    """The ``metrics`` robustft-eval computes; top-5 rides with ``top1``."""

    top1 = "top1"
    perturbation = "perturbation"
    segmentation = "segmentation"
    share = "share"


NEEDS_MASKS = frozenset({Metric.segmentation, Metric.share})
# the rows' quantity prefix of each metric (``<prefix>_constant_maps``)
CONSTANT_MAP_QUANTITY = {Metric.perturbation: "perturbation", Metric.segmentation: "segmentation",
                         Metric.share: "foreground_share"}
FRACTION_FACTOR = "removed_fraction"


@dataclass(frozen=True)
class ExplanationSettings:
    """What the explanation metrics compute (robustft-eval's ``metrics``,
    ``relevance_method``, ``method_options.<method>.*``, ``perturbation.*`` and ``share.*``
    keys). ``relevance_options``: the method's own options (``{"start_layer": 1}`` for
    ``rollout``); only those that differ from the method's defaults are kept."""

    metrics: tuple[Metric, ...] = (Metric.top1,)
    relevance_method: str = "grad_rollout"
    relevance_options: Mapping[str, Any] = field(default_factory=dict)
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    removal_value: float = 0.0  # a removed pixel's value in [0, 1], before normalisation
    perturbation_target: ExplainedClass = ExplainedClass.predicted
    share_target: ExplainedClass = ExplainedClass.label
    backend: RelevanceBackend = RelevanceBackend.eager

    def __post_init__(self) -> None:
        try:
            metrics = tuple(dict.fromkeys(Metric(m) for m in self.metrics))
        except ValueError:
            raise ValueError(f"metrics: expected a list of {[m.value for m in Metric]}, "
                             f"got {list(self.metrics)}") from None
        if not metrics:
            raise ValueError(f"metrics: empty; expected some of {[m.value for m in Metric]}")
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "fractions", check_fractions(self.fractions))
        if self.explains and self.relevance_method not in RELEVANCE_METHODS:
            raise ValueError(f"relevance_method: {self.relevance_method!r} is not a relevance "
                             f"method; known: {sorted(RELEVANCE_METHODS)}")
        object.__setattr__(self, "relevance_options", method_options(
            self.relevance_method, self.relevance_options) if self.explains else {})
        for key in ("perturbation_target", "share_target"):
            object.__setattr__(self, key, ExplainedClass(getattr(self, key)))

    @property
    def explains(self) -> tuple[Metric, ...]:
        """The requested metrics that need relevance maps."""
        return tuple(m for m in self.metrics if m is not Metric.top1)

    @property
    def method_label(self) -> str:
        """The method's name in result rows, with its non-default options."""
        return method_label(self.relevance_method, self.relevance_options)

    @property
    def needs_masks(self) -> bool:
        return any(m in NEEDS_MASKS for m in self.metrics)

    def check_dataset(self, name: str, *, has_masks: bool, has_labels: bool) -> None:
        """A ``ValueError`` (one line) when a requested metric cannot run on dataset
        ``name``: segmentation / share need masks; top1, the perturbation test (accuracy)
        and an explained ``label`` need ground-truth classes."""
        for metric in self.metrics:
            if metric in NEEDS_MASKS and not has_masks:
                raise ValueError(f"metrics: {metric} needs segmentation masks, and dataset {name!r} "
                                 "has none (datasets with masks: generic, imagenet-s, "
                                 "imagenet-segmentation, generated splits with <split>_masks/); "
                                 "pick datasets with only=[...]")
            needs_labels = metric in (Metric.top1, Metric.perturbation) or (
                metric is Metric.share and self.share_target is ExplainedClass.label)
            if needs_labels and not has_labels:
                what = "share.target=label" if metric is Metric.share else metric.value
                raise ValueError(f"metrics: {what} needs ground-truth classes, and dataset "
                                 f"{name!r} has none; use metrics=[segmentation] (or "
                                 "share.target=predicted) there, or pick datasets with only=[...]")

    def fingerprint_inputs(self) -> dict[str, Any] | None:
        """What the rows depend on beyond model and data; None for top1 alone, so that a
        top-1 run's fingerprints are those of the runs before explanation metrics."""
        if not self.explains:
            return None
        inputs: dict[str, Any] = {"metrics": sorted(m.value for m in self.metrics),
                                  "relevance_method": self.relevance_method}
        if self.relevance_options:  # absent at the defaults: earlier rows stay valid
            inputs["relevance_options"] = dict(sorted(self.relevance_options.items()))
        if Metric.perturbation in self.metrics:
            inputs["perturbation"] = {"fractions": list(self.fractions),
                                      "removal_value": self.removal_value,
                                      "target": self.perturbation_target.value}
        if Metric.share in self.metrics:
            inputs["share"] = {"target": self.share_target.value}
        return inputs


def metric_name(method: str, quantity: str) -> str:
    return f"{method}:{quantity}"


def explained_logits(protocol: LabelProtocol, classes: Tensor, logits: Tensor) -> Tensor:
    """(B,) logit columns explaining protocol classes ``classes``: the class's column, or
    for a class scored as a max over several logits, the one that is largest."""
    if protocol.is_identity:
        return classes
    columns = []
    for row, cls in zip(logits, classes.tolist()):
        group = torch.tensor(protocol.groups[cls], device=logits.device)
        columns.append(group[row.index_select(0, group).argmax()])
    return torch.stack(columns)


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, key: str, started: float) -> None:
        self.seconds[key] += time.perf_counter() - started


class ExplanationScorer:
    """Running explanation metrics of one model on one dataset (see module docstring).

    ``mean``/``std``: the normalisation of the model's input (the removal value is given
    before it)."""

    def __init__(self, settings: ExplanationSettings, protocol: LabelProtocol, *,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.settings = settings
        self.protocol = protocol
        self.method = RELEVANCE_METHODS[settings.relevance_method]
        wanted = set(settings.metrics)
        self.curves = (PerturbationCurves(settings.fractions,
                                          normalized_fill(settings.removal_value, mean, std))
                       if Metric.perturbation in wanted else None)
        self.segmentation = SegmentationScores() if Metric.segmentation in wanted else None
        self.shares: list[Tensor] | None = [] if Metric.share in wanted else None
        self.constant = {metric: 0 for metric in settings.explains}  # maps without information
        self.count = 0
        self.timer = _Timer()

    def _relevance(self, model: nn.Module, images: Tensor, columns: Tensor) -> Tensor:
        """(B, H, W) min-max normalised map at the input resolution."""
        with torch.enable_grad():
            out = self.method.compute(model, images, columns, GradientMode.detached,
                                      backend=self.settings.backend,
                                      **self.settings.relevance_options)
        return upsample_and_normalize(out.relevance.detach(), images.shape[-2:])

    def update(self, model: nn.Module, images: Tensor, labels: Tensor,
               masks: Tensor | None = None) -> None:
        """One batch: normalised ``images`` (B, C, H, W), ``labels`` (B,) protocol classes
        (-1 when the dataset has none), ``masks`` (B, H, W) uint8 at the input resolution."""
        backbone = backbone_of(model)

        def classify(inputs: Tensor) -> Tensor:
            return self.protocol.scores(backbone.class_scores(inputs).float())

        started = time.perf_counter()
        with torch.no_grad():
            logits = backbone.class_scores(images).float()
        predicted = self.protocol.scores(logits).argmax(1)
        maps: dict[ExplainedClass, Tensor] = {}

        def relevance_of(target: ExplainedClass) -> Tensor:
            if target not in maps:
                begun = time.perf_counter()
                classes = predicted if target is ExplainedClass.predicted else labels
                columns = explained_logits(self.protocol, classes.to(logits.device), logits)
                maps[target] = self._relevance(model, images, columns)
                self.timer.add("relevance", begun)
            return maps[target]

        self.timer.add("forward", started)
        if self.curves is not None:
            relevance = relevance_of(self.settings.perturbation_target)
            started = time.perf_counter()
            self.curves.update(images, relevance, labels, classify)
            self.constant[Metric.perturbation] += int(constant_maps(relevance).sum())
            self.timer.add(Metric.perturbation.value, started)
        if self.segmentation is not None and masks is not None:
            relevance = relevance_of(ExplainedClass.predicted)
            started = time.perf_counter()
            before = self.segmentation.constant_maps
            self.segmentation.update(relevance.cpu(), masks.cpu())
            self.constant[Metric.segmentation] += self.segmentation.constant_maps - before
            self.timer.add(Metric.segmentation.value, started)
        if self.shares is not None and masks is not None:
            relevance = relevance_of(self.settings.share_target)
            started = time.perf_counter()
            self.shares.append(self._share(relevance, masks.to(relevance.device)).cpu())
            self.timer.add(Metric.share.value, started)
        self.count += len(images)

    def _share(self, relevance: Tensor, masks: Tensor) -> Tensor:
        """(B,) foreground share; a constant map scores a uniform map's share (chance: the
        object's share of the labelled pixels), not the 0 a zero map's mass gives."""
        ignore = masks == IGNORE_VALUE
        shares = foreground_share(relevance, masks == 1, ignore=ignore)
        constant = constant_maps(relevance)
        self.constant[Metric.share] += int(constant.sum())
        if constant.any():
            uniform = foreground_share(torch.ones_like(relevance), masks == 1, ignore=ignore)
            shares = torch.where(constant, uniform, shares)
        return shares

    def seconds_per_image(self) -> dict[str, float]:
        """Wall time per image of each part (the shared relevance maps on their own)."""
        return {key: value / max(self.count, 1) for key, value in self.timer.seconds.items()}

    def results(self) -> list[tuple[str, str, str, float]]:
        """``(metric, factor, factor_value, value)`` of every requested metric."""
        method = self.settings.method_label
        results: list[tuple[str, str, str, float]] = []
        if self.curves is not None:
            for direction in PerturbationDirection:
                quantity = f"perturbation_{direction.value}"
                results.append((metric_name(method, f"{quantity}_auc"), "", "",
                                self.curves.auc(direction)))
                for fraction, accuracy in zip(self.curves.fractions,
                                              self.curves.accuracies(direction)):
                    results.append((metric_name(method, quantity), FRACTION_FACTOR,
                                    f"{fraction:g}", accuracy))
        if self.segmentation is not None:
            for quantity, value in (
                    ("segmentation_pixel_accuracy", self.segmentation.pixel_accuracy()),
                    ("segmentation_miou", self.segmentation.mean_iou()),
                    ("segmentation_map", self.segmentation.mean_average_precision())):
                results.append((metric_name(method, quantity), "", "", value))
        if self.shares is not None:
            share = 100.0 * float(torch.cat(self.shares).mean()) if self.shares else 0.0
            results.append((metric_name(method, "foreground_share"), "", "", share))
        for metric, count in self.constant.items():
            results.append((metric_name(method, f"{CONSTANT_MAP_QUANTITY[metric]}_constant_maps"),
                            "", "", 100.0 * count / max(self.count, 1)))
        return results

    def constant_map_counts(self) -> dict[str, int]:
        """Per metric (``perturbation``, ``segmentation``, ``share``), how many of the
        scored maps had one value at every pixel."""
        return {metric.value: count for metric, count in self.constant.items()}
