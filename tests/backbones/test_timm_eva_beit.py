"""timm ``Eva`` (EVA-02, DINOv3, rope ViTs: rotary position embeddings), ``Beit`` and
``VisionTransformerRelPos`` (relative position biases) against a brute force written here.

Rotary embeddings and relative-position biases change how a block's attention is computed,
not the rule: the map must be the gradient-weighted rollout of the probabilities each block
really used. The reference runs each model by hand from its weights: q, k, v from the
block's projection, the rotation of the patch tokens' q and k (Eva) or the bias table's
bias (Beit) added to the scores, the softmax per head, then the full matrix
``R = prod_b (I + Abar_b)`` in float64 and the row the head reads (the class token's, or
the mean of the patch tokens' for average pooling).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat

from robustft.backbones import backbone_of, create_model
from robustft.relevance import get_method, relevance_map

MODELS = {
    "eva02_rope_avg": ("eva02_tiny_patch14_224", {}),
    "eva02_rope_token": ("eva02_tiny_patch14_224", {"global_pool": "token"}),
    "dinov3_rope_registers": ("vit_small_patch16_dinov3", {}),
    "beit_relative_bias": ("beit_base_patch16_224", {}),
    "beitv2_relative_bias_token": ("beitv2_base_patch16_224", {"global_pool": "token"}),
    "relpos_mlp_avg": ("vit_relpos_small_patch16_224", {}),
    "relpos_bias_class_token": ("vit_relpos_base_patch16_cls_224", {}),
}


def tiny(kind: str, seed: int = 0):
    name, kwargs = MODELS[kind]
    torch.manual_seed(seed)
    model = create_model(name, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                         num_classes=4, **kwargs)
    with torch.no_grad():  # make attention and its biases vary
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith(("cls_token", "reg_token", "pos_embed",
                                        "relative_position_bias_table")):
                parameter.normal_(0, 0.5)
    return model.double().eval()


def hand_attention(attn, h, rope, npt):
    """One block's attention probabilities (1, heads, N, N) and output, by hand."""
    tokens = h.shape[1]
    if getattr(attn, "q_bias", None) is None:
        qkv = attn.qkv(h)
    else:
        qkv = F.linear(h, attn.qkv.weight, torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)))
    q, k, v = qkv.reshape(1, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        half = getattr(attn, "rotate_half", False)
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], 2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], 2)
    bias = 0.0
    if getattr(attn, "relative_position_bias_table", None) is not None:  # Beit
        bias = attn._get_rel_pos_bias()[0]  # (heads, N, N)
    elif getattr(attn, "rel_pos", None) is not None:  # VisionTransformerRelPos
        bias = attn.rel_pos.get_bias()[0]
    probabilities = torch.stack([
        torch.softmax(q[0, head] @ k[0, head].T * attn.scale
                      + (bias[head] if torch.is_tensor(bias) else 0.0), dim=-1)
        for head in range(attn.num_heads)])[None]
    out = (probabilities @ v).transpose(1, 2).reshape(1, tokens, -1)
    if hasattr(attn, "norm"):
        out = attn.norm(out)
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(h).sigmoid()
    return probabilities, attn.proj(out)


def _layer_scale(block, which, out):
    gamma = getattr(block, f"gamma_{which}", None)  # Eva, Beit
    if gamma is not None:
        return gamma * out
    scale = getattr(block, f"ls{which}", None)  # RelPos (an Identity without layer scale)
    return out if scale is None else scale(out)


def explicit_forward(model, image):
    x = model.patch_embed(image)
    if hasattr(model, "rope"):  # Eva
        x, rope = model._pos_embed(x)
        x = model.norm_pre(x)
    else:  # Beit, RelPos: a class token if any, absolute embedding if any, biases per block
        if model.cls_token is not None:
            x = torch.cat((model.cls_token.expand(1, -1, -1), x), dim=1)
        if getattr(model, "pos_embed", None) is not None:
            x = x + model.pos_embed
        rope = None
    attentions = []
    for block in model.blocks:
        probabilities, out = hand_attention(block.attn, block.norm1(x), rope,
                                            model.num_prefix_tokens)
        attentions.append(probabilities)
        x = x + _layer_scale(block, 1, out)
        x = x + _layer_scale(block, 2, block.mlp(block.norm2(x)))
    return model.forward_head(model.norm(x)), attentions


def brute_force_map(model, image, target, second_order):
    logits, attentions = explicit_forward(model, image)
    gradients = torch.autograd.grad(logits[0, target], attentions, retain_graph=True,
                                    create_graph=second_order)
    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, dtype=image.dtype)
    rollout = identity
    for a, g in zip(attentions, gradients):
        g = g if second_order else g.detach()
        abar = sum((g[0, h] * a[0, h]).clamp(min=0) for h in range(a.shape[1])) / a.shape[1]
        rollout = (identity + abar) @ rollout
    prefix = model.num_prefix_tokens
    if model.global_pool == "avg":
        row = sum(rollout[i] for i in range(prefix, tokens)) / (tokens - prefix)
    else:
        row = rollout[0]
    return row[prefix:].reshape(4, 4), logits


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("gradient_mode", ["detached", "second_order"])
def test_map_and_its_weight_gradients_equal_the_brute_force(kind, gradient_mode):
    model = tiny(kind)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([2, 0])
    weights = torch.rand(2, 4, 4, dtype=torch.float64)
    out = relevance_map(model, images, target, gradient_mode, backend="auto")
    reference = torch.zeros((), dtype=torch.float64)
    for b in range(2):
        expected, logits = brute_force_map(model, images[b:b + 1], int(target[b]),
                                           gradient_mode == "second_order")
        torch.testing.assert_close(out.relevance[b], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.logits[b], logits[0], rtol=1e-9, atol=1e-12)
        reference = reference + (expected * weights[b]).sum()
    parameters = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad((out.relevance * weights).sum(), parameters, allow_unused=True)
    theirs = torch.autograd.grad(reference, parameters, allow_unused=True)
    for (name, _), mine, truth in zip(model.named_parameters(), ours, theirs):
        if mine is None or truth is None:
            assert mine is None or not mine.any(), name
            assert truth is None or not truth.any(), name
            continue
        torch.testing.assert_close(mine, truth, rtol=1e-7, atol=1e-10, msg=name)


def test_gradient_free_methods_read_the_same_rows():
    # raw attention of the last block, by hand, for an average-pooled rope model
    model = tiny("eva02_rope_avg")
    image = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    _, attentions = explicit_forward(model, image)
    last = attentions[-1][0].mean(dim=0)
    expected = last[1:, 1:].mean(dim=0).reshape(4, 4)
    out = get_method("raw_attention").compute(model, image, None, "detached", backend="eager")
    torch.testing.assert_close(out.relevance[0], expected.detach())


def test_rotary_and_bias_models_run_eager_under_auto():
    for kind in ("eva02_rope_avg", "beit_relative_bias"):
        refusal = backbone_of(tiny(kind)).fused_capture_refusal()
        assert "not timm's Attention: the fused relevance backend cannot capture it" in refusal
