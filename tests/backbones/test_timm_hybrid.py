"""A hybrid ViT (a ResNet stem before the patch embedding, timm ``HybridEmbed``): one patch
token covers the stem's stride times the patch size, and the map has one cell per token."""

from __future__ import annotations

import torch

from robustft.backbones import backbone_of, create_model
from robustft.relevance import relevance_map


def test_a_hybrid_token_covers_the_stem_stride_times_the_patch():
    torch.manual_seed(0)
    model = create_model("vit_small_r26_s32_224", img_size=96, depth=1, num_classes=3).eval()
    backbone = backbone_of(model)
    assert backbone.patch_size == (32, 32)
    layout = backbone.token_layout((96, 96))
    assert layout.grid_size == (3, 3) and layout.num_tokens == 1 + 9
    out = relevance_map(model, torch.randn(2, 3, 96, 96))
    assert out.relevance.shape == (2, 3, 3)
