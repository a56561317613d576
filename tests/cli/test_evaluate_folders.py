"""The user's own labelled folders in robustft-eval (eval=folders): the generic layout gives
top-1 and the share, class folders give top-1, and every model's images are prepared as the
fine-tuning run validated them, read from the run's checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module

import robustft.evaluation.run as evaluation_run
from robustft.checkpoints import training_preprocessing_of
from robustft.evaluation.report import read_results_csv
from robustft.training.run import train

TINY = ["model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.weights_file=null",
        "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=1",
        "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]
TINY_ENTRY = "{img_size:32,patch_size:8,depth:1,embed_dim:32,num_heads:2}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("folders")
    pairs = make_generic_layout(root / "pairs", num_classes=3, per_class=4, size=(40, 40))
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"data.root={pairs}", "data.num_workers=0", "data.class_fraction=1.0",
            "data.resize_ratio=1.25", "data.hflip=0.0", "model.num_classes=3", "trainer=cpu",
            "trainer.max_epochs=1", f"paths.output_dir={root / 'run'}", "validate_best=false",
            *TINY])
    result = train(cfg)
    # a folder of class folders without masks, beside the images+masks layout
    shutil.copytree(pairs / "images", root / "plain")
    return {"pairs": pairs, "plain": root / "plain", "checkpoint": result.last_checkpoint}


def _cfg(trained, out: Path, *extra: str):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("eval", overrides=[
            "eval=folders", f"output_dir={out}", "models.baseline.name=vit_tiny_patch16_224",
            "models.baseline.pretrained=false", "models.baseline.num_classes=3",
            f"models.baseline.kwargs={TINY_ENTRY}", "+models.ft.name=vit_tiny_patch16_224",
            f"+models.ft.checkpoint={trained['checkpoint']}", f"+models.ft.kwargs={TINY_ENTRY}",
            "+models.ft.num_classes=3", "batch_size=4", "num_workers=0", "device=cpu",
            "progress=false", "plots=false", *extra])


def test_the_checkpoint_records_the_run_s_validation_preprocessing(trained):
    recorded = training_preprocessing_of(trained["checkpoint"])
    assert recorded["input_size"] == [3, 32, 32] and recorded["crop_pct"] == pytest.approx(0.8)
    assert recorded["interpolation"] == "bilinear" and len(recorded["mean"]) == 3


def test_a_generic_folder_gives_top1_and_the_share_with_the_training_preprocessing(trained,
                                                                                 tmp_path):
    out = evaluation_run.run_evaluation(_cfg(trained, tmp_path / "run",
                                           f"eval.folders=[{trained['pairs']}]",
                                           "metrics=[top1,share]"))
    rows = read_results_csv(out / "results.csv")
    assert {(r["model"], r["dataset"]) for r in rows} == {("baseline", "pairs"), ("ft", "pairs")}
    assert {r["metric"] for r in rows} >= {"top1", "grad_rollout:foreground_share"}
    inputs = [record["inputs"] for record in json.loads((out / "fingerprints.json").read_text()).values()]
    # both models, the original included, were prepared as the run validated its images
    assert all(i["preprocessing"]["crop_pct"] == pytest.approx(0.8) for i in inputs)


def test_class_folders_give_top1_and_the_model_s_own_preprocessing_on_request(trained, tmp_path):
    out = evaluation_run.run_evaluation(_cfg(trained, tmp_path / "run",
                                           f"eval.folders=[{trained['plain']}]",
                                           "preprocessing.source=model"))
    rows = read_results_csv(out / "results.csv")
    assert {r["dataset"] for r in rows} == {"plain"} and {r["metric"] for r in rows} == {"top1"}
    inputs = [record["inputs"] for record in json.loads((out / "fingerprints.json").read_text()).values()]
    assert all("crop_pct" not in i["preprocessing"] for i in inputs)


def test_a_folder_that_is_not_there_is_one_line(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="eval.folders: .*nowhere is not a folder"):
        evaluation_run.run_evaluation(_cfg(trained, tmp_path / "run",
                                         f"eval.folders=[{tmp_path / 'nowhere'}]"))
    with pytest.raises(ValueError, match="preprocessing.source must be one of"):
        evaluation_run.run_evaluation(_cfg(trained, tmp_path / "run",
                                         f"eval.folders=[{trained['plain']}]",
                                         "preprocessing.source=camera"))
