"""Heads a backbone can take: the zero-shot head (an image tower scored against frozen
class embeddings of a text tower, :mod:`robustft.backbones.heads.zero_shot`) and the linear
probe head (a classifier fitted on a backbone's frozen features,
:mod:`robustft.backbones.heads.probe_head`)."""

from robustft.backbones.heads.probe_head import ProbeBackbone, ProbeClassifier, ProbeHead
from robustft.backbones.heads.zero_shot import (
    ZeroShotBackbone,
    ZeroShotClassifier,
    ZeroShotHead,
    ZeroShotSpec,
    read_zero_shot_head,
    save_zero_shot_head,
)

__all__ = ["ProbeBackbone", "ProbeClassifier", "ProbeHead", "ZeroShotBackbone",
           "ZeroShotClassifier", "ZeroShotHead", "ZeroShotSpec", "read_zero_shot_head",
           "save_zero_shot_head"]
