"""Explanation-quality metrics of one model on one dataset, batch by batch: the map
metrics of :mod:`robustft.evaluation.metrics` (the perturbation test, the segmentation
test, the foreground share of relevance, and any other registered one), all from the maps
of ONE relevance method (a :class:`robustft.relevance.RelevanceChoice`), computed once
per batch and explained class and shared by the metrics that explain the same class.

Which class a map explains: ``predicted`` = the class the dataset's label protocol
predicts (the arg-max of its scores; the segmentation test always uses it, as the field
does), ``label`` = the ground-truth class. Under a protocol that scores a class as the max
over several logits (ObjectNet), the explained logit is the one that gives the class its
score.

Maps without information (one value at every pixel, e.g. ``attn_gradcam`` when the clamp
leaves zeros) are scored as chance where a metric has one: the segmentation AP as 0.5
(:mod:`~robustft.evaluation.metrics.segmentation_scores`), the foreground share as the share of a
uniform map, i.e. the object's area (the share of the labelled pixels on the mask; a zero
map would otherwise score 0 %). The perturbation test has no chance order: it removes such
a map's pixels in pixel order, as a stable sort of equal values does. Every metric counts
them: ``<quantity>_constant_maps`` rows, in percent of the images.

Rows (``robustft.evaluation.runner.RESULT_COLUMNS``), metric ``<method>:<quantity>``,
values in percent in the ``value`` column: ``perturbation_positive|negative`` per
``removed_fraction`` factor value, their ``_auc`` (trapezoid over the fractions, see
``perturbation_auc``), ``segmentation_pixel_accuracy``, ``segmentation_miou``,
``segmentation_map``, ``foreground_share``, and ``perturbation_constant_maps``,
``segmentation_constant_maps``, ``foreground_share_constant_maps``. ``<method>`` is the
method's name, with its options when they are not the defaults
(``rollout(start_layer=1)``, :attr:`robustft.relevance.RelevanceChoice.label`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustft.backbones import backbone_of
from robustft.evaluation.metrics import (
    EVAL_METRICS,
    FRACTION_FACTOR,
    MapBatch,
    MapMetric,
    map_metrics,
    metric_names,
)
from robustft.evaluation.metrics.perturbation_curves import DEFAULT_FRACTIONS, check_fractions
from robustft.labels import LabelProtocol
from robustft.relevance import (
    ExplainedClass,
    GradientMode,
    RelevanceChoice,
    upsample_and_normalize,
)

__all__ = ["FRACTION_FACTOR", "ExplanationScorer", "ExplanationSettings", "explained_logits",
           "metric_name"]

# the datasets that carry masks, named in the error when a metric needs them
MASKED_DATASETS = ("generic, imagenet-s, imagenet-segmentation, generated splits with "
                   "<split>_masks/")


@dataclass(frozen=True)
class ExplanationSettings:
    """What the explanation metrics compute (robustft-eval's ``metrics``,
    ``relevance_method``, ``method_options.<method>.*``, ``perturbation.*`` and ``share.*``
    keys). ``metrics``: names in ``robustft.evaluation.metrics.EVAL_METRICS``.
    ``relevance``: the method, its own options and backend, in the shape robustft-explain
    uses too (:class:`robustft.relevance.RelevanceChoice`)."""

    metrics: tuple[str, ...] = ("top1",)
    relevance: RelevanceChoice = field(default_factory=RelevanceChoice)
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    removal_value: float = 0.0  # a removed pixel's value in [0, 1], before normalisation
    perturbation_target: ExplainedClass = ExplainedClass.predicted
    share_target: ExplainedClass = ExplainedClass.label

    def __post_init__(self) -> None:
        names = tuple(dict.fromkeys(str(m) for m in self.metrics))
        if any(name not in EVAL_METRICS for name in names):
            raise ValueError(f"metrics: expected a list of {metric_names()}, "
                             f"got {list(self.metrics)}")
        if not names:
            raise ValueError(f"metrics: empty; expected some of {metric_names()}")
        object.__setattr__(self, "metrics", names)
        object.__setattr__(self, "fractions", check_fractions(self.fractions))
        for key in ("perturbation_target", "share_target"):
            object.__setattr__(self, key, ExplainedClass(getattr(self, key)))

    @property
    def explains(self) -> tuple[str, ...]:
        """The requested metrics that need relevance maps."""
        return tuple(m for m in self.metrics if EVAL_METRICS[m].uses_maps)

    @property
    def map_metrics(self) -> list[type[MapMetric]]:
        """The requested map metrics' classes, in registration order."""
        return [metric for metric in map_metrics() if metric.name in self.metrics]

    @property
    def method_label(self) -> str:
        """The method's name in result rows, with its non-default options."""
        return self.relevance.label

    @property
    def needs_masks(self) -> bool:
        return any(EVAL_METRICS[m].needs_masks for m in self.metrics)

    def check_dataset(self, name: str, *, has_masks: bool, has_labels: bool) -> None:
        """A ``ValueError`` (one line) when a requested metric cannot run on dataset
        ``name``: those that need masks (segmentation, share) on a dataset without; those
        that need ground-truth classes (top1, the perturbation test, an explained
        ``label``) on a dataset without."""
        for metric in self.metrics:
            declared = EVAL_METRICS[metric]
            if declared.needs_masks and not has_masks:
                raise ValueError(f"metrics: {metric} needs segmentation masks, and dataset {name!r} "
                                 f"has none (datasets with masks: {MASKED_DATASETS}); "
                                 "pick datasets with only=[...]")
            what = declared.label_requirement(self)
            if what is not None and not has_labels:
                raise ValueError(f"metrics: {what} needs ground-truth classes, and dataset "
                                 f"{name!r} has none; use metrics=[segmentation] (or "
                                 "share.target=predicted) there, or pick datasets with only=[...]")

    def fingerprint_inputs(self) -> dict[str, Any] | None:
        """What the rows depend on beyond model and data; None for top1 alone, so that a
        top-1 run's fingerprints are those of the runs before explanation metrics."""
        if not self.explains:
            return None
        inputs: dict[str, Any] = {"metrics": sorted(self.metrics),
                                  "relevance_method": self.relevance.method}
        if self.relevance.options:  # absent at the defaults: earlier rows stay valid
            inputs["relevance_options"] = dict(sorted(self.relevance.options.items()))
        for metric in self.metrics:
            own = EVAL_METRICS[metric].fingerprint_inputs(self)
            if own is not None:
                inputs[metric] = own
        return inputs

    def notes(self) -> list[str]:
        """The requested metrics' sentences on their settings, for ``results.md``."""
        notes = (metric.note(self) for metric in EVAL_METRICS.values()
                 if metric.name in self.metrics)
        return [note for note in notes if note is not None]


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
        self.metrics = [metric(settings, mean=mean, std=std) for metric in settings.map_metrics]
        self.count = 0
        self.timer = _Timer()

    def _relevance(self, model: nn.Module, images: Tensor, columns: Tensor) -> Tensor:
        """(B, H, W) min-max normalised map at the input resolution."""
        with torch.enable_grad():
            out = self.settings.relevance.compute(model, images, columns, GradientMode.detached)
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
        for metric in self.metrics:
            if metric.needs_masks and masks is None:
                continue
            relevance = relevance_of(metric.explained_class(self.settings))
            started = time.perf_counter()
            metric.update(MapBatch(images, labels, masks, relevance, classify))
            self.timer.add(metric.name, started)
        self.count += len(images)

    def seconds_per_image(self) -> dict[str, float]:
        """Wall time per image of each part (the shared relevance maps on their own)."""
        return {key: value / max(self.count, 1) for key, value in self.timer.seconds.items()}

    def results(self) -> list[tuple[str, str, str, float]]:
        """``(metric, factor, factor_value, value)`` of every requested metric: each
        metric's rows in registration order, then the constant-map rows in the order the
        metrics were requested."""
        method = self.settings.method_label
        results = [(metric_name(method, quantity), factor, value, number)
                   for metric in self.metrics
                   for quantity, factor, value, number in metric.results()]
        by_name = {metric.name: metric for metric in self.metrics}
        for name in self.settings.explains:
            metric = by_name[name]
            results.append((metric_name(method, metric.constant_maps_quantity()), "", "",
                            100.0 * metric.constant_maps / max(self.count, 1)))
        return results

    def constant_map_counts(self) -> dict[str, int]:
        """Per metric (``perturbation``, ``segmentation``, ``share``), in the order they
        were requested, how many of the scored maps had one value at every pixel."""
        by_name = {metric.name: metric for metric in self.metrics}
        return {name: by_name[name].constant_maps for name in self.settings.explains}
