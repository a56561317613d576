"""Relevance maps of ViTs (docs/method.md §1): the rule of the paper (gradient-weighted
attention rollout, :mod:`robustft.relevance.grad_rollout`), the registry of methods by name,
and the post-processing every map shares."""

from robustft.relevance.grad_rollout import head_weighted_attention, relevance_map, rollout_cls_row
from robustft.relevance.methods import (
    RELEVANCE_METHODS,
    RelevanceConfig,
    check_trainable_method,
    register_method,
)
from robustft.relevance.settings import (
    GRADIENT_MODES,
    PHASES,
    ExplainedClass,
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
    upsample_and_normalize,
)

__all__ = ["GRADIENT_MODES", "PHASES", "RELEVANCE_METHODS", "ExplainedClass", "GradientMode",
           "RelevanceBackend", "RelevanceConfig", "RelevanceOutput", "check_trainable_method",
           "head_weighted_attention", "register_method", "relevance_map", "rollout_cls_row",
           "upsample_and_normalize"]
