"""Relevance maps of ViTs (docs/method.md §1): the rule of the paper (gradient-weighted
attention rollout, :mod:`robustft.relevance.grad_rollout`), the other methods (attention
rollout, raw attention, attention Grad-CAM, input x gradient), the registry of methods by
name, and the post-processing every map shares."""

from robustft.relevance.attn_gradcam import attention_gradcam
from robustft.relevance.grad_rollout import head_weighted_attention, relevance_map, rollout_cls_row
from robustft.relevance.input_gradient import input_x_gradient
from robustft.relevance.methods import (
    RELEVANCE_METHODS,
    RelevanceConfig,
    RelevanceMethod,
    check_trainable_method,
    get_method,
    method_label,
    method_options,
    register_method,
    trainable_methods,
)
from robustft.relevance.raw_attention import raw_attention
from robustft.relevance.rollout import attention_rollout, rollout_cls_row_of_attention
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
           "RelevanceBackend", "RelevanceConfig", "RelevanceMethod", "RelevanceOutput",
           "attention_gradcam", "attention_rollout", "check_trainable_method", "get_method",
           "head_weighted_attention", "input_x_gradient", "method_label", "method_options",
           "raw_attention", "register_method",
           "relevance_map", "rollout_cls_row", "rollout_cls_row_of_attention",
           "trainable_methods", "upsample_and_normalize"]
