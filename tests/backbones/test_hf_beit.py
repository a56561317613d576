"""Hugging Face BEiT (``BeitForImageClassification``) against timm's ``Beit`` on the same
weights, converted here from a tiny random timm model: the class scores and the relevance
maps (both gradient modes) agree, for the mean-pooled head and for the class-token head.
timm's map of a Beit is itself checked against a brute force in
``tests/backbones/test_timm_eva_beit.py``; HF computes its softmax in float32, hence 1e-5."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from transformers import BeitConfig, BeitForImageClassification  # noqa: E402

from robustft.backbones import backbone_of, create_model  # noqa: E402
from robustft.relevance import relevance_map  # noqa: E402

WIDTH, DEPTH, HEADS, CLASSES = 32, 2, 2, 5


def tiny_timm_beit(global_pool: str):
    torch.manual_seed(0)
    model = create_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=WIDTH,
                         depth=DEPTH, num_heads=HEADS, num_classes=CLASSES,
                         global_pool=global_pool)
    with torch.no_grad():  # timm starts the biases and layer scales small: make them matter
        for name, parameter in model.named_parameters():
            if name.endswith(("relative_position_bias_table", "cls_token", "q_bias", "v_bias",
                              "head.weight")):
                parameter.normal_(0, 0.5)
            elif name.endswith(("gamma_1", "gamma_2")):
                parameter.uniform_(0.5, 1.0)
    return model.double().eval()


def timm_to_hf(model, global_pool: str) -> BeitForImageClassification:
    """The timm Beit's weights in a transformers BEiT of the same shape."""
    mean_pooling = global_pool == "avg"
    config = BeitConfig(image_size=32, patch_size=8, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                        num_attention_heads=HEADS, intermediate_size=4 * WIDTH,
                        num_labels=CLASSES, hidden_act="gelu", layer_norm_eps=1e-6,
                        use_relative_position_bias=True, use_absolute_position_embeddings=False,
                        use_mean_pooling=mean_pooling, layer_scale_init_value=0.1,
                        drop_path_rate=0.0, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    source = model.state_dict()
    state = {"beit.embeddings.cls_token": source["cls_token"],
             "beit.embeddings.patch_embeddings.projection.weight": source["patch_embed.proj.weight"],
             "beit.embeddings.patch_embeddings.projection.bias": source["patch_embed.proj.bias"],
             "classifier.weight": source["head.weight"], "classifier.bias": source["head.bias"]}
    final_norm = "beit.pooler.layernorm" if mean_pooling else "beit.layernorm"
    timm_norm = "fc_norm" if mean_pooling else "norm"
    for part in ("weight", "bias"):
        state[f"{final_norm}.{part}"] = source[f"{timm_norm}.{part}"]
    for i in range(DEPTH):
        block, layer = f"blocks.{i}.", f"beit.layers.{i}."
        q, k, v = source[block + "attn.qkv.weight"].chunk(3)
        state.update({
            layer + "attention.q_proj.weight": q, layer + "attention.k_proj.weight": k,
            layer + "attention.v_proj.weight": v,
            layer + "attention.q_proj.bias": source[block + "attn.q_bias"],
            layer + "attention.v_proj.bias": source[block + "attn.v_bias"],
            layer + "attention.o_proj.weight": source[block + "attn.proj.weight"],
            layer + "attention.o_proj.bias": source[block + "attn.proj.bias"],
            layer + "relative_position_bias.relative_position_bias_table":
                source[block + "attn.relative_position_bias_table"],
            layer + "lambda_1": source[block + "gamma_1"],
            layer + "lambda_2": source[block + "gamma_2"],
        })
        for theirs, ours in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
                             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for part in ("weight", "bias"):
                state[f"{layer}{theirs}.{part}"] = source[f"{block}{ours}.{part}"]
    hf = BeitForImageClassification(config)
    hf.load_state_dict(state, strict=True)
    return hf.double().eval()


@pytest.mark.parametrize("global_pool", ["avg", "token"])
@pytest.mark.parametrize("gradient_mode", ["detached", "second_order"])
def test_hf_beit_equals_timm_beit(global_pool, gradient_mode):
    timm_model = tiny_timm_beit(global_pool)
    hf_model = timm_to_hf(timm_model, global_pool)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([4, 1])
    theirs = relevance_map(timm_model, images, target, gradient_mode, backend="auto")
    ours = relevance_map(hf_model, images, target, gradient_mode, backend="auto")
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)
    assert ours.relevance.shape == (2, 4, 4)
    scale = float(theirs.relevance.detach().abs().amax())
    assert scale > 1e-3  # a map with something in it, so that 1e-5 says something
    torch.testing.assert_close(ours.relevance, theirs.relevance, rtol=1e-5, atol=1e-5 * scale)


def test_layout_and_fused_refusal():
    backbone = backbone_of(timm_to_hf(tiny_timm_beit("avg"), "avg"))
    layout = backbone.token_layout((32, 48))
    assert (layout.readout, layout.num_prefix_tokens, layout.grid_size) == ("avg", 1, (4, 6))
    assert backbone.fused_capture_refusal().startswith("BEiT adds a relative position bias")
    cls_layout = backbone_of(timm_to_hf(tiny_timm_beit("token"), "token")).token_layout((32, 32))
    assert cls_layout.readout == "cls"


def test_token_features_of_a_block():
    timm_model = tiny_timm_beit("avg")
    backbone = backbone_of(timm_to_hf(timm_model, "avg"))
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    keys = backbone.token_features(images, "keys", -1)
    output = backbone.token_features(images, "output", 0)
    assert keys.shape == output.shape == (1, 17, WIDTH)
    with torch.no_grad():
        tokens = torch.cat([timm_model.cls_token, timm_model.patch_embed(images)], dim=1)
        expected = timm_model.blocks[0](tokens)  # timm's first block on the same tokens
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
