"""Every registered relevance method against an independent implementation written here.

The references re-run the ViT forward by hand from each timm block's weights (attention
computed explicitly from ``qkv``, no hooks, no robustft code), explain ONE sample at a time
and loop over blocks and heads explicitly; the batched methods must agree per sample.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import tiny_vit

from robustft.relevance import (
    RELEVANCE_METHODS,
    RelevanceConfig,
    check_trainable_method,
    get_method,
    rollout_cls_row_of_attention,
    upsample_and_normalize,
)
from robustft.schemas.checks import typed_group

VARIANTS = [("plain", (32, 32), 8), ("distilled", (32, 32), 8), ("registers", (32, 48), 16)]
NEW_METHODS = ["rollout", "raw_attention", "attn_gradcam", "input_x_gradient"]


def explicit_forward(model, image):
    """One image (1, 3, H, W) through the timm ViT written out by hand: the logits and each
    block's post-softmax attention (1, heads, N, N), first block first."""
    x = model.norm_pre(model._pos_embed(model.patch_embed(image)))
    attentions = []
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(x)
        _, tokens, channels = h.shape
        head_dim = channels // attn.num_heads
        qkv = attn.qkv(h).reshape(1, tokens, 3, attn.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
        probabilities = torch.stack([
            torch.softmax(q[0, head] @ k[0, head].T * attn.scale, dim=-1)
            for head in range(attn.num_heads)])[None]
        attentions.append(probabilities)
        out = (probabilities @ v).transpose(1, 2).reshape(1, tokens, channels)
        x = x + block.ls1(attn.proj(attn.norm(out)))
        x = x + block.ls2(block.mlp(block.norm2(x)))
    return model.forward_head(model.norm(x)), attentions


def _grid(model, image):
    ph, pw = model.patch_embed.patch_size
    return image.shape[-2] // ph, image.shape[-1] // pw


def reference_rollout(model, image, target):
    _, attentions = explicit_forward(model, image)
    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens, dtype=image.dtype)
    for attention in attentions:
        heads = attention.shape[1]
        mean = sum(attention[0, h] for h in range(heads)) / heads
        mixed = 0.5 * torch.eye(tokens, dtype=image.dtype) + 0.5 * mean
        for row in range(tokens):
            mixed[row] = mixed[row] / mixed[row].sum()
        rollout = mixed @ rollout
    return rollout[0, model.num_prefix_tokens:].reshape(_grid(model, image))


def reference_raw_attention(model, image, target):
    _, attentions = explicit_forward(model, image)
    last = attentions[-1][0]
    mean = sum(last[h] for h in range(last.shape[0])) / last.shape[0]
    return mean[0, model.num_prefix_tokens:].reshape(_grid(model, image))


def reference_attn_gradcam(model, image, target):
    logits, attentions = explicit_forward(model, image)
    last = attentions[-1]
    (gradient,) = torch.autograd.grad(logits[0, target], last)
    prefix, heads = model.num_prefix_tokens, last.shape[1]
    cam = torch.zeros(last.shape[-1] - prefix, dtype=image.dtype)
    for h in range(heads):
        weight = gradient[0, h, 0, prefix:].mean()
        cam += weight * last[0, h, 0, prefix:] / heads
    return cam.clamp(min=0).reshape(_grid(model, image))


def reference_input_x_gradient(model, image, target):
    image = image.clone().requires_grad_()
    logits, _ = explicit_forward(model, image)
    (gradient,) = torch.autograd.grad(logits[0, target], image)
    return sum((image[0, c] * gradient[0, c]).abs() for c in range(3)).detach()


REFERENCES = {"rollout": reference_rollout, "raw_attention": reference_raw_attention,
              "attn_gradcam": reference_attn_gradcam,
              "input_x_gradient": reference_input_x_gradient}


def _compute(name, model, images, target=None, gradient_mode="detached"):
    return get_method(name).compute(model, images, target, gradient_mode, backend="eager")


