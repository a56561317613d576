"""The generated benchmark's reader (robustft.synth.read.ImageFolderSplit), through the
evaluation registry's ``generated`` type."""

from __future__ import annotations

import shutil
from pathlib import Path

import fixtures.miniature as miniature
import pytest

from robustft.data.eval.registry import build_eval_dataset
from robustft.data.layout import DatasetLayoutError
from robustft.synth.read import ImageFolderSplit


def test_generated_split_and_sweep_metadata(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench")
    val = ImageFolderSplit(bench.root, "val")
    assert val.class_names == bench.class_names != sorted(bench.class_names)  # classes.txt
    assert len(val) == bench.splits["val"] and val.protocol.num_classes == 3
    assert val.name == "bench/val"
    sweep = build_eval_dataset("generated", bench.root, split="sweep_area")
    assert {meta["area"] for _, _, meta in sweep.samples} == {"0.1", "0.3"}
    for path, target, _ in sweep.samples:
        assert bench.class_names[target] == path.parent.name


def test_generated_metadata_path_outside_root_is_refused(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench")
    outside = miniature.write_image(tmp_path / "elsewhere.png", seed=5)
    metadata = bench.root / "sweep_area" / "metadata.csv"
    text = metadata.read_text().splitlines()
    first = text[1].split(",")
    first[0] = "../../elsewhere.png"
    text[1] = ",".join(first)
    metadata.write_text("\n".join(text) + "\n")
    assert outside.is_file()
    with pytest.raises(DatasetLayoutError, match=r"outside the dataset root"):
        ImageFolderSplit(bench.root, "sweep_area")


def test_generated_label_disagreeing_with_class_order_is_named(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench")
    with pytest.raises(DatasetLayoutError, match=r"metadata.csv line 2: label 0"):
        ImageFolderSplit(bench.root, "sweep_area", class_names=list(reversed(bench.class_names)))
    # classes.txt fixes the label order even when a split lacks a class
    shutil.rmtree(bench.root / "val" / "circle")
    val = ImageFolderSplit(bench.root, "val")
    assert val.protocol.num_classes == 3 and val.class_names == bench.class_names
    assert {bench.class_names[t] for _, t, _ in val.samples} == {"square", "triangle"}
    # without it: the sorted class folders of the split
    (bench.root / "classes.txt").unlink()
    assert ImageFolderSplit(bench.root, "val").class_names == ["square", "triangle"]


def test_an_empty_split_and_a_repeated_class_name_are_named(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench")
    (bench.root / "empty" / bench.class_names[0]).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=rf"^split {bench.root / 'empty'}: no images "
                                                 r"found \(expected .*/empty/<class>/<image>\)$"):
        ImageFolderSplit(bench.root, "empty")
    # a class listed twice would send both folders to one label
    classes = bench.root / "classes.txt"
    classes.write_text(classes.read_text() + bench.class_names[0] + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"^{classes}: class name\(s\) "
                                                 rf"\['{bench.class_names[0]}'\] listed more than once"):
        ImageFolderSplit(bench.root, "val")
    with pytest.raises(DatasetLayoutError, match=r"^class_names: class name\(s\) \['a'\] listed"):
        ImageFolderSplit(bench.root, "val", class_names=["a", "b", "a"])
