"""Heads a backbone can take: the zero-shot head (an image tower scored against frozen
class embeddings of a text tower, :mod:`robustft.backbones.heads.zero_shot`)."""

from robustft.backbones.heads.zero_shot import (
    ZeroShotBackbone,
    ZeroShotClassifier,
    ZeroShotHead,
    ZeroShotSpec,
    read_zero_shot_head,
    save_zero_shot_head,
)

__all__ = ["ZeroShotBackbone", "ZeroShotClassifier", "ZeroShotHead", "ZeroShotSpec",
           "read_zero_shot_head", "save_zero_shot_head"]
