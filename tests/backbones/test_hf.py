"""The Hugging Face family: a HF ViT holding a timm ViT's weights gives the timm backbone's
logits, relevance maps and keys; prefix tokens stay out of the map on any grid; a
save_pretrained folder builds through ModelSpec with its processor's preprocessing; bad
input is one line."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.tiny_hf import save_tiny_hf, tiny_hf_model
from PIL import Image
from tiny_models import tiny_vit

from robustft.backbones import ModelSpec, backbone_of, preprocessing_config
from robustft.masks.tokencut import extract_patch_keys
from robustft.relevance import relevance_map

transformers = pytest.importorskip("transformers")


def _timm_to_hf(timm_model, prefix: str, head_names: dict[str, str]) -> dict[str, torch.Tensor]:
    """A timm ViT's state dict under HF's names: ``prefix`` is the base model's attribute
    (``vit.`` / ``deit.``), ``head_names`` maps timm head names to HF's."""
    timm_state = timm_model.state_dict()
    hf_state: dict[str, torch.Tensor] = {}
    embeddings = {"cls_token": "embeddings.cls_token", "dist_token": "embeddings.distillation_token",
                  "pos_embed": "embeddings.position_embeddings",
                  "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                  "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                  "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    block_parts = {"norm1": "layernorm_before", "norm2": "layernorm_after",
                   "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for name, tensor in timm_state.items():
        if name in embeddings:
            hf_state[prefix + embeddings[name]] = tensor
        elif name.split(".")[0] in head_names:
            head, kind = name.split(".")
            hf_state[f"{head_names[head]}.{kind}"] = tensor
        elif name.startswith("blocks."):
            _, index, *rest = name.split(".")
            part, kind = ".".join(rest[:-1]), rest[-1]
            layer = f"{prefix}layers.{index}."
            if part == "attn.qkv":
                # timm's fused projection is [q; k; v] along the output dimension
                for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    hf_state[f"{layer}attention.{proj}.{kind}"] = chunk
            else:
                hf_state[f"{layer}{block_parts[part]}.{kind}"] = tensor
        else:
            raise KeyError(f"unmapped timm tensor {name}")
    return hf_state


def _hf_twin(timm_model, kind: str):
    """The HF model of ``timm_model``'s architecture holding its weights."""
    config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=128, image_size=32, patch_size=8, num_labels=5,
                  layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**config))
        state = _timm_to_hf(timm_model, "vit.", {"head": "classifier"})
    else:
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**config))
        state = _timm_to_hf(timm_model, "deit.", {"head": "cls_classifier",
                                                  "head_dist": "distillation_classifier"})
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("variant, kind", [("plain", "vit"), ("distilled", "deit_teacher")])
def test_converted_timm_weights_give_the_timm_logits_maps_and_keys(variant, kind):
    timm_model = tiny_vit(variant, img_size=(32, 32))
    hf_model = _hf_twin(timm_model, kind)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 3, 4])
    timm_backbone, hf_backbone = backbone_of(timm_model), backbone_of(hf_model)
    assert type(hf_backbone).__name__ == "HuggingFaceViT"
    assert hf_backbone.token_layout((32, 32)) == timm_backbone.token_layout((32, 32))
    torch.testing.assert_close(hf_backbone.class_scores(images),
                               timm_backbone.class_scores(images), atol=1e-5, rtol=0)
    for mode in ("detached", "second_order"):
        timm_map = relevance_map(timm_model, images, target, gradient_mode=mode)
        hf_map = relevance_map(hf_model, images, target, gradient_mode=mode)
        torch.testing.assert_close(hf_map.relevance, timm_map.relevance, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf_map.logits, timm_map.logits, atol=1e-5, rtol=0)
    fused = relevance_map(hf_model, images, target, backend="fused")
    torch.testing.assert_close(fused.relevance, timm_map.relevance, atol=1e-5, rtol=0)
    torch.testing.assert_close(hf_backbone.last_block_keys(images),
                               timm_backbone.last_block_keys(images), atol=1e-5, rtol=0)
    # TokenCut's patch keys (prefix tokens dropped)
    torch.testing.assert_close(extract_patch_keys(hf_model, images),
                               extract_patch_keys(timm_model, images), atol=1e-5, rtol=0)


