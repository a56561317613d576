"""Captions per image (robustft.data.captions): the captions file, the manifest's caption
column, one line per bad input, and batches that keep each caption with its image."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from fixtures.generic_layout import make_generic_layout

from robustft.data.captions import read_captions
from robustft.data.datamodule import ImageMaskDataModule
from robustft.data.generic import read_selection

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _captions_for(root: Path, path: Path, *, skip: str | None = None) -> Path:
    """One caption per image: ``"<class> number <k>"``, with a comma to need quoting."""
    rows = [["image", "caption"]]
    for image in sorted((root / "images").rglob("*.png")):
        relative = image.relative_to(root).as_posix()
        if relative != skip:
            rows.append([relative, f"{image.parent.name}, number {image.stem[3:]}"])
    return _write(path, rows)


def _datamodule(root: Path, **kwargs) -> ImageMaskDataModule:
    settings = {"crop_size": 32, "mean": MEAN, "std": STD, "train_per_class": None,
                "val_per_class": None, "class_fraction": 1.0, "batch_size": 4, **kwargs}
    return ImageMaskDataModule(str(root), **settings)


def test_captions_file_gives_every_image_its_caption_and_the_manifest_keeps_them(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2, size=(36, 36))
    captions = _captions_for(root, tmp_path / "captions.csv")
    data = _datamodule(root, captions=str(captions), manifest_out=str(tmp_path / "m.csv"))
    data.setup()
    assert {(r.image_path.name, r.class_name, r.caption) for r in data.selection.train} == {
        (f"img{i}.png", f"c{k}", f"c{k}, number {i}") for k in range(2) for i in range(2)}
    # the written manifest has the caption column, and reads back with the same captions
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header == "split,label,class_name,image,mask,caption"
    again = read_selection(tmp_path / "m.csv", root, ["c0", "c1"])
    assert [r.caption for r in again.train] == [r.caption for r in data.selection.train]
    reused = _datamodule(root, manifest=str(tmp_path / "m.csv"))
    reused.setup()
    assert [r.caption for r in reused.selection.train] == [r.caption for r in again.train]


def test_batches_keep_each_caption_with_its_image_under_shuffling(tmp_path):
    # 8 classes of 2 images: each image's foreground colour gives its class, which its
    # caption names; the train loader shuffles (seeded) and crops at random
    root = make_generic_layout(tmp_path / "pairs", num_classes=8, per_class=2, size=(36, 36))
    captions = _captions_for(root, tmp_path / "captions.csv")
    data = _datamodule(root, captions=str(captions), batch_size=5, hflip=0.5)
    data.setup()
    seen = []
    for batch in data.train_dataloader():
        assert isinstance(batch["caption"], list) and len(batch["caption"]) == len(batch["image"])
        for image, mask, caption, label in zip(batch["image"], batch["mask"], batch["caption"],
                                               batch["label"]):
            k = int(caption.split(",")[0][1:])
            assert int(label) == k
            # the fixture paints the object (200, 40 k mod 255, 100); read it back
            green = (image[1][mask > 0.5] * STD[1] + MEAN[1]) * 255
            assert abs(float(green.median()) - (40 * k) % 255) < 8, (caption, float(green.median()))
            seen.append(caption)
    assert sorted(seen) == sorted(f"c{k}, number {i}" for k in range(8) for i in range(2))
    assert seen != sorted(seen)  # the order was shuffled


@pytest.mark.parametrize("rows, message", [
    ([["path", "caption"], ["images/c0/img0.png", "a"]],
     r"captions\.csv line 1: expected the header image,caption, got \['path', 'caption'\]"),
    ([["image", "caption"], ["images/c0/img0.png", "  "]],
     r"captions\.csv line 2: empty caption for images/c0/img0\.png; every image needs a prompt"),
    ([["image", "caption"], ["images/c0/img0.png", "a dog"], ["images/c0/nope.png", "a cat"]],
     r"captions\.csv line 3: 'images/c0/nope\.png' is not an image under .*pairs"),
    ([["image", "caption"], ["../outside.png", "a cat"]],
     r"captions\.csv line 2: '\.\./outside\.png' is not an image under"),
    ([["image", "caption"], ["images/c0/img0.png", "a dog"], ["images/c0/img0.png", "a cat"]],
     r"captions\.csv line 3: images/c0/img0\.png is captioned again \(first at line 2\)"),
    ([["image", "caption"], ["images/c0/img0.png", "a dog", "extra"]],
     r"captions\.csv line 2: expected 2 fields \(image,caption; quote a caption that has a "
     r"comma\), got 3"),
])
def test_bad_captions_file_is_one_line_naming_file_and_line(tmp_path, rows, message):
    root = make_generic_layout(tmp_path / "pairs", num_classes=1, per_class=2, size=(36, 36))
    (tmp_path / "outside.png").write_bytes((root / "images/c0/img0.png").read_bytes())
    path = _write(tmp_path / "captions.csv", rows)
    with pytest.raises((ValueError, FileNotFoundError), match=f"^data.captions: .*{message}") as error:
        read_captions(path, root)
    assert "\n" not in str(error.value)


def test_a_selected_image_without_caption_and_a_missing_file_are_one_line(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2, size=(36, 36))
    captions = _captions_for(root, tmp_path / "captions.csv", skip="images/c1/img0.png")
    with pytest.raises(ValueError, match=r"^data\.captions: .*captions\.csv has no caption for "
                                         r"images/c1/img0\.png \(selected for train\)"):
        _datamodule(root, captions=str(captions)).setup()
    with pytest.raises(FileNotFoundError, match=r"^data\.captions: captions file not found: "):
        _datamodule(root, captions=str(tmp_path / "none.csv")).setup()


def test_manifest_caption_column_bad_rows_are_one_line(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=1, per_class=2, size=(36, 36))
    head = ["split", "label", "class_name", "image", "mask", "caption"]
    manifest = _write(tmp_path / "m.csv", [
        head, ["train", "0", "c0", "images/c0/img0.png", "masks/c0/img0.png", "a dog"],
        ["val", "0", "c0", "images/c0/img1.png", "masks/c0/img1.png", ""]])
    with pytest.raises(ValueError, match=r"m\.csv line 3: empty caption for images/c0/img1\.png"):
        read_selection(manifest, root, ["c0"])
    wrong = _write(tmp_path / "w.csv", [head[:5] + ["prompt"]])
    with pytest.raises(ValueError, match=r"w\.csv: expected columns .* optionally a last column "
                                         r"'caption'"):
        read_selection(wrong, root, ["c0"])
    plain = _write(tmp_path / "p.csv", [
        head[:5], ["train", "0", "c0", "images/c0/img0.png", "masks/c0/img0.png"]])
    assert read_selection(plain, root, ["c0"]).train[0].caption is None


def test_uncaptioned_batches_have_no_caption_key(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=1, per_class=2, size=(36, 36))
    data = _datamodule(root)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert "caption" not in batch and isinstance(batch["label"], torch.Tensor)
