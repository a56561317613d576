"""Checks that complete Hydra's composition-time validation.

Hydra and OmegaConf already refuse a wrong type (``trainer.max_epochs=abc``) and an unknown
key set without ``+``. Three things get through: keys added with ``+`` (Hydra force-adds them,
and ``OmegaConf.to_object`` then drops them silently), keys of a node built by ``_target_``
that its target does not take, and numbers of the right type outside what their key allows
(``data.batch_size=0``: the rules on the schemas' fields, :mod:`robustft.schemas.allowed`).
:func:`check_config` finds all three; :func:`typed_group` turns the method's own value checks
(``LossConfig.__post_init__``...) into errors naming the key. Each entry point calls them
before building anything.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from robustft.schemas.allowed import rule_of

__all__ = ["check_config", "typed_group"]


def _path(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _target_parameters(path: str, target: str) -> set[str] | None:
    """Keyword names ``target`` takes; None when it takes ``**kwargs`` (anything)."""
    try:
        obj = hydra.utils.get_object(target)
    except Exception as error:  # noqa: BLE001 - Hydra raises several types here
        raise ValueError(f"{path}._target_: cannot import {target!r} ({error})".replace("\n", " ")) from None
    function = obj.__init__ if inspect.isclass(obj) else obj
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.name != "self"}


def _unknown_keys(node: DictConfig, path: str) -> Iterable[str]:
    schema = OmegaConf.get_type(node)
    keys = [str(key) for key in node.keys()]
    known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    target = node.get("_target_") if "_target_" in node else None
    if not isinstance(target, str):
        for key in (k for k in keys if k not in known) if known else ():
            yield (f"unknown config key {_path(path, key)}; {path or 'the top level'} takes: "
                   f"{', '.join(name for name in known if not name.startswith('_'))}")
        return
    # a node built by _target_: beyond its schema's fields, the keys its target takes (a
    # target taking **kwargs takes only what its schema lists, when it has one)
    takes = _target_parameters(path, target)
    if takes is None:
        if not known:
            return
        takes = set()
    for key in keys:
        if not key.startswith("_") and key not in known and key not in takes:
            yield (f"unknown config key {_path(path, key)}: {target} takes no argument "
                   f"{key!r} (it takes: {', '.join(sorted(takes))})")


def _refused_values(node: DictConfig, path: str) -> Iterable[str]:
    """``<key> must be ..., got ...`` for each value outside its schema field's rule."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    for schema_field in dataclasses.fields(schema):
        rule = rule_of(schema_field.metadata)
        if rule is None or schema_field.name not in node or OmegaConf.is_missing(node, schema_field.name):
            continue
        try:  # an interpolation is checked as what it resolves to
            value = node[schema_field.name]
        except OmegaConfBaseException:
            continue  # resolvable only while Hydra runs the job (${hydra:...}): not a number
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        problem = rule.problem(_path(path, schema_field.name), value)
        if problem:
            yield problem


def _walk(node: Any, path: str, errors: list[str], refused: list[str]) -> None:
    if isinstance(node, (DictConfig, ListConfig)) and node._is_none():
        return
    if isinstance(node, DictConfig):
        errors.extend(_unknown_keys(node, path))
        refused.extend(_refused_values(node, path))
        for key in node.keys():
            if not OmegaConf.is_missing(node, key) and not OmegaConf.is_interpolation(node, key):
                _walk(node._get_node(key), _path(path, key), errors, refused)
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node._iter_ex(resolve=False)):
            _walk(item, f"{path}[{index}]", errors, refused)


def check_config(cfg: DictConfig, *, skip: Iterable[str] = ("hydra",)) -> None:
    """Raise ``KeyError`` for keys that no schema or ``_target_`` takes, then ``ValueError``
    for values outside what their key allows (one line: the first problem, with a count of
    the others); ``skip`` names top-level keys left alone."""
    errors: list[str] = []
    refused: list[str] = list(_refused_values(cfg, ""))
    for key in cfg.keys():
        if str(key) in skip or OmegaConf.is_missing(cfg, key):
            continue
        _walk(cfg._get_node(key), str(key), errors, refused)
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
        errors = [f"unknown config key {key}; the top level takes: {', '.join(sorted(known))}"
                  for key in map(str, cfg.keys()) if key not in known and key not in skip] + errors
    for problems, error_type in ((errors, KeyError), (refused, ValueError)):
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise error_type(problems[0] + more)


def typed_group(cfg: DictConfig, key: str) -> Any:
    """``cfg.<key>`` as its schema's object (``LossConfig``...); a value the schema's own
    check refuses is an error naming ``<key>.<field>``."""
    try:
        return OmegaConf.to_object(cfg[key])
    except (ValueError, TypeError) as error:
        message = str(error).splitlines()[0]
        # a check that names its full key already (``relevance.method=...``) is not prefixed
        raise ValueError(message if message.startswith(f"{key}.") else f"{key}.{message}") from None
