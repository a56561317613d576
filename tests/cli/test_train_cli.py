"""Hydra configs compose, every experiment runs one fast_dev_run step, bad keys and names
give clear errors, and the installed console entry point works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import robustft.configs
import torch
import yaml
from fixtures.generic_layout import make_generic_layout
from fixtures.miniature import make_imagenet_s
from fixtures.tiny_hf import save_tiny_hf
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from tiny_models import TINY_OPEN_CLIP_KWARGS, tiny_vit

from robustft.checkpoints import load_checkpoint
from robustft.labels import imagenet_synsets
from robustft.masks.generate import generate_masks
from robustft.masks.settings import TokenCutSettings
from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import build_datamodule, build_model, train

CONFIG_DIR = Path(robustft.configs.__file__).parent
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# The experiment's own architecture, shrunk: random weights, 32 px, 2 blocks of width 32.
TINY_KWARGS = ["model.pretrained=false", "model.weights_file=null", "++model.kwargs.img_size=32",
               "++model.kwargs.patch_size=8",
              "++model.kwargs.depth=2", "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]
TINY_MODEL = ["model.name=vit_tiny_patch16_224", *TINY_KWARGS]


def _hydra_value(value) -> str:
    """A Python dict/list/scalar in Hydra's override grammar."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return f"'{value}'" if isinstance(value, str) else str(value)


# An OpenCLIP experiment shrunk: the tiny towers of tiny_models, random weights, one prompt.
TINY_OPEN_CLIP = ["model.pretrained=false", "model.weights_file=null",
                  f"++model.kwargs={_hydra_value(TINY_OPEN_CLIP_KWARGS)}",
                  "model.zero_shot.templates=['a photo of a {}.']"]
TINY_SYNTH = ["++data.synth.num_classes=4", "++data.synth.train_per_class=4",
              "++data.synth.pretrain_per_class=2",
              "++data.synth.eval_per_class=2"]


