"""Relevance methods by name (docs/method.md §1.1).

Each method is one function ``(model, images, target, gradient_mode, *, backend) ->
RelevanceOutput`` registered here; ``target`` is a (B,) tensor of classes or ``None`` (the
argmax class), and a method that has no use for ``gradient_mode`` or ``backend`` accepts and
ignores them. ``differentiable`` says whether a loss on its map can train the model
(fine-tuning refuses the others). ``options`` are the method's own keyword arguments with
their defaults (``rollout``'s ``start_layer``); :func:`method_options` checks given ones,
and :func:`method_label` names a method run with non-default options (``rollout(start_layer=1)``)
wherever its results are written. Gradient-weighted attention rollout, the method of the
paper, is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from robustft.relevance.attn_gradcam import attention_gradcam
from robustft.relevance.grad_rollout import relevance_map
from robustft.relevance.input_gradient import input_x_gradient
from robustft.relevance.raw_attention import raw_attention
from robustft.relevance.rollout import attention_rollout, check_start_layer
from robustft.relevance.settings import (
    ExplainedClass,
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
)

__all__ = ["RELEVANCE_METHODS", "RelevanceConfig", "RelevanceMethod", "check_trainable_method",
           "get_method", "method_label", "method_options", "register_method", "trainable_methods"]


@dataclass(frozen=True)
class RelevanceMethod:
    compute: Callable[..., RelevanceOutput]  # (model, images, target, gradient_mode, *, backend)
    differentiable: bool
    options: Mapping[str, Any] = field(default_factory=dict)  # keyword -> default
    # raises a one-line ValueError for option values the method refuses (before any model)
    check_options: Callable[[Mapping[str, Any]], None] | None = None


RELEVANCE_METHODS: dict[str, RelevanceMethod] = {}


def register_method(name: str, compute: Callable[..., RelevanceOutput], *,
                    differentiable: bool, options: Mapping[str, Any] | None = None,
                    check_options: Callable[[Mapping[str, Any]], None] | None = None) -> None:
    RELEVANCE_METHODS[name] = RelevanceMethod(compute, differentiable, dict(options or {}),
                                              check_options)


def method_options(name: str, given: Mapping[str, Any] | None, *,
                   key: str = "method_options") -> dict[str, Any]:
    """The options of method ``name`` in ``given`` that differ from its defaults (what its
    ``compute`` is called with); a ``ValueError`` naming ``key`` for one it does not take."""
    method = get_method(name, key="relevance method")
    given = dict(given or {})
    unknown = sorted(set(given) - set(method.options))
    if unknown:
        takes = sorted(method.options) or "none"
        raise ValueError(f"{key}.{name}: unknown option(s) {unknown}; {name} takes {takes}")
    if method.check_options is not None:
        method.check_options({**method.options, **given})
    return {option: value for option, value in given.items() if value != method.options[option]}


def method_label(name: str, options: Mapping[str, Any] | None = None) -> str:
    """``name``, with its non-default ``options`` when there are any: ``rollout(start_layer=1)``."""
    if not options:
        return name
    return f"{name}({','.join(f'{option}={value}' for option, value in sorted(options.items()))})"


def get_method(name: str, *, key: str = "relevance.method") -> RelevanceMethod:
    """The method called ``name``; a one-line ``ValueError`` naming ``key`` (the config key
    or argument that gave the name) and the known methods when there is none."""
    if name not in RELEVANCE_METHODS:
        raise ValueError(f"{key} must be one of {sorted(RELEVANCE_METHODS)}, got {name!r}")
    return RELEVANCE_METHODS[name]


def trainable_methods() -> list[str]:
    """The names of the methods whose map can carry a training loss, sorted."""
    return sorted(name for name, method in RELEVANCE_METHODS.items() if method.differentiable)


def check_trainable_method(name: str, *, key: str = "relevance.method") -> RelevanceMethod:
    """The method called ``name``; a one-line ``ValueError`` naming ``key`` when there is none
    or when its map cannot carry a training loss (it lists the methods that can)."""
    method = get_method(name, key=key)
    if not method.differentiable:
        raise ValueError(f"{key}={name} is not differentiable: a loss on its map cannot train "
                         f"the model; use one of {trainable_methods()} for training")
    return method


register_method("grad_rollout", relevance_map, differentiable=True)
# the maps below are functions of the attention in the autograd graph (a loss on them
# reaches the weights), like grad_rollout's
register_method("rollout", attention_rollout, differentiable=True, options={"start_layer": 0},
                check_options=lambda options: check_start_layer(options["start_layer"]))
register_method("raw_attention", raw_attention, differentiable=True)
register_method("attn_gradcam", attention_gradcam, differentiable=True)
# a first-order input gradient: no graph to the weights (robustft.relevance.input_gradient)
register_method("input_x_gradient", input_x_gradient, differentiable=False)


@dataclass
class RelevanceConfig:
    """How relevance is computed during fine-tuning (the ``relevance`` config group): the
    ``method`` (a name in ``robustft.relevance.RELEVANCE_METHODS``), ``gradient_mode``, the
    explained class (``target``) and the ``backend``."""

    method: str = "grad_rollout"
    gradient_mode: GradientMode = GradientMode.detached
    target: ExplainedClass = ExplainedClass.label
    backend: RelevanceBackend = RelevanceBackend.auto

    def __post_init__(self) -> None:
        check_trainable_method(self.method)
        self.gradient_mode = GradientMode(self.gradient_mode)
        self.target = ExplainedClass(self.target)
        self.backend = RelevanceBackend(self.backend)
