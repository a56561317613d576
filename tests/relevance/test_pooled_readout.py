"""The read-out of ViTs without a class token, against a brute force written here.

timm ViTs that pool their tokens by their average (``global_pool='avg'``) or with an
attention pool (``global_pool='map'``, SigLIP's head) are run by hand from their weights:
each block's attention and the pool's are recomputed explicitly (one loop over heads), the
gradient of the explained score is taken with respect to those tensors, the full matrix
``R = prod_b (I + Abar_b)`` is formed, and the row the classifier reads is taken as
docs/method.md §1 states it: the mean of ``R``'s rows over the pooled tokens, or the
pool's own gradient-weighted head-mean row ``abar_pool`` times ``R``. Everything is
float64; both gradient modes, both backends, and the maps' gradients in the weights.
"""

from __future__ import annotations

import pytest
import torch

from robustft.backbones import backbone_of, create_model
from robustft.relevance import relevance_map

# (name, timm kwargs): the pooling variants of timm's VisionTransformer
POOLED = {
    "avg_no_class_token": dict(class_token=False, global_pool="avg", fc_norm=True),
    "avg_with_class_token": dict(global_pool="avg"),
    "avg_registers_included": dict(class_token=False, reg_tokens=2, global_pool="avg",
                                   pool_include_prefix=True),
    "map": dict(class_token=False, global_pool="map"),
    "map_registers_included": dict(class_token=False, reg_tokens=1, global_pool="map",
                                   pool_include_prefix=True),
}


