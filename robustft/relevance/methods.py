"""Relevance methods by name (docs/method.md §1.1), and the relevance config group.

Each method is one function ``(model, images, target, gradient_mode, *, backend) ->
RelevanceOutput``, registered in its own file with ``@register_method(name,
differentiable=...)``; ``target`` is a (B,) tensor of classes or ``None`` (the argmax
class), and a method that has no use for ``gradient_mode`` or ``backend`` accepts and
ignores them. ``differentiable`` says whether a loss on its map can train the model
(fine-tuning refuses the others). ``options`` are the method's own keyword arguments with
their defaults (``rollout``'s ``start_layer``); :func:`method_options` checks given ones,
and :func:`method_label` names a method run with non-default options (``rollout(start_layer=1)``)
wherever its results are written. Gradient-weighted attention rollout, the method of the
paper, is the default.

``robustft.relevance`` imports every method module when it is imported (before anything
can read this module), so :data:`RELEVANCE_METHODS` is complete whenever it is read; a
method defined elsewhere (a user's, a test's) is registered when its module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor, nn

from robustft.relevance.settings import (
    ExplainedClass,
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
)

__all__ = ["RELEVANCE_METHODS", "RelevanceChoice", "RelevanceConfig", "RelevanceMethod",
           "check_trainable_method", "get_method", "method_label", "method_options",
           "register_method", "relevance_choices", "trainable_methods"]


@dataclass(frozen=True)
class RelevanceMethod:
    compute: Callable[..., RelevanceOutput]  # (model, images, target, gradient_mode, *, backend)
    differentiable: bool
    options: Mapping[str, Any] = field(default_factory=dict)  # keyword -> default
    # raises a one-line ValueError for option values the method refuses (before any model)
    check_options: Callable[[Mapping[str, Any]], None] | None = None


RELEVANCE_METHODS: dict[str, RelevanceMethod] = {}

Compute = TypeVar("Compute", bound=Callable[..., RelevanceOutput])


def register_method(name: str, compute: Compute | None = None, *, differentiable: bool,
                    options: Mapping[str, Any] | None = None,
                    check_options: Callable[[Mapping[str, Any]], None] | None = None
                    ) -> Compute | Callable[[Compute], Compute]:
    """Register ``compute`` as the relevance method ``name`` (a later registration of the
    same name replaces it), with its own keyword ``options`` and their defaults, and
    ``check_options`` to refuse bad values of them. Without ``compute``, a decorator::

        @register_method("rollout", differentiable=True, options={"start_layer": 0})
        def attention_rollout(model, images, target=None, gradient_mode="detached", *,
                              backend="eager", start_layer=0) -> RelevanceOutput: ...
    """
    def register(function: Compute) -> Compute:
        RELEVANCE_METHODS[name] = RelevanceMethod(function, differentiable, dict(options or {}),
                                                  check_options)
        return function

    return register if compute is None else register(compute)


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


@dataclass(frozen=True)
class RelevanceChoice:
    """One relevance computation as the inspection tools run it (robustft-eval one,
    robustft-explain one or several): the ``method`` (a name in :data:`RELEVANCE_METHODS`),
    its own ``options`` (checked, and kept only where they differ from the method's defaults:
    what ``compute`` is called with and what ``label`` names) and the ``backend``. Every
    config reaches it through :func:`relevance_choices`."""

    method: str = "grad_rollout"
    options: Mapping[str, Any] = field(default_factory=dict)
    backend: RelevanceBackend = RelevanceBackend.eager

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", method_options(self.method, self.options))
        object.__setattr__(self, "backend", RelevanceBackend(self.backend))

    @property
    def label(self) -> str:
        """The method's name in result rows and file names: ``rollout(start_layer=1)``."""
        return method_label(self.method, self.options)

    def compute(self, model: nn.Module, images: Tensor, target: Tensor | None = None,
                gradient_mode: GradientMode | str = GradientMode.detached) -> RelevanceOutput:
        """The method's maps of ``images`` for ``target`` (None: the argmax class)."""
        return RELEVANCE_METHODS[self.method].compute(model, images, target, gradient_mode,
                                                      backend=self.backend, **self.options)


def relevance_choices(methods: Sequence[str] | str, options: Mapping[str, Any] | None = None,
                      backend: RelevanceBackend | str = RelevanceBackend.eager, *,
                      key: str = "methods") -> tuple[RelevanceChoice, ...]:
    """One :class:`RelevanceChoice` per name in ``methods`` (the config key ``key``), each
    with its entry of ``options`` (method -> its options, the ``method_options`` key) and
    ``backend``; a one-line ``ValueError`` naming ``key`` for an empty list or an unknown
    name, ``method_options.<method>`` for an option the method does not take, ``backend``
    for an unknown backend."""
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError(f"{key}: no relevance method given; known: {sorted(RELEVANCE_METHODS)}")
    for name in names:
        if name not in RELEVANCE_METHODS:
            raise ValueError(f"{key}: unknown relevance method {name!r}; known: "
                             f"{sorted(RELEVANCE_METHODS)}")
    if backend not in tuple(RelevanceBackend):
        raise ValueError(f"backend: expected one of {[b.value for b in RelevanceBackend]}, "
                         f"got {backend!r}")
    given = dict(options or {})
    return tuple(RelevanceChoice(name, given.get(name) or {}, backend) for name in names)


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
