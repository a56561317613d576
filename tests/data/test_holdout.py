"""Held-out validation pairs of the training classes (data.holdout_per_class) and held-out
images without masks (data.unmasked_holdout_per_class): never trained on, seeded,
class-stratified, kept through a reused manifest."""

from __future__ import annotations

import pytest
from fixtures.generic_layout import make_generic_layout

from robustft.data.datamodule import ImageMaskDataModule
from robustft.data.generic import (
    ImageMaskRecord,
    Selection,
    scan_generic_layout,
    select_records,
    write_selection,
)
from robustft.data.layout import DatasetLayoutError


@pytest.fixture
def layout(tmp_path):
    return make_generic_layout(tmp_path / "pairs", num_classes=3, per_class=10, size=(16, 16))


def _images(records: list[ImageMaskRecord]) -> set:
    return {r.image_path for r in records}


def _module(root, **kwargs) -> ImageMaskDataModule:
    settings = dict(crop_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, class_fraction=1.0,
                    train_per_class=4, num_workers=0, hflip=0.0, resize_ratio=1.0)
    return ImageMaskDataModule(str(root), **{**settings, **kwargs})


def test_held_out_pairs_are_stratified_disjoint_and_leave_the_training_draw_unchanged(layout):
    records = scan_generic_layout(layout)
    plain = select_records(records, train_per_class=4, val_per_class=1, class_fraction=1.0, seed=3)
    held = select_records(records, train_per_class=4, val_per_class=1, class_fraction=1.0, seed=3,
                          holdout_per_class=3)
    assert held.train == plain.train and plain.val == []
    assert _images(held.train).isdisjoint(_images(held.val))
    assert sorted(r.class_name for r in held.val) == ["c0"] * 3 + ["c1"] * 3 + ["c2"] * 3
    again = select_records(records, train_per_class=4, val_per_class=1, class_fraction=1.0,
                           seed=3, holdout_per_class=3)
    other = select_records(records, train_per_class=4, val_per_class=1, class_fraction=1.0,
                           seed=4, holdout_per_class=3)
    assert again == held and _images(other.val) != _images(held.val)


def test_held_out_classes_and_held_out_pairs_go_together(layout):
    selection = select_records(scan_generic_layout(layout), train_per_class=2, val_per_class=1,
                               class_fraction=0.67, seed=0, holdout_per_class=2)
    train_classes = {r.class_name for r in selection.train}
    assert len(train_classes) == 2 and _images(selection.train).isdisjoint(_images(selection.val))
    # 2 held-out pairs of each training class, 1 pair of the held-out class
    assert len(selection.val) == 2 * 2 + 1


def test_with_every_image_training_the_held_out_pairs_are_drawn_first(layout):
    selection = select_records(scan_generic_layout(layout), train_per_class=None, val_per_class=1,
                               class_fraction=1.0, seed=0, holdout_per_class=3)
    assert len(selection.train) == 3 * 7 and len(selection.val) == 3 * 3
    assert _images(selection.train).isdisjoint(_images(selection.val))


def test_a_holdout_that_leaves_nothing_is_one_line(layout):
    records = scan_generic_layout(layout)
    with pytest.raises(ValueError, match=r"data.holdout_per_class=2: every image of .*c0"):
        select_records(records, train_per_class=10, val_per_class=1, class_fraction=1.0, seed=0,
                       holdout_per_class=2)
    with pytest.raises(ValueError, match="leaves no training pair"):
        select_records(records, train_per_class=None, val_per_class=1, class_fraction=1.0,
                       seed=0, holdout_per_class=10)
    with pytest.raises(ValueError, match="holdout_per_class must be >= 0"):
        select_records(records, train_per_class=2, val_per_class=1, class_fraction=1.0,
                       seed=0, holdout_per_class=-1)


def test_a_reused_manifest_keeps_the_held_out_pairs_and_refuses_an_overlap(layout, tmp_path):
    first = _module(layout, holdout_per_class=2, manifest_out=str(tmp_path / "m.csv"))
    first.setup()
    # a resumed run reads the run's manifest (training.run): whatever the settings now
    reused = _module(layout, holdout_per_class=5, seed=9, manifest=str(tmp_path / "m.csv"))
    reused.setup()
    assert reused.selection.train == first.selection.train
    assert reused.selection.val == first.selection.val
    leaked = first.selection
    write_selection(Selection(leaked.train, leaked.val + leaked.train[:1], leaked.class_names),
                    layout, tmp_path / "bad.csv")
    with pytest.raises(DatasetLayoutError, match="both a training and a validation pair"):
        _module(layout, manifest=str(tmp_path / "bad.csv")).setup()


def test_held_out_images_without_masks_are_a_second_validation_loader(layout):
    module = _module(layout, holdout_per_class=2, unmasked_root=str(layout / "images"),
                     unmasked_per_class=2, unmasked_holdout_per_class=2)
    module.setup()
    pairs = _images(module.selection.train) | _images(module.selection.val)
    trained = {r.image_path for r in module.unmasked}
    held_out = {r.image_path for r in module.unmasked_heldout}
    assert len(held_out) == 3 * 2 and len(trained) == 3 * 2
    assert held_out.isdisjoint(trained) and held_out.isdisjoint(pairs)
    loaders = module.val_dataloader()
    assert len(loaders) == 2
    batch = next(iter(loaders[1]))
    assert "mask" not in batch and batch["image"].shape[-2:] == (16, 16)
    # without held-out pairs there is nothing to compare the decisions with
    with pytest.raises(ValueError, match="data.unmasked_holdout_per_class needs validation pairs"):
        _module(layout, unmasked_root=str(layout / "images"), unmasked_holdout_per_class=1).setup()


def test_a_resumed_run_holds_out_the_same_pairs_and_keeps_its_held_out_table(layout, tmp_path):
    from hydra import compose, initialize_config_module

    from robustft.training.run import train

    run = tmp_path / "run"
    common = [f"data.root={layout}", "data.num_workers=0", "data.class_fraction=1.0",
              "data.train_per_class=4", "data.hflip=0.0", "data.resize_ratio=1.0",
              "model.num_classes=3", "trainer=cpu", f"paths.output_dir={run}",
              "validate_best=false", "~callbacks.relevance_overlays",
              "model.name=vit_tiny_patch16_224", "model.pretrained=false",
              "++model.kwargs.img_size=16", "++model.kwargs.patch_size=8",
              "++model.kwargs.depth=1", "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]
    with initialize_config_module("robustft.configs", version_base="1.3"):
        first = compose("train", overrides=[*common, "data.holdout_per_class=2",
                                            "trainer.max_epochs=1"])
        train(first)
        manifest = (run / "selection_manifest.csv").read_text()
        # resumed with other selection settings: the run's own manifest decides
        resumed = compose("train", overrides=[*common, "data.holdout_per_class=3", "data.seed=7",
                                              "trainer.max_epochs=2",
                                              f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
        result = train(resumed)
    assert (run / "selection_manifest.csv").read_text() == manifest
    rows = (run / "heldout_metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]  # epoch 0 kept across resume
    assert {row.split(",")[11] for row in rows[1:]} == {"6"}  # 2 held-out pairs x 3 classes
    assert result.selection is not None and result.selection["epochs"] == 2
