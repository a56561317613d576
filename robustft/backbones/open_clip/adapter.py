"""The OpenCLIP family's :class:`~robustft.backbones.base.Backbone` adapters: the image
tower of an OpenCLIP ViT (:class:`OpenClipViT`; its class scores are its embeddings, which
a :class:`~robustft.backbones.heads.zero_shot.ZeroShotClassifier` turns into class logits),
a timm image tower (:class:`OpenClipTimmTower`: SigLIP, SigLIP 2, EVA-CLIP; its timm trunk
explained by the timm family's own adapter) and ResNet towers (:class:`OpenClipImageTower`:
evaluated, not explained).

Attention is captured by recomputing OpenCLIP's ``nn.MultiheadAttention`` explicitly from
its ``in_proj`` weights (:mod:`robustft.backbones.open_clip.attention`). Only plain
``ResidualAttentionBlock`` self-attention is explained.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import open_clip
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from robustft.backbones.base import Backbone, BlockAttention, TokenLayout
from robustft.backbones.open_clip.attention import (
    explicit_attention,
    leaf_if_frozen,
    replaced_attention,
    vision_blocks,
)
from robustft.backbones.registry import backbone_of
from robustft.backbones.timm.adapter import ImageClassifier

__all__ = ["ADAPTERS", "OpenClipImageTower", "OpenClipTimmTower", "OpenClipViT",
           "open_clip_preprocessing"]

# OpenCLIP's eval resize modes -> timm's crop_mode at crop_pct 1.0 (the same transforms;
# for `longest` timm pads with the mean colour where OpenCLIP pads with fill_color)
_CROP_MODES = {"shortest": "center", "squash": "squash", "longest": "border"}


def open_clip_preprocessing(visual: nn.Module) -> dict[str, Any]:
    """The tower's own eval preprocessing (``visual.preprocess_cfg``, as
    ``open_clip.create_model`` sets it) as a timm-style data config."""
    config = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = config.get("size", getattr(visual, "image_size", 224))
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    resize_mode = config.get("resize_mode", "shortest")
    if resize_mode not in _CROP_MODES:
        raise ValueError(f"{type(visual).__name__}.preprocess_cfg: unknown resize_mode "
                         f"{resize_mode!r}; expected one of {sorted(_CROP_MODES)}")
    mean = config.get("mean", getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = config.get("std", getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return {"input_size": (3, int(height), int(width)), "mean": tuple(mean), "std": tuple(std),
            "interpolation": config.get("interpolation", "bicubic"), "crop_pct": 1.0,
            "crop_mode": _CROP_MODES[resize_mode]}


class OpenClipViT(Backbone):
    """An OpenCLIP ``VisionTransformer`` image tower; its class scores are its (B, D)
    image embeddings (a :class:`ZeroShotClassifier` turns them into class logits)."""

    @property
    def patch_size(self) -> tuple[int, int]:
        height, width = self.model.patch_size
        return int(height), int(width)

    @property
    def num_classes(self) -> int | None:
        return None

    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        visual = self.model
        if getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok":
            pooling = ("an attention pooler" if visual.attn_pool is not None
                       else repr(visual.pool_type))
            raise ValueError(f"{type(visual).__name__} pools its tokens with {pooling}, not the "
                             "class token: the relevance read-out is the CLS row")
        expected = tuple(int(s) for s in visual.image_size)
        if tuple(image_size) != expected:
            raise ValueError(f"input size {tuple(image_size)} does not match the OpenCLIP tower's "
                             f"image_size {expected}; create it with "
                             "model.kwargs.force_image_size=...")
        return TokenLayout(num_prefix_tokens=1, grid_size=tuple(int(g) for g in visual.grid_size))

    def preprocessing(self) -> dict[str, Any]:
        return open_clip_preprocessing(self.model)

    def class_scores(self, images: Tensor) -> Tensor:
        features = self.model(images)
        return features[0] if isinstance(features, (tuple, list)) else features

    @contextmanager
    def capture_attention(self) -> Iterator[list[Tensor]]:
        captured: list[Tensor] = []

        def record(probabilities: Tensor) -> Tensor:
            probabilities = leaf_if_frozen(probabilities)
            captured.append(probabilities)
            return probabilities

        make = lambda block: explicit_attention(block, fused=False, record=record)  # noqa: E731
        with replaced_attention(vision_blocks(self.model), make):
            yield captured

    def fused_capture_refusal(self) -> str:
        try:
            blocks = vision_blocks(self.model)
        except TypeError as error:
            return str(error)
        if self.model.training and any(block.attn.dropout > 0 for block in blocks):
            return "attention dropout is active (nn.MultiheadAttention dropout > 0 in training)"
        return ""

    @contextmanager
    def capture_qkv(self) -> Iterator[list[BlockAttention]]:
        captured: list[BlockAttention] = []

        def record(query: Tensor, key: Tensor, value: Tensor, output: Tensor) -> Tensor:
            output = leaf_if_frozen(output)
            captured.append(BlockAttention(query=query, key=key, value=value, output=output,
                                           scale=query.shape[-1] ** -0.5))
            return output

        make = lambda block: explicit_attention(block, fused=True, record=record)  # noqa: E731
        with replaced_attention(vision_blocks(self.model), make):
            yield captured

    @torch.no_grad()
    def last_block_keys(self, images: Tensor) -> Tensor:
        blocks = vision_blocks(self.model)
        keys: list[Tensor] = []

        def keep_keys(query: Tensor, key: Tensor, value: Tensor, output: Tensor) -> Tensor:
            batch, heads, tokens, head_dim = key.shape
            keys.append(key.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
            return output

        with replaced_attention(blocks[-1:], lambda block: explicit_attention(
                block, fused=True, record=keep_keys)):
            self.model(images)
        return keys[0]

    def explain_token_count_mismatch(self, num_tokens: int, layout: TokenLayout) -> str:
        if self.model.training and not isinstance(getattr(self.model, "patch_dropout", None),
                                                  nn.Identity):
            return (" The tower drops patch tokens in training mode (OpenCLIP patch_dropout > 0):"
                    " create it with model.kwargs.force_patch_dropout=0.")
        return ""


class OpenClipTimmTower(Backbone):
    """An OpenCLIP ``TimmModel`` image tower (SigLIP, SigLIP 2: a timm ViT with an attention
    pool, ``timm_pool='map'``; EVA-CLIP: a timm ``Eva``): a timm trunk and OpenCLIP's head
    (a projection, or nothing). The trunk is explained by the timm family's adapter
    (``backbone_of(visual.trunk)``: its token layout, read-out, attention and pool capture,
    fused path and refusals), the class scores are the whole tower's embeddings: the
    projection after the trunk is part of the explained score, as a classifier's head is.
    A trunk that is no timm ViT (a ConvNeXt tower) is refused by that adapter."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.trunk = backbone_of(model.trunk)
        if len(model.head) and any(name == "pool" for name, _ in model.head.named_children()):
            # OpenCLIP's abs_attn / rot_attn pools replace the trunk's pooling (CNN towers)
            self._pool_refusal = (f"{type(model).__name__} pools its trunk's features with "
                                  f"OpenCLIP's {type(model.head.pool).__name__}, not the trunk's "
                                  "own pooling: its relevance read-out is not supported")
        else:
            self._pool_refusal = ""

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.trunk.patch_size

    @property
    def num_classes(self) -> int | None:
        return None

    def check_explainable(self) -> None:
        self.trunk.check_explainable()
        if self._pool_refusal:
            raise TypeError(self._pool_refusal)

    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        self.check_explainable()
        return self.trunk.token_layout(image_size)

    def preprocessing(self) -> dict[str, Any]:
        return open_clip_preprocessing(self.model)

    def class_scores(self, images: Tensor) -> Tensor:
        features = self.model(images)
        return features[0] if isinstance(features, (tuple, list)) else features

    def capture_attention(self):
        return self.trunk.capture_attention()

    def capture_pool(self):
        return self.trunk.capture_pool()

    def fused_capture_refusal(self) -> str:
        return self._pool_refusal or self.trunk.fused_capture_refusal()

    def capture_qkv(self):
        return self.trunk.capture_qkv()

    def last_block_keys(self, images: Tensor) -> Tensor:
        return self.trunk.last_block_keys(images)

    def token_features(self, images: Tensor, kind: str = "keys", block: int = -1) -> Tensor:
        return self.trunk.token_features(images, kind, block)

    def explain_token_count_mismatch(self, num_tokens: int, layout: TokenLayout) -> str:
        return self.trunk.explain_token_count_mismatch(num_tokens, layout)

    def describe(self) -> str:
        return f"{type(self.model).__name__}({self.trunk.describe()})"


class OpenClipImageTower(ImageClassifier):
    """An OpenCLIP ResNet image tower: evaluated with OpenCLIP's preprocessing, refused by
    every relevance step (no single token sequence)."""

    def class_scores(self, images: Tensor) -> Tensor:
        features = self.model(images)
        return features[0] if isinstance(features, (tuple, list)) else features

    def preprocessing(self) -> dict[str, Any]:
        return open_clip_preprocessing(self.model)


ADAPTERS: tuple[tuple[type[nn.Module], type[Backbone]], ...] = (
    (ModifiedResNet, OpenClipImageTower), (open_clip.timm_model.TimmModel, OpenClipTimmTower),
    (VisionTransformer, OpenClipViT))
