"""``train``'s checks before anything is built: every value outside what its key allows is
one line naming the key, before a model is built or an image read; ``data.crop_size``,
which needs the model's patch size, right after the model and before any image; and the
warnings a run gives about what it would otherwise do silently."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module

from robustft.backbones import ModelSpec
from robustft.data.datamodule import ImageMaskDataModule
from robustft.training.run import train

TINY_VIT = ["model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.num_classes=4",
            "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=2",
            "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]


def _config(tmp_path, *overrides: str):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("train", overrides=[
            f"data.root={root}", "data.num_workers=0", f"paths.output_dir={tmp_path / 'run'}",
            "trainer=cpu", "callbacks.progress_bar=null", *TINY_VIT, *overrides])


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if a model is built or a DataModule reads its images."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("built although the config has a bad value")
    monkeypatch.setattr(ModelSpec, "build", refuse)
    monkeypatch.setattr(ImageMaskDataModule, "setup", refuse)


@pytest.mark.parametrize(("override", "line"), [
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("optim.optimizer.lr=-0.1", "optim.optimizer.lr must be >= 0, got -0.1"),
    ("data.hflip=2", "data.hflip must be in [0, 1] (the probability of a horizontal flip), "
                     "got 2.0"),
    ("data.resize_ratio=0.5", "data.resize_ratio must be >= 1 (the images are resized to "
                              "resize_ratio x crop_size, then cropped), got 0.5"),
    ("seed=-1", "seed must be in [0, 4294967295], got -1 (and 1 more)"),  # and data.seed=${seed}
    ("data.seed=4294967296", "data.seed must be in [0, 4294967295], got 4294967296"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be >= 1, got 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be >= 1 or -1 (-1: no limit; 0 trains "
                             "nothing and writes no checkpoint), got 0"),
    ("data.crop_size=[32,0]", "data.crop_size must be >= 1 (every item), got [32, 0]"),
    ("data.std=[0.5,0,0.5]", "data.std must be > 0 (every item), got [0.5, 0.0, 0.5]"),
    ("data.class_fraction=0", "data.class_fraction must be in (0, 1], got 0.0"),
    ("data.train_per_class=0", "data.train_per_class must be >= 1 or null (all), got 0"),
    ("optim.scheduler.every=0", "optim.scheduler.every must be >= 1, got 0"),
    ("loss.lambda_bg=-1", "loss.lambda_bg must be >= 0, got -1.0"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches must be > 0 (a share of the "
                                      "batches or a count; 0 trains nothing and writes no "
                                      "checkpoint), got 0"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval must be > 0, got 0"),
    ("trainer.devices=0", "trainer.devices must be >= 1 or -1 (-1: every device), got 0"),
])
def test_a_bad_value_is_one_line_naming_its_key_before_anything_is_built(
        tmp_path, nothing_built, override, line):
    cfg = _config(tmp_path, override)
    with pytest.raises(ValueError) as error:
        train(cfg)
    assert str(error.value) == line


def test_the_command_line_shows_the_line(tmp_path, nothing_built, monkeypatch, capsys):
    from robustft.cli.train import main

    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=2, size=(36, 36))
    monkeypatch.setattr(sys, "argv", ["robustft-train", f"data.root={root}",
                                      f"paths.root_dir={tmp_path}", "data.batch_size=0", *TINY_VIT])
    with pytest.raises(SystemExit) as exit_code:
        main()
    assert exit_code.value.code == 1
    assert capsys.readouterr().err == ("robustft-train: error: data.batch_size must be >= 1, "
                                       "got 0\n")


@pytest.mark.parametrize(("crop_size", "kwargs", "expected"), [
    ("33", [], r"^data\.crop_size=33: input size \(33, 33\) does not match the model's img_size "
               r"\(32, 32\); create the model with img_size=\.\.\. or dynamic_img_size=True$"),
    ("[30,32]", ["++model.kwargs.dynamic_img_size=true"],
     r"^data\.crop_size=\[30, 32\]: input size \(30, 32\) is not a multiple of the model's "
     r"patch size \(8, 8\)$"),
    ("[32,32,3]", [], r"^data\.crop_size must be one size or \[height, width\], got \[32, 32, 3\]$"),
])
def test_a_crop_the_model_cannot_take_is_named_before_any_image_is_read(
        tmp_path, monkeypatch, crop_size, kwargs, expected):
    def refuse(*_args, **_kwargs):
        raise AssertionError("images read although the crop size is bad")
    monkeypatch.setattr(ImageMaskDataModule, "setup", refuse)
    with pytest.raises(ValueError, match=expected):
        train(_config(tmp_path, f"data.crop_size={crop_size}", *kwargs))


def test_a_normalisation_of_the_wrong_length_is_named_before_any_image_is_read(tmp_path,
                                                                              monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("images read although data.mean is bad")
    monkeypatch.setattr(ImageMaskDataModule, "setup", refuse)
    with pytest.raises(ValueError, match=r"^data\.mean must have one value per channel of the "
                                         r"model's input \(3\), got \[0\.5, 0\.5\]$"):
        train(_config(tmp_path, "data.mean=[0.5,0.5]"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_says_use_trainer_cpu(tmp_path, nothing_built, trainer):
    with pytest.raises(ValueError, match=r"^trainer\.accelerator=gpu: this machine has no GPU "
                                         r"that torch can use .*; use trainer=cpu$"):
        train(_config(tmp_path, f"trainer={trainer}"))


def test_a_head_wider_than_the_data_s_classes_is_said_at_training_time(tmp_path, caplog):
    # 9 outputs, 4 class folders and no data.class_index: labels 0..3 train outputs 0..3
    cfg = _config(tmp_path, "model.num_classes=9", "debug=fast_dev_run")
    with caplog.at_level(logging.WARNING, logger="robustft"):
        train(cfg)
    (line,) = [record.getMessage() for record in caplog.records
               if "outputs" in record.getMessage()]
    assert line.startswith(f"data.root {tmp_path / 'pairs'} has 4 classes but the model has 9 "
                           "outputs: labels 0..3 train the first 4 outputs and the other 5")
    assert "model.num_classes=4" in line and "data.class_index" in line


def test_a_class_with_fewer_images_than_train_per_class_is_one_warning(tmp_path, caplog):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    for extra in range(2):  # c2 gets 5 images, the others keep 3
        for kind in ("images", "masks"):
            source = root / kind / "c2" / "img0.png"
            (root / kind / "c2" / f"extra{extra}.png").write_bytes(source.read_bytes())
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     train_per_class=4, val_per_class=1, class_fraction=1.0)
    with caplog.at_level(logging.WARNING, logger="robustft"):
        datamodule.setup()
    (line,) = [record.getMessage() for record in caplog.records]
    assert line == ("data.train_per_class=4: 3 of 4 training classes have fewer images, all of "
                    "them taken: c0 (3), c1 (3), c3 (3)")
    assert len(datamodule.selection.train) == 3 + 3 + 4 + 3
