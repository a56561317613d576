"""The training-time overlay callback in tiny runs: every N epochs one grid of the same
validation images, in TensorBoard and as a PNG in the run directory (and wandb offline),
without changing what the run trains."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from robustft.checkpoints import load_checkpoint
from robustft.evaluation.explain.overlay_grid import HEADER_HEIGHT
from robustft.training.overlays import RelevanceOverlays, _log_image
from robustft.training.run import train

TINY_MODEL = ["model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.weights_file=null",
              "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=2",
              "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]
KEY = "val/relevance_overlays"


def _run(tmp_path, *overrides: str, validate_best: bool = False):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"data.root={root}", "data.num_workers=0", "data.val_per_class=3",
            f"paths.output_dir={tmp_path / 'run'}", "model.num_classes=4", "trainer=cpu",
            f"validate_best={str(validate_best).lower()}", *TINY_MODEL, *overrides])
    return train(cfg)


def _cells(png: Image.Image, column: int) -> np.ndarray:
    """Column ``column`` of a grid of 32 px cells at scale 2 (64 px, 4 px gaps), below the
    band of column titles (which names the epoch)."""
    left = column * (64 + 4)
    return np.asarray(png)[HEADER_HEIGHT:, left:left + 64]


def test_every_n_epochs_the_same_images_go_to_tensorboard_and_png(tmp_path):
    _run(tmp_path, "trainer.max_epochs=4", "logger=many",
         "callbacks.relevance_overlays.every_n_epochs=2", "callbacks.relevance_overlays.num_images=4")
    folder = tmp_path / "run" / "relevance_overlays"
    assert sorted(p.name for p in folder.glob("*.png")) == ["epoch_001.png", "epoch_003.png"]
    with (folder / "images.csv").open() as handle:
        chosen = list(csv.DictReader(handle))
    # evenly spaced over the 6 validation images (2 held-out classes x 3)
    assert [int(row["index"]) for row in chosen] == [0, 2, 3, 5]
    assert len({row["image"] for row in chosen}) == 4
    pngs = [Image.open(folder / name).convert("RGB") for name in ("epoch_001.png", "epoch_003.png")]
    # 4 rows of image | mask | overlay, same pictures and masks both times
    assert pngs[0].size == pngs[1].size == (3 * 64 + 2 * 4, pngs[0].size[1])
    for column in (0, 1):
        np.testing.assert_array_equal(_cells(pngs[0], column), _cells(pngs[1], column))
    events = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").rglob("events.*")).parent),
                              size_guidance={"images": 0})
    events.Reload()
    images = events.Images(KEY)
    assert len(images) == 2 and images[0].step < images[1].step
    for event, png in zip(images, pngs):
        logged = Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")
        np.testing.assert_array_equal(np.asarray(logged), np.asarray(png))
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "RelevanceOverlays" in k]
    assert state == {"indices": [0, 2, 3, 5]}


def test_the_callback_does_not_change_what_is_trained(tmp_path):
    with_overlays = _run(tmp_path / "a", "trainer.max_epochs=2",
                         "callbacks.relevance_overlays.every_n_epochs=1")
    without = _run(tmp_path / "b", "trainer.max_epochs=2", "callbacks.relevance_overlays=null")
    assert len(list((tmp_path / "a" / "run" / "relevance_overlays").glob("*.png"))) == 2
    assert not (tmp_path / "b" / "run" / "relevance_overlays").exists()
    weights_a = load_checkpoint(with_overlays.last_checkpoint)["state_dict"]
    weights_b = load_checkpoint(without.last_checkpoint)["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def test_wandb_gets_a_wandb_image(tmp_path, monkeypatch):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    # wandb keeps the settings of its first use in this process (WANDB_MODE=disabled), and
    # the logger would reuse a run an earlier test left open
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()
    monkeypatch.setenv("WANDB_MODE", "offline")
    try:
        logger = WandbLogger(project="robustft-test", save_dir=str(tmp_path), offline=True)
        picture = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
                                  .repeat(4, 0).repeat(4, 1))
        _log_image(logger, KEY, picture, step=7, caption="epoch 0")
        logger.experiment.finish()
    finally:
        wandb.teardown()
    (media,) = tmp_path.rglob("media/images/val/relevance_overlays_*.png")
    np.testing.assert_array_equal(np.asarray(Image.open(media).convert("RGB")), np.asarray(picture))


@pytest.mark.parametrize("key", ["every_n_epochs", "num_images"])
def test_bad_settings_name_their_key(key):
    with pytest.raises(ValueError, match=f"^callbacks.relevance_overlays.{key} must be >= 1, got 0$"):
        RelevanceOverlays(**{key: 0})


def test_the_validation_after_fit_is_named_for_the_checkpoint_it_draws(tmp_path):
    """A one-epoch run drew ``epoch_001.png`` after fitting: the validation of the best
    checkpoint, which Lightning runs with the epoch counter past the last epoch."""
    result = _run(tmp_path / "a", "trainer.max_epochs=1", "callbacks.relevance_overlays.every_n_epochs=1",
                  "callbacks.relevance_overlays.num_images=4", validate_best=True)
    assert result.best_checkpoint.name == "best-000.ckpt"
    folder = tmp_path / "a" / "run" / "relevance_overlays"
    assert sorted(p.name for p in folder.glob("*.png")) == ["epoch_000.png", "validate_best-000.png"]
    during, after = (np.asarray(Image.open(folder / name).convert("RGB"))
                     for name in ("epoch_000.png", "validate_best-000.png"))
    # one epoch: the best checkpoint holds the weights drawn after it, the same overlays
    for column in (0, 1, 2):
        np.testing.assert_array_equal(_cells(Image.fromarray(during), column),
                                      _cells(Image.fromarray(after), column))
    assert not np.array_equal(during[:HEADER_HEIGHT], after[:HEADER_HEIGHT])  # the titles differ
    # drawn whatever every_n_epochs says: the picture of the weights the run keeps
    _run(tmp_path / "b", "trainer.max_epochs=1", validate_best=True)
    assert [p.name for p in (tmp_path / "b" / "run" / "relevance_overlays").glob("*.png")] == [
        "validate_best-000.png"]


def test_the_grid_has_a_legend_with_the_colour_bar(tmp_path):
    from matplotlib import colormaps

    from robustft.evaluation.explain.overlay_grid import colorbar_box, legend_height

    _run(tmp_path, "trainer.max_epochs=1", "callbacks.relevance_overlays.every_n_epochs=1",
         "callbacks.relevance_overlays.num_images=2")
    picture = np.asarray(Image.open(tmp_path / "run" / "relevance_overlays" / "epoch_000.png")
                         .convert("RGB"))
    lines = ["explained: each image's label (relevance.target=label)",
             "colour: relevance for that class, each map scaled to its own min-max"]
    width = 3 * 64 + 2 * 4
    grid_height = picture.shape[0] - legend_height(lines, width)
    left, top, right, bottom = colorbar_box((width, grid_height), lines)
    expected = (colormaps["jet"](np.linspace(0, 1, right - left))[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(picture[top:bottom, left:right],
                                  np.repeat(expected[None], bottom - top, axis=0))
