"""The timm family: any timm ``VisionTransformer`` (plain, distilled, register-token,
CLIP-tagged; class token, average or attention pooling), ``Eva`` (EVA-02, DINOv3, PE, rope
ViTs), ``Beit``, ``VisionTransformerRelPos`` and ``Cait`` (class attention:
:mod:`robustft.backbones.timm.cait`), built by name from the hub or a local weights file
(:mod:`robustft.backbones.timm.load`), explained through hooks on its attention modules
(:mod:`robustft.backbones.timm.adapter`, :mod:`robustft.backbones.timm.attention`); and
the fallback adapter of any other ``nn.Module`` (:class:`ImageClassifier`: evaluated with
timm's preprocessing, never explained)."""

from timm.models.cait import Cait

from robustft.backbones.registry import Family, register_family
from robustft.backbones.timm.adapter import (
    ADAPTERS,
    ImageClassifier,
    TimmViT,
    timm_data_config,
    token_layout,
)
from robustft.backbones.timm.attention import attention_blocks
from robustft.backbones.timm.cait import CaitViT
from robustft.backbones.timm.load import build_timm, check_timm_spec, create_model

__all__ = ["FAMILY", "CaitViT", "ImageClassifier", "TimmViT", "attention_blocks", "create_model",
           "timm_data_config", "token_layout"]

# timm is robustft's own dependency: its adapters load at the first backbone_of (library
# None), and the version that enters every fingerprint is robustft's (timm builds every
# family's evaluation transforms), so the family adds nothing to a model's identity.
FAMILY = register_family(Family(name="timm", build=build_timm,
                                adapters=lambda: (*ADAPTERS, (Cait, CaitViT)),
                                fields=("zero_shot",), check=check_timm_spec))
