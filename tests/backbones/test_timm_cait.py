"""timm's CaiT (class attention) against a brute force written here, and end to end.

The model is run by hand from its weights: the self-attention blocks over the patch tokens
with their talking-heads attention recomputed per head (the head mixes before and after
the softmax written out as sums), then the class-attention blocks where the class token's
one query attends to [class, patches]. The gradient of the explained score is taken with
respect to those tensors, and the rule of docs/method.md §1.2 is formed with full matrices:
the class row of the class-attention rollout ``prod_b (I + Abar_b)`` over [class, patches]
(only row 0 of each ``Abar_b`` is non-zero), whose patch part is carried through the
self-attention blocks' rollout ``prod_l (I + Abar_l)`` over the patches. Float64, both
gradient modes, the maps' gradients in the weights too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module

from robustft.backbones import backbone_of, create_model
from robustft.cli.explain import run_explain
from robustft.relevance import relevance_map
from robustft.training.run import train

TINY = dict(patch_size=16, embed_dim=32, depth=2, depth_token_only=2, num_heads=2)


def tiny_cait(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = create_model("cait_xxs24_224", img_size=(32, 48), num_classes=5, **TINY, **kwargs)
    with torch.no_grad():  # timm starts the layer scales at 1e-5 and the tokens at 0
        for name, parameter in model.named_parameters():
            if name.endswith(("cls_token", "pos_embed")):
                parameter.normal_(0, 0.5)
            elif name.endswith(("gamma_1", "gamma_2")):
                parameter.uniform_(0.5, 1.0)
    return model.double().eval()


def _talking_heads(attn, h):
    """A self-attention block's attention (1, heads, P, P), per head."""
    tokens = h.shape[1]
    q, k, v = attn.qkv(h).reshape(1, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    heads = range(attn.num_heads)
    logits = [q[0, i] @ k[0, i].T * attn.scale for i in heads]
    mixed = [sum(attn.proj_l.weight[i, j] * logits[j] for j in heads) + attn.proj_l.bias[i]
             for i in heads]
    soft = [torch.softmax(m, dim=-1) for m in mixed]
    used = [sum(attn.proj_w.weight[i, j] * soft[j] for j in heads) + attn.proj_w.bias[i]
            for i in heads]
    return torch.stack(used)[None], v


def explicit_forward(model, image):
    """Logits, the self-attention blocks' (1, heads, P, P) and the class-attention blocks'
    (1, heads, 1, 1 + P) attention of one image."""
    x = model.patch_embed(image) + model.pos_embed
    patch_attentions, class_attentions = [], []
    for block in model.blocks:
        attention, v = _talking_heads(block.attn, block.norm1(x))
        patch_attentions.append(attention)
        out = (attention @ v).transpose(1, 2).reshape(1, x.shape[1], -1)
        x = x + block.gamma_1 * block.attn.proj(out)
        x = x + block.gamma_2 * block.mlp(block.norm2(x))
    cls = model.cls_token
    for block in model.blocks_token_only:
        attn = block.attn
        h = block.norm1(torch.cat([cls, x], dim=1))
        heads = attn.num_heads
        q = attn.q(h[:, :1]).reshape(heads, -1)
        k = attn.k(h)[0].reshape(-1, heads, q.shape[-1])
        v = attn.v(h)[0].reshape(-1, heads, q.shape[-1])
        attention = torch.stack([torch.softmax(q[i] @ k[:, i].T * attn.scale, dim=-1)
                                 for i in range(heads)])[None, :, None]
        class_attentions.append(attention)
        out = torch.cat([attention[0, i, 0] @ v[:, i] for i in range(heads)])[None, None]
        cls = cls + block.gamma_1 * attn.proj(out)
        cls = cls + block.gamma_2 * block.mlp(block.norm2(cls))
    features = model.norm(torch.cat([cls, x], dim=1))[:, 0]
    return model.head(features), patch_attentions, class_attentions


def brute_force_map(model, image, target, second_order):
    logits, patch_attentions, class_attentions = explicit_forward(model, image)
    gradients = torch.autograd.grad(logits[0, target], patch_attentions + class_attentions,
                                    retain_graph=True, create_graph=second_order)
    if not second_order:
        gradients = [g.detach() for g in gradients]

    def abar(a, g):
        return sum((g[0, h] * a[0, h]).clamp(min=0) for h in range(a.shape[1])) / a.shape[1]

    patches = patch_attentions[0].shape[-1]
    patch_rollout = torch.eye(patches, dtype=image.dtype)
    for a, g in zip(patch_attentions, gradients):
        patch_rollout = (torch.eye(patches, dtype=image.dtype) + abar(a, g)) @ patch_rollout
    class_rollout = torch.eye(1 + patches, dtype=image.dtype)
    for a, g in zip(class_attentions, gradients[len(patch_attentions):]):
        step = torch.eye(1 + patches, dtype=image.dtype)
        step[0] = step[0] + abar(a, g)[0]
        class_rollout = step @ class_rollout
    row = class_rollout[0, 1:] @ patch_rollout
    return row.reshape(image.shape[-2] // 16, image.shape[-1] // 16), logits


@pytest.mark.parametrize("gradient_mode", ["detached", "second_order"])
@pytest.mark.parametrize("frozen", [False, True])
def test_map_and_its_weight_gradients_equal_the_brute_force(gradient_mode, frozen):
    model = tiny_cait()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    target = torch.tensor([3, 1])
    weights = torch.rand(2, 2, 3, dtype=torch.float64)  # a fixed loss on the map
    second_order = gradient_mode == "second_order"
    if frozen:  # the captured attention is made a leaf: the map is the same
        model.requires_grad_(False)
        out = relevance_map(model, images, target, gradient_mode, backend="auto")
        model.requires_grad_(True)
    else:
        out = relevance_map(model, images, target, gradient_mode, backend="auto")
    for b in range(2):
        expected, logits = brute_force_map(model, images[b:b + 1], int(target[b]), second_order)
        torch.testing.assert_close(out.relevance[b], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.logits[b], logits[0], rtol=1e-9, atol=1e-12)
    if frozen:
        return
    ours = torch.autograd.grad((out.relevance * weights).sum(), list(model.parameters()),
                               allow_unused=True)
    reference = sum((brute_force_map(model, images[b:b + 1], int(target[b]), second_order)[0]
                     * weights[b]).sum() for b in range(2))
    theirs = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    for (name, _), mine, truth in zip(model.named_parameters(), ours, theirs):
        if truth is None:
            assert mine is None or not mine.any(), name
            continue
        torch.testing.assert_close(mine, truth, rtol=1e-7, atol=1e-10, msg=name)


def test_the_map_is_not_the_patch_blocks_alone():
    """The class-attention blocks matter: the map changes when their attention changes."""
    model = tiny_cait()
    images = torch.randn(1, 3, 32, 48, dtype=torch.float64)
    before = relevance_map(model, images, torch.tensor([2])).relevance
    with torch.no_grad():
        model.blocks_token_only[-1].attn.k.weight.mul_(3.0)
    after = relevance_map(model, images, torch.tensor([2])).relevance
    assert not torch.allclose(before, after)


def test_layout_fused_refusal_and_token_features():
    backbone = backbone_of(tiny_cait())
    layout = backbone.token_layout((32, 48))
    assert (layout.readout, layout.num_prefix_tokens, layout.grid_size) == ("cls", 1, (2, 3))
    assert "talking-heads" in backbone.fused_capture_refusal()
    with pytest.raises(TypeError, match="no token features for TokenCut$"):
        backbone.token_features(torch.randn(1, 3, 32, 48, dtype=torch.float64))


def test_capture_restores_the_model():
    model = tiny_cait()
    flags = [block.attn.fused_attn for block in model.blocks_token_only]
    images = torch.randn(1, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        logits = model(images)
    relevance_map(model, images)
    assert [block.attn.fused_attn for block in model.blocks_token_only] == flags
    assert all(not block.attn.attn_drop._forward_hooks for block in model.blocks)
    assert all(not block.attn.attn_drop._forward_hooks for block in model.blocks_token_only)
    with torch.no_grad():
        torch.testing.assert_close(model(images), logits)


TINY_CLI = ["model.name=cait_xxs24_224", "model.pretrained=false", "model.weights_file=null",
            "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=2",
            "++model.kwargs.depth_token_only=1", "++model.kwargs.embed_dim=32",
            "++model.kwargs.num_heads=2", "++model.kwargs.init_values=0.5"]


def _compose(config: str, overrides: list[str]):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose(config, overrides=overrides)


def test_fast_dev_run_trains_with_the_relevance_loss(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    cfg = _compose("train", [f"data.root={root}", "data.num_workers=0", "debug=fast_dev_run",
                             f"paths.output_dir={tmp_path / 'run'}", "model.num_classes=4",
                             "trainer=cpu", *TINY_CLI])
    result = train(cfg)
    assert result.metrics["train/loss"] > 0
    assert result.metrics["train/seg"] > 0  # the relevance terms ran on the class attention


def test_explain_writes_the_maps(tmp_path):
    pairs = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=1, size=(32, 32))
    result = run_explain(_compose("explain", [
        f"image={pairs}", f"output_dir={tmp_path / 'out'}", "device=cpu", "progress=false",
        "model.num_classes=2", "methods=[grad_rollout,rollout]", *TINY_CLI]))
    assert len(result.maps) == 2 * 2
    for explained in result.maps:
        maps = np.load(tmp_path / "out" / explained.npy)
        assert maps.shape[-2:] == (4, 4) and np.isfinite(maps).all() and maps.max() > 0
