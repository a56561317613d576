"""Images without masks (data.unmasked_root): the draw per class, the labels of the masked
layout, the masked selection never drawn, every drawn image once per epoch beside the pairs
(which are the batches they would be without them), and one-line errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from PIL import Image

from robustft.data.datamodule import ImageMaskDataModule
from robustft.data.layout import DatasetLayoutError
from robustft.data.unmasked import batch_size_for_steps, select_unmasked_images

LABELS = {"c0": 0, "c1": 1, "c2": 2}


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return make_generic_layout(tmp_path_factory.mktemp("pairs"), num_classes=3, per_class=6,
                               size=(32, 32))


def datamodule(root: Path, **unmasked) -> ImageMaskDataModule:
    module = ImageMaskDataModule(str(root), crop_size=32, mean=(0.0,) * 3, std=(1.0,) * 3,
                                 train_per_class=2, val_per_class=1, class_fraction=1.0,
                                 batch_size=2, resize_ratio=1.0, hflip=0.0, **unmasked)
    module.setup("fit")
    return module


def test_draws_per_class_with_the_layout_s_labels_and_the_seed(layout):
    drawn = select_unmasked_images(layout / "images", LABELS, per_class=4, seed=0)
    assert Counter(r.class_name for r in drawn) == {"c0": 4, "c1": 4, "c2": 4}
    assert all(r.label == LABELS[r.class_name] for r in drawn)
    assert all(r.image_path.parent.name == r.class_name for r in drawn)
    again = select_unmasked_images(layout / "images", LABELS, per_class=4, seed=0)
    other = select_unmasked_images(layout / "images", LABELS, per_class=4, seed=1)
    assert drawn == again and drawn != other
    everything = select_unmasked_images(layout / "images", LABELS, per_class=None, seed=0)
    assert len(everything) == 18


def test_excluded_images_are_never_drawn(layout):
    excluded = [layout / "images" / "c0" / f"img{i}.png" for i in range(5)]
    drawn = select_unmasked_images(layout / "images", LABELS, per_class=None, seed=0,
                                   exclude=excluded)
    assert [r.image_path.name for r in drawn if r.class_name == "c0"] == ["img5.png"]
    with pytest.raises(DatasetLayoutError, match=r"c0 has no images \(besides the masked"):
        select_unmasked_images(layout / "images", LABELS, per_class=None, seed=0,
                               exclude=[*excluded, layout / "images" / "c0" / "img5.png"])


def test_a_class_folder_the_masked_images_do_not_have_is_one_line(layout):
    with pytest.raises(DatasetLayoutError) as error:
        select_unmasked_images(layout / "images", {"c0": 0, "c1": 1}, per_class=2, seed=0)
    assert str(error.value).startswith("data.unmasked_root: class folder ")
    assert "c2 is not a class of the masked images" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(DatasetLayoutError, match=r"^data.unmasked_root: .* has no class folders"):
        select_unmasked_images(layout / "masks" / "c0", LABELS, per_class=2, seed=0)


@pytest.mark.parametrize(("images", "steps", "expected"),
                         [(200, 25, 8), (201, 25, 9), (5, 25, 1), (7, 1, 7), (3, 0, 3)])
def test_batch_size_spreads_the_images_over_the_steps(images, steps, expected):
    assert batch_size_for_steps(images, steps) == expected
    assert -(-images // expected) <= max(1, steps)  # every image fits in the steps


def test_each_unmasked_image_once_per_epoch_beside_the_unchanged_pairs(layout):
    plain = datamodule(layout)
    module = datamodule(layout, unmasked_root=str(layout / "images"), unmasked_per_class=3)
    selected = {r.image_path for r in (*module.selection.train, *module.selection.val)}
    assert len(module.unmasked) == 9
    assert not selected & {r.image_path for r in module.unmasked}
    for epoch in (0, 1):
        pair_loader, combined = plain.train_dataloader(), module.train_dataloader()
        pair_loader.sampler.set_epoch(epoch)
        for loader in combined.flattened:
            loader.sampler.set_epoch(epoch)
        batches = [batch for batch, _, _ in combined]
        assert len(batches) == len(pair_loader) == 3  # 6 pairs in batches of 2
        for batch, pairs in zip(batches, pair_loader, strict=True):
            assert torch.equal(batch["pairs"]["image"], pairs["image"])
            assert torch.equal(batch["pairs"]["mask"], pairs["mask"])
        unmasked = [b["unmasked"] for b in batches if b["unmasked"] is not None]
        images = torch.cat([b["image"] for b in unmasked])
        # the 9 drawn images, each once: compare them with the files decoded directly
        expected = torch.stack([_decoded(r.image_path) for r in module.unmasked])
        matches = (images[:, None] - expected[None]).abs().flatten(2).amax(-1) < 1e-6
        assert matches.sum(1).tolist() == [1] * 9 and matches.sum(0).tolist() == [1] * 9
        labels = torch.cat([b["label"] for b in unmasked])
        assert labels.tolist() == [module.unmasked[i].label for i in matches.int().argmax(1)]
    assert not torch.equal(_epoch_order(module, 0), _epoch_order(module, 1))


def _decoded(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1) / 255.0


def _epoch_order(module: ImageMaskDataModule, epoch: int) -> torch.Tensor:
    combined = module.train_dataloader()
    for loader in combined.flattened:
        loader.sampler.set_epoch(epoch)
    return torch.cat([b["unmasked"]["image"].flatten(1).sum(1)
                      for b, _, _ in combined if b["unmasked"] is not None])


def test_unmasked_per_class_below_one_is_one_line(layout):
    with pytest.raises(ValueError, match=r"^data.unmasked_per_class must be >= 1 or null"):
        ImageMaskDataModule(str(layout), crop_size=32, mean=(0.0,) * 3, std=(1.0,) * 3,
                            unmasked_root=str(layout / "images"), unmasked_per_class=0)


def test_a_resumed_fit_starts_both_loaders_at_the_restored_epoch(layout):
    import pytorch_lightning as pl

    def combined(processed_epochs: int):
        module = ImageMaskDataModule(str(layout), crop_size=32, mean=(0.0,) * 3, std=(1.0,) * 3,
                                     train_per_class=2, class_fraction=1.0, batch_size=2,
                                     unmasked_root=str(layout / "images"), unmasked_per_class=3)
        module.trainer = pl.Trainer(logger=False, enable_progress_bar=False)
        module.trainer.fit_loop.epoch_progress.current.processed = processed_epochs
        module.setup("fit")
        return module.train_dataloader()

    resumed = [batch for batch, _, _ in combined(3)]
    fresh = combined(0)
    for loader in fresh.flattened:
        loader.sampler.set_epoch(3)
    for a, (b, _, _) in zip(resumed, fresh, strict=True):
        assert torch.equal(a["pairs"]["image"], b["pairs"]["image"])
        assert (a["unmasked"] is None) == (b["unmasked"] is None)
        if a["unmasked"] is not None:
            assert torch.equal(a["unmasked"]["image"], b["unmasked"]["image"])


def test_imagenet_train_images_without_masks_take_imagenet_labels(tmp_path):
    import fixtures.miniature as miniature

    from robustft.data.datamodule import ImageNetSDataModule
    from robustft.labels import imagenet_synsets

    synsets = imagenet_synsets()
    folders = [synsets[3], synsets[40], synsets[512]]
    copy = miniature.make_imagenet_s(tmp_path, folders, per_class=3)
    for c, wnid in enumerate(folders):  # ImageNet train has images that have no mask
        for i in range(2):
            miniature.write_image(copy.imagenet_root / "train" / wnid / f"{wnid}_{9000 + i}.JPEG",
                                  seed=c * 10 + i, size=(16, 12))
    module = ImageNetSDataModule(str(copy.imagenet_root), str(copy.imagenet_s_root),
                                 crop_size=8, mean=(0.5,) * 3, std=(0.5,) * 3,
                                 num_train_classes=2, train_per_class=2, val_per_class=1,
                                 unmasked_root=str(copy.imagenet_root / "train"),
                                 unmasked_per_class=2)
    module.setup("fit")
    selected = {r.image_path for r in (*module.selection.train, *module.selection.val)}
    assert Counter(r.class_name for r in module.unmasked) == dict.fromkeys(folders, 2)
    assert all(r.label == synsets.index(r.class_name) for r in module.unmasked)
    assert not selected & {r.image_path for r in module.unmasked}
