"""The relevance rule against an independent brute-force implementation.

The reference below re-implements the ViT forward from the timm block weights (no hooks,
attention computed explicitly), explains one sample at a time, takes one autograd call
per block (like the public code), and rolls out with the full N x N matrices.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_vit

from robustft.losses import background_loss, foreground_loss
from robustft.relevance import relevance_map, upsample_and_normalize


def explicit_forward(model, image):
    """timm ViT forward written out by hand; returns logits and each block's attention."""
    x = model.patch_embed(image)
    x = model._pos_embed(x)
    x = model.norm_pre(x)
    attentions = []
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(x)
        batch, tokens, channels = h.shape
        qkv = attn.qkv(h).reshape(batch, tokens, 3, attn.num_heads, channels // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(q), attn.k_norm(k)
        probabilities = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        attentions.append(probabilities)
        out = (probabilities @ v).transpose(1, 2).reshape(batch, tokens, channels)
        x = x + block.ls1(attn.proj(attn.norm(out)))
        x = x + block.ls2(block.mlp(block.norm2(x)))
    x = model.norm(x)
    return model.forward_head(x), attentions


def brute_force_relevance(model, image, target):
    """One sample (1, 3, H, W): per-block autograd calls, explicit head loop, full rollout."""
    logits, attentions = explicit_forward(model, image)
    if target is None:
        target = int(logits.argmax())
    score = logits[0, target]
    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens, dtype=image.dtype)
    for attention in attentions:
        (gradient,) = torch.autograd.grad(score, attention, retain_graph=True)
        heads = attention.shape[1]
        abar = torch.zeros(tokens, tokens, dtype=image.dtype)
        for h in range(heads):
            abar += torch.clamp(gradient[0, h] * attention[0, h], min=0) / heads
        rollout = rollout + abar @ rollout
    prefix = model.num_prefix_tokens
    ph, pw = model.patch_embed.patch_size
    grid = (image.shape[-2] // ph, image.shape[-1] // pw)
    return rollout[0, prefix:].reshape(grid).detach(), logits.detach()


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("variant", ["plain", "distilled", "registers"])
@pytest.mark.parametrize("img_size,patch_size", [((32, 32), 8), ((32, 48), 16)])
def test_matches_brute_force_per_sample(variant, img_size, patch_size, backend):
    model = tiny_vit(variant, img_size=img_size, patch_size=patch_size, dtype=torch.float64)
    images = torch.randn(3, 3, *img_size, dtype=torch.float64)
    target = torch.tensor([0, 3, 1])
    batched = relevance_map(model, images, target, backend=backend)
    grid = (img_size[0] // patch_size, img_size[1] // patch_size)
    assert batched.relevance.shape == (3, *grid)
    for b in range(3):
        expected, logits = brute_force_relevance(model, images[b:b + 1], int(target[b]))
        torch.testing.assert_close(batched.logits[b:b + 1].detach(), logits)
        torch.testing.assert_close(batched.relevance[b].detach(), expected, rtol=1e-9, atol=1e-12)
        assert expected.abs().sum() > 0  # an informative map, not all zeros


def test_default_target_is_argmax_and_batched_equals_single():
    model = tiny_vit("plain", dtype=torch.float64)
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    batched = relevance_map(model, images)
    assert torch.equal(batched.target, batched.logits.argmax(-1))
    for b in range(4):
        single = relevance_map(model, images[b:b + 1])
        torch.testing.assert_close(single.relevance[0], batched.relevance[b])
        expected, _ = brute_force_relevance(model, images[b:b + 1], None)
        torch.testing.assert_close(single.relevance[0].detach(), expected)


@pytest.mark.parametrize("variant", ["plain", "distilled", "registers"])
def test_prefix_tokens_never_in_map(variant):
    """The map reads exactly the token positions that hold patches. Found independently of
    robustft: mark every prefix token (CLS, distillation, registers) with a constant and
    zero the position embedding, then see where timm's sequence carries the patch
    embeddings."""
    from robustft.backbones.timm import token_layout

    model = tiny_vit(variant)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for name in ("cls_token", "dist_token", "reg_token"):
            if getattr(model, name, None) is not None:
                getattr(model, name).fill_(1e3)
        model.pos_embed.zero_()
        patches = model.patch_embed(images)
        sequence = model._pos_embed(patches)
    is_prefix = (sequence == 1e3).all(dim=-1)[0]
    patch_positions = (~is_prefix).nonzero().flatten().tolist()
    layout = token_layout(model, (32, 32))
    assert patch_positions == list(range(layout.num_prefix_tokens, layout.num_tokens))
    assert torch.equal(sequence[:, patch_positions], patches)  # row-major, in order
    assert int(is_prefix.sum()) == {"plain": 1, "distilled": 2, "registers": 4}[variant]
    assert relevance_map(model, images).relevance.shape == (2, *layout.grid_size)


def test_frozen_model_and_no_grad_context():
    model = tiny_vit("plain", dtype=torch.float64)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    reference = relevance_map(model, images).relevance.detach()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        frozen = relevance_map(model, images).relevance
    torch.testing.assert_close(frozen.detach(), reference)


def _seg_loss(model, images, mask, target, mode):
    out = relevance_map(model, images, target, gradient_mode=mode)
    relevance = upsample_and_normalize(out.relevance, mask.shape[-2:])
    return 2.0 * background_loss(relevance, mask) + 0.3 * foreground_loss(relevance, mask)


def test_second_order_gradient_matches_finite_differences():
    model = tiny_vit("plain", dtype=torch.float64, seed=1)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    mask = torch.zeros(2, 32, 32, dtype=torch.float64)
    mask[:, 8:24, 4:20] = 1.0
    target = torch.tensor([1, 2])
    checked = {
        "blocks.1.mlp.fc2.weight": model.blocks[1].mlp.fc2.weight,
        "head.weight": model.head.weight,
        "blocks.0.attn.qkv.weight": model.blocks[0].attn.qkv.weight,
    }
    model.zero_grad()
    _seg_loss(model, images, mask, target, "second_order").backward()
    generator = torch.Generator().manual_seed(0)
    step = 1e-6
    for name, parameter in checked.items():
        flat = parameter.data.view(-1)
        for index in torch.randint(0, flat.numel(), (4,), generator=generator).tolist():
            original = flat[index].item()
            with torch.no_grad():
                flat[index] = original + step
                plus = _seg_loss(model, images, mask, target, "second_order").item()
                flat[index] = original - step
                minus = _seg_loss(model, images, mask, target, "second_order").item()
                flat[index] = original
            numeric = (plus - minus) / (2 * step)
            analytic = parameter.grad.view(-1)[index].item()
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9), name


def test_detached_mode_gives_no_gradient_to_head_last_mlp_and_final_norm():
    model = tiny_vit("plain", dtype=torch.float64)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    mask = torch.zeros(2, 32, 32, dtype=torch.float64)
    mask[:, :16] = 1.0
    untouched = [model.head.weight, model.norm.weight, model.blocks[-1].mlp.fc1.weight,
                 model.blocks[-1].mlp.fc2.weight]
    _seg_loss(model, images, mask, None, "detached").backward()
    for parameter in untouched:
        assert parameter.grad is None or torch.count_nonzero(parameter.grad) == 0
    assert torch.count_nonzero(model.blocks[0].attn.qkv.weight.grad) > 0
    # The same loss in second-order mode does reach them: the difference is real.
    model.zero_grad(set_to_none=True)
    _seg_loss(model, images, mask, None, "second_order").backward()
    assert torch.count_nonzero(model.head.weight.grad) > 0
    assert torch.count_nonzero(model.blocks[-1].mlp.fc2.weight.grad) > 0


def test_bad_gradient_mode_and_input_size():
    model = tiny_vit("plain")
    with pytest.raises(ValueError, match="gradient_mode"):
        relevance_map(model, torch.randn(1, 3, 32, 32), gradient_mode="full")
    with pytest.raises(ValueError, match="img_size"):
        relevance_map(model, torch.randn(1, 3, 48, 48))


def test_patch_dropout_in_training_mode_is_a_clear_error():
    from robustft.backbones import create_model

    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32,
                         depth=1, num_heads=2, num_classes=3, patch_drop_rate=0.5)
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="patch_drop_rate=0"):
        relevance_map(model.train(), images)
    assert relevance_map(model.eval(), images).relevance.shape == (2, 4, 4)  # inactive in eval


def test_half_precision_constant_map_and_autocast_give_no_nan():
    constant = torch.full((1, 4, 4), 0.5, dtype=torch.float16)
    assert torch.equal(upsample_and_normalize(constant, (8, 8)), torch.zeros(1, 8, 8))
    model = tiny_vit("plain")
    images = torch.randn(2, 3, 32, 32)
    reference = relevance_map(model, images).relevance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = relevance_map(model, images)
    assert out.relevance.dtype == torch.float32 and torch.isfinite(out.relevance).all()
    # bf16 attention and gradients, float32 rollout: close to the float32 map
    torch.testing.assert_close(out.relevance, reference, rtol=0.1, atol=0.02)


def test_inference_mode_is_a_clear_error():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=false"):
        relevance_map(tiny_vit("plain"), torch.randn(1, 3, 32, 32))
