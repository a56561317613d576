"""The generated benchmarks as data configs: data=synth (the demo's) and data=synth_b (the
second generator) compose into the demo, each with its own folders and its own stand-in."""

from __future__ import annotations

import tempfile

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from robustft.synth import SynthConfig
from robustft.synth.glyphs import GLYPH_NAMES


def _demo(*overrides: str):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("demo", overrides=[f"paths.output_dir={tempfile.mkdtemp()}", *overrides])


def _synth(cfg) -> SynthConfig:
    return SynthConfig(**OmegaConf.to_container(cfg.data.synth, resolve=True))


def test_each_benchmark_has_its_folders_and_its_cached_stand_in() -> None:
    first, second = _demo(), _demo("data=synth_b")
    assert first.data.root == "./data/synth/train"
    assert first.pretrain.data_root == "./data/synth/pretrain"
    assert second.data.root == "./data/synth_b/train"
    assert second.pretrain.data_root == "./data/synth_b/pretrain"
    assert first.model.weights_file == "./.cache/demo/synth/pretrained.safetensors"
    assert second.model.weights_file == "./.cache/demo/synth_b/pretrained.safetensors"
    assert _synth(first) == SynthConfig()
    b = _synth(second)
    assert (b.objects, b.backgrounds) == ("glyphs", "fields") and b.class_shapes == GLYPH_NAMES
    assert b.area_range == (0.12, 0.2) and second.data.hflip == 0.0
    # the fine-tuning recipe is the same on both
    for group in ("loss", "optim", "relevance"):
        assert first[group] == second[group], group
    assert first.trainer.max_epochs == second.trainer.max_epochs
    assert OmegaConf.masked_copy(first.data, ["train_per_class", "class_fraction", "batch_size"]) \
        == OmegaConf.masked_copy(second.data, ["train_per_class", "class_fraction", "batch_size"])
    # the generator's settings can be overridden as on the first benchmark
    assert _synth(_demo("data=synth_b", "++data.synth.tie=0.0")).tie == 0.0


def test_the_third_benchmark_has_its_folders_its_families_and_an_eight_class_head() -> None:
    from robustft.synth.config import PHOTO_NAMES
    from robustft.synth.pictograms import PICTOGRAM_NAMES

    first, third = _demo(), _demo("data=synth_c")
    assert third.data.root == "./data/synth_c/train"
    assert third.model.weights_file == "./.cache/demo/synth_c/pretrained.safetensors"
    c = _synth(third)
    assert (c.objects, c.backgrounds, c.num_classes) == ("pictograms", "photos", 8)
    assert c.class_shapes == PICTOGRAM_NAMES[:8] and len(PHOTO_NAMES) >= 8
    assert c.marking_contrast == 0.0 and third.data.hflip == 0.0
    # the demo's ViT has one output per class of the benchmark: 8 here, 10 on the others
    assert third.model.num_classes == 8 and first.model.num_classes == 10
    assert _demo("data=synth_b").model.num_classes == 10
    for group in ("loss", "optim", "relevance"):
        assert first[group] == third[group], group
