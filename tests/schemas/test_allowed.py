"""The values a numeric key may take: the rule in words, what it admits (bounds, open
bounds, special values, every item of a list; never NaN or a bool), and check_config
refusing a value outside its field's rule with one line naming the full key."""

from __future__ import annotations

import dataclasses
import math

import pytest
from omegaconf import OmegaConf

from robustft.schemas.allowed import Allowed, above, allowed, at_least, between, rule_of
from robustft.schemas.checks import check_config
from robustft.schemas.signature import schema_from_signature


@pytest.mark.parametrize(("rule", "words"), [
    (at_least(1), ">= 1"),
    (above(0), "> 0"),
    (between(0, 1), "in [0, 1]"),
    (between(0, 1, low_open=True), "in (0, 1]"),
    (at_least(1, also=(-1,)), ">= 1 or -1"),
    (at_least(0, null="all"), ">= 0 or null (all)"),
    (at_least(1e-3), ">= 0.001"),
    (Allowed(high=2**32 - 1), "<= 4294967295"),
])
def test_the_rule_in_words(rule, words):
    assert rule.describe() == words


@pytest.mark.parametrize(("rule", "admitted", "refused"), [
    (at_least(1), [1, 2, 10**9, 1.5], [0, -1, 0.999, math.nan, True, "3"]),
    (above(0), [1e-12, 3], [0, -0.0, -1e-12]),
    (between(0, 1), [0, 0.5, 1], [-1e-9, 1.0000001, 2]),
    (between(0, 1, low_open=True), [1e-9, 1], [0, 0.0]),
    (at_least(1, also=(-1,)), [-1, -1.0, 1, 7], [0, -2]),
    (at_least(1), [[1, 2], (3, 4), []], [[1, 0], [2, math.nan]]),
    # a key that also takes words (devices="auto"): only its numbers are checked
    (at_least(1, also=(-1,), numbers_only=True), ["auto", "0,1", [0, 1], -1, 2], [0, -2, True]),
])
def test_what_a_rule_admits(rule, admitted, refused):
    assert all(rule.admits(value) for value in admitted)
    assert not any(rule.admits(value) for value in refused)


def test_the_error_line():
    assert at_least(1).problem("data.batch_size", 0) == "data.batch_size must be >= 1, got 0"
    assert at_least(1, also=(-1,), note="-1: no limit").problem("trainer.max_epochs", 0) == (
        "trainer.max_epochs must be >= 1 or -1 (-1: no limit), got 0")
    assert above(0).problem("data.std", [0.5, 0.0]) == (
        "data.std must be > 0 (every item), got [0.5, 0.0]")
    assert at_least(1).problem("data.batch_size", None) is None  # null is the type's business


def _target(*, size: int = 3, ratio: float = 1.0, sizes: tuple[int, ...] = (1, 2)) -> None:
    """A target whose schema is read from its signature."""


def test_a_signature_s_schema_carries_its_rules():
    schema = schema_from_signature(_target, "TargetConfig",
                                   allowed={"size": at_least(1), "sizes": at_least(1)})
    rules = {f.name: rule_of(f.metadata) for f in dataclasses.fields(schema)}
    assert rules == {"_target_": None, "size": at_least(1), "ratio": None, "sizes": at_least(1)}
    with pytest.raises(TypeError, match=r"allowed= names \['siez'\], which _target does not take"):
        schema_from_signature(_target, "TargetConfig", allowed={"siez": at_least(1)})


@dataclasses.dataclass
class _Inner:
    ratio: float = dataclasses.field(default=1.0, metadata=allowed(at_least(1)))
    count: int | None = dataclasses.field(default=None, metadata=allowed(at_least(1, null="all")))


@dataclasses.dataclass
class _Outer:
    seed: int = dataclasses.field(default=0, metadata=allowed(between(0, 9)))
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    copied: float = 0.0


def test_check_config_names_the_full_key_and_counts_the_others():
    check_config(OmegaConf.structured(_Outer))  # the defaults pass
    cfg = OmegaConf.structured(_Outer)
    cfg.inner.ratio = 0.5
    with pytest.raises(ValueError, match=r"^inner\.ratio must be >= 1, got 0\.5$"):
        check_config(cfg)
    cfg.seed = 10
    cfg.inner.count = 0
    with pytest.raises(ValueError) as error:
        check_config(cfg)
    assert str(error.value) == "seed must be in [0, 9], got 10 (and 2 more)"


def test_an_interpolation_is_checked_as_what_it_resolves_to():
    cfg = OmegaConf.merge(OmegaConf.structured(_Outer), {"copied": 0.25})
    cfg.inner.ratio = "${copied}"
    with pytest.raises(ValueError, match=r"^inner\.ratio must be >= 1, got 0\.25$"):
        check_config(cfg)
