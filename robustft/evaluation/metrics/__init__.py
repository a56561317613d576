"""Evaluation metrics by name (docs/extending.md): one class each, registered in its own
file with :func:`register_metric` (:mod:`robustft.evaluation.metrics.base`).

Importing this package imports every built-in metric module, in the order their names are
listed (``top1``, ``perturbation``, ``segmentation``, ``share``), so ``EVAL_METRICS`` is
complete whenever it is read."""

from robustft.evaluation.metrics.base import (
    EVAL_METRICS,
    EvalMetric,
    MapBatch,
    MapMetric,
    Result,
    map_metrics,
    metric_names,
    register_metric,
)

# the metric modules register themselves when imported; this order is the order of the
# rows, of the fingerprint's keys' listing and of the error messages' name lists
from robustft.evaluation.metrics.top1 import TopKAccuracy  # isort: skip
from robustft.evaluation.metrics.perturbation import FRACTION_FACTOR, PerturbationTest  # isort: skip
from robustft.evaluation.metrics.segmentation import SegmentationTest  # isort: skip
from robustft.evaluation.metrics.share import ForegroundShare  # isort: skip

__all__ = ["EVAL_METRICS", "FRACTION_FACTOR", "EvalMetric", "ForegroundShare", "MapBatch",
           "MapMetric", "PerturbationTest", "Result", "SegmentationTest", "TopKAccuracy",
           "map_metrics", "metric_names", "register_metric"]
