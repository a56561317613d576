"""experiment=demo_real: the stand-in head's images (the tied scenes' objects greyed, the
plain backdrops whole) and the composed recipe."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from robustft.demo.stand_in import head_images


def _pretrain(root):
    """Two classes, a tied scene (background 0 / 1) and a plain backdrop (-1) each."""
    rows = []
    for label, name in enumerate(("00_disk", "01_square")):
        for i, background in enumerate((label, -1)):
            pixels = np.full((8, 8, 3), 200, np.uint8)
            mask = np.zeros((8, 8), np.uint8)
            mask[2:5, 2:5] = 255
            pixels[mask > 0] = (10, 20, 30)
            path = root / "pretrain" / "images" / name / f"{i}.png"
            mask_path = root / "pretrain" / "masks" / name / f"{i}.png"
            for p in (path, mask_path):
                p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            Image.fromarray(mask).save(mask_path)
            rows.append({"path": f"images/{name}/{i}.png", "mask_path": f"pretrain/masks/{name}/{i}.png",
                         "class": name, "background": background})
    with open(root / "pretrain" / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "pretrain"


def test_backgrounds_grey_the_objects_of_tied_scenes_only(tmp_path):
    folder = head_images(_pretrain(tmp_path), tmp_path / "head", "backgrounds", None, 0.28)
    for name in ("00_disk", "01_square"):
        scene = np.asarray(Image.open(folder / name / "0.png"))
        plain = np.asarray(Image.open(folder / name / "1.png"))
        assert (scene[2:5, 2:5] == 71).all() and (scene[0, 0] == 200).all()
        assert (plain[2:5, 2:5] == (10, 20, 30)).all()
    only = head_images(tmp_path / "pretrain", tmp_path / "only", "backgrounds_only", None, 0.28)
    assert sorted(p.relative_to(only).as_posix() for p in only.rglob("*.png")) == [
        "00_disk/0.png", "01_square/0.png"]
    scenes = head_images(tmp_path / "pretrain", tmp_path / "all", "scenes", 1, 0.28)
    assert sorted(p.name for p in scenes.rglob("*.png")) == ["0.png", "0.png"]
    assert (np.asarray(Image.open(scenes / "00_disk" / "0.png"))[3, 3] == (10, 20, 30)).all()
    with pytest.raises(ValueError, match="pretrain.head_data"):
        head_images(tmp_path / "pretrain", tmp_path / "x", "objects", None, 0.28)


def test_demo_real_composes_the_demo_recipe_on_the_real_backbone():
    with initialize_config_module("robustft.configs", version_base="1.3"):
        real = compose("demo", overrides=["experiment=demo_real"])
        demo = compose("demo")
    assert real.model.name == "vit_small_patch14_dinov2" and real.model.kwargs.img_size == 112
    assert real.model.probe_head.endswith("synth/real_dinov2_s14_112_probe.safetensors")
    assert list(real.loss.l2sp_exclude) == ["visual.blocks.*.attn.*"]
    for key in ("loss.lambda_fg", "loss.lambda_l2sp", "optim.optimizer.lr", "trainer.max_epochs",
                "data.train_per_class", "data.unmasked_per_class", "loss.classification"):
        parts = key.split(".")
        a, b = real, demo
        for part in parts:
            a, b = a[part], b[part]
        assert a == b, key
