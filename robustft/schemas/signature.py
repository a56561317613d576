"""Typed Hydra schemas derived from a constructor's signature.

The Lightning ``Trainer`` takes some fifty flags and robustft's DataModules a dozen; writing
their schemas by hand would copy every name, type and default, and the copy would drift.
:func:`schema_from_signature` reads them from the signature instead, so every flag a user
knows from the class's own documentation is accepted, typed where OmegaConf can type it
(``int``, ``float``, ``bool``, ``str``, ``Optional`` / ``list`` / ``dict`` of those, enums),
and ``Any`` where it cannot (unions such as Lightning's ``devices: int | str | list``, which
the class checks itself). A signature says a value's type, not its range: ``allowed`` gives
the fields their rules (:mod:`robustft.schemas.allowed`), which ``check_config`` applies.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from robustft.schemas.allowed import Allowed
from robustft.schemas.allowed import allowed as allowed_metadata

__all__ = ["schema_from_signature", "omegaconf_type"]

_PRIMITIVES = (int, float, bool, str, Path)


def omegaconf_type(annotation: Any) -> Any:
    """The closest annotation OmegaConf can validate: primitives, enums, ``Optional``,
    ``list`` and ``dict`` of those; ``Any`` for everything else."""
    if annotation in _PRIMITIVES or (isinstance(annotation, type) and issubclass(annotation, Enum)):
        return annotation
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, UnionType):
        members = [a for a in arguments if a is not NoneType]
        if len(members) == 1 and len(arguments) == 2:
            inner = omegaconf_type(members[0])
            return Any if inner is Any else Optional[inner]  # noqa: UP045 - built at run time
        return Any
    if origin in (list, tuple, Sequence, typing.Sequence) and arguments:
        items = [a for a in arguments if a is not Ellipsis]
        if len(set(items)) == 1:
            inner = omegaconf_type(items[0])
            return Any if inner is Any else list[inner]
        return Any
    if origin in (dict, Mapping, typing.Mapping) and len(arguments) == 2 and arguments[0] is str:
        inner = omegaconf_type(arguments[1])
        return dict[str, inner]
    return Any


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, UnionType)


def _field(annotation: Any, default: Any, metadata: Mapping[str, Any] | None = None,
           ) -> tuple[Any, dataclasses.Field]:
    if default is inspect.Parameter.empty:
        # required by the target, but a config may leave it null for the caller to fill
        # (e.g. a DataModule's mean/std, taken from the model when null)
        if annotation is not Any and not _is_optional(annotation):
            annotation = Optional[annotation]  # noqa: UP045 - built at run time
        return annotation, dataclasses.field(default=MISSING, metadata=metadata)
    if isinstance(default, (list, tuple, dict)):
        value = list(default) if isinstance(default, tuple) else default
        if isinstance(value, list) and annotation is not Any and typing.get_origin(annotation) is not list:
            annotation = Any
        return annotation, dataclasses.field(default_factory=lambda: value.copy(), metadata=metadata)
    if default is not None and not isinstance(default, (*_PRIMITIVES, Enum)):
        # an object default (a callable...)
        return Any, dataclasses.field(default=None, metadata=metadata)
    if default is None and annotation is not Any and not _is_optional(annotation):
        annotation = Optional[annotation]  # noqa: UP045 - built at run time
    return annotation, dataclasses.field(default=default, metadata=metadata)


def schema_from_signature(target: Callable[..., Any], name: str, *, exclude: Sequence[str] = (),
                          extra: Sequence[tuple[str, Any, dataclasses.Field]] = (),
                          inherit: Callable[..., Any] | None = None,
                          with_target: bool = True,
                          allowed: Mapping[str, Allowed] | None = None) -> type:
    """A (non-frozen) dataclass with one field per keyword parameter of ``target``
    (a class's ``__init__`` or a function), plus ``_target_`` naming it when
    ``with_target``, plus ``extra`` fields (name, type, ``dataclasses.field``).
    ``inherit``: a callable that ``target`` forwards its ``**kwargs`` to (a base class):
    its parameters are added where ``target`` does not name them. ``allowed``: parameter
    name -> the values it may take (a name that is no field and not excluded is an error)."""
    rules = dict(allowed or {})
    fields: list[tuple[str, Any, dataclasses.Field]] = []
    if with_target:
        path = f"{target.__module__}.{target.__qualname__}"
        fields.append(("_target_", str, dataclasses.field(default=path)))
    for source in (target, inherit) if inherit is not None else (target,):
        taken = {existing[0] for existing in fields}
        fields += [f for f in _signature_fields(source, exclude, rules) if f[0] not in taken]
    fields += list(extra)
    unknown = sorted(set(rules) - {f[0] for f in fields} - set(exclude))
    if unknown:
        raise TypeError(f"{name}: allowed= names {unknown}, which {target.__qualname__} does not take")
    # required fields (MISSING) may follow defaults in a Hydra schema: MISSING is a value
    return dataclasses.make_dataclass(name, fields)


def _signature_fields(target: Callable[..., Any], exclude: Sequence[str],
                      rules: Mapping[str, Allowed]) -> list[tuple[str, Any, dataclasses.Field]]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - a name only imported for type checking
        hints = {}
    fields = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name in ("self", *exclude) or parameter.kind in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = omegaconf_type(hints.get(parameter.name, Any))
        rule = rules.get(parameter.name)
        annotation, spec = _field(annotation, parameter.default,
                                  allowed_metadata(rule) if rule is not None else None)
        if not _supported(annotation, spec):
            annotation = Any
        fields.append((parameter.name, annotation, spec))
    return fields


def _supported(annotation: Any, spec: dataclasses.Field) -> bool:
    """Whether OmegaConf accepts this annotation with this default."""
    probe = dataclasses.make_dataclass("_Probe", [("value", annotation, spec)])
    try:
        OmegaConf.structured(probe)
    except Exception:  # noqa: BLE001 - any refusal means: fall back to Any
        return False
    return True
