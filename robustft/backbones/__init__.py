"""Model families behind one seam (see :mod:`robustft.backbones.base`): the
:class:`Backbone` adapter the method uses, the timm family, and :class:`ModelSpec`, the one
description of a model that training, evaluation, masks and the demo build from."""

from robustft.backbones.base import (
    TOKEN_FEATURES,
    Backbone,
    BlockAttention,
    TokenLayout,
    backbone_of,
    frozen_copy,
    preprocessing_config,
    register_backbone,
)
from robustft.backbones.spec import ModelSpec, register_family
from robustft.backbones.timm import create_model

__all__ = ["TOKEN_FEATURES", "Backbone", "BlockAttention", "ModelSpec", "TokenLayout", "backbone_of",
           "create_model", "frozen_copy", "preprocessing_config", "register_backbone", "register_family"]
