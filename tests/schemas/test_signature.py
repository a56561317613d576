"""schema_from_signature: one typed field per keyword, OmegaConf-typable annotations kept,
the rest Any, defaults copied (mutable ones per instance)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import pytest
from omegaconf import MISSING, OmegaConf, ValidationError

from robustft.schemas.signature import omegaconf_type, schema_from_signature


class Colour(StrEnum):
    red = "red"
    blue = "blue"


def target(root: str, *, size: int = 3, scale: float | None = None, names: Sequence[str] = ("a",),
           mode: Colour = Colour.red, either: int | str = 1, table: dict[str, float] | None = None,
           hook=print, **extra: Any) -> None:
    """A function with one parameter of each kind robustft's targets have."""


def test_fields_types_and_defaults():
    schema = schema_from_signature(target, "TargetConfig")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    assert list(fields) == ["_target_", "root", "size", "scale", "names", "mode", "either",
                            "table", "hook"]
    assert fields["_target_"].default == f"{__name__}.target"
    assert fields["root"].default is MISSING
    assert fields["size"].type is int and fields["size"].default == 3
    assert fields["either"].type is Any and fields["hook"].type is Any
    assert fields["hook"].default is None  # an object default cannot live in a config
    node = OmegaConf.structured(schema)
    assert node.names == ["a"] and node.mode == Colour.red
    with pytest.raises(ValidationError):
        node.size = "big"
    with pytest.raises(ValidationError):
        node.mode = "green"
    node.scale = None
    node.either = "x"  # Any accepts both members of the union
    assert OmegaConf.structured(schema).names is not node.names  # a fresh list per instance


@pytest.mark.parametrize("annotation, expected", [
    (int, int), (str | None, str | None), (list[int], list[int]),
    (tuple[float, ...], list[float]), (tuple[int, str], Any), (int | str, Any),
    (dict[str, int], dict[str, int]), (object, Any),
])
def test_omegaconf_type(annotation, expected):
    result = omegaconf_type(annotation)
    if typing.get_args(expected):  # Optional[str] and str | None are the same annotation
        assert set(typing.get_args(result)) == set(typing.get_args(expected))
    else:
        assert result == expected


def test_inherited_keywords_are_added():
    class Base:
        def __init__(self, root: str, *, batch_size: int = 8) -> None: ...

    class Child(Base):
        def __init__(self, first: str, **kwargs: Any) -> None: ...

    schema = schema_from_signature(Child, "ChildConfig", inherit=Base, exclude=("root",))
    assert [f.name for f in dataclasses.fields(schema)] == ["_target_", "first", "batch_size"]
