"""The OpenCLIP family: zero-shot logits are OpenCLIP's own image-text similarities, the
captured attention reproduces the tower's forward in both token layouts, the relevance map
equals a per-sample brute force written from the in_proj weights, the preprocessing is
OpenCLIP's own, the text tower is never trained, and bad input is one line."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from tiny_models import TINY_OPEN_CLIP_KWARGS, tiny_clip, tiny_clip_tokenizer

from robustft.backbones import ModelSpec, backbone_of, preprocessing_config
from robustft.backbones.open_clip import zero_shot_classifier
from robustft.backbones.zero_shot import ZeroShotClassifier
from robustft.evaluation.runner import model_eval_transform
from robustft.losses import LossConfig
from robustft.relevance import relevance_map
from robustft.training.module import RelevanceFinetuner, adamw

CLASSES = ["cat", "dog", "cow", "tree"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}"]


def _images(batch: int = 3, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dtype)


def _classifier(clip, dtype=torch.float32) -> ZeroShotClassifier:
    return zero_shot_classifier(clip, CLASSES, TEMPLATES, tokenizer=tiny_clip_tokenizer()).to(dtype)


def test_zero_shot_logits_are_openclips_image_text_similarities() -> None:
    clip = tiny_clip()
    model = _classifier(clip)
    tokenizer = tiny_clip_tokenizer()
    images = _images()
    with torch.no_grad():
        class_embeddings = []
        for name in CLASSES:
            texts = clip.encode_text(tokenizer([t.format(name) for t in TEMPLATES]), normalize=True)
            mean = texts.mean(dim=0)
            class_embeddings.append(mean / mean.norm())
        expected = (clip.logit_scale.exp() * clip.encode_image(images, normalize=True)
                    @ torch.stack(class_embeddings).T)
        torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(backbone_of(model).class_scores(images), expected,
                                   rtol=1e-5, atol=1e-5)
    # the model spec builds the same classifier (same seed, same architecture)
    torch.manual_seed(0)
    spec = ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False,
                     kwargs=TINY_OPEN_CLIP_KWARGS,
                     zero_shot={"class_names": CLASSES, "templates": TEMPLATES})
    built = spec.build()  # tiny_clip's extra init after create_model touches the image tower only
    with torch.no_grad():
        torch.testing.assert_close(built.class_embeddings, model.class_embeddings, rtol=1e-5,
                                   atol=1e-6)
    assert built.num_classes == len(CLASSES) == backbone_of(built).num_classes
    assert not any(name.startswith(("text", "transformer", "token_embedding"))
                   for name in built.state_dict())


def test_imagenet_head_has_openclips_1000_classes_and_80_templates(monkeypatch) -> None:
    calls = {}

    def fake_build(model, tokenizer, classnames, templates, **kwargs):
        calls["classes"], calls["templates"] = list(classnames), list(templates)
        return torch.nn.functional.normalize(torch.randn(16, len(classnames)), dim=0)

    monkeypatch.setattr(open_clip, "build_zero_shot_classifier", fake_build)
    model = zero_shot_classifier(tiny_clip(), tokenizer=tiny_clip_tokenizer())
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    assert calls["classes"] == list(IMAGENET_CLASSNAMES) and len(calls["classes"]) == 1000
    assert calls["templates"] == list(OPENAI_IMAGENET_TEMPLATES) and len(calls["templates"]) == 80
    assert model.num_classes == 1000


@pytest.mark.parametrize("batch_first", [True, False])
def test_captured_attention_reproduces_the_towers_forward(batch_first) -> None:
    model = _classifier(tiny_clip(dtype=torch.float64), torch.float64)
    if not batch_first:  # OpenCLIP before 2.24 ran its transformers (N, B, D)
        model.visual.transformer.batch_first = False
        for block in model.visual.transformer.resblocks:
            block.attn.batch_first = False
    images = _images(dtype=torch.float64)
    backbone = backbone_of(model)
    with torch.no_grad():
        plain = model(images)
    with backbone.capture_attention() as attentions:
        captured = model(images)
    torch.testing.assert_close(captured, plain, rtol=1e-10, atol=1e-10)
    assert [tuple(a.shape) for a in attentions] == [(3, 2, 17, 17)] * 2
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(3, 2, 17, dtype=torch.float64))
    with backbone.capture_qkv() as blocks:
        fused = model(images)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
    assert len(blocks) == 2 and blocks[0].output.shape == (3, 17, 32)
    # the capture leaves the model as it was
    assert all("attention" not in block.__dict__ for block in model.visual.transformer.resblocks)
    if not batch_first:
        torch.testing.assert_close(relevance_map(model, images).relevance,
                                   _brute_force_relevance(model, images, None), rtol=1e-8,
                                   atol=1e-10)


def _brute_force_relevance(model: ZeroShotClassifier, images, target) -> torch.Tensor:
    """Per sample: the tower written out from its weights, every block's attention computed
    explicitly from in_proj (per head), the full rollout matrix product."""
    visual = model.visual
    maps = []
    for b in range(images.shape[0]):
        image = images[b:b + 1]
        patches = visual.conv1(image).flatten(2).transpose(1, 2)[0]  # (P, D)
        x = torch.cat([visual.class_embedding[None], patches]) + visual.positional_embedding
        x = visual.ln_pre(x)
        attentions = []
        for block in visual.transformer.resblocks:
            attn = block.attn
            h = block.ln_1(x)
            qkv = h @ attn.in_proj_weight.T + attn.in_proj_bias
            q, k, v = qkv.chunk(3, dim=-1)
            heads, width = attn.num_heads, x.shape[-1]
            head_dim = width // heads
            columns = [slice(h * head_dim, (h + 1) * head_dim) for h in range(heads)]
            a = torch.stack([torch.softmax(q[:, c] @ k[:, c].T / head_dim ** 0.5, dim=-1)
                             for c in columns])  # (heads, N, N)
            outputs = [a[h] @ v[:, c] for h, c in enumerate(columns)]
            attentions.append(a)
            x = x + block.ls_1(torch.cat(outputs, dim=-1) @ attn.out_proj.weight.T
                               + attn.out_proj.bias)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        feature = visual.ln_post(x)[0] @ visual.proj
        feature = feature / feature.norm()
        logits = model.logit_scale.exp() * model.class_embeddings.to(feature.dtype) @ feature
        cls = int(logits.argmax()) if target is None else int(target[b])
        gradients = torch.autograd.grad(logits[cls], attentions)
        tokens = x.shape[0]
        rollout = torch.eye(tokens, dtype=x.dtype)
        for a, g in zip(attentions, gradients):
            rollout = rollout + (g * a).clamp(min=0).mean(dim=0) @ rollout
        maps.append(rollout[0, 1:].reshape(visual.grid_size).detach())
    return torch.stack(maps)


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_relevance_equals_a_per_sample_brute_force(backend) -> None:
    model = _classifier(tiny_clip(dtype=torch.float64), torch.float64)
    images = _images(dtype=torch.float64)
    target = torch.tensor([0, 3, 1])
    out = relevance_map(model, images, target=target, backend=backend)
    expected = _brute_force_relevance(model, images, target)
    assert out.relevance.shape == (3, 4, 4)
    torch.testing.assert_close(out.relevance, expected, rtol=1e-8, atol=1e-10)
    # a frozen tower is explained too (the attention becomes a leaf of the graph)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    frozen = relevance_map(model, images, target=target, backend=backend)
    torch.testing.assert_close(frozen.relevance, expected, rtol=1e-8, atol=1e-10)


def test_last_block_keys_are_the_in_proj_keys() -> None:
    model = _classifier(tiny_clip(dtype=torch.float64), torch.float64)
    images = _images(dtype=torch.float64)
    blocks = model.visual.transformer.resblocks
    inputs = []
    handle = blocks[-1].ln_1.register_forward_hook(lambda _m, _i, out: inputs.append(out))
    with torch.no_grad():
        model(images)
    handle.remove()
    width = inputs[0].shape[-1]
    attn = blocks[-1].attn
    expected = inputs[0] @ attn.in_proj_weight[width:2 * width].T + attn.in_proj_bias[width:2 * width]
    torch.testing.assert_close(backbone_of(model).last_block_keys(images), expected)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
def test_preprocessing_is_openclips_own_eval_transform(resize_mode) -> None:
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **TINY_OPEN_CLIP_KWARGS,
                                  force_preprocess_cfg={"resize_mode": resize_mode,
                                                        "interpolation": "bilinear"})
    model = _classifier(clip)
    config = preprocessing_config(model)
    assert config["input_size"] == (3, 32, 32)
    assert config["mean"] == tuple(open_clip.OPENAI_DATASET_MEAN)
    ours = model_eval_transform(config)
    theirs = image_transform_v2(PreprocessCfg(**clip.visual.preprocess_cfg),
                                is_train=False)
    pixels = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    torch.testing.assert_close(ours(image), theirs(image))


def test_the_text_tower_is_not_trained_and_gets_no_gradient() -> None:
    clip = tiny_clip()
    model = _classifier(clip)
    text_before = {name: p.detach().clone() for name, p in clip.named_parameters()
                   if not name.startswith("visual.")}
    visual_before = {name: p.detach().clone() for name, p in model.visual.named_parameters()}
    head_before = model.class_embeddings.clone()
    module = RelevanceFinetuner(model, loss=LossConfig(classification="kl_to_teacher"),
                                optimizer=lambda parameters: adamw(parameters, lr=1e-2))
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.visual.parameters()}
    module.log_dict = lambda *args, **kwargs: None  # no Trainer attached
    masks = torch.zeros(3, 32, 32)
    masks[:, 8:24, 8:24] = 1
    batch = {"image": _images(), "mask": masks, "ignore": torch.zeros(3, 32, 32, dtype=torch.bool),
             "label": torch.tensor([0, 1, 2])}
    loss = module.training_step(batch, 0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, parameter in clip.named_parameters():
        if not name.startswith("visual."):
            assert parameter.grad is None, name
            assert torch.equal(parameter, text_before[name]), name
    assert torch.equal(model.class_embeddings, head_before)
    changed = [n for n, p in model.visual.named_parameters() if not torch.equal(p, visual_before[n])]
    assert changed  # the image tower did train


def test_checkpointed_classifier_rebuilds_from_its_spec(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    spec = ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False,
                     kwargs=TINY_OPEN_CLIP_KWARGS, zero_shot={"class_names": CLASSES,
                                                              "templates": TEMPLATES})
    model = spec.build()
    with torch.no_grad():
        model.visual.proj.add_(1.0)
    checkpoint = tmp_path / "ft.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_config": spec.to_dict()}}, checkpoint)
    rebuilt = ModelSpec.from_mapping({**spec.to_dict(), "checkpoint": str(checkpoint)}).build()
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), model(images))
    # a saved classifier state (robustft-demo's cache) is a weights_file too
    weights = tmp_path / "classifier.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    from_file = ModelSpec(**{**spec.to_dict(), "weights_file": str(weights)}).build()
    with torch.no_grad():
        torch.testing.assert_close(from_file(images), model(images))


def test_unknown_openclip_name_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"model.name: unknown OpenCLIP model name 'ViT-B-61'.*"
                                         r"ViT-B-16") as error:
        ModelSpec(name="ViT-B-61", family="open_clip", pretrained=False).build()
    assert "\n" not in str(error.value)


def test_unknown_tag_and_missing_tag_are_one_line() -> None:
    with pytest.raises(ValueError, match=r"model.tag: 'laion9b' is not a pretrained tag") as error:
        ModelSpec(name="ViT-B-16", family="open_clip", tag="laion9b").build()
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"model.tag: OpenCLIP ViT-B-16 needs a pretrained tag"):
        ModelSpec(name="ViT-B-16", family="open_clip").build()


def test_class_names_that_do_not_fit_the_head_file_are_one_line(tmp_path) -> None:
    from robustft.backbones.zero_shot import save_zero_shot_head

    head_file = save_zero_shot_head(_classifier(tiny_clip()), tmp_path / "head.safetensors")
    spec = ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False,
                     kwargs=TINY_OPEN_CLIP_KWARGS,
                     zero_shot={"class_names": ["cat", "dog"], "embeddings_file": str(head_file)})
    with pytest.raises(ValueError, match=r"model.zero_shot.class_names: 2 class names for a "
                                         r"zero-shot head of 4 classes") as error:
        spec.build()
    assert "\n" not in str(error.value)


def test_template_without_a_placeholder_is_one_line() -> None:
    spec = ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False,
                     kwargs=TINY_OPEN_CLIP_KWARGS,
                     zero_shot={"class_names": CLASSES, "templates": ["a photo"]})
    with pytest.raises(ValueError, match=r"model.zero_shot.templates: template 'a photo' has no"):
        spec.build()

