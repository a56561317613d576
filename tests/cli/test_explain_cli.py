"""robustft-explain end to end: a miniature folder x a timm weights file and a robustft
checkpoint -> the PNG, .npy, maps.csv and index.md it promises; the console entry point's
defaults and its one-line errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module
from PIL import Image
from safetensors.torch import save_file

from robustft.backbones import create_model
from robustft.evaluation.explain.figures import ExplainSettings
from robustft.evaluation.explain.overlay_grid import LINE_HEIGHT, legend_height
from robustft.evaluation.explain.run import run_explain

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_OVERRIDE = "{img_size:32,patch_size:8,embed_dim:32,depth:2,num_heads:2}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain")
    pairs = make_generic_layout(root / "pairs", num_classes=2, per_class=2, size=(32, 32))
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_file(create_model("vit_tiny_patch16_224", num_classes=2, **TINY).state_dict(), str(weights))
    torch.manual_seed(1)
    finetuned = create_model("vit_tiny_patch16_224", num_classes=2, **TINY)
    checkpoint = root / "finetuned.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in finetuned.state_dict().items()},
                "hyper_parameters": {"model_config": {"name": "vit_tiny_patch16_224",
                                                      "num_classes": 2, "kwargs": TINY}}},
               checkpoint)
    return {"pairs": pairs, "weights": weights, "checkpoint": checkpoint}


def _cfg(*overrides: str):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("explain", overrides=list(overrides))


def test_folder_x_two_models_writes_png_npy_csv_and_index(workspace, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(f"image={workspace['pairs']}", f"output_dir={out}", "target=topk", "k=2",
               "device=cpu", "progress=false",
               "model.name=vit_tiny_patch16_224", f"model.weights_file={workspace['weights']}",
               "model.num_classes=2", f"model.kwargs={TINY_OVERRIDE}",
               f"+models.finetuned.checkpoint={workspace['checkpoint']}")
    result = run_explain(cfg)
    names = ["c0_img0", "c0_img1", "c1_img0", "c1_img1"]
    assert [png.name for png in result.pngs] == [f"{n}.png" for n in names]
    index = (out / "index.md").read_text()
    for name in names:
        with Image.open(out / f"{name}.png") as png:
            # 2 rows (models x 1 method) of 3 cells (image + 2 classes), each 32 px x 5
            # (the automatic scale to >= 160 px), 10 px gaps, two title lines per row, and
            # the legend (what was explained, the colour bar) below
            width = 3 * 160 + 2 * 10
            legend = legend_height(ExplainSettings(target="topk", k=2).legend(), width)
            assert png.size == (width, 2 * (2 * LINE_HEIGHT + 2 + 160) + 10 + legend)
        assert f"![{name}]({name}.png)" in index
        for model in ("vit_tiny_patch16_224", "finetuned"):
            npy = f"maps/{name}/{model}__grad_rollout.npy"
            maps = np.load(out / npy)
            assert maps.shape == (2, 4, 4) and maps.dtype == np.float32  # (T, h, w)
            assert f"]({npy})" in index
    with (out / "maps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 2 * 2
    assert {row["class_name"] for row in rows} == {"c0", "c1"}  # the folders name the 2 classes
    # top-2 of 2 classes: each model explains both, the most probable first
    first = [row for row in rows if row["image"] == "c0_img0" and row["model"] == "finetuned"]
    assert [row["position"] for row in first] == ["0", "1"]
    assert float(first[0]["probability"]) >= float(first[1]["probability"])
    assert "checkpoint `" in index and "weights file `" in index


def test_named_classes_on_one_image_and_the_single_model_shorthand(workspace, tmp_path):
    image = workspace["pairs"] / "images" / "c1" / "img0.png"
    names = tmp_path / "names.txt"
    names.write_text("zebra\nokapi\n")  # a loose image: the head's names come from a file
    cfg = _cfg(f"image={image}", f"output_dir={tmp_path}", "classes=[okapi,Zebra]", "progress=false",
               f"class_names={names}", f"model.checkpoint={workspace['checkpoint']}", "device=cpu")
    result = run_explain(cfg)
    assert [(r.model, r.class_name, r.class_index) for r in result.maps] == [
        ("vit_tiny_patch16_224", "okapi", 1), ("vit_tiny_patch16_224", "zebra", 0)]
    assert np.load(tmp_path / result.maps[0].npy).shape == (2, 4, 4)


def test_config_errors_are_named(workspace, tmp_path):
    with pytest.raises(ValueError, match=r"^no model: set model.name="):
        run_explain(_cfg(f"image={workspace['pairs']}", f"output_dir={tmp_path}"))
    with pytest.raises(ValueError, match=r"^image: missing"):
        run_explain(_cfg(f"output_dir={tmp_path}", "model.name=vit_tiny_patch16_224"))
    with pytest.raises(ValueError, match=r"set either classes=\['c0'\] or target=topk"):
        run_explain(_cfg(f"image={workspace['pairs']}", f"output_dir={tmp_path}", "classes=[c0]",
                         "target=topk", "model.name=vit_tiny_patch16_224"))


def _console(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "robustft-explain"
    return subprocess.run([str(script), *arguments], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                        "HF_HOME": str(cwd / "hf"), "ROBUSTFT_ROOT": str(cwd)})


def test_console_entry_point_writes_the_run_dir_and_offline_says_how_to_give_a_file(workspace, tmp_path):
    completed = _console(f"image={workspace['pairs']}", "max_images=1", "model.name=vit_tiny_patch16_224",
                         f"model.weights_file={workspace['weights']}", "model.num_classes=2",
                         f"model.kwargs={TINY_OVERRIDE}", "methods=[grad_rollout]", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "explain" / "runs").iterdir()
    assert (run / "index.md").is_file() and (run / "c0_img0.png").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    # the defaults: hub weights of the tag, which cannot download offline
    image = workspace["pairs"] / "images" / "c0" / "img0.png"
    completed = _console(f"image={image}", "model.name=vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                         cwd=tmp_path)
    assert completed.returncode == 1
    error = completed.stderr.strip().splitlines()[-1]
    assert error.startswith("robustft-explain: error: could not download the pretrained weights")
    assert "model.weights_file" in error


@pytest.mark.parametrize("override, key", [("target=best", "target"), ("k=three", "k"),
                                           ("backend=triton", "backend"), ("bogus=1", "bogus")])
def test_wrong_values_are_refused_at_composition_naming_the_key(override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as caught:
        _cfg("image=x.jpg", override)
    assert f"full_key: {key}" in f"{caught.value} {caught.value.__cause__}"


def test_an_empty_generic_layout_and_a_huge_image_say_what_is_wrong(workspace, tmp_path):
    empty = tmp_path / "empty"
    (empty / "images" / "c0").mkdir(parents=True)
    (empty / "masks" / "c0").mkdir(parents=True)
    model = [f"model.checkpoint={workspace['checkpoint']}", "device=cpu", "progress=false",
             f"output_dir={tmp_path / 'out'}"]
    with pytest.raises(FileNotFoundError) as caught:
        run_explain(_cfg(f"image={empty}", *model))
    assert str(caught.value).startswith(
        f"image: no images found under {empty} (its images/ folder holds no class folder with "
        "images); expected image files, class folders <class>/<name>, or images/<class>/<name>")
    image = workspace["pairs"] / "images" / "c0" / "img0.png"  # 32 x 32 = 1,024 pixels
    with pytest.raises(OSError) as caught:
        run_explain(_cfg(f"image={image}", "max_image_pixels=1000", *model))
    assert str(caught.value) == (f"image {image}: 32x32 = 1,024 pixels is above "
                                 "max_image_pixels=1000; downscale it or raise max_image_pixels")
    assert run_explain(_cfg(f"image={image}", "max_image_pixels=1024", *model)).pngs
    assert run_explain(_cfg(f"image={image}", "max_image_pixels=null", *model)).pngs
    with pytest.raises(ValueError, match=r"^max_image_pixels must be >= 1 or null"):
        run_explain(_cfg(f"image={image}", "max_image_pixels=0", *model))
