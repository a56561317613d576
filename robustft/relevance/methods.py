"""Relevance methods by name.

Each method is one function ``(model, images, target, gradient_mode, *, backend) ->
RelevanceOutput`` registered here; ``differentiable`` says whether a loss on its map can train the model
(fine-tuning refuses the others). Gradient-weighted attention rollout, the method of the
paper, is the default and, today, the only one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from robustft.relevance.grad_rollout import relevance_map
from robustft.relevance.settings import (
    ExplainedClass,
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
)

__all__ = ["RELEVANCE_METHODS", "RelevanceConfig", "RelevanceMethod", "check_trainable_method",
           "register_method"]


@dataclass(frozen=True)
class RelevanceMethod:
    compute: Callable[..., RelevanceOutput]  # (model, images, target, gradient_mode, *, backend)
    differentiable: bool


RELEVANCE_METHODS: dict[str, RelevanceMethod] = {}


def register_method(name: str, compute: Callable[..., RelevanceOutput], *,
                    differentiable: bool) -> None:
    RELEVANCE_METHODS[name] = RelevanceMethod(compute, differentiable)


def check_trainable_method(name: str) -> RelevanceMethod:
    """The method called ``name``; a ``ValueError`` when there is none or when its map
    cannot carry a training loss."""
    if name not in RELEVANCE_METHODS:
        raise ValueError(f"method must be one of {sorted(RELEVANCE_METHODS)}, got {name!r}")
    method = RELEVANCE_METHODS[name]
    if not method.differentiable:
        raise ValueError(f"method {name!r} is not differentiable: a loss on its map cannot "
                         f"train the model (trainable: "
                         f"{sorted(n for n, m in RELEVANCE_METHODS.items() if m.differentiable)})")
    return method


register_method("grad_rollout", relevance_map, differentiable=True)


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
