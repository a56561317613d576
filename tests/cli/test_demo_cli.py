"""``robustft-demo`` end to end on a miniature benchmark: every step runs, the report files
are written, and a second run reuses the cached stand-in."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

MINIATURE = ["++data.synth.num_classes=4", "++data.synth.train_per_class=4",
             "++data.synth.pretrain_per_class=8", "++data.synth.eval_per_class=4",
             "model.num_classes=4", "model.kwargs.depth=1", "model.kwargs.embed_dim=32",
             "pretrain.max_epochs=1", "trainer.max_epochs=1",
             "evaluation.relevance_images_per_split=8"]


def _run_demo(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "robustft-demo"
    return subprocess.run([str(script), *MINIATURE, *overrides], capture_output=True, text=True, timeout=300,
                          cwd=root, env={**os.environ, "ROBUSTFT_ROOT": str(root),
                                         "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})


def test_demo_runs_end_to_end_and_reuses_the_stand_in(tmp_path):
    first = _run_demo(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted((tmp_path / "logs" / "demo" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in ("results.csv", "results.md", "relevance_overlays.png", "selection_manifest.csv"):
        assert (run / name).is_file(), name
    assert "Top-1 (percent)" in first.stdout and "| anti_correlated |" in first.stdout
    with (run / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    metrics = {(r["model"], r["dataset"], r["metric"]) for r in rows}
    for model in ("original", "relevance-finetuned"):
        for metric in ("top1", "fg_share", "fg_share_object_only", "top1_object_only"):
            assert (model, "shuffled", metric) in metrics
    # one stand-in per benchmark (data.benchmark), so data=synth_b does not evict this one
    weights = tmp_path / ".cache" / "demo" / "synth" / "pretrained.safetensors"
    assert weights.is_file()
    stamp = weights.stat().st_mtime_ns

    # a quick re-run on two splits without the overlay figure
    second = _run_demo(tmp_path, "evaluation.splits=[in_distribution,size]",
                       "evaluation.overlay_images=0")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing pre-trained weights" in second.stdout + second.stderr
    assert weights.stat().st_mtime_ns == stamp
    rerun = sorted((tmp_path / "logs" / "demo" / "runs").iterdir())[-1]
    assert rerun != run and (rerun / "results.md").is_file()
    assert not (rerun / "relevance_overlays.png").exists()
    assert "| size |" in second.stdout and "| shuffled |" not in second.stdout
    timing = second.stdout.rsplit("run directory:", 1)[1]
    for phase in ("benchmark", "pre-training", "fine-tuning", "evaluation"):
        assert f"{phase} " in timing, timing


def test_the_stand_in_s_cache_key_leaves_out_the_probe_head_settings(monkeypatch):
    """Keys that only the real-backbone stand-in (a probe head) uses do not enter the
    from-scratch stand-in's cache key, so a stand-in cached before they existed stays
    cached; the key still holds what its pre-training depends on."""
    from unittest import mock

    from hydra import compose, initialize_config_module

    from robustft.demo import stand_in

    keys = []
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfgs = [compose("demo", overrides=extra) for extra in (
            [], ["pretrain.head_per_class=7", "pretrain.head_data=scenes"], ["pretrain.lr=0.01"])]
    for cfg in cfgs:
        with mock.patch.object(stand_in, "pretrain_cached",
                               lambda *a, settings, **k: keys.append(settings)), \
                mock.patch.object(stand_in, "build_datamodule", lambda *a, **k: None):
            stand_in.pretrain_stand_in(cfg)
    assert keys[0] == keys[1] and keys[0] != keys[2]
    assert "probe_head" not in keys[0]["model"]
    assert not any(key.startswith("head_") for key in keys[0]["pretrain"])
