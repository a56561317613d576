"""Relevance maps of ViTs (docs/method.md §1): the rule of the paper (gradient-weighted
attention rollout, :mod:`robustft.relevance.grad_rollout`), the other methods (attention
rollout, raw attention, attention Grad-CAM, input x gradient), each in its own file and
registered there by name (:mod:`robustft.relevance.methods`), the setup they share
(:mod:`robustft.relevance.capture`), the read-out (:mod:`robustft.relevance.readout`) and
the post-processing every map shares.

Importing this package imports every method module, so ``RELEVANCE_METHODS`` is complete
whenever it is read. A new method: one file with ``@register_method(name,
differentiable=...)``, imported below (docs/extending.md)."""

# the method modules register themselves (robustft.relevance.methods) when imported
from robustft.relevance.attn_gradcam import attention_gradcam
from robustft.relevance.grad_rollout import (
    head_weighted_attention,
    relevance_map,
    rollout_cls_row,
    rollout_row,
)
from robustft.relevance.input_gradient import input_x_gradient
from robustft.relevance.methods import (
    RELEVANCE_METHODS,
    RelevanceChoice,
    RelevanceConfig,
    RelevanceMethod,
    check_trainable_method,
    get_method,
    method_label,
    method_options,
    register_method,
    relevance_choices,
    trainable_methods,
)
from robustft.relevance.raw_attention import raw_attention
from robustft.relevance.rollout import (
    attention_rollout,
    rollout_cls_row_of_attention,
    rollout_row_of_attention,
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
           "RelevanceBackend", "RelevanceChoice", "RelevanceConfig", "RelevanceMethod", "RelevanceOutput",
           "attention_gradcam", "attention_rollout", "check_trainable_method", "get_method",
           "head_weighted_attention", "input_x_gradient", "method_label", "method_options",
           "raw_attention", "register_method", "relevance_choices", "relevance_map", "rollout_cls_row",
           "rollout_cls_row_of_attention", "rollout_row", "rollout_row_of_attention",
           "trainable_methods", "upsample_and_normalize"]
