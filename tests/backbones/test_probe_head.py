"""A head for a backbone that has none: the linear probe is the minimiser of its objective
(gradient ~0, by autograd on the objective written here), prototypes are the class means,
the head file round-trips, ModelSpec.probe_head gives timm and Hugging Face models the same
scores, and robustft-head writes both kinds from a folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_hf import save_tiny_hf
from hydra import compose, initialize_config_module
from PIL import Image

from robustft.backbones import ModelSpec, backbone_of
from robustft.backbones.heads.probe_head import (
    ProbeBackbone,
    ProbeClassifier,
    ProbeHead,
    class_mean_prototypes,
    fit_linear_probe,
    read_probe_head,
    save_probe_head,
)
from robustft.relevance import relevance_map

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _blobs(seed: int = 0, per_class: int = 20, classes: int = 3, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, dim, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=generator), labels


def test_the_linear_probe_minimises_its_objective():
    features, labels = _blobs()
    head = fit_linear_probe(features, labels, 3, weight_decay=1e-2)
    weight = head.weight.double().requires_grad_()
    bias = head.bias.double().requires_grad_()
    x = features.double()
    objective = F.cross_entropy(x @ weight.T + bias, labels) + 0.5e-2 * weight.square().sum()
    grad_w, grad_b = torch.autograd.grad(objective, (weight, bias))
    assert grad_w.abs().max() < 1e-4 and grad_b.abs().max() < 1e-4
    assert ((features @ head.weight.T + head.bias).argmax(1) == labels).all()


def test_prototypes_are_the_normalised_class_means():
    features, labels = _blobs(seed=1)
    head = class_mean_prototypes(features, labels, 3, scale=10.0)
    for c in range(3):
        rows = [features[i] / features[i].norm() for i in range(len(labels)) if labels[i] == c]
        mean = sum(rows) / len(rows)
        torch.testing.assert_close(head.class_embeddings[c], mean / mean.norm())
    assert head.logit_scale.exp().item() == pytest.approx(10.0)


def test_a_class_without_images_is_named():
    features, labels = _blobs()
    with pytest.raises(ValueError, match=r"class\(es\) \[3\]"):
        fit_linear_probe(features, labels, 4)


def _probe_file(tmp_path, dim: int = 32, classes: int = 4):
    generator = torch.Generator().manual_seed(0)
    head = ProbeHead(torch.randn(classes, dim, generator=generator),
                     torch.randn(classes, generator=generator), ("a", "b", "c", "d")[:classes])
    return head, save_probe_head(head, tmp_path / "probe.safetensors")


def test_head_file_round_trips_and_wraps_a_timm_backbone(tmp_path):
    head, path = _probe_file(tmp_path)
    read = read_probe_head(path)
    torch.testing.assert_close(read.weight, head.weight)
    assert read.class_names == ("a", "b", "c", "d")
    model = ModelSpec(name="vit_tiny_patch16_224", pretrained=False, kwargs=TINY,
                      probe_head=str(path)).build().eval()
    assert isinstance(model, ProbeClassifier) and isinstance(backbone_of(model), ProbeBackbone)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.visual(images) @ head.weight.T + head.bias
        torch.testing.assert_close(model(images), expected)
    assert relevance_map(model, images).relevance.shape == (2, 4, 4)
    assert all(p.requires_grad for p in model.head.parameters())  # fine-tuning trains it


def test_bad_heads_are_one_line_naming_the_key(tmp_path):
    _, path = _probe_file(tmp_path, dim=16)
    with pytest.raises(ValueError, match="model.probe_head: the probe reads 16 features but the "
                                         "backbone outputs 32"):
        ModelSpec(name="vit_tiny_patch16_224", pretrained=False, kwargs=TINY,
                  probe_head=str(path)).build()
    with pytest.raises(ValueError, match="already has a 5-class head"):
        ModelSpec(name="vit_tiny_patch16_224", pretrained=False, kwargs=TINY, num_classes=5,
                  probe_head=str(path)).build()
    with pytest.raises(FileNotFoundError, match="model.probe_head: probe head file not found"):
        ModelSpec(name="vit_tiny_patch16_224", pretrained=False, kwargs=TINY,
                  probe_head=str(tmp_path / "none.safetensors")).build()


def test_a_hf_dinov2_gets_the_probe_in_the_cls_half_of_its_classifier(tmp_path):
    head, path = _probe_file(tmp_path)
    save_tiny_hf(tmp_path / "hf", "dinov2", image_size=28, patch_size=14)
    model = ModelSpec(family="hf", hf_path=str(tmp_path / "hf"), probe_head=str(path)).build().eval()
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        cls = model.dinov2(pixel_values=images).last_hidden_state[:, 0]
        torch.testing.assert_close(model(pixel_values=images).logits,
                                   cls @ head.weight.T + head.bias)


def _folder(root):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "fox")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 40, (32, 32, 3)).astype(np.uint8)
            pixels[..., c] += 200
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("kind", ["linear", "prototypes"])
def test_robustft_head_fits_a_head_from_a_folder(tmp_path, kind, capsys):
    from robustft.cli.head import run

    images = _folder(tmp_path / "few")
    output = tmp_path / f"{kind}.safetensors"
    kwargs = ",".join(f"{k}:{v}" for k, v in TINY.items())
    with initialize_config_module(version_base="1.3", config_module="robustft.configs"):
        run(compose(config_name="head", overrides=[
            f"images={images}", f"output={output}", f"kind={kind}", "per_class=2",
            "model.name=vit_tiny_patch16_224", "model.pretrained=false", f"model.kwargs={{{kwargs}}}",
            "device=cpu"]))
    assert "head of 3 classes on 6 images (32 features)" in capsys.readouterr().out
    spec = dict(name="vit_tiny_patch16_224", pretrained=False, kwargs=TINY)
    if kind == "linear":
        model = ModelSpec(**spec, probe_head=str(output)).build()
        assert model.class_names == ("cat", "dog", "fox")
    else:
        model = ModelSpec(**spec, num_classes=0, zero_shot={"embeddings_file": str(output)}).build()
        assert model.num_classes == 3
