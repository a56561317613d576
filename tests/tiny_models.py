"""Small timm ViTs shared by the tests (randomly initialised, CPU, seconds to build)."""

from __future__ import annotations

import torch
from torch import nn

from robustft.backbones import create_model


def tiny_vit(variant: str = "plain", *, img_size=(32, 32), patch_size: int = 8,
             num_classes: int = 5, depth: int = 2, seed: int = 0, num_heads: int = 2,
             dtype: torch.dtype = torch.float32) -> nn.Module:
    """A tiny ViT: ``plain`` (CLS only), ``distilled`` (DeiT CLS + distillation token) or
    ``registers`` (CLS + 3 register tokens)."""
    torch.manual_seed(seed)
    common = dict(img_size=img_size, patch_size=patch_size, embed_dim=32, depth=depth,
                  num_heads=num_heads, num_classes=num_classes)
    if variant == "plain":
        model = create_model("vit_tiny_patch16_224", **common)
    elif variant == "distilled":
        model = create_model("deit_tiny_distilled_patch16_224", **common)
    elif variant == "registers":
        model = create_model("vit_tiny_patch16_224", reg_tokens=3, **common)
    else:
        raise ValueError(variant)
    # timm initialises some parameters (reg/cls tokens) near zero; make every block's
    # attention non-trivial so the tests compare informative maps.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cls_token", "reg_token", "dist_token", "pos_embed")):
                parameter.normal_(0, 0.5)
    return model.to(dtype).eval()
