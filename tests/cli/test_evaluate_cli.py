"""robustft-eval end to end on miniature copies: timm weights file + Lightning checkpoint,
results.csv / results.md / plots, resume, legacy labelling, and -m multirun dirs."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import fixtures.miniature as miniature  # noqa: E402
import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import save_file

import robustft.cli.evaluate as evaluate_cli
from robustft.evaluation.protocols import imagenet_synsets, timm_subset_info
from robustft.evaluation.report import read_results_csv
from robustft.models import create_model

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
TINY_OVERRIDE = "{img_size:32,patch_size:8,embed_dim:32,depth:1,num_heads:2}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_cli")
    data = root / "data"
    synsets = imagenet_synsets()
    _, a_wnids = timm_subset_info("a")
    miniature.make_wnid_folders(data / "imagenet" / "val", synsets[:3])
    miniature.make_wnid_folders(data / "imagenet-a", a_wnids[:3], suffix=".jpg")
    miniature.make_objectnet(data / "objectnet-1.0")
    miniature.make_si_score(data / "si-score")
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", **TINY)
    weights = root / "tiny.safetensors"
    save_file(model.state_dict(), str(weights))
    torch.manual_seed(1)
    finetuned = create_model("vit_tiny_patch16_224", **TINY)
    checkpoint = root / "finetuned.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in finetuned.state_dict().items()},
            "hyper_parameters": {"model_config": {"name": "vit_tiny_patch16_224", "kwargs": TINY}},
        },
        checkpoint,
    )
    return {"root": root, "data": data, "weights": weights, "checkpoint": checkpoint}


def _cfg(workspace, out_dir: Path, *extra: str):
    overrides = [
        f"data_root={workspace['data']}",
        f"output_dir={out_dir}",
        "eval=full",
        "only=[imagenet-val,imagenet-a,objectnet,si-score-area]",
        "models.baseline.name=vit_tiny_patch16_224",
        f"models.baseline.weights_file={workspace['weights']}",
        f"models.baseline.kwargs={TINY_OVERRIDE}",
        f"+models.finetuned.checkpoint={workspace['checkpoint']}",
        "+models.finetuned.name=vit_tiny_patch16_224",
        f"+models.finetuned.kwargs={TINY_OVERRIDE}",
        "batch_size=4",
        "num_workers=0",
        "device=cpu",
        "progress=false",
        *extra,
    ]
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("eval", overrides=overrides)


def test_full_run_writes_csv_markdown_plots(workspace, tmp_path: Path) -> None:
    out = evaluate_cli.run_evaluation(_cfg(workspace, tmp_path / "run"))
    rows = read_results_csv(out / "results.csv")
    overall = {(r["model"], r["dataset"], r["metric"]) for r in rows if not r["factor"]}
    datasets = ["imagenet-val", "imagenet-a", "objectnet", "si-score-area"]
    # the miniature ObjectNet has 3 classes: top-5 is not reported there
    assert overall == {
        (m, d, k)
        for m in ("baseline", "finetuned")
        for d in datasets
        for k in ("top1", "top5")
        if (d, k) != ("objectnet", "top5")
    }
    protocols = {r["dataset"]: r["protocol"] for r in rows}
    assert protocols["imagenet-a"] == "standard:imagenet-a-200-of-1000"
    assert protocols["objectnet"].startswith("standard:objectnet-3")
    factor_values = {r["factor_value"] for r in rows if r["factor"] == "area"}
    assert factor_values == {"0.1", "0.5"}
    markdown = (out / "results.md").read_text()
    assert "| imagenet-a | standard:imagenet-a-200-of-1000 |" in markdown
    assert "relative to `baseline`" in markdown and "Legacy" not in markdown
    assert (out / "accuracy_per_dataset.png").stat().st_size > 0
    assert (out / "factors_si-score-area.png").stat().st_size > 0


def test_checkpoint_weights_are_loaded(workspace, tmp_path: Path) -> None:
    # The checkpoint holds seed-1 weights; loading it as baseline too must give equal rows.
    cfg = _cfg(
        workspace,
        tmp_path / "run",
        "only=imagenet-val",
        f"models.baseline.checkpoint={workspace['checkpoint']}",
        "models.baseline.weights_file=null",
    )
    rows = read_results_csv(evaluate_cli.run_evaluation(cfg) / "results.csv")
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append((row["metric"], row["accuracy"]))
    assert by_model["baseline"] == by_model["finetuned"]


def test_resume_skips_finished_pairs(workspace, tmp_path: Path, monkeypatch) -> None:
    out_dir = tmp_path / "run"
    cfg = _cfg(workspace, out_dir, "only=[imagenet-val,imagenet-a]")
    evaluate_cli.run_evaluation(cfg)
    results = out_dir / "results.csv"
    first = results.read_text()
    # Drop one (model, dataset) pair as if the run had been interrupted before it.
    lines = first.splitlines()
    kept = [ln for ln in lines if not ln.startswith("finetuned,imagenet-a,")]
    results.write_text("\n".join(kept) + "\n")
    calls = []
    real = evaluate_cli.evaluate_models

    def recording(models, dataset, **kwargs):
        calls.append((sorted(models), dataset.name))
        return real(models, dataset, **kwargs)

    monkeypatch.setattr(evaluate_cli, "evaluate_models", recording)
    evaluate_cli.run_evaluation(cfg)
    assert calls == [(["finetuned"], "imagenet-a")]
    assert sorted(results.read_text().splitlines()) == sorted(first.splitlines())
    evaluate_cli.run_evaluation(cfg)  # everything finished: nothing runs, no model built
    assert calls == [(["finetuned"], "imagenet-a")]


def test_legacy_protocol_is_labelled(workspace, tmp_path: Path) -> None:
    cfg = _cfg(workspace, tmp_path / "run", "protocol=legacy", "only=[imagenet-a,objectnet]")
    out = evaluate_cli.run_evaluation(cfg)
    rows = read_results_csv(out / "results.csv")
    assert {r["protocol"] for r in rows} == {"legacy:1000-way"}
    assert "**Legacy protocol**" in (out / "results.md").read_text()


def test_missing_dataset_root_is_an_error_unless_skipped(workspace, tmp_path: Path) -> None:
    cfg = _cfg(workspace, tmp_path / "a", "only=[imagenet-val,imagenet-r]")
    with pytest.raises(Exception, match="imagenet-r"):
        evaluate_cli.run_evaluation(cfg)
    cfg = _cfg(workspace, tmp_path / "b", "only=[imagenet-val,imagenet-r]", "skip_missing=true")
    rows = read_results_csv(evaluate_cli.run_evaluation(cfg) / "results.csv")
    assert {r["dataset"] for r in rows} == {"imagenet-val"}


def test_multirun_writes_one_directory_per_job(workspace, tmp_path: Path, monkeypatch) -> None:
    # The real entry point (hydra.main) in-process: -m sweeps only= over two datasets.
    monkeypatch.setenv("ROBUSTFT_ROOT", str(tmp_path))
    argv = [
        "robustft-eval", "-m",
        f"data_root={workspace['data']}", "eval=full", "only=imagenet-val,imagenet-a",
        "models.baseline.name=vit_tiny_patch16_224",
        f"models.baseline.weights_file={workspace['weights']}",
        f"models.baseline.kwargs={TINY_OVERRIDE}",
        "batch_size=4", "num_workers=0", "device=cpu", "progress=false", "plots=false",
        "run_name=sweep",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    evaluate_cli.main()
    sweep_dir = tmp_path / "logs" / "eval" / "sweep" / "multirun"
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    datasets = []
    for job_dir in job_dirs:
        with (job_dir / "results.csv").open() as handle:
            datasets.append(sorted({row["dataset"] for row in csv.DictReader(handle)}))
    assert sorted(datasets) == [["imagenet-a"], ["imagenet-val"]]


def test_unreadable_images_are_listed_in_the_run_directory(workspace, tmp_path: Path) -> None:
    from fixtures.broken_files import truncate

    data = tmp_path / "data"
    written = miniature.make_wnid_folders(data / "imagenet" / "val", imagenet_synsets()[:3])
    corrupt = miniature.write_corrupt_image(data / "imagenet" / "val" / imagenet_synsets()[0]
                                            / "zz_corrupt.JPEG")
    truncated = truncate(miniature.write_image(
        data / "imagenet" / "val" / imagenet_synsets()[1] / "zz_truncated.JPEG", seed=3,
        size=(64, 48)))
    cfg = _cfg(workspace, tmp_path / "run", "only=imagenet-val", f"data_root={data}")
    out = evaluate_cli.run_evaluation(cfg)
    with (out / "unreadable_images.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    assert sorted((row["dataset"], row["path"]) for row in listed) == [
        ("imagenet-val", str(corrupt)), ("imagenet-val", str(truncated))]
    assert all(row["error"] for row in listed)
    rows = read_results_csv(out / "results.csv")
    assert {int(row["num_images"]) for row in rows} == {len(written)}  # the readable ones
    assert {row["model"] for row in rows} == {"baseline", "finetuned"}
