"""Hugging Face ``SiglipForImageClassification`` against timm: a tiny random timm SigLIP
vision tower's weights are converted here (the key mapping below) into a transformers
model of the same shape. HF's classifier reads the mean of the tower's output tokens (all
of them patches), not the tower's attention-pooling head, so its timm twin is the SigLIP
ViT with ``global_pool='avg'`` and the final norm before the pooling (``fc_norm=False``):
the same features, logits and relevance maps (read-out ``avg``), both gradient modes and
both backends; and a ``save_pretrained`` folder builds through ``ModelSpec``."""

from __future__ import annotations

import pytest
import torch

from robustft.backbones import ModelSpec, backbone_of, create_model
from robustft.relevance import relevance_map

transformers = pytest.importorskip("transformers")


def tiny_timm_siglip(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("vit_base_patch16_siglip_224", img_size=32, patch_size=8, embed_dim=32,
                         depth=2, num_heads=2, num_classes=5, global_pool="avg", fc_norm=False)
    with torch.no_grad():  # make attention vary
        model.pos_embed.normal_(0, 0.5)
    return model.double().eval()


def timm_to_hf_siglip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm SigLIP ViT's state dict under ``SiglipForImageClassification``'s names."""
    tower = "vision_model."
    names = {"patch_embed.proj.weight": "embeddings.patch_embedding.weight",
             "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
             "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
    block_parts = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
                   "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "pos_embed":  # (1, N, D) -> an embedding table (N, D)
            converted[tower + "embeddings.position_embedding.weight"] = tensor[0]
        elif name in names:
            converted[tower + names[name]] = tensor
        elif name.startswith("head."):
            converted["classifier." + name.split(".")[1]] = tensor
        elif name.startswith("blocks."):
            _, index, *rest = name.split(".")
            part, kind = ".".join(rest[:-1]), rest[-1]
            layer = f"{tower}encoder.layers.{index}."
            if part == "attn.qkv":  # timm's fused [q; k; v] along the output dimension
                for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    converted[f"{layer}self_attn.{proj}.{kind}"] = chunk
            else:
                converted[f"{layer}{block_parts[part]}.{kind}"] = tensor
        else:
            raise KeyError(f"unmapped timm tensor {name}")
    return converted


def hf_twin(timm_model):
    config = transformers.SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           hidden_act="gelu", layer_norm_eps=1e-6),
        num_labels=5)
    model = transformers.SiglipForImageClassification(config)
    missing, unexpected = model.load_state_dict(timm_to_hf_siglip(timm_model.state_dict()),
                                                strict=False)
    # only the tower's attention-pooling head, which the classifier does not read, is left
    assert not unexpected and missing and all(k.startswith("vision_model.head.") for k in missing)
    return model.double().eval()


@pytest.fixture(scope="module")
def twins():
    timm_model = tiny_timm_siglip()
    return timm_model, hf_twin(timm_model)


def _images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)


def test_features_and_logits_equal_timms(twins):
    timm_model, hf = twins
    images = _images()
    with torch.no_grad():
        timm_features = timm_model.forward_features(images)
        hf_out = hf.vision_model(pixel_values=images)
        torch.testing.assert_close(hf_out.last_hidden_state, timm_features, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hf(pixel_values=images).logits, timm_model(images),
                                   rtol=1e-5, atol=1e-5)
    layout = backbone_of(hf).token_layout((32, 32))
    assert (layout.readout, layout.num_prefix_tokens, layout.grid_size) == ("avg", 0, (4, 4))
    assert layout == backbone_of(timm_model).token_layout((32, 32))


@pytest.mark.parametrize(("gradient_mode", "backend"),
                         [("detached", "eager"), ("detached", "fused"), ("second_order", "eager")])
def test_relevance_maps_equal_timms(twins, gradient_mode, backend):
    timm_model, hf = twins
    images, target = _images(), torch.tensor([3, 1])
    ours = relevance_map(hf, images, target, gradient_mode, backend=backend)
    truth = relevance_map(timm_model, images, target, gradient_mode, backend="eager")
    assert truth.relevance.abs().sum() > 0
    torch.testing.assert_close(ours.logits, truth.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.relevance, truth.relevance, rtol=1e-5, atol=1e-5)


def test_a_save_pretrained_folder_builds_through_the_spec(twins, tmp_path):
    timm_model, hf = twins
    hf.float().save_pretrained(tmp_path / "siglip")
    hf.double()
    model = ModelSpec(family="hf", hf_path=str(tmp_path / "siglip")).build().eval()
    assert type(model).__name__ == "SiglipForImageClassification"
    config = backbone_of(model).preprocessing()
    assert config["input_size"] == (3, 32, 32) and config["mean"] == (0.5, 0.5, 0.5)
    images = _images().float()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=images).logits,
                                   timm_model.float()(images), rtol=1e-4, atol=1e-4)
    timm_model.double()