def pooled_vit(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("vit_tiny_patch16_224", img_size=(32, 48), patch_size=16, embed_dim=32,
                         depth=2, num_heads=2, num_classes=5, **POOLED[kind])
    with torch.no_grad():  # timm starts some of these near zero: make attention vary
        for name, parameter in model.named_parameters():
            if name.endswith(("cls_token", "reg_token", "pos_embed", "latent")):
                parameter.normal_(0, 0.5)
    return model.double().eval()


def _heads(module, tensor, parts, tokens):
    return tensor.reshape(1, tokens, parts, module.num_heads, -1).permute(2, 0, 3, 1, 4)


def _softmax_per_head(q, k, scale):
    return torch.stack([torch.softmax(q[0, h] @ k[0, h].T * scale, dim=-1)
                        for h in range(q.shape[1])])[None]


def explicit_forward(model, image):
    """One image through the ViT written out by hand: logits, each block's attention
    (1, heads, N, N), the attention pool's (1, heads, 1, P) or None, and the pooled tokens."""
    x = model.norm_pre(model._pos_embed(model.patch_embed(image)))
    attentions = []
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(x)
        tokens = h.shape[1]
        q, k, v = _heads(attn, attn.qkv(h), 3, tokens)
        probabilities = _softmax_per_head(attn.q_norm(q), attn.k_norm(k), attn.scale)
        attentions.append(probabilities)
        out = (probabilities @ v).transpose(1, 2).reshape(1, tokens, -1)
        x = x + block.ls1(attn.proj(attn.norm(out)))
        x = x + block.ls2(block.mlp(block.norm2(x)))
    x = model.norm(x)
    prefix = model.num_prefix_tokens
    first = 0 if model.pool_include_prefix else prefix
    pooled = list(range(first, x.shape[1]))
    pool_attention = None
    if model.global_pool == "avg":
        features = x[:, first:].mean(dim=1)
    elif model.global_pool == "map":
        pool = model.attn_pool
        tokens = x[:, first:]
        q = pool.q(pool.latent).reshape(1, 1, pool.num_heads, -1).transpose(1, 2)
        k, v = _heads(pool, pool.kv(tokens), 2, tokens.shape[1])
        pool_attention = _softmax_per_head(pool.q_norm(q), pool.k_norm(k), pool.scale)
        out = pool.proj((pool_attention @ v).transpose(1, 2).reshape(1, 1, -1))
        features = (out + pool.mlp(pool.norm(out)))[:, 0]
    else:
        features = x[:, 0]
    return model.head(model.fc_norm(features)), attentions, pool_attention, pooled


def brute_force_map(model, image, target, second_order):
    logits, attentions, pool_attention, pooled = explicit_forward(model, image)
    inputs = attentions + ([pool_attention] if pool_attention is not None else [])
    gradients = torch.autograd.grad(logits[0, target], inputs, retain_graph=True,
                                    create_graph=second_order)
    if not second_order:
        gradients = [g.detach() for g in gradients]

    def abar(a, g):
        return sum((g[0, h] * a[0, h]).clamp(min=0) for h in range(a.shape[1])) / a.shape[1]

    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens, dtype=image.dtype)
    for attention, gradient in zip(attentions, gradients):
        rollout = (torch.eye(tokens, dtype=image.dtype) + abar(attention, gradient)) @ rollout
    if model.global_pool == "avg":
        row = sum(rollout[i] for i in pooled) / len(pooled)
    elif model.global_pool == "map":
        pool_row = abar(pool_attention, gradients[-1])[0]
        row = sum(pool_row[j] * rollout[i] for j, i in enumerate(pooled))
    else:
        row = rollout[0]
    grid = [s // 16 for s in image.shape[-2:]]
    return row[model.num_prefix_tokens:].reshape(grid), logits


@pytest.mark.parametrize("kind", list(POOLED))
@pytest.mark.parametrize("gradient_mode", ["detached", "second_order"])
@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_map_and_its_weight_gradients_equal_the_brute_force(kind, gradient_mode, backend):
    model = pooled_vit(kind)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    target = torch.tensor([3, 1])
    weights = torch.rand(2, 2, 3, dtype=torch.float64)  # a fixed loss on the map
    out = relevance_map(model, images, target, gradient_mode, backend=backend)
    ours = torch.autograd.grad((out.relevance * weights).sum(), list(model.parameters()),
                               allow_unused=True)
    for b in range(2):
        expected, logits = brute_force_map(model, images[b:b + 1], int(target[b]),
                                           gradient_mode == "second_order")
        torch.testing.assert_close(out.relevance[b], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.logits[b], logits[0], rtol=1e-9, atol=1e-12)
    reference = torch.zeros(())
    for b in range(2):
        expected, _ = brute_force_map(model, images[b:b + 1], int(target[b]),
                                      gradient_mode == "second_order")
        reference = reference + (expected * weights[b]).sum()
    theirs = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    for (name, _), mine, truth in zip(model.named_parameters(), ours, theirs):
        mine = torch.zeros(()) if mine is None else mine
        truth = torch.zeros(()) if truth is None else truth
        torch.testing.assert_close(mine.expand_as(truth) if mine.ndim == 0 else mine,
                                   truth.expand_as(mine) if truth.ndim == 0 else truth,
                                   rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.parametrize("kind", ["avg_no_class_token", "map"])
def test_the_layout_names_the_pooling(kind):
    layout = backbone_of(pooled_vit(kind)).token_layout((32, 48))
    assert layout.readout == kind[:3]
    assert layout.num_prefix_tokens == 0 and layout.grid_size == (2, 3)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(class_token=False, global_pool="max"),
     r"^VisionTransformer has global_pool='max': the relevance read-out follows a class token "
     r"\('token'\), average pooling \('avg'\) or an attention pool \('map'\) only$"),
    (dict(class_token=False, global_pool="prr"),
     r"^VisionTransformer pools with AttentionPoolPrr \(global_pool='prr'\): its relevance "
     r"read-out is not supported yet$"),
])
def test_a_pooling_without_a_read_out_is_one_line(kwargs, message):
    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=32,
                         depth=1, num_heads=2, num_classes=3, **kwargs)
    with pytest.raises(ValueError, match=message):
        relevance_map(model, torch.randn(1, 3, 32, 32))
