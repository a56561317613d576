"""The scripts in benchmarks/ run (a smoke-sized run each), so they do not rot; their
numbers are measured by hand, never asserted."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from fixtures.tiny_hf import save_tiny_hf
from tiny_models import TINY_OPEN_CLIP_KWARGS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_single_pass_evaluation_benchmark_runs(tmp_path):
    done = _run("single_pass_eval.py", "--images", "8", "--repeats", "1", "--batch-size", "4",
                "--num-workers", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "one pass" in done.stdout


def test_tokencut_benchmark_runs(tmp_path):
    done = _run("tokencut_masks.py", "--smoke", "--workers", "0", "--device", "cpu",
                "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"kind": "tokencut"' in done.stdout


def test_relevance_step_benchmark_runs(tmp_path):
    table = tmp_path / "steps.csv"
    done = _run("relevance_step.py", "--family", "timm", "--name", "vit_tiny_patch16_224",
                "--kwargs", '{"depth": 2, "embed_dim": 32, "num_heads": 2}', "--img-size", "32",
                "--batch", "2", "--rounds", "1", "--precision", "fp32", "bf16", "--phases",
                "--csv", str(table), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for step in ("plain", "eager", "fused", "second_order"):
        assert f"\n{step} " in done.stdout, done.stdout
    assert "score_backward" in done.stdout and "ops by self time" in done.stdout, done.stdout
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["step"], row["precision"]) for row in rows] == [
        (step, precision) for precision in ("fp32", "bf16")
        for step in ("plain", "eager", "fused", "second_order")]
    assert {row["name"] for row in rows} == {"vit_tiny_patch16_224"}
    assert all(float(row["x_plain"]) > 0 for row in rows)
    assert all(float(row["x_plain"]) == 1.0 for row in rows if row["step"] == "plain")


def _steps_table(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_relevance_step_benchmark_runs_an_open_clip_model_with_a_generated_head(tmp_path):
    # a random tiny OpenCLIP (image and text tower) under a built-in name: the zero-shot head
    # of 3 generated class names comes from its own text tower, nothing is downloaded; its
    # vision_cfg has no image_size, so --img-size must set it (else 224 px would not match
    # the 32-px inputs)
    kwargs = json.loads(json.dumps(TINY_OPEN_CLIP_KWARGS))
    del kwargs["vision_cfg"]["image_size"]
    table = tmp_path / "steps.csv"
    done = _run("relevance_step.py", "--family", "open_clip", "--name", "ViT-B-16",
                "--kwargs", json.dumps(kwargs), "--img-size", "32", "--batch", "2",
                "--num-classes", "3", "--rounds", "1", "--csv", str(table), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _steps_table(table)
    assert [row["step"] for row in rows] == ["plain", "eager", "fused", "second_order"]
    assert {row["family"] for row in rows} == {"open_clip"}
    assert all(float(row["cpu_x_plain"]) > 0 for row in rows)
    assert "classes=3 " in done.stdout, done.stdout


def test_relevance_step_benchmark_skips_fused_where_the_model_cannot_run_it(tmp_path):
    # a Hugging Face ViT with attention dropout in training: the fused backend would run
    # eager, so the benchmark says so in one line instead of timing eager twice
    save_tiny_hf(tmp_path / "hf_vit", image_size=32, patch_size=8)
    table = tmp_path / "steps.csv"
    done = _run("relevance_step.py", "--family", "hf", "--hf-path", str(tmp_path / "hf_vit"),
                "--kwargs", '{"attention_probs_dropout_prob": 0.1}', "--img-size", "32",
                "--batch", "2", "--rounds", "1", "--csv", str(table), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("fused: skipped")]
    assert len(skipped) == 1 and "attention dropout" in skipped[0], done.stdout
    assert [row["step"] for row in _steps_table(table)] == ["plain", "eager", "second_order"]


def test_relevance_step_benchmark_names_an_unknown_family(tmp_path):
    done = _run("relevance_step.py", "--family", "nope", "--name", "x", "--rounds", "1",
                cwd=tmp_path)
    assert done.returncode != 0
    assert "unknown model family 'nope'" in done.stderr


def test_stand_in_check_runs_on_the_second_benchmark(tmp_path):
    done = _run("stand_in_check.py", "--images", "8", "data=synth_b", f"paths.root_dir={tmp_path}",
                "++data.synth.num_classes=3", "++data.synth.pretrain_per_class=4",
                "++data.synth.train_per_class=2", "++data.synth.eval_per_class=3",
                "model.num_classes=3", "model.kwargs.depth=1", "model.kwargs.embed_dim=32",
                "pretrain.max_epochs=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / ".cache/demo/synth_b/pretrained.safetensors").is_file()
    assert (tmp_path / "data/synth_b/classes.txt").read_text().split() == ["00_T", "01_H", "02_X"]
    for split in ("in_distribution", "shuffled", "anti_correlated", "rendition"):
        assert f"| {split} |" in done.stdout, done.stdout


def test_stand_in_check_runs_on_the_third_benchmark(tmp_path):
    done = _run("stand_in_check.py", "--images", "8", "data=synth_c", f"paths.root_dir={tmp_path}",
                "++data.synth.num_classes=3", "++data.synth.pretrain_per_class=4",
                "++data.synth.train_per_class=2", "++data.synth.eval_per_class=3",
                "model.kwargs.depth=1", "model.kwargs.embed_dim=32", "pretrain.max_epochs=1",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / ".cache/demo/synth_c/pretrained.safetensors").is_file()
    assert (tmp_path / "data/synth_c/classes.txt").read_text().split() == [
        "00_knight", "01_rook", "02_club"]
    info = json.loads((tmp_path / "data/synth_c/benchmark.json").read_text())
    assert [b["photo"] for b in info["backgrounds"]] == ["astronaut", "coffee", "chelsea"]
    for split in ("in_distribution", "shuffled", "anti_correlated", "rendition"):
        assert f"| {split} |" in done.stdout, done.stdout