@pytest.mark.parametrize("name", NEW_METHODS)
@pytest.mark.parametrize(("variant", "img_size", "patch_size"), VARIANTS)
def test_method_matches_the_per_sample_reference(name, variant, img_size, patch_size):
    model = tiny_vit(variant, img_size=img_size, patch_size=patch_size, num_heads=4,
                     dtype=torch.float64)
    images = torch.randn(5, 3, *img_size, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    pixel_level = name == "input_x_gradient"
    expected_shape = img_size if pixel_level else _grid(model, images)
    informative = 0
    for target in [None, torch.arange(5)]:  # the argmax class, then every class once
        out = _compute(name, model, images, target)
        assert out.relevance.shape == (5, *expected_shape)
        for b in range(5):
            logits, _ = explicit_forward(model, images[b:b + 1])
            # the explicit forward is the model's: the same logits
            torch.testing.assert_close(out.logits[b].detach(), logits[0].detach())
            explained = int(logits.argmax()) if target is None else int(target[b])
            assert int(out.target[b]) == explained
            expected = REFERENCES[name](model, images[b:b + 1], explained).detach()
            torch.testing.assert_close(out.relevance[b].detach(), expected,
                                       rtol=1e-9, atol=1e-12)
            informative += int(expected.abs().sum() > 0)
    # compared on informative maps too, not only zeros (on a random model Grad-CAM's clamp
    # zeroes many maps: every head's weighted sum negative)
    assert informative >= 2


@pytest.mark.parametrize("name", sorted(RELEVANCE_METHODS))
def test_batched_equals_per_sample_and_none_explains_the_argmax(name):
    model = tiny_vit("distilled", dtype=torch.float64)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3),
                         dtype=torch.float64)
    batched = _compute(name, model, images)
    assert torch.equal(batched.target, batched.logits.argmax(-1))
    for b in range(4):
        single = _compute(name, model, images[b:b + 1])
        torch.testing.assert_close(single.relevance[0].detach(), batched.relevance[b].detach())
        assert int(single.target[0]) == int(batched.target[b])


def test_class_specific_methods_give_each_target_its_own_map():
    model = tiny_vit("plain", dtype=torch.float64)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4),
                         dtype=torch.float64)
    first, second = torch.tensor([0, 1]), torch.tensor([2, 3])
    for name in ["grad_rollout", "attn_gradcam", "input_x_gradient"]:
        a, b = _compute(name, model, images, first), _compute(name, model, images, second)
        assert not torch.allclose(a.relevance, b.relevance), name
    for name in ["rollout", "raw_attention"]:  # no gradient: the class plays no part
        a, b = _compute(name, model, images, first), _compute(name, model, images, second)
        assert torch.equal(a.relevance, b.relevance), name
        assert torch.equal(b.target, second)


def test_rollout_of_a_hand_computed_two_block_case():
    """1 head, 3 tokens (CLS + 2 patches). With Ã = 0.5 I + 0.5 A:
    Ã1 = [[.5,.5,0],[.5,.5,0],[0,0,1]], Ã2 = [[.5,0,.5],[0,1,0],[.5,0,.5]];
    the CLS row of Ã2 Ã1 = .5 * row0(Ã1) + .5 * row2(Ã1) = [.25, .25, .5].
    (The other order, Ã1 Ã2, would give [.25, .5, .25].)"""
    block1 = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    block2 = torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
    row = rollout_cls_row_of_attention([block1[None, None], block2[None, None]])
    torch.testing.assert_close(row, torch.tensor([[0.25, 0.25, 0.5]]))
    # two heads whose mean is block2 give the same rollout (head mean before the mix)
    heads = torch.stack([2 * block2, torch.zeros(3, 3)])[None]
    torch.testing.assert_close(rollout_cls_row_of_attention([block1[None, None], heads]), row)


def test_differentiable_flag_is_honest():
    """A differentiable method's map reaches the weights; a non-differentiable one's does
    not (and carries no graph at all)."""
    model = tiny_vit("plain", num_heads=4)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for name, method in RELEVANCE_METHODS.items():
        model.zero_grad()
        out = method.compute(model, images, None, "detached", backend="eager")
        assert out.relevance.requires_grad == method.differentiable, name
        if method.differentiable:
            (out.relevance ** 2).sum().backward()
            reached = [p.grad for p in model.blocks[0].attn.qkv.parameters()]
            assert all(g is not None and g.abs().sum() > 0 for g in reached), name
        else:
            assert all(p.grad is None for p in model.parameters()), name


