"""Model creation: local weight files through timm's loader, clear errors offline."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from robustft.models import create_model, token_layout

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


def test_weights_file_round_trip(tmp_path):
    source = create_model("vit_tiny_patch16_224", num_classes=3, **TINY)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_model("vit_tiny_patch16_224", num_classes=3, weights_file=path, **TINY)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="model.weights_file"):
        create_model("vit_tiny_patch16_224", weights_file=tmp_path / "missing.safetensors")


def test_offline_pretrained_points_to_weights_file():
    # conftest sets HF_HUB_OFFLINE=1, so the hub download fails at once
    with pytest.raises(OSError, match="model.weights_file"):
        create_model("vit_tiny_patch16_224", pretrained=True, **TINY)


def test_token_layout_of_registers_model():
    model = create_model("vit_tiny_patch16_224", reg_tokens=2, **{**TINY, "img_size": (32, 24)})
    layout = token_layout(model, (32, 24))
    assert (layout.num_prefix_tokens, layout.grid_size, layout.num_tokens) == (3, (4, 3), 15)
