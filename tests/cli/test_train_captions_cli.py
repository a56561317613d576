"""robustft-train with captions (data.captions): a tiny random OpenCLIP model fine-tuned on
each image's similarity to its own caption, through the console entry point's main()."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module
from tiny_models import TINY_OPEN_CLIP_KWARGS

from robustft.backbones.heads.captions import CaptionClassifier
from robustft.checkpoints import load_checkpoint
from robustft.training.run import build_run_model, train


def _hydra_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return f"'{value}'" if isinstance(value, str) else str(value)


TINY_OPEN_CLIP = ["model.pretrained=false", "model.weights_file=null",
                  f"++model.kwargs={_hydra_value(TINY_OPEN_CLIP_KWARGS)}"]


def _captioned_pairs(tmp_path: Path) -> tuple[Path, Path]:
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=3, size=(36, 36))
    path = tmp_path / "captions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for image in sorted((root / "images").rglob("*.png")):
            # prompts that cannot be folder names (a slash), one shared by two images
            caption = ("a square / a box" if image.stem == "img0"
                       else f"a bright patch, class {image.parent.name}, {image.stem}")
            writer.writerow([image.relative_to(root).as_posix(), caption])
    return root, path


def test_caption_run_fast_dev_run_through_robustft_train(tmp_path, monkeypatch):
    from robustft.cli.train import main

    root, captions = _captioned_pairs(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "robustft-train", "experiment=clip_vit_b16", "data=generic", f"data.root={root}",
        f"data.captions={captions}", "data.num_workers=0", "data.batch_size=4",
        "data.class_fraction=1.0", "debug=fast_dev_run", "trainer=cpu",
        f"paths.root_dir={tmp_path}", *TINY_OPEN_CLIP])
    main()
    (manifest,) = (tmp_path / "logs").rglob("selection_manifest.csv")
    rows = list(csv.DictReader(manifest.open()))
    assert rows and all(row["caption"] for row in rows)
    assert {row["caption"] for row in rows if row["image"].endswith("img0.png")} == {
        "a square / a box"}


def _cfg(tmp_path: Path, *overrides: str):
    root, captions = _captioned_pairs(tmp_path)
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("train", overrides=[
            "experiment=clip_vit_b16", "data=generic", f"data.root={root}",
            f"data.captions={captions}", "data.num_workers=0", "data.batch_size=4",
            "data.class_fraction=1.0", "trainer=cpu", "trainer.max_epochs=1",
            f"paths.output_dir={tmp_path / 'run'}", *TINY_OPEN_CLIP, *overrides])


def test_caption_run_trains_the_image_tower_only_and_logs_the_terms(tmp_path):
    cfg = _cfg(tmp_path, "trainer.limit_train_batches=1", "trainer.limit_val_batches=0")
    pl.seed_everything(cfg.seed)  # as train() does: the same initial weights
    start = build_run_model(cfg)
    assert isinstance(start, CaptionClassifier)
    result = train(cfg)
    assert result.metrics["train/loss"] > 0 and "train/fg_share" in result.metrics
    weights = load_checkpoint(result.last_checkpoint)["state_dict"]
    before = start.state_dict()
    moved = {name[len("model."):] for name, value in weights.items()
             if name.startswith("model.") and not torch.equal(value, before[name[len("model."):]])}
    assert moved and all(name.startswith("clip.visual.") for name in moved)
    trained_text = _cfg(tmp_path / "text", "optim.train_text_tower=true")
    assert any(p.requires_grad for p in build_run_model(trained_text).clip.transformer.parameters())


def test_caption_run_refuses_images_without_masks(tmp_path):
    cfg = _cfg(tmp_path, f"data.unmasked_root={tmp_path}")
    with pytest.raises(ValueError, match=r"^data\.unmasked_root=.*: images without masks have "
                                         r"no caption"):
        train(cfg)
