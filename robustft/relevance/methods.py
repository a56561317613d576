"""Relevance methods by name (docs/method.md §1.1), and the relevance config group.

Each method is one function ``(model, images, target, gradient_mode, *, backend) ->
RelevanceOutput``, registered in its own file with ``@register_method(name,
differentiable=...)``; ``target`` is a (B,) tensor of classes or ``None`` (the argmax
class), and a method that has no use for ``gradient_mode`` or ``backend`` accepts and
ignores them. ``differentiable`` says whether a loss on its map can train the model
(fine-tuning refuses the others). Gradient-weighted attention rollout, the method of the
paper, is the default.

``robustft.relevance`` imports every method module when it is imported (before anything
can read this module), so :data:`RELEVANCE_METHODS` is complete whenever it is read; a
method defined elsewhere (a user's, a test's) is registered when its module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from robustft.relevance.settings import (
    ExplainedClass,
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
)

__all__ = ["RELEVANCE_METHODS", "RelevanceConfig", "RelevanceMethod", "check_trainable_method",
           "get_method", "register_method", "trainable_methods"]


@dataclass(frozen=True)
class RelevanceMethod:
    compute: Callable[..., RelevanceOutput]  # (model, images, target, gradient_mode, *, backend)
    differentiable: bool


RELEVANCE_METHODS: dict[str, RelevanceMethod] = {}

Compute = TypeVar("Compute", bound=Callable[..., RelevanceOutput])


def register_method(name: str, compute: Compute | None = None, *,
                    differentiable: bool) -> Compute | Callable[[Compute], Compute]:
    """Register ``compute`` as the relevance method ``name`` (a later registration of the
    same name replaces it). Without ``compute``, a decorator::

        @register_method("rollout", differentiable=True)
        def attention_rollout(model, images, target=None, gradient_mode="detached", *,
                              backend="eager") -> RelevanceOutput: ...
    """
    def register(function: Compute) -> Compute:
        RELEVANCE_METHODS[name] = RelevanceMethod(function, differentiable)
        return function

    return register if compute is None else register(compute)


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
