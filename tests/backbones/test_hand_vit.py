"""A model family that is not timm enters through backbones/ alone: its relevance map
equals a per-block brute force, it relevance-fine-tunes through RelevanceFinetuner and the
single-pass runner evaluates it next to a timm model."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from fixtures.generic_layout import make_generic_layout
from fixtures.hand_vit import HandViT
from fixtures.miniature import make_generated_benchmark
from tiny_models import tiny_vit

from robustft.backbones import backbone_of
from robustft.data.datamodule import ImageMaskDataModule
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.relevance import relevance_map
from robustft.synth.read import ImageFolderSplit
from robustft.training.module import RelevanceFinetuner


def _per_block_relevance(model: HandViT, images: torch.Tensor, target: torch.Tensor):
    """The rule with one autograd call per block and the full N x N rollout (the public
    code's way), written from the definition."""
    backbone = backbone_of(model)
    with backbone.capture_attention() as attentions:
        logits = model(images)
    score = logits.gather(1, target[:, None]).sum()
    rollout = torch.eye(attentions[0].shape[-1], dtype=images.dtype).expand(len(images), -1, -1)
    for attention in attentions:
        (gradient,) = torch.autograd.grad(score, attention, retain_graph=True)
        block = (gradient * attention).clamp(min=0).mean(dim=1)
        rollout = rollout + block @ rollout
    side = model.image // model.patch
    return rollout[:, 0, 1:].reshape(len(images), side, side)


def test_relevance_equals_the_per_block_definition():
    torch.manual_seed(0)
    model = HandViT().double()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 2, 3])
    out = relevance_map(model, images, target)
    assert out.relevance.shape == (3, 4, 4)
    torch.testing.assert_close(out.relevance, _per_block_relevance(model, images, target),
                               rtol=1e-10, atol=1e-12)
    assert all(block.sink is None for block in model.blocks)  # capture undone


def test_hand_vit_relevance_fine_tunes_through_the_lightning_module(tmp_path):
    torch.manual_seed(0)
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=2, size=(36, 36))
    model = HandViT()
    config = backbone_of(model).preprocessing()
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=config["mean"],
                                     std=config["std"], class_fraction=1.0, num_workers=0,
                                     batch_size=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         inference_mode=False, limit_val_batches=0)
    trainer.fit(RelevanceFinetuner(model), datamodule=datamodule)
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert "blocks.0.qkv.weight" in moved and "head.weight" in moved


def test_single_pass_runner_evaluates_it_beside_a_timm_model(tmp_path):
    bench = make_generated_benchmark(tmp_path / "bench")
    models = {"hand": HandViT(num_classes=3).eval(),
              "timm": tiny_vit("plain", img_size=(32, 32), num_classes=3)}
    dataset = ImageFolderSplit(bench.root, "shuffled", name="shuffled")
    rows = evaluate_models(models, dataset, transforms=build_eval_transforms(models),
                           batch_size=4, num_workers=0, device="cpu", progress=False)
    top1 = {row["model"]: row for row in rows if row["metric"] == "top1" and not row["factor"]}
    assert set(top1) == {"hand", "timm"}
    for label, model in models.items():  # each against its own direct count
        transform = build_eval_transforms({label: model})[label]
        images = torch.stack([transform(image) for image, _target, _meta in
                              (dataset[i] for i in range(len(dataset)))])
        targets = torch.tensor([dataset[i][1] for i in range(len(dataset))])
        with torch.no_grad():
            expected = (model(images).argmax(-1) == targets).double().mean().item() * 100
        assert top1[label]["value"] == pytest.approx(expected, abs=1e-3)


def test_a_model_no_family_explains_is_refused_in_one_line():
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(TypeError, match=r"^torch.nn.modules.container.Sequential is not a model "
                                        r"robustft can explain: the rollout needs one token"):
        relevance_map(classifier, torch.randn(1, 3, 32, 32))
    assert backbone_of(classifier).class_scores(torch.randn(2, 3, 32, 32)).shape == (2, 4)
