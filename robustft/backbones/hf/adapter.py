"""The Hugging Face transformers family's :class:`~robustft.backbones.base.Backbone`
adapter: ``AutoModelForImageClassification`` ViTs with one CLS(+prefix)+patch token sequence
through every block.

Supported (``config.model_type``): ``vit`` (``ViTForImageClassification``), ``deit``
(``DeiTForImageClassification``, and ``DeiTForImageClassificationWithTeacher``: CLS +
distillation token; its class scores are HF's ``logits``, the mean of the CLS and the
distillation head, as timm's distilled DeiT in eval mode), ``dinov2`` and
``dinov2_with_registers`` (prefix = CLS + the register tokens; the head reads the CLS token
and the mean patch token), ``beit`` (``BeitForImageClassification``: the head reads the mean
of the patch tokens with ``use_mean_pooling``, the CLS token otherwise; each block adds its
relative position bias to the attention scores, so the fused backend refuses it and
``relevance.backend=auto`` runs eager), ``siglip`` (``SiglipForImageClassification``: its
classifier reads the mean of the vision tower's output tokens, all patches, not its
attention-pooling head, so the read-out is ``avg`` with no prefix token; its geometry is in
the config's ``vision_config``). Prefix tokens never enter a relevance map. Hierarchical
models (Swin, ConvNeXt, ...) have no such sequence and are refused when built.

Any input size whose sides are multiples of the patch size works, non-square ones too:
ViT and DeiT get ``interpolate_pos_encoding=True`` whenever the size differs from the
config's ``image_size`` (HF refuses other sizes otherwise); DINOv2 always interpolates.
Attention is captured by an attention function registered with transformers
(:mod:`robustft.backbones.hf.attention`); outside a capture the model runs the
implementation it was loaded with (SDPA by default). Building from a hub id or a local
``from_pretrained`` folder, and the preprocessing read from the checkpoint's image processor
config: :mod:`robustft.backbones.hf.load`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig
from transformers.models.beit.modeling_beit import BeitAttention, BeitForImageClassification
from transformers.models.deit.modeling_deit import (
    DeiTAttention,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
)
from transformers.models.dinov2.modeling_dinov2 import Dinov2Attention, Dinov2ForImageClassification
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
    Dinov2WithRegistersAttention,
    Dinov2WithRegistersForImageClassification,
)
from transformers.models.siglip.modeling_siglip import (
    SiglipAttention,
    SiglipForImageClassification,
)
from transformers.models.vit.modeling_vit import ViTAttention, ViTForImageClassification

from robustft.backbones.base import TOKEN_FEATURES, Backbone, BlockAttention, TokenLayout
from robustft.backbones.hf.attention import attention_dropout_active, recording
from robustft.backbones.hf.load import PREPROCESSING_ATTRIBUTE, default_data_config

__all__ = ["ADAPTERS", "HF_MODEL_TYPES", "HFModelType", "HuggingFaceViT", "model_type_of"]


@dataclass(frozen=True)
class HFModelType:
    """What differs between the supported model types: their attention module class, how
    many prefix tokens precede the patches, whether ``forward`` needs
    ``interpolate_pos_encoding=True`` for a size other than the config's, which tokens the
    head reads (:data:`~robustft.backbones.base.READOUTS`), why the fused capture cannot
    reproduce the attention ("" when it can), and where the vision settings (patch size,
    image size, layers) are: the config itself, or its ``vision_config`` (SigLIP)."""

    model_type: str
    attention: type[nn.Module]
    classifiers: tuple[type[nn.Module], ...]
    num_prefix_tokens: Callable[[PretrainedConfig], int]
    needs_interpolate_flag: bool
    readout: Callable[[PretrainedConfig], str] = lambda _config: "cls"
    fused_refusal: str = ""
    vision_config: Callable[[PretrainedConfig], PretrainedConfig] = lambda config: config


HF_MODEL_TYPES: dict[str, HFModelType] = {
    model_type.model_type: model_type for model_type in (
        HFModelType("vit", ViTAttention, (ViTForImageClassification,), lambda _c: 1, True),
        HFModelType("deit", DeiTAttention,
                    (DeiTForImageClassification, DeiTForImageClassificationWithTeacher),
                    lambda _c: 2, True),
        HFModelType("dinov2", Dinov2Attention, (Dinov2ForImageClassification,), lambda _c: 1, False),
        HFModelType("dinov2_with_registers", Dinov2WithRegistersAttention,
                    (Dinov2WithRegistersForImageClassification,),
                    lambda config: 1 + int(config.num_register_tokens), False),
        HFModelType("beit", BeitAttention, (BeitForImageClassification,), lambda _c: 1, True,
                    readout=lambda config: "avg" if config.use_mean_pooling else "cls",
                    fused_refusal="BEiT adds a relative position bias to the attention scores, "
                                  "which the fused recomputation of the attention does not"),
        HFModelType("siglip", SiglipAttention, (SiglipForImageClassification,), lambda _c: 0, True,
                    readout=lambda _config: "avg", vision_config=lambda config: config.vision_config),
    )
}


def model_type_of(model: nn.Module) -> HFModelType:
    """The :class:`HFModelType` of a supported HF classifier (by its config's model type)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in HF_MODEL_TYPES:
        raise TypeError(f"{type(model).__name__} (model_type {model_type!r}) is not a supported "
                        f"Hugging Face ViT; supported: {sorted(HF_MODEL_TYPES)}")
    return HF_MODEL_TYPES[model_type]


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class HuggingFaceViT(Backbone):
    """A supported Hugging Face ViT classifier as the method sees it (module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.model_type = model_type_of(model)

    @property
    def config(self) -> PretrainedConfig:
        """The vision settings (patch and image size, layers): the model's config, or its
        ``vision_config`` (SigLIP)."""
        return self.model_type.vision_config(self.model.config)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self.config.patch_size)

    @property
    def num_classes(self) -> int | None:
        return int(self.model.config.num_labels)

    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        (height, width), (ph, pw) = (int(s) for s in image_size), self.patch_size
        if height % ph or width % pw:
            # HF's patch convolution would drop the remainder, so the map would not cover
            # the image it is compared with
            raise ValueError(f"input size {(height, width)} is not a multiple of the patch size "
                             f"{(ph, pw)} of {type(self.model).__name__}")
        return TokenLayout(num_prefix_tokens=self.model_type.num_prefix_tokens(self.config),
                           grid_size=(height // ph, width // pw),
                           readout=self.model_type.readout(self.config))

    def preprocessing(self) -> dict[str, Any]:
        config = getattr(self.model, PREPROCESSING_ATTRIBUTE, None)
        return dict(config) if config else default_data_config(self.config)

    def _forward_kwargs(self, images: Tensor) -> dict[str, Any]:
        size = (images.shape[-2], images.shape[-1])
        if self.model_type.needs_interpolate_flag and size != _pair(self.config.image_size):
            return {"interpolate_pos_encoding": True}
        return {}

    def class_scores(self, images: Tensor) -> Tensor:
        """HF's ``logits`` (for a DeiT with teacher: the mean of its two heads)."""
        return self.model(pixel_values=images, **self._forward_kwargs(images)).logits

    def attention_modules(self) -> list[nn.Module]:
        """The blocks' self-attention modules, first block first."""
        modules = [module for module in self.model.modules()
                   if isinstance(module, self.model_type.attention)]
        if len(modules) != int(self.config.num_hidden_layers):
            raise TypeError(f"{type(self.model).__name__} has {len(modules)} "
                            f"{self.model_type.attention.__name__} modules, but its config says "
                            f"{self.config.num_hidden_layers} layers")
        return modules

    def capture_attention(self) -> AbstractContextManager[list[Tensor]]:
        return recording(self.attention_modules(), "eager")

    def fused_capture_refusal(self) -> str:
        if self.model_type.fused_refusal:
            return self.model_type.fused_refusal
        if attention_dropout_active(self.attention_modules()):
            # the fused kernel's dropout mask cannot be recomputed from q, k
            return ("attention dropout is active (attention_probs_dropout_prob > 0 in training "
                    "mode)")
        return ""

    def capture_qkv(self) -> AbstractContextManager[list[BlockAttention]]:
        return recording(self.attention_modules(), "fused")

    def last_block_keys(self, images: Tensor) -> Tensor:
        return self.token_features(images, "keys", -1)

    @torch.no_grad()
    def token_features(self, images: Tensor, kind: str = "keys", block: int = -1) -> Tensor:
        """The attention module's ``q_proj`` / ``k_proj`` / ``v_proj`` output, or the encoder
        layer's output tokens, from a forward of the base model (the head plays no part)."""
        if kind not in TOKEN_FEATURES:
            raise ValueError(f"unknown token feature {kind!r}; known: {list(TOKEN_FEATURES)}")
        modules = self.attention_modules()
        if not -len(modules) <= block < len(modules):
            raise ValueError(f"block {block} does not exist: {type(self.model).__name__} has "
                             f"{len(modules)} blocks")
        if kind == "output":
            hooked = self._layer_of(modules[block])
        else:
            hooked = getattr(modules[block], {"queries": "q_proj", "keys": "k_proj",
                                              "values": "v_proj"}[kind])
        captured: list[Tensor] = []
        handle = hooked.register_forward_hook(lambda _m, _i, out: captured.append(
            out[0] if isinstance(out, tuple) else out))
        try:
            self.model.base_model(pixel_values=images, **self._forward_kwargs(images))
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected one call of block {block}'s {kind} layer, got "
                               f"{len(captured)}")
        return captured[0]

    def _layer_of(self, attention: nn.Module) -> nn.Module:
        """The encoder layer (block) holding ``attention``: its output is the block's."""
        for module in self.model.modules():
            if any(child is attention for child in module.children()):
                return module
        raise RuntimeError(f"no layer of {type(self.model).__name__} holds its attention module")


ADAPTERS: tuple[tuple[type[nn.Module], type[Backbone]], ...] = tuple(
    (classifier, HuggingFaceViT) for model_type in HF_MODEL_TYPES.values()
    for classifier in model_type.classifiers)
