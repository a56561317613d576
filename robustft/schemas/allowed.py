"""The values a numeric config key may take, declared on the schema field that holds it.

A schema field carries its rule in its metadata (``field(default=8,
metadata=allowed(at_least(1)))``; :func:`robustft.schemas.signature.schema_from_signature`
attaches rules to the fields it reads from a signature), and
:func:`robustft.schemas.checks.check_config`, which every entry point calls before it builds
anything, refuses a value outside the rule with one line naming the key:
``data.batch_size must be >= 1, got 0``. One place for every range: torch, torchvision and
numpy would otherwise refuse such values only once the model is built, in words that name no
key (``Invalid learning rate: -0.1``), or not at all (``accumulate_grad_batches=0`` divides
by zero after training starts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

__all__ = ["ALLOWED", "Allowed", "allowed", "at_least", "above", "between", "rule_of"]

ALLOWED = "robustft_allowed"  # the metadata key of a field's rule


@dataclass(frozen=True)
class Allowed:
    """Numbers from ``low`` (excluded when ``low_open``) to ``high``, or one of ``also``
    (a special value such as -1 = no limit); for a list, every item. ``null``: what null
    means, for a key that may be null (said in the error line; whether null is accepted is
    the field type's business, checked by OmegaConf). ``note`` ends the error line (what
    the value means, or what a refused value would do). ``numbers_only``: a key that also
    takes other kinds of value (Lightning's ``devices="auto"`` or a list of GPU indices, a
    time interval) is checked only when it is one number; the rest is the target's to
    check."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    also: tuple[Any, ...] = ()
    null: str | None = None
    note: str = ""
    numbers_only: bool = False

    def describe(self) -> str:
        """The rule in words: ``>= 1``, ``> 0``, ``in [0, 1]``, ``>= 1 or -1``."""
        if self.low is not None and self.high is not None:
            words = f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}]"
        elif self.low is not None:
            words = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.high is not None:
            words = f"<= {_number(self.high)}"
        else:
            words = "a number"
        words = " or ".join([words, *map(str, self.also)])
        return words if self.null is None else f"{words} or null ({self.null})"

    def admits(self, value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return self.numbers_only or all(self.admits(item) for item in value)
        if value in self.also and not isinstance(value, bool):
            return True
        if isinstance(value, bool) or not isinstance(value, Real):
            return self.numbers_only and not isinstance(value, bool)
        if math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def problem(self, key: str, value: Any) -> str | None:
        """The error line for ``key=value``, None when the rule admits it or it is null."""
        if value is None or self.admits(value):
            return None
        items = " (every item)" if isinstance(value, (list, tuple)) else ""
        note = f" ({self.note})" if self.note else ""
        return f"{key} must be {self.describe()}{items}{note}, got {value!r}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def at_least(low: float, *, also: tuple[Any, ...] = (), null: str | None = None,
             note: str = "", numbers_only: bool = False) -> Allowed:
    return Allowed(low=low, also=also, null=null, note=note, numbers_only=numbers_only)


def above(low: float, *, note: str = "", numbers_only: bool = False) -> Allowed:
    return Allowed(low=low, low_open=True, note=note, numbers_only=numbers_only)


def between(low: float, high: float, *, low_open: bool = False, note: str = "") -> Allowed:
    return Allowed(low=low, high=high, low_open=low_open, note=note)


def allowed(rule: Allowed) -> dict[str, Allowed]:
    """A field's metadata carrying ``rule`` (``dataclasses.field(metadata=allowed(...))``)."""
    return {ALLOWED: rule}


def rule_of(metadata: Mapping[str, Any]) -> Allowed | None:
    return metadata.get(ALLOWED)