def _compose(overrides: list[str], config: str = "train"):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose(config, overrides=overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_fast_dev_run(experiment, tmp_path):
    generic_root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3,
                                       size=(36, 36))
    cfg = _compose([f"experiment={experiment}", "debug=fast_dev_run",
                    f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"])
    open_clip = cfg.model.family == "open_clip"
    overrides = [f"experiment={experiment}", "debug=fast_dev_run", f"paths.root_dir={tmp_path}",
                 f"paths.output_dir={tmp_path / 'run'}"]
    if cfg.model.family == "hf":
        # the experiment's hub model, shrunk: a tiny save_pretrained folder with 1000 classes
        save_tiny_hf(tmp_path / "hf", "vit", num_labels=1000)
        overrides += ["model.hf_id=null", f"model.hf_path={tmp_path / 'hf'}"]
    else:
        overrides += TINY_OPEN_CLIP if open_clip else TINY_KWARGS
    if cfg.data.get("synth") is not None:
        overrides += TINY_SYNTH + ["model.num_classes=4"]
    elif "imagenet_s_root" in cfg.data:
        folders = imagenet_synsets()[:5]
        copy = make_imagenet_s(tmp_path / "inet", folders, per_class=3)
        overrides += [f"data.imagenet_root={copy.imagenet_root}",
                      f"data.imagenet_s_root={copy.imagenet_s_root}", "data.num_train_classes=3"]
    elif open_clip:
        overrides += [f"data.root={generic_root}", "model.zero_shot.class_names=[a,b,c,d]"]
    else:
        overrides += [f"data.root={generic_root}", "model.num_classes=4"]
    if cfg.data.get("holdout_per_class"):
        # three pairs a class here: one held out, two trained on
        overrides += ["data.holdout_per_class=1"]
    if cfg.model.get("probe_head"):
        # a pretrained backbone with a probe head (experiment=demo_real): a probe of the tiny
        # tower's 32 features for the 4 classes, in place of the one the demo fits
        from robustft.backbones.heads.probe_head import ProbeHead, save_probe_head

        probe = save_probe_head(ProbeHead(torch.randn(4, 32), torch.zeros(4)),
                                tmp_path / "probe.safetensors")
        overrides += [f"model.probe_head={probe}", "model.num_classes=null"]
    if cfg.data.get("mask_manifest"):
        # Unsupervised masks: replace the fixture's masks by TokenCut masks of a random ViT.
        shutil.rmtree(generic_root / "masks")
        mask_model = tiny_vit("plain", img_size=(32, 32))
        summary = generate_masks(mask_model, generic_root, generic_root,
                                 TokenCutSettings(min_foreground_fraction=0.0), progress=False)
        assert summary is not None and (generic_root / "tokencut_manifest.csv").is_file()
    cfg = _compose(overrides)
    assert cfg.task_name == experiment or experiment == "demo"
    prepare_generated_data(cfg.data)
    result = train(cfg)
    assert result.metrics["train/loss"] > 0
    assert list((tmp_path / "run").glob("selection_manifest.*"))


def _tiny_run_config(tmp_path, *overrides: str):
    """A CPU run of the tiny ViT on 4 generated classes, writing to ``tmp_path/run``."""
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    return _compose([f"data.root={root}", "data.num_workers=0",
                     f"paths.output_dir={tmp_path / 'run'}", "model.num_classes=4",
                     "trainer=cpu", *overrides, *TINY_MODEL])


def test_clip_experiment_fast_dev_run_on_generic_pairs_trains_the_image_tower(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    cfg = _compose(["experiment=clip_vit_b16", "data=generic", f"data.root={root}",
                    "data.num_workers=0", "debug=fast_dev_run", "trainer=cpu",
                    f"paths.output_dir={tmp_path / 'run'}", *TINY_OPEN_CLIP,
                    f"model.zero_shot.class_names={root / 'images'}"])
    assert cfg.model.family == "open_clip" and cfg.loss.classification == "kl_to_teacher"
    result = train(cfg)
    assert result.metrics["train/loss"] > 0
    # the class folders c0..c3 are the head's 4 classes
    cfg = _compose(["experiment=clip_vit_b16", "data=generic", f"data.root={root}",
                    "data.num_workers=0", "debug=fast_dev_run", "trainer=cpu",
                    f"paths.output_dir={tmp_path / 'run2'}", *TINY_OPEN_CLIP,
                    "model.zero_shot.class_names=[a,b,c]"])
    with pytest.raises(ValueError, match=r"^model\.zero_shot\.class_names: the zero-shot head has "
                                         r"3 classes but the data has 4"):
        train(cfg)


def test_loggers_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    cfg = _tiny_run_config(tmp_path, "trainer.max_epochs=2", "logger=many",
                           "relevance.gradient_mode=second_order", "loss.classification=kl_to_teacher")
    os.environ["WANDB_MODE"] = "disabled"
    result = train(cfg)
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert result.last_checkpoint.name == "last.ckpt" and result.last_checkpoint.is_file()
    assert "best/val/loss" in result.metrics
    assert list((run / "csv").rglob("metrics.csv")) and list((run / "tensorboard").rglob("events.*"))
    columns = next((run / "csv").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    # epoch means as train/<name> (synced over DDP processes), like val/<name>
    for column in ("train/bg", "train/fg", "train/cls", "train/fg_share", "val/acc", "val/fg_share"):
        assert column in columns


@pytest.mark.parametrize("objective", [
    ["loss.objective=relevance"], ["loss.objective=relevance", "relevance.gradient_mode=second_order"],
    ["loss.objective=plain"], ["loss.objective=rrr"], ["loss.objective=gradmask"]],
    ids=["relevance", "relevance_second_order", "plain", "rrr", "gradmask"])
def test_every_objective_fast_dev_run(objective, tmp_path):
    # the same DataModule, LightningModule and Trainer for every objective; L2-SP on for all
    cfg = _tiny_run_config(tmp_path, "debug=fast_dev_run", "loss.lambda_l2sp=1.0", *objective)
    result = train(cfg)
    name = objective[0].split("=")[1]
    assert result.metrics["train/loss"] > 0 and "train/l2sp" in result.metrics
    assert "val/acc" in result.metrics and "val/loss" in result.metrics
    relevance_terms = {"train/seg", "train/fg_share", "val/fg_share"}
    if name == "relevance":
        assert relevance_terms <= set(result.metrics)
    else:
        assert not relevance_terms & set(result.metrics)
    penalty = f"train/{name}"
    if name in ("rrr", "gradmask"):
        assert result.metrics[penalty] > 0 and f"val/{name}" in result.metrics


@pytest.mark.parametrize("objective", ["relevance", "rrr"])
def test_images_without_masks_fast_dev_run(objective, tmp_path):
    # the pairs' own image folder as the unmasked images: the selection is never drawn again
    cfg = _tiny_run_config(tmp_path, "debug=fast_dev_run", f"loss.objective={objective}",
                           "data.train_per_class=2", "data.batch_size=2",
                           f"data.unmasked_root={tmp_path / 'pairs' / 'images'}",
                           "data.unmasked_per_class=1", "loss.lambda_unmasked=0.5")
    result = train(cfg)
    assert result.metrics["train/cls_unmasked"] > 0 and "val/cls_unmasked" not in result.metrics
    assert result.metrics["train/loss"] > 0


def test_unknown_objective_is_named():
    with pytest.raises(ConfigCompositionException, match="objective"):
        _compose(["loss.objective=rrrr"])


def test_last_checkpoint_is_the_last_epoch(tmp_path):
    # Lightning 2.6's save_last writes last.ckpt only when a top-k file is saved, so it was a
    # copy of the best epoch. Make the best epoch the first one (monitor the step, mode min)
    # and check that last.ckpt still holds the final epoch.
    run = tmp_path / "run"
    cfg = _tiny_run_config(tmp_path, "trainer.max_epochs=3", "validate_best=false",
                           "callbacks.model_checkpoint.monitor=step",
                           "callbacks.model_checkpoint.mode=min")
    result = train(cfg)
    best = load_checkpoint(result.best_checkpoint)
    last = load_checkpoint(result.last_checkpoint)
    assert result.last_checkpoint.name == "last.ckpt"
    assert best["epoch"] == 0 and last["epoch"] == 2
    assert last["global_step"] > best["global_step"]
    # beside them at most the held-out selection's choice (the held-out classes validate)
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert {"best-000.ckpt", "last.ckpt"} <= names <= {"best-000.ckpt", "last.ckpt", "selected.ckpt"}


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        _compose(["model.not_a_key=1"])


def test_unknown_model_name_is_named(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2)
    cfg = _compose([f"data.root={root}", f"paths.output_dir={tmp_path}", "debug=fast_dev_run",
                    "model.name=vit_tiny_patch16_2244", "model.pretrained=false"])
    with pytest.raises(ValueError, match="vit_tiny_patch16_2244.*model.name"):
        train(cfg)


def test_missing_data_root_is_named(tmp_path):
    cfg = _compose([f"paths.output_dir={tmp_path}", "debug=fast_dev_run", *TINY_MODEL])
    with pytest.raises(ValueError, match=r"missing config value\(s\) data\.root"):
        train(cfg)


@pytest.mark.parametrize("key", ["loss.bogus", "optim.bogus", "data.bogus"])
def test_unknown_appended_key_is_named_with_its_group(tmp_path, key):
    cfg = _tiny_run_config(tmp_path, "debug=fast_dev_run", f"+{key}=1")
    with pytest.raises(KeyError, match=key.replace(".", r"\.")):
        train(cfg)


def test_more_data_classes_than_model_outputs_is_named(tmp_path):
    cfg = _tiny_run_config(tmp_path, "debug=fast_dev_run", "model.num_classes=3")
    with pytest.raises(ValueError, match="4 classes but the model has 3 outputs.*class_index"):
        train(cfg)


def test_console_entry_point_runs(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=2, size=(36, 36))
    script = Path(sys.executable).parent / "robustft-train"
    completed = subprocess.run(
        [str(script), f"data.root={root}", "model.num_classes=4", "debug=fast_dev_run",
         f"paths.root_dir={tmp_path}", *TINY_MODEL],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/selection_manifest.csv"))


def test_hugging_face_model_fast_dev_run_through_robustft_train(tmp_path, monkeypatch):
    from robustft.cli.train import main

    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 52))
    save_tiny_hf(tmp_path / "hf", "deit_teacher", num_labels=9,
                 processor={"size": {"height": 32, "width": 48}, "image_mean": [0.4] * 3,
                            "image_std": [0.3] * 3})
    monkeypatch.setattr(sys, "argv", [
        "robustft-train", "model=hf", f"model.hf_path={tmp_path / 'hf'}", "model.num_classes=4",
        f"data.root={root}", "data.num_workers=0", "debug=fast_dev_run", "trainer=cpu",
        f"paths.root_dir={tmp_path}", "relevance.backend=fused",
        "loss.classification=kl_to_teacher"])
    main()
    run = next((tmp_path / "logs" / "train" / "runs").iterdir())
    assert (run / "selection_manifest.csv").is_file()
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["model"]["family"] == "hf" and saved["data"]["crop_size"] is None
    # the processor's non-square size and normalisation reached the data module
    cfg = _compose(["model=hf", f"model.hf_path={tmp_path / 'hf'}", "model.num_classes=4",
                    f"data.root={root}", "data.num_workers=0", f"paths.output_dir={tmp_path}"])
    datamodule = build_datamodule(cfg.data, build_model(cfg.model))
    assert tuple(datamodule.crop_size) == (32, 48)
    assert datamodule.mean == (0.4,) * 3 and datamodule.std == (0.3,) * 3


def test_non_square_model_input_trains(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 52))
    cfg = _compose([f"data.root={root}", "data.num_workers=0", f"paths.output_dir={tmp_path / 'run'}",
                    "model.num_classes=4", "trainer=cpu", "debug=fast_dev_run", *TINY_MODEL,
                    "++model.kwargs.img_size=[32,48]"])
    result = train(cfg)
    assert result.metrics["train/loss"] > 0


def test_resume_from_last_checkpoint_continues_the_run(tmp_path):
    import torch

    common = ("validate_best=false", "loss.classification=kl_to_teacher")
    first = train(_tiny_run_config(tmp_path / "first", "trainer.max_epochs=2", *common))
    resumed = train(_tiny_run_config(tmp_path / "second", "trainer.max_epochs=3", *common,
                                     f"ckpt_path={first.last_checkpoint}"))
    before = load_checkpoint(first.last_checkpoint)
    after = load_checkpoint(resumed.last_checkpoint)
    assert (before["epoch"], after["epoch"]) == (1, 2)
    steps_per_epoch = before["global_step"] // 2
    assert after["global_step"] == before["global_step"] + steps_per_epoch
    teacher = [k for k in before["state_dict"] if k.startswith("teacher.")]
    assert teacher  # the frozen original model travels with the checkpoint, unchanged
    for key in teacher:
        assert torch.equal(before["state_dict"][key], after["state_dict"][key]), key
    moved = [k for k in before["state_dict"] if k.startswith("model.")
             and not torch.equal(before["state_dict"][k], after["state_dict"][k])]
    assert moved  # the third epoch trained on from the resumed weights
