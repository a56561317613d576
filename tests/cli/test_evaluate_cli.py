"""robustft-eval end to end on miniature copies: timm weights file + Lightning checkpoint,
results.csv / results.md / plots, legacy labelling, missing datasets, device and workers, the
suites' dataset names, and -m multirun dirs (resume: test_evaluate_resume.py)."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import fixtures.miniature as miniature
import pytest
from fixtures.eval_workspace import TINY_OVERRIDE, make_eval_workspace, models_cfg
from hydra import compose, initialize_config_module

import robustft.cli.evaluate as evaluate_command
import robustft.evaluation.run as evaluation_run
from robustft.evaluation.report import read_results_csv
from robustft.labels import imagenet_synsets


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_eval_workspace(tmp_path_factory.mktemp("eval_cli"))


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
    out = evaluation_run.run_evaluation(_cfg(workspace, tmp_path / "run"))
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
    rows = read_results_csv(evaluation_run.run_evaluation(cfg) / "results.csv")
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append((row["metric"], row["value"]))
    assert by_model["baseline"] == by_model["finetuned"]


def test_legacy_protocol_is_labelled(workspace, tmp_path: Path) -> None:
    cfg = _cfg(workspace, tmp_path / "run", "protocol=legacy", "only=[imagenet-a,objectnet]")
    out = evaluation_run.run_evaluation(cfg)
    rows = read_results_csv(out / "results.csv")
    assert {r["protocol"] for r in rows} == {"legacy:1000-way"}
    assert "**Legacy protocol**" in (out / "results.md").read_text()


def test_missing_dataset_root_is_an_error_unless_skipped(workspace, tmp_path: Path) -> None:
    cfg = _cfg(workspace, tmp_path / "a", "only=[imagenet-val,imagenet-r]")
    with pytest.raises(Exception, match="imagenet-r"):
        evaluation_run.run_evaluation(cfg)
    cfg = _cfg(workspace, tmp_path / "b", "only=[imagenet-val,imagenet-r]", "skip_missing=true")
    rows = read_results_csv(evaluation_run.run_evaluation(cfg) / "results.csv")
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
    evaluate_command.main()
    sweep_dir = tmp_path / "logs" / "eval" / "sweep" / "multirun"
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    datasets = []
    for job_dir in job_dirs:
        with (job_dir / "results.csv").open() as handle:
            datasets.append(sorted({row["dataset"] for row in csv.DictReader(handle)}))
    assert sorted(datasets) == [["imagenet-a"], ["imagenet-val"]]


def test_skip_missing_skips_a_missing_si_score_subset(tmp_path: Path, workspace, caplog) -> None:
    # The SI-Score root exists but holds only area/: skip_missing used to stop at
    # rotation/ because it only looked at the (existing) root.
    data = tmp_path / "data"
    miniature.make_si_score_subset(data / "si-score", "area", {"area": ["0.1", "0.5"]})
    models = {"baseline": {"weights_file": str(workspace["weights"])}}

    def cfg(*extra):
        return models_cfg(workspace, tmp_path / "run", models, "eval=si_score", *extra,
                           data_root=data)  # fmt: skip

    with pytest.raises(FileNotFoundError, match=r"^eval\.datasets\.si-score-rotation: folder not "
                       r"found: .*si-score/rotation ") as error:  # fmt: skip
        evaluation_run.run_evaluation(cfg())
    assert "\n" not in str(error.value)
    caplog.set_level(logging.WARNING, logger="robustft.evaluation.run")
    out = evaluation_run.run_evaluation(cfg("skip_missing=true"))
    assert {r["dataset"] for r in read_results_csv(out / "results.csv")} == {"si-score-area"}
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 2
    assert any("si-score/rotation" in line for line in skipped)
    assert any("si-score/location20_area02_min0pc" in line for line in skipped)


def test_device_and_workers_are_resolved(workspace, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"^device='gpu': "):
        evaluation_run.run_evaluation(_cfg(workspace, tmp_path / "a", "only=imagenet-val", "device=gpu"))
    monkeypatch.setattr(evaluation_run, "resolve_num_workers", lambda value: 0 if value is None else -1)
    seen = []
    real = evaluation_run.evaluate_models

    def recording(models, dataset, **kwargs):
        seen.append(kwargs["num_workers"])
        return real(models, dataset, **kwargs)

    monkeypatch.setattr(evaluation_run, "evaluate_models", recording)
    evaluation_run.run_evaluation(_cfg(workspace, tmp_path / "b", "only=imagenet-val", "num_workers=null"))
    assert seen == [0]


def test_v2_has_one_name_in_every_suite() -> None:
    with initialize_config_module("robustft.configs", version_base="1.3"):
        suites = {name: compose("eval", overrides=[f"eval={name}", "data_root=/d"]).eval.datasets
                  for name in ("paper", "full")}  # fmt: skip
    for datasets in suites.values():
        assert "imagenet-v2" not in datasets
        v2 = datasets["imagenet-v2-matched-frequency"]
        assert (v2.type, v2.root) == (
            "imagenet-v2-matched-frequency", "/d/imagenetv2-matched-frequency-format-val"
        )


def test_custom_folder_dataset_from_the_command_line(workspace, tmp_path: Path) -> None:
    # The README's recipe for a user's own class folders: the generic reader (type
    # generated: <root>/<split>/<class>/<image>, classes.txt or sorted folders) and a
    # model with that many classes.
    bench = miniature.make_generated_benchmark(tmp_path / "mine")
    cfg = models_cfg(
        workspace, tmp_path / "run", {"baseline": {"num_classes": "3"}},
        f"+eval.datasets.own={{type:generated,root:{bench.root},split:shuffled}}", "only=[own]",
    )  # fmt: skip
    rows = read_results_csv(evaluation_run.run_evaluation(cfg) / "results.csv")
    assert {(r["dataset"], r["protocol"], r["num_images"]) for r in rows} == {
        ("own", "standard:3-way", bench.splits["shuffled"])
    }


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
    out = evaluation_run.run_evaluation(cfg)
    with (out / "unreadable_images.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    assert sorted((row["dataset"], row["path"]) for row in listed) == [
        ("imagenet-val", str(corrupt)), ("imagenet-val", str(truncated))]
    assert all(row["error"] for row in listed)
    rows = read_results_csv(out / "results.csv")
    assert {int(row["num_images"]) for row in rows} == {len(written)}  # the readable ones
    assert {row["model"] for row in rows} == {"baseline", "finetuned"}


def test_openclip_zero_shot_model_from_a_checkpoint_alone(workspace, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from tiny_models import TINY_OPEN_CLIP_KWARGS

    from robustft.backbones import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False,
                     kwargs=TINY_OPEN_CLIP_KWARGS, zero_shot={"templates": ["a photo of a {}."]})
    model = spec.build()  # the 1000-way ImageNet head
    checkpoint = tmp_path / "clip.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_config": spec.to_dict()}}, checkpoint)
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    kwargs = ("{embed_dim:16,vision_cfg:{image_size:32,patch_size:8,width:32,layers:2,"
              "head_width:16},text_cfg:{context_length:16,vocab_size:49408,width:32,heads:2,"
              "layers:1}}")
    overrides = [f"data_root={workspace['data']}", f"output_dir={tmp_path / 'run'}", "eval=full",
                 "only=[imagenet-val,imagenet-a,objectnet]", "~models.baseline",
                 "+models.file.family=open_clip", "+models.file.name=ViT-B-16",
                 f"+models.file.weights_file={weights}", f"+models.file.kwargs={kwargs}",
                 f"+models.ckpt.checkpoint={checkpoint}", "batch_size=4", "num_workers=0",
                 "device=cpu", "progress=false", "plots=false"]
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    rows = read_results_csv(evaluation_run.run_evaluation(cfg) / "results.csv")
    by_model: dict[str, list] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(
            (row["dataset"], row["protocol"], row["metric"], row["value"]))
    assert by_model["file"] == by_model["ckpt"]
    protocols = {(dataset, protocol) for dataset, protocol, _m, _a in by_model["ckpt"]}
    assert ("imagenet-a", "standard:imagenet-a-200-of-1000") in protocols
    assert {dataset for dataset, _p in protocols} == {"imagenet-val", "imagenet-a", "objectnet"}


def test_hugging_face_model_scores_as_its_own_pipeline(workspace, tmp_path: Path) -> None:
    # A save_pretrained folder as a models.<label> entry: top-1 as HF's own image processor
    # and model compute it on the same images.
    import torch
    from fixtures.tiny_hf import save_tiny_hf
    from PIL import Image
    from transformers import AutoImageProcessor

    bench = miniature.make_generated_benchmark(tmp_path / "mine", images_per_class=4)
    # seed 3: a model whose top-1 here changes with the processor's mean (4 vs 5 of 12)
    model = save_tiny_hf(tmp_path / "hf", "dinov2", num_labels=3, image_size=28, patch_size=14,
                         seed=3,
                         processor={"size": {"height": 36, "width": 36}, "do_center_crop": True,
                                    "crop_size": {"height": 28, "width": 28},
                                    "image_mean": [0.3] * 3, "image_std": [0.2] * 3},
                         processor_class="DeiTImageProcessor")
    cfg = models_cfg(
        workspace, tmp_path / "run", {"baseline": {"num_classes": "3"}},
        "+models.hf.family=hf", f"+models.hf.hf_path={tmp_path / 'hf'}",
        f"+eval.datasets.own={{type:generated,root:{bench.root},split:shuffled}}", "only=[own]",
    )  # fmt: skip
    rows = read_results_csv(evaluation_run.run_evaluation(cfg) / "results.csv")
    top1 = {r["model"]: float(r["value"]) for r in rows if r["metric"] == "top1"}
    processor = AutoImageProcessor.from_pretrained(tmp_path / "hf")
    classes = (bench.root / "classes.txt").read_text().split()
    correct = total = 0
    for label, name in enumerate(classes):
        for path in sorted((bench.root / "shuffled" / name).iterdir()):
            pixels = processor(Image.open(path).convert("RGB"), return_tensors="pt").pixel_values
            with torch.no_grad():
                correct += int(model(pixel_values=pixels).logits.argmax() == label)
            total += 1
    assert total == bench.splits["shuffled"] == 12
    assert top1["hf"] == pytest.approx(100.0 * correct / total)
