"""Selection-time checks: every selected pair is decoded before any model step (a corrupt
or truncated file is one line naming it), and masks without foreground are counted on the
exact selection, excluded or kept per ``data.empty_masks``, and listed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import fixtures.miniature as miniature
import numpy as np
import pytest
from fixtures.generic_layout import make_generic_layout, truncate_file, write_not_an_image
from PIL import Image

from robustft.data.datamodule import ImageMaskDataModule, ImageNetSDataModule
from robustft.data.generic import read_selection, scan_generic_layout
from robustft.labels import imagenet_synsets

NORM = {"crop_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3}


def _module(root: Path, **kwargs) -> ImageMaskDataModule:
    settings = {"train_per_class": 2, "val_per_class": 1, "class_fraction": 0.5, "seed": 0}
    return ImageMaskDataModule(str(root), **NORM, **(settings | kwargs))


def _drawn(root: Path, **kwargs):
    """The selection the module draws, from an intact copy of the layout."""
    module = _module(root, **kwargs)
    module.setup()
    return module.selection


def _single_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("damage", ["truncated_png", "truncated_jpeg", "not_an_image"])
def test_a_broken_selected_image_is_one_line_at_setup(tmp_path: Path, damage: str) -> None:
    root = make_generic_layout(tmp_path, num_classes=4, per_class=3)
    victim = _drawn(root).train[1].image_path
    if damage == "truncated_jpeg":  # same stem, other format: the pair keeps its mask
        with Image.open(victim) as image:
            image.save(victim.with_suffix(".jpg"), quality=90)
        victim.unlink()
        victim = victim.with_suffix(".jpg")
    if damage == "not_an_image":
        write_not_an_image(victim)
    else:
        truncate_file(victim)
        Image.open(victim).close()  # the lazy header read still succeeds
    with pytest.raises(ValueError, match="cannot decode the image") as error:
        _module(root).setup()
    message = _single_line_error(error)
    assert message.startswith(f"{victim}: ") and "fix or remove it" in message


def test_a_broken_mask_is_named_and_an_unselected_broken_image_is_not_read(tmp_path) -> None:
    root = make_generic_layout(tmp_path, num_classes=4, per_class=3)
    drawn = _drawn(root)
    selected = {r.image_path for r in drawn.train + drawn.val}
    unselected = next(r for rs in scan_generic_layout(root).values() for r in rs
                      if r.image_path not in selected)
    write_not_an_image(unselected.image_path)
    module = _module(root)
    module.setup()  # only the selected pairs are decoded
    assert module.selection == drawn
    truncate_file(drawn.val[0].mask_path)
    with pytest.raises(ValueError, match="cannot decode the mask") as error:
        _module(root).setup()
    assert _single_line_error(error).startswith(f"{drawn.val[0].mask_path}: ")


def test_a_reused_manifest_is_checked_too(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3)
    manifest = tmp_path / "run" / "selection_manifest.csv"
    module = _module(root, manifest_out=str(manifest))
    module.setup()
    truncate_file(module.selection.train[0].image_path)
    with pytest.raises(ValueError, match="cannot decode the image"):
        _module(root, manifest=str(manifest), seed=5).setup()


def test_imagenet_s_module_decodes_its_selection(tmp_path: Path) -> None:
    synsets = imagenet_synsets()
    copy = miniature.make_imagenet_s(tmp_path, synsets[:5], per_class=3)
    settings = {"num_train_classes": 2, "train_per_class": 2, "val_per_class": 1}
    module = ImageNetSDataModule(str(copy.imagenet_root), str(copy.imagenet_s_root),
                                 **NORM, **settings)
    module.setup()
    victim = module.selection.train[0].image_path
    truncate_file(victim)
    with pytest.raises(ValueError, match="cannot decode the image") as error:
        ImageNetSDataModule(str(copy.imagenet_root), str(copy.imagenet_s_root),
                            **NORM, **settings).setup()
    assert _single_line_error(error).startswith(f"{victim}: ")


def _blank(mask_path: Path) -> None:
    with Image.open(mask_path) as mask:
        Image.new("L", mask.size, 0).save(mask_path)


def _sidecar(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("policy", ["exclude", "background"])
def test_empty_masks_are_counted_on_the_exact_selection(tmp_path, caplog, policy) -> None:
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=4)
    manifest = tmp_path / "run" / "selection_manifest.csv"
    sidecar = manifest.with_name("selection_manifest_empty_masks.csv")
    with caplog.at_level(logging.WARNING, logger="robustft.data.datamodule"):
        drawn = _drawn(root, manifest_out=str(manifest))
    assert manifest.is_file() and not sidecar.exists() and not caplog.records
    emptied = [drawn.train[0], drawn.train[3], drawn.val[1]]
    one_pixel = np.zeros((40, 48), np.uint8)
    one_pixel[39, 47] = 1  # one foreground pixel is enough: not empty
    Image.fromarray(one_pixel).save(drawn.train[1].mask_path)
    selected = {r.mask_path for r in drawn.train + drawn.val}
    unselected = next(r for rs in scan_generic_layout(root).values() for r in rs
                      if r.mask_path not in selected)
    for record in [*emptied, unselected]:  # the unselected one must not be counted
        _blank(record.mask_path)
    module = _module(root, manifest_out=str(manifest), empty_masks=policy)
    with caplog.at_level(logging.WARNING, logger="robustft.data.datamodule"):
        module.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"2 of {len(drawn.train)} training and 1 of "
                                  f"{len(drawn.val)} validation masks have no foreground")
    assert str(emptied[0].mask_path) in warnings[0]
    if policy == "exclude":
        assert module.selection.train == [r for r in drawn.train if r not in emptied]
        assert module.selection.val == [r for r in drawn.val if r not in emptied]
        assert "set data.empty_masks=background" in warnings[0]
    else:
        assert module.selection == drawn
        assert "kept as background-only examples" in warnings[0]
    # the manifest holds the drawn selection (reusable as is); the sidecar names the empties
    assert read_selection(manifest, root, drawn.class_names) == drawn
    listed = _sidecar(sidecar)
    assert [(row["split"], row["mask"]) for row in listed] == [
        ("train", str(emptied[0].mask_path)), ("train", str(emptied[1].mask_path)),
        ("val", str(emptied[2].mask_path))]


def test_imagenet_s_mask_with_only_ignore_pixels_is_empty(tmp_path, caplog) -> None:
    synsets = imagenet_synsets()
    copy = miniature.make_imagenet_s(tmp_path, synsets[:4], per_class=2)
    settings = {"num_train_classes": 2, "train_per_class": 2, "val_per_class": 1}
    drawn = ImageNetSDataModule(str(copy.imagenet_root), str(copy.imagenet_s_root), **NORM,
                                **settings)
    drawn.setup()
    victim = drawn.selection.train[1].mask_path
    ids = copy.masks[victim].copy()
    ids[ids != 1000] = 0  # background and ignore only
    miniature.encode_ids(ids).save(victim)
    module = ImageNetSDataModule(str(copy.imagenet_root), str(copy.imagenet_s_root), **NORM,
                                 **settings)
    with caplog.at_level(logging.WARNING, logger="robustft.data.datamodule"):
        module.setup()
    assert "1 of 4 training and 0 of 2 validation masks" in caplog.text
    assert [r.mask_path for r in module.selection.train] == [
        r.mask_path for r in drawn.selection.train if r.mask_path != victim]


def test_a_split_left_empty_by_exclusion_is_an_error(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=2, per_class=2)
    drawn = _drawn(root)
    for record in drawn.train:
        _blank(record.mask_path)
    with pytest.raises(ValueError, match="data.empty_masks") as error:
        _module(root).setup()
    assert "training" in _single_line_error(error)
    module = _module(root, empty_masks="background")
    module.setup()
    assert module.selection == drawn


def test_unknown_empty_masks_value_names_the_key(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=2, per_class=1)
    with pytest.raises(ValueError, match=r"data.empty_masks.*'exclude' or 'background'.*'keep'"):
        _module(root, empty_masks="keep")
