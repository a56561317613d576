"""Model families behind one seam: the :class:`Backbone` adapter the method uses
(:mod:`robustft.backbones.base`), the registry of model families and of adapters by model
type (:mod:`robustft.backbones.registry`), :class:`ModelSpec`, the one description of a
model that training, evaluation, masks and the demo build from (:mod:`robustft.backbones.spec`),
the heads a backbone can take (:mod:`robustft.backbones.heads`), and one subpackage per
family: ``timm``, ``hf`` (Hugging Face transformers), ``open_clip``. Importing this
package registers the three; ``transformers`` and ``open_clip`` are imported only when a
model of theirs is built or exists."""

# the zero-shot head's adapter and the built-in families register themselves on import
from robustft.backbones import heads, hf, open_clip, timm  # noqa: F401
from robustft.backbones.base import TOKEN_FEATURES, Backbone, BlockAttention, TokenLayout, frozen_copy
from robustft.backbones.registry import (
    DEFAULT_FAMILY,
    FAMILIES,
    Family,
    backbone_of,
    get_family,
    preprocessing_config,
    register_backbone,
    register_family,
)
from robustft.backbones.spec import ModelSpec, architecture_fields, names_a_model
from robustft.backbones.timm import create_model

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "TOKEN_FEATURES", "Backbone", "BlockAttention", "Family",
           "ModelSpec", "TokenLayout", "architecture_fields", "backbone_of", "create_model",
           "frozen_copy", "get_family", "names_a_model", "preprocessing_config",
           "register_backbone", "register_family"]