def _rollout_from_hf_attentions(model, images, target, num_prefix_tokens, grid, **forward):
    """The rule computed from HF's own eager attentions (``output_attentions=True``)."""
    model.set_attn_implementation("eager")
    try:
        output = model(pixel_values=images, output_attentions=True, **forward)
    finally:
        model.set_attn_implementation("sdpa")
    score = output.logits.gather(1, target[:, None]).sum()
    gradients = torch.autograd.grad(score, list(output.attentions))
    tokens = output.attentions[0].shape[-1]
    rollout = torch.eye(tokens).expand(len(images), tokens, tokens)
    for attention, gradient in zip(output.attentions, gradients):
        rollout = rollout + (gradient * attention).clamp(min=0).mean(dim=1) @ rollout
    return rollout[:, 0, num_prefix_tokens:].reshape(len(images), *grid)


def test_dinov2_registers_map_is_the_patch_grid_of_a_non_square_input():
    model = tiny_hf_model("dinov2_registers", image_size=28, patch_size=14, num_labels=3)
    backbone = backbone_of(model)
    layout = backbone.token_layout((28, 42))
    assert (layout.num_prefix_tokens, layout.grid_size) == (5, (2, 3))  # CLS + 4 registers
    images = torch.randn(2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([2, 0])
    with backbone.capture_attention() as attentions:
        backbone.class_scores(images)
    assert [tuple(a.shape) for a in attentions] == [(2, 2, 11, 11)] * 2
    out = relevance_map(model, images, target)
    assert out.relevance.shape == (2, 2, 3)
    expected = _rollout_from_hf_attentions(model, images, target, 5, (2, 3))
    torch.testing.assert_close(out.relevance, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind, prefix", [("vit", 1), ("deit", 2), ("dinov2", 1)])
def test_other_sizes_interpolate_and_the_map_follows_the_grid(kind, prefix):
    model = tiny_hf_model(kind)
    images = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 4])
    out = relevance_map(model, images, target)
    assert out.relevance.shape == (2, 3, 5)
    # HF refuses this size for ViT / DeiT unless asked to interpolate; DINOv2 always does
    forward = {} if kind == "dinov2" else {"interpolate_pos_encoding": True}
    expected = _rollout_from_hf_attentions(model, images, target, prefix, (3, 5), **forward)
    torch.testing.assert_close(out.relevance, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, model(pixel_values=images, **forward).logits)
    with pytest.raises(ValueError, match=r"\(30, 40\) is not a multiple of the patch size"):
        backbone_of(model).token_layout((30, 40))


def test_loss_on_the_map_reaches_the_weights_and_a_frozen_model_is_explained():
    model = tiny_hf_model("vit")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = relevance_map(model, images, torch.tensor([0, 1]))
    out.relevance.square().sum().backward()
    first_query = model.vit.layers[0].attention.q_proj.weight
    assert first_query.grad is not None and first_query.grad.abs().sum() > 0
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for backend in ("eager", "fused"):
        frozen = relevance_map(model, images, torch.tensor([0, 1]), backend=backend)
        torch.testing.assert_close(frozen.relevance, out.relevance.detach(), atol=1e-6, rtol=0)
    assert model.config._attn_implementation == "sdpa"  # switched back after each capture


def test_fused_refuses_attention_dropout_in_training():
    model = tiny_hf_model("vit", attention_probs_dropout_prob=0.1)
    assert backbone_of(model).fused_capture_refusal() == ""
    model.train()
    assert "attention dropout" in backbone_of(model).fused_capture_refusal()


def _pixels(image: Image.Image, config: dict) -> torch.Tensor:
    from robustft.evaluation.runner import model_eval_transform

    return model_eval_transform(config)(image)


