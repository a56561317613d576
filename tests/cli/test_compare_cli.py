"""``robustft-compare`` end to end on a miniature benchmark: every objective on every draw
through the demo's training path, the shortcut-free reference, one results table, the
summary with the change from the original, the PNG and the README block."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustft.demo.compare_results import read_results

MINIATURE = ["++data.synth.num_classes=4", "++data.synth.train_per_class=4",
             "++data.synth.pretrain_per_class=8", "++data.synth.eval_per_class=4",
             "model.num_classes=4", "model.kwargs.depth=1", "model.kwargs.embed_dim=32",
             "pretrain.max_epochs=1", "trainer.max_epochs=1",
             "evaluation.relevance_images_per_split=8",
             "compare.splits=[in_distribution,shuffled]", "compare.draws=[0,1]",
             "~compare.objectives.relevance_second_order", "~compare.objectives.gradmask",
             "compare.benchmarks=[synth]",
             # fewer than the 4 generated per class, so that two draws differ
             "data.train_per_class=2"]


def _run_compare(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "robustft-compare"
    return subprocess.run([str(script), *MINIATURE, *overrides], capture_output=True, text=True,
                          timeout=600, cwd=root,
                          env={**os.environ, "ROBUSTFT_ROOT": str(root), "HF_HUB_OFFLINE": "1",
                               "WANDB_MODE": "disabled"})


@pytest.mark.slow
def test_compare_runs_every_objective_on_every_draw_and_writes_the_readme_block(tmp_path):
    # the page make compare writes (docs/demo.md): its own block and compare_tuned's
    page = tmp_path / "docs" / "demo.md"
    page.parent.mkdir()
    tuned_block = "<!-- compare_tuned:begin -->\ntuned\n<!-- compare_tuned:end -->\n"
    page.write_text("# x\n<!-- compare:begin -->\nold\n<!-- compare:end -->\ntail\n"
                    + tuned_block)
    done = _run_compare(tmp_path, f"compare.readme={page}")
    assert done.returncode == 0, done.stderr[-3000:]
    run = sorted((tmp_path / "logs" / "compare" / "runs").iterdir())[-1]
    rows = read_results(run / "compare_results.csv")
    measured = {(r.objective, r.draw) for r in rows if r.metric == "top1"}
    assert measured == {("original", None), ("shortcut-free", None), ("relevance", 0),
                        ("relevance", 1), ("plain", 0), ("plain", 1), ("rrr", 0), ("rrr", 1)}
    assert {r.split for r in rows} == {"in_distribution", "shuffled"}
    assert {r.metric for r in rows} == {"top1", "fg_share", "top1_object_only",
                                        "fg_share_object_only"}
    # each fine-tuning run trained its own objective on its own draw
    for objective in ("relevance", "plain", "rrr"):
        for draw in (0, 1):
            run_dir = run / "synth" / objective / f"draw{draw}"
            assert list(csv.DictReader((run_dir / "selection_manifest.csv").open())), run_dir
            assert not (run_dir / "checkpoints").exists()  # deleted once loaded
            metrics = next((run_dir / "csv").rglob("metrics.csv")).read_text().splitlines()[0]
            assert ("train/rrr" in metrics) == (objective == "rrr")
            assert ("train/seg" in metrics) == (objective == "relevance")
    draws = {d: {r["image"] for r in csv.DictReader(
        (run / "synth" / "plain" / f"draw{d}" / "selection_manifest.csv").open())} for d in (0, 1)}
    assert draws[0] != draws[1]
    text = (run / "compare.md").read_text()
    assert "| relevance |" in text and "| rrr |" in text and "| shortcut-free |" in text
    assert (run / "compare_synth.png").is_file()
    # the figure is copied beside the page and linked relative to it
    assert (tmp_path / "docs" / "compare_synth.png").is_file()
    assert (tmp_path / "docs" / "compare_synth.png").read_bytes() == \
        (run / "compare_synth.png").read_bytes()
    updated = page.read_text()
    assert "](compare_synth.png)" in updated
    assert updated.startswith("# x\n<!-- compare:begin -->\n#### synth: Top-1")
    assert updated.endswith("<!-- compare:end -->\ntail\n" + tuned_block)
    assert "old" not in updated
    # the stand-ins are cached: the demo's file and the reference's beside it
    cache = tmp_path / ".cache" / "demo" / "synth"
    assert (cache / "pretrained.safetensors").is_file()
    assert (cache / "pretrained_shortcut_free.safetensors").is_file()
    assert (tmp_path / "data" / "synth_shortcut_free" / "benchmark.json").is_file()
    assert '"tie": 0.0' in (tmp_path / "data" / "synth_shortcut_free" / "benchmark.json").read_text()


def test_wrong_pretrain_root_is_named(tmp_path):
    done = _run_compare(tmp_path, f"pretrain.data_root={tmp_path}/elsewhere/pretrain",
                        "compare.reference_overrides=[]")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "pretrain.data_root" in last and "synth" in last


def test_overrides_with_interpolations_resolve_in_each_benchmark_s_composition():
    from hydra import compose, initialize_config_module

    from robustft.schemas.compose import typed_overrides

    override = "data.unmasked_root=${paths.data_dir}/${data.benchmark}/pretrain/images"
    with initialize_config_module("robustft.configs", version_base="1.3"):
        first = compose("compare", overrides=[override], return_hydra_config=True)
        # read through the config, Hydra's record of the override is resolved against the
        # first composition: synth's folder, whatever benchmark it is applied to later
        assert list(first.hydra.overrides.task) == [
            f"data.unmasked_root={first.paths.data_dir}/synth/pretrain/images"]
        (typed,) = typed_overrides(first.hydra)
        assert typed == override
        second = compose("compare", overrides=[typed, "data=synth_b"])
    assert second.data.unmasked_root.endswith("/synth_b/pretrain/images")


def test_runs_in_worker_processes_give_the_weights_of_runs_in_this_process(tmp_path, monkeypatch):
    import torch
    from fixtures.generic_layout import make_generic_layout

    from robustft.demo.comparison import RunSpec, fine_tune_runs

    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=3, size=(32, 32))

    def runs(name: str) -> list:
        return [RunSpec("train", (
                f"data.root={root}", "data.num_workers=0", "data.class_fraction=1.0",
                f"data.seed={seed}", f"paths.output_dir={tmp_path / name / str(seed)}",
                "trainer=cpu", "trainer.max_epochs=2",
                "logger=csv", "validate_best=false", "model.name=vit_tiny_patch16_224",
                "model.pretrained=false", "model.num_classes=2", "++model.kwargs.img_size=32",
                "++model.kwargs.patch_size=8", "++model.kwargs.depth=1",
                "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2")) for seed in (0, 1)]

    monkeypatch.setattr("robustft.demo.comparison.usable_cpus", lambda: 2)  # one thread per worker
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = fine_tune_runs(runs("here"), jobs=1)
    finally:
        torch.set_num_threads(threads)
    workers = fine_tune_runs(runs("workers"), jobs=2)
    assert [r.output_dir.parent.name for r in workers] == ["workers", "workers"]
    assert [r.output_dir.name for r in workers] == ["0", "1"]  # in the order given
    for a, b in zip(here, workers, strict=True):
        first = torch.load(a.last_checkpoint, weights_only=False)["state_dict"]
        second = torch.load(b.last_checkpoint, weights_only=False)["state_dict"]
        assert all(torch.equal(first[k], second[k]) for k in first)
    weights = [torch.load(r.last_checkpoint, weights_only=False)["state_dict"] for r in workers]
    assert not torch.equal(weights[0]["model.head.weight"], weights[1]["model.head.weight"])


def test_jobs_below_one_is_one_line(tmp_path):
    done = _run_compare(tmp_path, "compare.jobs=0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "robustft-compare: error: compare.jobs must be >= 1 or null (one per CPU core), got 0")


@pytest.mark.slow
def test_compare_tuned_searches_each_draw_and_writes_the_bars(tmp_path):
    """compare_tuned on a miniature benchmark: the tuned objective's recipe is searched on
    the draw's own held-out pairs (2 trials), beside the fixed recipe and plain fine-tuning;
    compare.md carries the bars table and the tuned recipes' table, and its block of the
    page (make compare-tuned: docs/demo.md) is rewritten, compare's left as it was."""
    page = tmp_path / "docs" / "demo.md"
    page.parent.mkdir()
    compare_block = "<!-- compare:begin -->\nuntouched\n<!-- compare:end -->\n"
    page.write_text(compare_block + "<!-- compare_tuned:begin -->\nstale table\n"
                    "<!-- compare_tuned:end -->\n")
    script = Path(sys.executable).parent / "robustft-compare"
    overrides = [o for o in MINIATURE if not o.startswith(("~compare.objectives", "compare.draws"))]
    done = subprocess.run(
        [str(script), "--config-name", "compare_tuned", *overrides, "compare.draws=[0]",
         "compare.tune.max_trials=2", "compare.tune.startup_trials=1",
         "data.holdout_per_class=1", "data.unmasked_holdout_per_class=1",
         "data.unmasked_per_class=2", "++data.synth.pretrain_per_class=8",
         "callbacks.heldout_selection.agreement_tolerance=1.0", "trainer.max_epochs=2",
         f"compare.readme={page}"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "ROBUSTFT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1",
             "WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    run = sorted((tmp_path / "logs" / "compare_tuned" / "runs").iterdir())[-1]
    rows = read_results(run / "compare_results.csv")
    assert {r.objective for r in rows} == {"original", "shortcut-free", "tuned", "demo_recipe",
                                           "plain"}
    search = run / "synth" / "tuned" / "draw0"
    assert (search / "trials.csv").read_text().count("\n") == 3  # header and two trials
    # the same training pairs for every objective of the draw
    manifests = {objective: (run / "synth" / objective / "draw0" / "selection_manifest.csv")
                 for objective in ("demo_recipe", "plain")}
    trial_manifest = next(search.glob("trials/*/selection_manifest.csv"))
    assert len({path.read_text() for path in [*manifests.values(), trial_manifest]}) == 1
    text = (run / "compare.md").read_text()
    assert "the bars, draw by draw" in text and "The tuned recipes, draw by draw" in text
    updated = page.read_text()
    assert updated.startswith(compare_block + "<!-- compare_tuned:begin -->\n#### synth: Top-1")
    assert "stale table" not in updated and "](compare_tuned_synth.png)" in updated
    # its own figure beside the page, not compare's
    assert (tmp_path / "docs" / "compare_tuned_synth.png").is_file()
    assert not (tmp_path / "docs" / "compare_synth.png").exists()
