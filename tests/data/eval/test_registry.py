"""The dataset registry: every type's folder rule, written out here, and a type registered
from outside the package builds and resolves by its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustft.data.eval.base import EvalDatasetType
from robustft.data.eval.registry import (
    EVAL_DATASETS,
    build_eval_dataset,
    dataset_folder,
    register_dataset,
)

ROOT = Path("/data/x")
FOLDERS = {
    "imagenet-val": ROOT, "imagenet-a": ROOT, "imagenet-r": ROOT, "imagenet-sketch": ROOT,
    "imagenet-v2-matched-frequency": ROOT, "imagenet-v2-threshold0.7": ROOT,
    "imagenet-v2-top-images": ROOT, "objectnet": ROOT,
    "si-score-area": ROOT / "area", "si-score-rotation": ROOT / "rotation",
    "si-score-location": ROOT / "location20_area02_min0pc",
    "generated": ROOT,  # until a split is named
    "generic": ROOT, "imagefolder": ROOT, "imagenet-s": ROOT / "train-semi-segmentation",
    "imagenet-segmentation": ROOT,
}


def test_every_type_and_its_folder() -> None:
    assert sorted(EVAL_DATASETS) == sorted(FOLDERS)
    assert {kind: dataset_folder(kind, str(ROOT)) for kind in FOLDERS} == FOLDERS
    assert dataset_folder("generated", ROOT, split="val") == ROOT / "val"


def test_an_unknown_type_is_one_line() -> None:
    with pytest.raises(KeyError, match="unknown evaluation dataset 'nope'; known: "):
        dataset_folder("nope", ROOT)
    with pytest.raises(KeyError, match="unknown evaluation dataset 'nope'; known: "):
        build_eval_dataset("nope", ROOT)


def test_a_registered_type_builds_with_its_options(tmp_path) -> None:
    calls = []

    def build(root, *, protocol="standard", name=None, colour):
        calls.append((root, protocol, name, colour))
        return "built"

    register_dataset(EvalDatasetType("toy_type", build, lambda root, options: root / options["colour"]))
    try:
        assert build_eval_dataset("toy_type", tmp_path, protocol="legacy", name="n",
                                  colour="red") == "built"
        assert calls == [(tmp_path, "legacy", "n", "red")]
        assert dataset_folder("toy_type", tmp_path, colour="red") == tmp_path / "red"
    finally:
        EVAL_DATASETS.pop("toy_type")