@pytest.mark.parametrize("processor_class, processor, expected", [
    ("DeiTImageProcessor", {"size": {"height": 40, "width": 40}, "do_center_crop": True,
      "crop_size": {"height": 32, "width": 32}, "resample": 3, "image_mean": [0.4, 0.5, 0.6],
      "image_std": [0.2, 0.3, 0.4]},
     {"input_size": (3, 32, 32), "crop_pct": 0.8, "crop_mode": "squash",
      "interpolation": "bicubic", "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.4)}),
    ("ViTImageProcessor", {"size": {"height": 48, "width": 48}, "resample": 2},
     {"input_size": (3, 48, 48), "crop_pct": 1.0, "crop_mode": "squash",
      "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}),
    ("BitImageProcessor", {"size": {"shortest_edge": 36}, "crop_size": {"height": 28, "width": 28},
                           "resample": 3, "do_convert_rgb": True},
     {"input_size": (3, 28, 28), "crop_pct": 28 / 36, "crop_mode": "center",
      "interpolation": "bicubic"}),
])
def test_save_pretrained_folder_builds_with_its_processor(tmp_path, processor_class, processor,
                                                          expected):
    saved = save_tiny_hf(tmp_path / "hf", "vit", processor=processor,
                         processor_class=processor_class)
    model = ModelSpec(family="hf", hf_path=str(tmp_path / "hf")).build()
    assert type(model) is type(saved) and model.training  # built for training, as timm's
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    config = preprocessing_config(model)
    assert config["crop_pct"] == pytest.approx(expected.pop("crop_pct"))
    assert {key: config[key] for key in expected} == expected
    # timm's transform of the mapped dict gives the HF processor's pixels (a non-square
    # image, so a squash and a shortest-side resize differ)
    ramp = torch.linspace(0, 255, 90)
    image = Image.fromarray(torch.stack([ramp[None].expand(60, 90), ramp[:60, None].expand(60, 90),
                                         torch.full((60, 90), 90.0)], -1).byte().numpy())
    processed = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")(
        image, return_tensors="pt").pixel_values[0]
    torch.testing.assert_close(_pixels(image, config), processed, atol=1e-5, rtol=0)


def test_spec_num_classes_random_init_and_checkpoint_on_top(tmp_path):
    saved = save_tiny_hf(tmp_path / "hf", "deit_teacher")
    spec = dict(family="hf", hf_path=str(tmp_path / "hf"))
    head = ModelSpec(**spec, num_classes=3).build()
    assert head.cls_classifier.weight.shape == (3, 32) and backbone_of(head).num_classes == 3
    assert torch.equal(head.deit.layers[0].attention.q_proj.weight,
                       saved.deit.layers[0].attention.q_proj.weight)
    random = ModelSpec(**spec, pretrained=False).build()
    assert type(random).__name__ == "DeiTForImageClassificationWithTeacher"
    assert not torch.equal(random.deit.layers[0].attention.q_proj.weight,
                           saved.deit.layers[0].attention.q_proj.weight)
    # no preprocessor_config.json: the config's image size
    assert preprocessing_config(random)["input_size"] == (3, 32, 32)
    finetuned = {f"model.{k}": v + 1.0 for k, v in saved.state_dict().items()}
    torch.save({"state_dict": finetuned}, tmp_path / "ft.ckpt")
    loaded = ModelSpec(**spec, checkpoint=str(tmp_path / "ft.ckpt")).build()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, finetuned[f"model.{name}"]), name
    restored = ModelSpec.from_mapping(loaded_spec := ModelSpec(**spec).to_dict())
    assert restored.hf_path == loaded_spec["hf_path"] and restored.family == "hf"


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_folder_without_config_json_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model\.hf_path: .*empty has no config\.json") as error:
        ModelSpec(family="hf", hf_path=str(tmp_path / "empty")).build()
    _one_line(error)


def test_hierarchical_model_type_is_refused(tmp_path):
    transformers.SwinConfig(embed_dim=16, depths=[1, 1], num_heads=[1, 1]).save_pretrained(tmp_path / "swin")
    with pytest.raises(ValueError, match=r"model\.hf_path: .*'swin' model .*one token sequence "
                                         r"across blocks") as error:
        ModelSpec(family="hf", hf_path=str(tmp_path / "swin")).build()
    _one_line(error)


@pytest.mark.parametrize("sources, word", [({}, "neither"),
                                           ({"hf_id": "google/vit-base-patch16-224",
                                             "hf_path": "/models/vit"}, "both")])
def test_neither_or_both_sources_is_one_line(sources, word):
    with pytest.raises(ValueError, match=rf"models\.ft\.hf_id / models\.ft\.hf_path: give exactly "
                                         rf"one .*got {word}") as error:
        ModelSpec(family="hf", **sources).build(key="models.ft")
    _one_line(error)


def test_timm_keys_and_hf_keys_do_not_mix(tmp_path):
    with pytest.raises(ValueError, match=r"model\.hf_path is for family=hf"):
        ModelSpec(name="vit_tiny_patch16_224", hf_path=str(tmp_path)).build()
    save_tiny_hf(tmp_path / "hf", "vit")
    with pytest.raises(ValueError, match=r"model\.weights_file is timm's"):
        ModelSpec(family="hf", hf_path=str(tmp_path / "hf"), weights_file="w.safetensors").build()


def test_folder_without_weights_is_one_line(tmp_path):
    tiny_hf_model("vit").config.save_pretrained(tmp_path / "cfg")
    with pytest.raises(FileNotFoundError, match=r"model\.hf_path: .* has no weights .*"
                                                r"pretrained=false") as error:
        ModelSpec(family="hf", hf_path=str(tmp_path / "cfg")).build()
    _one_line(error)
    assert json.loads((tmp_path / "cfg" / "config.json").read_text())["model_type"] == "vit"
    ModelSpec(family="hf", hf_path=str(tmp_path / "cfg"), pretrained=False).build()
