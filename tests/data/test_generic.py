"""Generic images+masks layout: scanning, seeded selection, manifests, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from PIL import Image

from robustft.data.datamodule import ImageMaskDataModule
from robustft.data.datasets import ImageMaskDataset
from robustft.data.generic import (
    read_selection,
    scan_generic_layout,
    select_records,
    write_selection,
)
from robustft.data.transforms import joint_eval_transform, joint_train_transform


def test_scan_sorted_classes_and_labels(tmp_path):
    records = scan_generic_layout(make_generic_layout(tmp_path, num_classes=3, per_class=2))
    assert list(records) == ["c0", "c1", "c2"]
    assert [r.label for r in records["c2"]] == [2, 2]
    assert records["c1"][0].mask_path == tmp_path / "masks" / "c1" / "img0.png"


def test_selection_is_seeded_sorted_and_reproducible(tmp_path):
    records = scan_generic_layout(make_generic_layout(tmp_path, num_classes=6, per_class=5))
    a = select_records(records, train_per_class=3, val_per_class=1, class_fraction=0.5, seed=0)
    b = select_records(dict(reversed(list(records.items()))), train_per_class=3,
                       val_per_class=1, class_fraction=0.5, seed=0)
    assert a == b  # independent of the order the filesystem listed things in
    assert len(a.train) == 9 and len(a.val) == 3
    train_classes = {r.class_name for r in a.train}
    assert len(train_classes) == 3 and train_classes.isdisjoint({r.class_name for r in a.val})
    others = [select_records(records, train_per_class=3, val_per_class=1, class_fraction=0.5,
                             seed=s) for s in (1, 2, 3)]
    assert any(o.train != a.train for o in others)  # the seed matters, seed 0 included


def test_manifest_round_trip_and_outside_root(tmp_path):
    root = make_generic_layout(tmp_path / "d", num_classes=4, per_class=3)
    records = scan_generic_layout(root)
    selection = select_records(records, train_per_class=2, val_per_class=1,
                               class_fraction=0.5, seed=7)
    manifest = write_selection(selection, root, tmp_path / "run" / "manifest.csv")
    assert read_selection(manifest, root, sorted(records)) == selection
    text = manifest.read_text().replace("images/c", "../d/images/c", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace("../d/images/c", "../../etc/c", 1))
    with pytest.raises(ValueError, match="outside"):
        read_selection(bad, root, sorted(records))


def test_missing_mask_file_is_named(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=2)
    (root / "masks" / "c1" / "img1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/c1/img1\.png"):
        scan_generic_layout(root)


def test_empty_class_folder_is_named(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=2)
    (root / "images" / "c9").mkdir()
    with pytest.raises(FileNotFoundError, match=r"images/c9 has no images"):
        scan_generic_layout(root)


def test_scan_reads_every_image_extension_and_skips_hidden_files(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=1, per_class=1)
    Image.new("RGB", (8, 8)).save(root / "images" / "c0" / "extra.webp")
    Image.new("L", (8, 8)).save(root / "masks" / "c0" / "extra.png")
    (root / "images" / "c0" / "._img0.jpg").write_bytes(b"\0")  # a macOS resource fork
    (root / "images" / ".thumbs").mkdir()  # hidden folder, not a class
    records = scan_generic_layout(root)
    assert list(records) == ["c0"]
    assert [r.image_path.name for r in records["c0"]] == ["extra.webp", "img0.png"]


def test_two_images_sharing_one_mask_are_named(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=1, per_class=1)
    Image.new("RGB", (8, 8)).save(root / "images" / "c0" / "img0.jpg")
    with pytest.raises(ValueError, match=r"img0.jpg and .*img0.png both pair with the mask"):
        scan_generic_layout(root)


def test_orphan_mask_folder_is_an_error_naming_it(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=1)
    (root / "masks" / "cow").mkdir()
    Image.new("L", (8, 8), 1).save(root / "masks" / "cow" / "a.png")
    (root / "masks" / ".cache").mkdir()  # hidden: not a class folder, not an orphan
    with pytest.raises(ValueError, match=r"mask folder .*masks/cow has no image folder") as error:
        scan_generic_layout(root)
    assert "\n" not in str(error.value) and str(root / "images" / "cow") in str(error.value)


def test_mask_files_without_an_image_are_counted_in_one_warning(tmp_path, caplog):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=2)
    for name in ("leftover.png", "old.png"):
        Image.new("L", (8, 8)).save(root / "masks" / "c1" / name)
    (root / "masks" / "c0" / "._img0.png").write_bytes(b"\0")  # hidden: skipped, not counted
    with caplog.at_level("WARNING", logger="robustft.data.generic"):
        records = scan_generic_layout(root)
    assert sum(len(r) for r in records.values()) == 4
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("2 mask files have no image") and "masks/c1/leftover.png" in warning


def test_missing_images_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        scan_generic_layout(tmp_path)


def test_mask_of_another_size_is_named(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=1)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "c0" / "img0.png")
    module = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                 train_per_class=1, class_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=r"masks/c0/img0\.png: the mask is 10x10 but its image"):
        # c0 is in either split: both are checked.
        module.setup()


def test_rgb_mask_is_rejected(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=1, per_class=1)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(root / "masks" / "c0" / "img0.png")
    records = scan_generic_layout(root)["c0"]
    dataset = ImageMaskDataset(records, joint_eval_transform(32, (0.5,) * 3, (0.5,) * 3))
    with pytest.raises(ValueError, match="single-channel"):
        dataset[0]


def _erode(region: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad((~region).float()[None, None], (1, 1, 1, 1), value=0.0)
    return torch.nn.functional.max_pool2d(padded, 3, stride=1)[0, 0] == 0


def test_joint_transform_keeps_image_and_mask_aligned(tmp_path):
    """The fixture paints the masked rectangle in a known colour: after random crops and
    flips, every mask pixel still sits on that colour and no other pixel does."""
    root = make_generic_layout(tmp_path, num_classes=1, per_class=3)
    records = scan_generic_layout(root)["c0"]
    transform = joint_train_transform(32, (0.0,) * 3, (1.0,) * 3, resize_ratio=1.25, hflip=0.5)
    dataset = ImageMaskDataset(records, transform)
    torch.manual_seed(0)
    for _ in range(10):
        for item in (dataset[i] for i in range(len(dataset))):
            image, mask = item["image"], item["mask"]
            assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
            assert set(mask.unique().tolist()) <= {0.0, 1.0}  # nearest: never interpolated
            red = image[0] > 0.6  # the rectangle's red channel is 200/255, background < 80/255
            # The image is resized with antialiasing and the mask with nearest neighbour, so
            # compare away from the edge (eroded by one pixel in each direction).
            inner, outer = _erode(mask.bool()), _erode(~mask.bool())
            assert red[inner].all() and not red[outer].any()
            assert inner.any()


def test_ignore_pixels_follow_the_mask():
    from robustft.data.generic import IGNORE_VALUE, ImageMaskRecord

    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    mask[:, :2] = IGNORE_VALUE
    record = ImageMaskRecord(Path("unused"), Path("unused"), 0, "c0")

    class Fixed(ImageMaskDataset):
        def __getitem__(self, index):
            return super().__getitem__(index)

    dataset = Fixed([record], joint_eval_transform(8, (0.0,) * 3, (1.0,) * 3, resize_ratio=1.0),
                    mask_decoder=lambda _path: mask)
    import robustft.data.datasets as datasets_module

    original_open = datasets_module.Image.open
    datasets_module.Image.open = lambda _path: Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    try:
        item = dataset[0]
    finally:
        datasets_module.Image.open = original_open
    assert item["ignore"][:, :2].all() and not item["ignore"][:, 2:].any()
    assert item["mask"][:4, 2:].all() and not item["mask"][4:].any()
    assert not item["mask"][:, :2].any()  # ignored pixels are not foreground


def test_only_images_filter_needs_no_mask_for_dropped_images(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=3)
    (root / "masks" / "c0" / "img2.png").unlink()  # dropped by the filter: no mask needed
    kept = {"images/c0/img0.png", "images/c0/img1.png", "images/c1/img2.png"}
    records = scan_generic_layout(root, only_images=kept)
    assert {r.image_path.relative_to(root).as_posix() for rs in records.values() for r in rs} == kept
    with pytest.raises(FileNotFoundError, match="filter"):
        scan_generic_layout(root, only_images=set())


def test_class_index_maps_folders_onto_the_model_outputs(tmp_path):
    from robustft.data.generic import read_class_index

    root = make_generic_layout(tmp_path / "pairs", num_classes=3, per_class=1)
    index_file = tmp_path / "head_order.txt"
    index_file.write_text("x\nc2\ny\nc0\nc1\n")
    records = scan_generic_layout(root, class_index=read_class_index(str(index_file)))
    assert {name: recs[0].label for name, recs in records.items()} == {"c0": 3, "c1": 4, "c2": 1}
    with pytest.raises(ValueError, match=r"c0 is not in data.class_index"):
        scan_generic_layout(root, class_index=["c1", "c2"])
    with pytest.raises(FileNotFoundError, match="data.class_index"):
        read_class_index(str(tmp_path / "nope.txt"))
    assert len(read_class_index("imagenet")) == 1000


def test_datamodule_with_imagenet_class_index(tmp_path):
    from robustft.labels import imagenet_synsets

    wnids = imagenet_synsets()
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2,
                               class_names=[wnids[7], wnids[500]])
    module = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                 class_fraction=1.0, class_index="imagenet")
    module.setup("fit")
    assert sorted({r.label for r in module.selection.train}) == [7, 500]
    assert module.num_classes == 1000


def test_cached_decoding_gives_the_same_items_without_rereading(tmp_path):
    root = make_generic_layout(tmp_path, num_classes=2, per_class=2)
    records = [r for recs in scan_generic_layout(root).values() for r in recs]
    transform = joint_eval_transform(32, (0.5,) * 3, (0.5,) * 3)
    plain = ImageMaskDataset(records, transform)
    cached = ImageMaskDataset(records, transform, cache_decoded=True)
    first = [cached[i] for i in range(len(records))]
    for i, item in enumerate(first):
        assert torch.equal(plain[i]["image"], item["image"]) and plain[i]["label"] == item["label"]
    for record in records:  # a second epoch must not need the files any more
        record.image_path.unlink()
        record.mask_path.unlink()
    for i, item in enumerate(first):
        again = cached[i]
        assert torch.equal(again["image"], item["image"]) and torch.equal(again["mask"], item["mask"])
    with pytest.raises(FileNotFoundError):
        plain[0]
