"""benchmarks/explanation_quality.py end to end on a tiny generated benchmark, a tiny ViT's
weights file (the "stand-in") and a robustft-train-style checkpoint: the table has every
promised row and column, every value is in its range, and the share agrees with the
demo's own share computation."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from robustft.backbones import create_model
from robustft.demo.relevance_stats import load_pairs, mean_foreground_share
from robustft.demo.split_measures import generated_split, split_pairs
from robustft.evaluation.runner import build_eval_transforms
from robustft.synth import SynthConfig, generate_benchmark

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "explanation_quality.py"
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
MODEL_OVERRIDES = ["model.num_classes=3", "model.kwargs.img_size=32", "model.kwargs.depth=1",
                   "model.kwargs.embed_dim=32", "model.kwargs.num_heads=2"]
SPLITS = ("shuffled", "anti_correlated")
METHODS = ("grad_rollout", "rollout", "attn_gradcam")
HEADINGS = ["split", "method", "model", "top-1", "AUC pos (lower better)",
            "AUC neg (higher better)", "pixAcc", "mIoU", "mAP", "share"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality")
    generate_benchmark(root / "data" / "synth", SynthConfig(image_size=32, num_classes=3,
                                                           eval_per_class=4),
                       progress=False, splits=SPLITS)
    torch.manual_seed(0)
    original = create_model("vit_tiny_patch16_224", num_classes=3, **TINY)
    (root / ".cache/demo/synth").mkdir(parents=True)
    save_file(original.state_dict(), str(root / ".cache/demo/synth/pretrained.safetensors"))
    torch.manual_seed(1)
    finetuned = create_model("vit_tiny_patch16_224", num_classes=3, **TINY)
    torch.save({"state_dict": {f"model.{k}": v for k, v in finetuned.state_dict().items()},
                "hyper_parameters": {"model_config": {"name": "vit_tiny_patch16_224",
                                                      "num_classes": 3, "kwargs": TINY}}},
               root / "finetuned.ckpt")
    return root


def _run(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), "--finetuned",
                           str(workspace / "finetuned.ckpt"), *args,
                           f"paths.root_dir={workspace}", *MODEL_OVERRIDES],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=600)


def test_table_has_every_row_and_column_in_range(workspace):
    out = workspace / "out"
    done = _run(workspace, "--images", "0", "--batch-size", "5", "--out", str(out),
                "--methods", ",".join(METHODS))
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in (out / "explanation_quality.md").read_text().splitlines()
             if line.startswith("| ") and "---" not in line]
    assert [cell.strip() for cell in table[0].strip("|").split("|")] == HEADINGS
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]
            if line.split("|")[1].strip() in SPLITS]
    assert [tuple(row[:3]) for row in rows] == [
        (split, method, model) for split in SPLITS for method in METHODS
        for model in ("original", "finetuned")]
    for row in rows:
        top1, auc_pos, auc_neg, *rest = map(float, row[3:])
        assert 0 <= top1 <= 100
        assert 0 <= auc_pos <= 90 and 0 <= auc_neg <= 90  # grid 0 ... 0.9
        assert all(0 <= value <= 100 for value in rest)
    with (out / "explanation_quality.csv").open() as handle:
        values = list(csv.DictReader(handle))
    assert {int(row["images"]) for row in values} == {12}  # 3 classes x 4, all of them
    # the demo's own share computation (grad_rollout, labelled class), on the same images
    benchmark = workspace / "data" / "synth"
    model = create_model("vit_tiny_patch16_224", num_classes=3, **TINY, weights_file=str(
        workspace / ".cache/demo/synth/pretrained.safetensors"))
    transform = build_eval_transforms({"m": model}, crop_pct=1.0)["m"]
    pairs, labels = split_pairs(benchmark, "shuffled", generated_split(benchmark, "shuffled"), 12)
    images, masks = load_pairs(pairs, transform)
    share = [float(row["value"]) for row in values if row["model"] == "original"
             and row["split"] == "shuffled" and row["method"] == "grad_rollout"
             and row["quantity"] == "foreground_share"]
    curve = [row for row in values if row["model"] == "finetuned"
             and row["split"] == "anti_correlated" and row["method"] == "rollout"
             and row["quantity"] == "perturbation_negative"]
    assert [row["removed_fraction"] for row in curve] == [
        "0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    # the AUC is the trapezoid of that curve over the removed fractions
    auc = [float(row["value"]) for row in values if row["model"] == "finetuned"
           and row["split"] == "anti_correlated" and row["method"] == "rollout"
           and row["quantity"] == "perturbation_negative_auc"]
    points = [float(row["value"]) for row in curve]
    assert auc == [pytest.approx(sum(0.05 * (a + b) for a, b in zip(points, points[1:])))]
    assert share == [pytest.approx(100 * mean_foreground_share(model.eval(), images, masks,
                                                                labels), abs=1e-3)]
    # the methods' maps differ, so do their numbers
    by_method = {row["method"]: row["value"] for row in values if row["model"] == "original"
                 and row["split"] == "shuffled" and row["quantity"] == "foreground_share"}
    assert len(set(by_method.values())) == len(METHODS)
    with (out / "explanation_quality_timing.csv").open() as handle:
        timing = list(csv.DictReader(handle))
    parts = {(row["method"], row["part"]) for row in timing}
    assert ("grad_rollout", "top1") in parts and ("rollout", "top1") not in parts
    assert {part for method, part in parts if method == "rollout"} == {
        "forward", "relevance", "perturbation", "segmentation", "share"}
    assert all(float(row["seconds_per_image"]) > 0 for row in timing)
    assert "ms per image" in done.stdout and "| rollout |" in done.stdout


def test_images_per_split_sets_the_count(workspace):
    done = _run(workspace, "--images", "5", "--methods", "raw_attention", "--splits", "shuffled",
                "--out", str(workspace / "five"))
    assert done.returncode == 0, done.stderr[-2000:]
    with (workspace / "five" / "explanation_quality.csv").open() as handle:
        assert {int(row["images"]) for row in csv.DictReader(handle)} == {5}


def test_an_unknown_method_is_one_line(workspace):
    done = _run(workspace, "--methods", "nope")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "--methods: ['nope']" in done.stderr