def test_non_differentiable_method_for_training_is_one_line_naming_the_key():
    with pytest.raises(ValueError, match=r"^relevance.method=input_x_gradient is not "
                                         r"differentiable") as error:
        RelevanceConfig(method="input_x_gradient")
    message = str(error.value)
    assert "\n" not in message
    for trainable in ["attn_gradcam", "grad_rollout", "raw_attention", "rollout"]:
        assert trainable in message
    assert "['attn_gradcam', 'grad_rollout', 'raw_attention', 'rollout']" in message
    # through the config layer, the key is named once
    cfg = OmegaConf.create({"relevance": OmegaConf.merge(
        OmegaConf.structured(RelevanceConfig), {"method": "input_x_gradient"})})
    with pytest.raises(ValueError, match=r"^relevance.method=input_x_gradient is not"):
        typed_group(cfg, "relevance")


def test_unknown_method_is_one_line_naming_the_key_and_the_methods():
    with pytest.raises(ValueError, match=r"^method must be one of \['attn_gradcam', "
                                         r"'grad_rollout', 'input_x_gradient'.*got 'lrp'$") as error:
        get_method("lrp", key="method")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"^relevance.method must be one of"):
        check_trainable_method("lrp")


def test_trainable_methods_run_in_training_and_non_differentiable_ones_refuse():
    for name in ["rollout", "raw_attention", "attn_gradcam"]:
        assert RelevanceConfig(method=name).method == name


@pytest.mark.parametrize("name", ["rollout", "raw_attention"])
def test_gradient_free_methods_run_under_no_grad_and_inference_mode(name):
    model = tiny_vit("plain")
    images = torch.randn(2, 3, 32, 32)
    reference = _compute(name, model, images).relevance.detach()
    with torch.no_grad():
        out = _compute(name, model, images)
    assert not out.relevance.requires_grad
    torch.testing.assert_close(out.relevance, reference)
    with torch.inference_mode():
        torch.testing.assert_close(_compute(name, model, images).relevance, reference)


@pytest.mark.parametrize("name", ["attn_gradcam", "input_x_gradient"])
def test_gradient_methods_run_under_no_grad_and_refuse_inference_mode(name):
    model = tiny_vit("plain")
    images = torch.randn(2, 3, 32, 32)
    reference = _compute(name, model, images).relevance.detach()
    with torch.no_grad():
        torch.testing.assert_close(_compute(name, model, images).relevance.detach(), reference)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=f"{name} needs autograd"):
        _compute(name, model, images)


def test_pixel_level_map_at_mask_resolution_is_only_normalised():
    model = tiny_vit("plain", dtype=torch.float64)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    raw = _compute("input_x_gradient", model, images).relevance
    normalised = upsample_and_normalize(raw, (32, 32))
    flat = raw.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    torch.testing.assert_close(normalised, (raw - low) / (high - low))
    # at another resolution it is resized like a patch map (area mean for an exact 2x)
    smaller = upsample_and_normalize(raw, (16, 16))
    pooled = torch.nn.functional.avg_pool2d(raw[:, None], 2)[:, 0]
    flat = pooled.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    torch.testing.assert_close(smaller, (pooled - low) / (high - low))


def test_input_x_gradient_explains_a_classifier_without_tokens():
    """Only the class scores are needed: a timm ResNet has no token sequence but a map."""
    from robustft.backbones import create_model

    torch.manual_seed(0)
    model = create_model("resnet10t", num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32)
    out = _compute("input_x_gradient", model, images)
    assert out.relevance.shape == (2, 32, 32) and out.relevance.abs().sum() > 0
    with pytest.raises(TypeError, match="is not a model robustft can explain"):
        _compute("rollout", model, images)


def public_rollout(attentions, start_layer):
    """The public scripts' ``compute_rollout_attention`` (Transformer-Explainability,
    RobustViT), written out: per block the head mean plus the identity, each row divided by
    its sum; the joint attention starts at block ``start_layer`` and every later block
    multiplies it from the left; the map is the CLS row over the patches."""
    tokens = attentions[0].shape[-1]
    augmented = []
    for attention in attentions:
        heads = attention.shape[1]
        matrix = sum(attention[0, h] for h in range(heads)) / heads + torch.eye(
            tokens, dtype=attention.dtype)
        augmented.append(torch.stack([matrix[row] / matrix[row].sum() for row in range(tokens)]))
    joint = augmented[start_layer]
    for block in range(start_layer + 1, len(augmented)):
        joint = augmented[block] @ joint
    return joint[0]


