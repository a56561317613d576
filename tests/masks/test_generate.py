"""Mask generation over a folder, end to end with a random tiny ViT: files, manifest,
resume, bad input, and the robustft-masks entry point."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from robustft.backbones import create_model
from robustft.data.mask_manifest import (
    TOKENCUT_MANIFEST_FIELDS,
    TOKENCUT_MANIFEST_NAME,
    kept_mask_pairs,
    read_tokencut_manifest,
)
from robustft.masks.compare import compare_with_true_masks
from robustft.masks.generate import generate_masks
from robustft.masks.inputs import find_images
from robustft.masks.run import check_required, run_masks
from robustft.masks.settings import SETTINGS_NAME, TokenCutSettings

TINY_VIT = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_tiny_patch16_224", **TINY_VIT).eval()


def square_image(
    size: tuple[int, int] = (64, 64), box: tuple[int, int, int, int] = (16, 20, 40, 44)
):
    """A bright square on a dark background, (H, W) = size; box = (top, left, bottom, right)."""
    image = np.full((*size, 3), 20, dtype=np.uint8)
    top, left, bottom, right = box
    image[top:bottom, left:right] = 230
    return Image.fromarray(image)


def make_generic_dataset(root: Path) -> list[str]:
    """images/<class>/<name> with 2 classes; one image not square and not a multiple of
    the patch. Returns the image paths relative to root."""
    names = []
    for class_name in ("cat", "dog"):
        folder = root / "images" / class_name
        folder.mkdir(parents=True)
        for i in range(3):
            path = folder / f"{class_name}_{i}.png"
            square_image(box=(8 + 4 * i, 10, 40, 44)).save(path)
            names.append(path.relative_to(root).as_posix())
    odd = root / "images" / "dog" / "odd.jpg"
    square_image((50, 70), (10, 20, 30, 50)).save(odd)
    names.append(odd.relative_to(root).as_posix())
    return sorted(names)


def test_end_to_end_masks_manifest_and_resume(tmp_path: Path, tiny_vit, caplog) -> None:
    data = tmp_path / "data"
    images = make_generic_dataset(data)
    out = tmp_path / "out"
    summary = generate_masks(tiny_vit, data, out, TokenCutSettings(), batch_size=3, progress=False)
    assert (summary.total, summary.written, summary.resumed, summary.skipped) == (7, 7, 0, [])

    rows = read_tokencut_manifest(out / TOKENCUT_MANIFEST_NAME)
    with open(out / TOKENCUT_MANIFEST_NAME, newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == TOKENCUT_MANIFEST_FIELDS
    assert [row.image for row in rows] == images
    for row in rows:
        assert row.status == "written" and row.refined is False and row.kept is not None
        image = Image.open(data / row.image)
        mask_path = out / row.mask
        assert row.mask == f"masks/{Path(row.image).parent.name}/{Path(row.image).stem}.png"
        mask = Image.open(mask_path)
        assert mask.mode == "L" and mask.size == image.size == (row.width, row.height)
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        assert row.foreground_fraction == pytest.approx((values == 255).mean(), abs=1e-6)
        assert row.kept == (row.foreground_fraction >= TokenCutSettings().min_foreground_fraction)
    assert (out / SETTINGS_NAME).is_file()
    assert "resized" in (out / SETTINGS_NAME).read_text()

    # Rerun: nothing recomputed, files untouched, rows kept.
    mtimes = {row.mask: (out / row.mask).stat().st_mtime_ns for row in rows}
    again = generate_masks(tiny_vit, data, out, TokenCutSettings(), progress=False)
    assert (again.written, again.resumed) == (0, 7)
    assert {m: (out / m).stat().st_mtime_ns for m in mtimes} == mtimes
    rerun_rows = read_tokencut_manifest(out / TOKENCUT_MANIFEST_NAME)
    assert [r.foreground_fraction for r in rerun_rows] == [r.foreground_fraction for r in rows]
    assert all(r.status == "resumed" and r.refined is False for r in rerun_rows)

    # A deleted mask is recomputed; without a manifest the rows come from the PNGs.
    (out / rows[0].mask).unlink()
    (out / TOKENCUT_MANIFEST_NAME).unlink()
    third = generate_masks(tiny_vit, data, out, TokenCutSettings(), progress=False)
    assert (third.written, third.resumed) == (1, 6)
    third_rows = {r.image: r for r in read_tokencut_manifest(out / TOKENCUT_MANIFEST_NAME)}
    assert third_rows[rows[0].image].status == "written"
    for row in rows[1:]:
        recomputed = third_rows[row.image]
        assert recomputed.foreground_fraction == pytest.approx(row.foreground_fraction, abs=1e-6)
        assert recomputed.refined is None  # unknown from a PNG alone


def test_minimum_foreground_filter_is_reevaluated(tmp_path: Path, tiny_vit) -> None:
    data = tmp_path / "data"
    make_generic_dataset(data)
    strict = TokenCutSettings(min_foreground_fraction=0.99)
    summary = generate_masks(tiny_vit, data, data, strict, progress=False)
    assert summary.kept == 0
    rows = read_tokencut_manifest(data / TOKENCUT_MANIFEST_NAME)
    assert all(row.kept is False and "min_foreground_fraction" in row.reason for row in rows)
    assert kept_mask_pairs(data) == []
    # Masks were written next to the images (output_dir = input_dir); a rerun with a
    # looser filter keeps them without recomputing.
    assert (data / "masks" / "cat" / "cat_0.png").is_file()
    loose = generate_masks(
        tiny_vit, data, data, TokenCutSettings(min_foreground_fraction=0.0), progress=False
    )
    assert (loose.written, loose.kept) == (0, 7)
    assert len(kept_mask_pairs(data)) == 7


def test_refine_on_imagefolder_layout(tmp_path: Path, tiny_vit) -> None:
    data = tmp_path / "train"
    (data / "n01440764").mkdir(parents=True)
    (data / "n01443537").mkdir(parents=True)
    square_image().save(data / "n01440764" / "a.JPEG", format="JPEG")
    square_image((48, 80), (8, 30, 40, 60)).save(data / "n01443537" / "b.png")
    (data / "n01443537" / "notes.txt").write_text("not an image")
    layout, entries = find_images(data)
    assert layout == "imagefolder" and len(entries) == 2
    out = tmp_path / "masks_out"
    summary = generate_masks(
        tiny_vit, data, out, TokenCutSettings(refine=True), batch_size=8, progress=False
    )
    assert summary.written == 2
    rows = read_tokencut_manifest(out / TOKENCUT_MANIFEST_NAME)
    assert [row.image for row in rows] == ["n01440764/a.JPEG", "n01443537/b.png"]
    assert all(row.refined is True for row in rows)
    assert Image.open(out / "masks" / "n01443537" / "b.png").size == (80, 48)


def test_bad_input_is_a_reported_skip(tmp_path: Path, tiny_vit, caplog) -> None:
    data = tmp_path / "data"
    make_generic_dataset(data)
    (data / "images" / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    square_image((64, 64)).save(data / "images" / "cat" / "truncated.png")
    truncated = data / "images" / "cat" / "truncated.png"
    truncated.write_bytes(truncated.read_bytes()[:100])
    square_image((6, 40), (0, 0, 3, 10)).save(data / "images" / "dog" / "thin.png")
    with caplog.at_level(logging.WARNING):
        summary = generate_masks(tiny_vit, data, tmp_path / "out", progress=False)
    assert summary.written == 7
    skipped = dict(summary.skipped)
    assert set(skipped) == {
        "images/cat/corrupt.jpg",
        "images/cat/truncated.png",
        "images/dog/thin.png",
    }
    assert "unreadable" in skipped["images/cat/corrupt.jpg"]
    assert "unreadable" in skipped["images/cat/truncated.png"]
    assert "smaller than one 8x8 patch" in skipped["images/dog/thin.png"]
    for name in ("corrupt.jpg", "truncated.png", "thin.png"):
        assert name in caplog.text
    rows = {row.image: row for row in read_tokencut_manifest(tmp_path / "out" / TOKENCUT_MANIFEST_NAME)}
    assert len(rows) == 10
    for image, reason in skipped.items():
        assert rows[image].status == "skipped" and rows[image].reason == reason
        assert rows[image].mask == "" and rows[image].kept is None
    assert not (tmp_path / "out" / "masks" / "cat" / "corrupt.png").exists()


def test_model_without_attention_blocks_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_generic_dataset(data)
    with pytest.raises(TypeError, match="ResNet"):
        generate_masks(timm.create_model("resnet18"), data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_input_folder_errors(tmp_path: Path, tiny_vit) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty" / "images" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        find_images(tmp_path / "empty")
    clash = tmp_path / "clash" / "images" / "cls"
    clash.mkdir(parents=True)
    square_image().save(clash / "x.png")
    square_image().save(clash / "x.jpg")
    with pytest.raises(ValueError, match="masks/cls/x.png"):
        find_images(tmp_path / "clash")


def test_cli_config_and_required_keys(tmp_path: Path) -> None:
    with initialize_config_module(version_base="1.3", config_module="robustft.configs"):
        cfg = compose(config_name="masks")
        assert cfg.model.name == "vit_small_patch16_224.dino"
        assert cfg.tau == 0.2 and cfg.eps == 1e-5 and cfg.refine is False
        assert cfg.min_foreground_fraction * 224 * 224 == pytest.approx(520, abs=0.1)
        for key in ("model.weights_file", "model.kwargs", "batch_size", "num_workers", "device"):
            assert key.split(".")[-1] in (cfg.model if key.startswith("model.") else cfg)
        with pytest.raises(ValueError, match="input_dir, output_dir"):
            check_required(cfg)

        data = tmp_path / "data"
        make_generic_dataset(data)
        kwargs = ",".join(f"{k}:{v}" for k, v in TINY_VIT.items())
        cfg = compose(
            config_name="masks",
            overrides=[
                f"input_dir={data}",
                f"output_dir={data}",
                "model.name=vit_tiny_patch16_224",
                "model.pretrained=false",
                f"model.kwargs={{{kwargs}}}",
                "num_workers=0",
                "progress=false",
                "device=cpu",
            ],
        )
        run_masks(cfg)
    assert len(read_tokencut_manifest(data / TOKENCUT_MANIFEST_NAME)) == 7


def test_console_entry_point(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_generic_dataset(data)
    kwargs = ",".join(f"{k}:{v}" for k, v in TINY_VIT.items())
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # One subprocess only (importing torch + timm costs ~5-10 s); the missing-key error
    # is checked in-process above.
    command = [sys.executable, "-m", "robustft.cli.masks", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(
        command
        + [
            f"input_dir={data}",
            f"output_dir={tmp_path / 'out'}",
            "model.name=vit_tiny_patch16_224",
            "model.pretrained=false",
            f"model.kwargs={{{kwargs}}}",
            "num_workers=2",
            "refine=true",
            "batch_size=4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "7 masks written" in done.stdout
    assert len(list((tmp_path / "out" / "masks").rglob("*.png"))) == 7


def test_compare_with_true_masks(tmp_path: Path, tiny_vit) -> None:
    data = tmp_path / "data"
    make_generic_dataset(data)
    out = tmp_path / "out"
    generate_masks(tiny_vit, data, out, progress=False)
    rows = read_tokencut_manifest(out / TOKENCUT_MANIFEST_NAME)
    truth_root = tmp_path / "truth"
    for row in rows:
        # Truth = the written mask itself, one of them at another size (resized nearest).
        (truth_root / row.mask).parent.mkdir(parents=True, exist_ok=True)
        mask = Image.open(out / row.mask)
        if row is rows[0]:
            mask = mask.resize((row.width * 2, row.height * 2), Image.NEAREST)
        mask.save(truth_root / row.mask)
    scores = compare_with_true_masks(out, truth_root)
    assert scores == {row.image: 1.0 for row in rows}
    inverted = Image.fromarray(255 - np.asarray(Image.open(out / rows[1].mask)))
    inverted.save(truth_root / rows[1].mask)
    assert compare_with_true_masks(out, truth_root)[rows[1].image] == 0.0


def test_find_images_names_two_images_that_would_write_one_mask(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "dog"
    folder.mkdir(parents=True)
    for name in ["a.jpg", "a.png", "b.png", "._a.jpg"]:  # the hidden file is skipped
        Image.new("RGB", (8, 8)).save(folder / name, format="PNG")
    with pytest.raises(ValueError, match=r"images/dog/a\.jpg and images/dog/a\.png would both "
                                         r"write masks/dog/a\.png"):
        find_images(tmp_path)
    (folder / "a.png").unlink()
    layout, entries = find_images(tmp_path)
    assert layout == "generic"
    assert [(e.relative, e.mask_relative) for e in entries] == [
        ("images/dog/a.jpg", "masks/dog/a.png"), ("images/dog/b.png", "masks/dog/b.png")]
