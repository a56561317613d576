"""What an evaluation metric is, and the registry of metrics by name.

A metric is one class, registered where it is defined with :func:`register_metric`. Its
class attributes and class methods say what it needs before anything is built (masks,
ground-truth labels), what enters the evaluation fingerprint and what ``results.md`` says
about its settings; an instance accumulates one model's scores over one dataset
(``update`` per batch, ``results`` at the end).

Two kinds exist. :class:`MapMetric` scores relevance maps: every batch it gets the
min-max normalised map (at the input resolution) of the class it explains
(:meth:`MapMetric.explained_class`), computed once per batch and explained class and
shared by the map metrics that explain the same class
(``robustft.evaluation.metrics.map_scoring.ExplanationScorer``). ``top1``
(:mod:`robustft.evaluation.metrics.top1`) scores the class scores of the model's own
forward, in the runner's pass (``robustft.evaluation.runner``).

``robustft.evaluation.metrics`` imports every built-in metric module when it is imported,
so :data:`EVAL_METRICS` is complete whenever it is read; a metric defined elsewhere (a
user's, a test's) is registered when its module is imported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from torch import Tensor

from robustft.relevance import ExplainedClass

if TYPE_CHECKING:  # the settings name the metrics: a type here, not an import cycle
    from robustft.evaluation.metrics.map_scoring import ExplanationSettings

__all__ = ["EVAL_METRICS", "EvalMetric", "MapBatch", "MapMetric", "Result", "map_metrics",
           "metric_names", "register_metric"]

# (quantity, factor, factor value, value): one result row before the method's name is
# put in front of the quantity (``<method>:<quantity>``)
Result = tuple[str, str, str, float]


class EvalMetric:
    """What every metric declares. ``name``: its value in robustft-eval's ``metrics``."""

    name: ClassVar[str]
    needs_masks: ClassVar[bool] = False
    uses_maps: ClassVar[bool] = True  # False: scored on the runner's forward (top1)

    @classmethod
    def label_requirement(cls, settings: ExplanationSettings) -> str | None:
        """What needs ground-truth classes under ``settings`` (the setting named in the
        error when a dataset has none: ``"top1"``, ``"share.target=label"``), or None
        when the metric runs without them."""
        del settings
        return None

    @classmethod
    def fingerprint_inputs(cls, settings: ExplanationSettings) -> dict[str, Any] | None:
        """The metric's own settings that its rows depend on, entered in the fingerprint
        under its name (None: nothing beyond its name in ``metrics``)."""
        del settings
        return None

    @classmethod
    def note(cls, settings: ExplanationSettings) -> str | None:
        """One sentence for ``results.md`` on the settings the metric ran with, or None."""
        del settings
        return None


@dataclass(frozen=True)
class MapBatch:
    """One batch as a map metric sees it: normalised ``images`` (B, C, H, W), ``labels``
    (B,) protocol classes (-1 when the dataset has none), ``masks`` (B, H, W) uint8 at the
    input resolution (None when no metric asked for them), ``relevance`` (B, H, W) the
    min-max normalised maps of the metric's explained class at the input resolution, and
    ``classify`` (normalised images -> the protocol's class scores)."""

    images: Tensor
    labels: Tensor
    masks: Tensor | None
    relevance: Tensor
    classify: Callable[[Tensor], Tensor]


class MapMetric(EvalMetric, ABC):
    """A metric of relevance maps. ``quantity`` prefixes its constant-map row
    (``<quantity>_constant_maps``: the percentage of maps with one value at every pixel,
    which the metric counts in ``constant_maps`` and scores as ``constant_maps_scoring``
    says). ``titles``: each row quantity's heading in ``results.md``, ``label`` names the
    metric in the constant-map row's heading.

    ``mean`` / ``std``: the normalisation of the model's input."""

    quantity: ClassVar[str]
    label: ClassVar[str]
    titles: ClassVar[Mapping[str, str]] = {}
    constant_maps_scoring: ClassVar[str] = "scored as they are"

    def __init__(self, settings: ExplanationSettings, *, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        del mean, std
        self.settings = settings
        self.constant_maps = 0

    @classmethod
    def explained_class(cls, settings: ExplanationSettings) -> ExplainedClass:
        """The class whose map the metric scores (the predicted one unless overridden)."""
        del settings
        return ExplainedClass.predicted

    @classmethod
    def constant_maps_quantity(cls) -> str:
        return f"{cls.quantity}_constant_maps"

    @classmethod
    def constant_maps_title(cls) -> str:
        return (f"{cls.label}: maps with one value at every pixel (no information; "
                f"{cls.constant_maps_scoring}), % of images")

    @abstractmethod
    def update(self, batch: MapBatch) -> None:
        """Add one batch (skipped by the scorer when the metric needs masks and the batch
        has none)."""

    @abstractmethod
    def results(self) -> list[Result]:
        """The rows of the dataset so far, the constant-map row excluded."""


EVAL_METRICS: dict[str, type[EvalMetric]] = {}

MetricClass = TypeVar("MetricClass", bound=type[EvalMetric])


def register_metric(metric: MetricClass) -> MetricClass:
    """Register the metric class under its ``name`` (a later registration of the same name
    replaces it); usable as a class decorator::

        @register_metric
        class ForegroundShare(MapMetric):
            name = "share"
            ...
    """
    EVAL_METRICS[metric.name] = metric
    return metric


def metric_names() -> list[str]:
    """The registered metrics' names, in registration order."""
    return list(EVAL_METRICS)


def map_metrics() -> list[type[MapMetric]]:
    """The registered map metrics, in registration order."""
    return [metric for metric in EVAL_METRICS.values()
            if metric.uses_maps and issubclass(metric, MapMetric)]