@pytest.mark.parametrize("start_layer", [0, 1, 3])
def test_rollout_from_a_later_block_is_the_public_scripts_product(start_layer):
    model = tiny_vit("plain", depth=4, num_heads=4, dtype=torch.float64)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4),
                         dtype=torch.float64)
    out = get_method("rollout").compute(model, images, None, "detached", backend="eager",
                                        start_layer=start_layer)
    for index in range(len(images)):
        _, attentions = explicit_forward(model, images[index:index + 1])
        expected = public_rollout(attentions, start_layer)[1:].reshape(4, 4)
        torch.testing.assert_close(out.relevance[index], expected, rtol=1e-10, atol=1e-12)
    if start_layer:  # leaving blocks out changes the map
        full = get_method("rollout").compute(model, images, None, "detached", backend="eager")
        assert not torch.allclose(full.relevance, out.relevance, rtol=1e-3, atol=0)


def test_rollout_start_layer_outside_the_model_is_one_line():
    model = tiny_vit("plain", depth=2)
    with pytest.raises(ValueError) as caught:
        get_method("rollout").compute(model, torch.zeros(1, 3, 32, 32), None, "detached",
                                      backend="eager", start_layer=2)
    assert str(caught.value) == ("rollout: start_layer (method_options.rollout.start_layer) must "
                                 "be a block index >= 0 of a model with 2 blocks (0..1), got 2")
    from robustft.relevance import method_label, method_options

    assert method_options("rollout", {"start_layer": 0}) == {}
    assert method_options("rollout", {"start_layer": 1}) == {"start_layer": 1}
    assert method_label("rollout", {"start_layer": 1}) == "rollout(start_layer=1)"
    with pytest.raises(ValueError, match=r"^method_options.rollout: unknown option\(s\) "
                                         r"\['start'\]; rollout takes \['start_layer'\]$"):
        method_options("rollout", {"start": 1})


def test_a_relevance_choice_runs_its_method_with_its_options_and_backend():
    from robustft.relevance import RelevanceChoice, relevance_choices

    model = tiny_vit("plain", depth=3, dtype=torch.float64)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5),
                         dtype=torch.float64)
    (choice,) = relevance_choices("rollout", {"rollout": {"start_layer": 1}}, "eager",
                                  key="relevance_method")
    assert choice == RelevanceChoice("rollout", {"start_layer": 1}, "eager")
    assert choice.label == "rollout(start_layer=1)"
    expected = get_method("rollout").compute(model, images, None, "detached", backend="eager",
                                             start_layer=1).relevance
    torch.testing.assert_close(choice.compute(model, images).relevance, expected)
    # the defaults are not kept: the same choice whether given or not
    assert RelevanceChoice("rollout", {"start_layer": 0}) == RelevanceChoice("rollout")
    # options of methods that were not asked for are ignored, each method gets its own
    choices = relevance_choices(["grad_rollout", "rollout"], {"rollout": {"start_layer": 2}})
    assert [c.label for c in choices] == ["grad_rollout", "rollout(start_layer=2)"]


def test_relevance_choices_refuse_in_one_line_naming_the_key():
    from robustft.relevance import relevance_choices

    with pytest.raises(ValueError, match=r"^relevance_method: unknown relevance method 'lrp'; "
                                         r"known: \["):
        relevance_choices("lrp", key="relevance_method")
    with pytest.raises(ValueError, match=r"^methods: no relevance method given; known: \["):
        relevance_choices([])
    with pytest.raises(ValueError, match=r"^method_options.rollout: unknown option"):
        relevance_choices(["rollout"], {"rollout": {"start": 1}})
    with pytest.raises(ValueError, match=r"^backend: expected one of \['auto', 'eager', 'fused'\], "
                                         r"got 'turbo'$"):
        relevance_choices(["rollout"], backend="turbo")
