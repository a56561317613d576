"""The zero-shot head's former module path: it lives in
:mod:`robustft.backbones.heads.zero_shot` (this name keeps ``from
robustft.backbones.zero_shot import ...`` working)."""

from robustft.backbones.heads.zero_shot import *  # noqa: F403 - the same names
from robustft.backbones.heads.zero_shot import __all__ as _heads_all
from robustft.backbones.timm.load import timm_zero_shot_classifier

__all__ = [*_heads_all, "timm_zero_shot_classifier"]
