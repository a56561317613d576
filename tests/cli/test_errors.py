"""Every robustft-* command reports an error as ONE line on stderr, ``robustft-<cmd>: error:
<message>`` naming the file / config key, with exit code 1; ``HYDRA_FULL_ERROR=1`` or
``verbose=true`` brings the traceback back.

The entry points run in-process (their real ``main`` with ``sys.argv`` patched, as the
console scripts call it); two tests run installed console scripts in a subprocess (a
torch + timm + Lightning start costs 5-15 s on 2 shared cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures.broken_files import truncate
from fixtures.generic_layout import make_generic_layout
from fixtures.miniature import make_wnid_folders
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from safetensors.torch import save_file

import robustft.cli.data as data_cli
import robustft.cli.demo as demo_main
import robustft.cli.evaluate as evaluate_main
import robustft.cli.masks as masks_cli
import robustft.cli.train as train_cli
from robustft.backbones import create_model
from robustft.cli.errors import fold_lines, one_line_errors, one_line_message
from robustft.data.layout import CorruptImageError
from robustft.labels import imagenet_synsets

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
TINY_MODEL = ["model.name=vit_tiny_patch16_224", "model.pretrained=false",
              "model.weights_file=null", "model.num_classes=4",
              *(f"++model.kwargs.{key}={value}" for key, value in TINY.items())]
TINY_ENTRY = "{img_size:32,patch_size:8,embed_dim:32,depth:1,num_heads:2}"


@pytest.fixture(autouse=True)
def _no_full_error(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


def _run(main, argv, capsys, monkeypatch) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of ``main()`` run as a command."""
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return exit_info.value.code, lines


def _one_error_line(code, lines, command) -> str:
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{command}: error: ")
    return lines[0][len(f"{command}: error: "):]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_generic_layout(tmp_path_factory.mktemp("errors") / "pairs", num_classes=4,
                               per_class=2, size=(36, 36))


def _train_argv(tmp_path, pairs, *extra):
    return ["robustft-train", f"data.root={pairs}", f"paths.root_dir={tmp_path}",
            "trainer=cpu", "trainer.max_epochs=1", "data.num_workers=0", *TINY_MODEL, *extra]


# --------------------------------------------------------------------------- the wrapper


def test_fold_lines_joins_lines_and_lists():
    assert fold_lines("a\n  b\n\nc") == "a b c"
    assert fold_lines("Could not find 'model/x'\n\nAvailable options in 'model':\n\tvit_base"
                      "\n\tdeit_small\nDone") == ("Could not find 'model/x' Available options in "
                                                 "'model': vit_base, deit_small Done")


def test_omegaconf_error_names_its_full_key():
    @dataclass
    class Trainer:
        max_epochs: int = 1

    cfg = OmegaConf.create({"trainer": OmegaConf.structured(Trainer)})
    with pytest.raises(Exception) as error:
        cfg.trainer.max_epochs = "many"
    assert one_line_message(error.value) == (
        "trainer.max_epochs: Value 'many' of type 'str' could not be converted to Integer")


def _as_torch_reraises_it(error: Exception) -> BaseException:
    """``error`` as the main process receives it from a DataLoader worker: torch's own
    wrapper (torch/_utils.py, what the worker loop and the pin-memory thread use) formats
    and re-raises it; the real worker path runs in test_console_script_error_in_a_dataloader_worker."""
    from torch._utils import ExceptionWrapper

    try:
        raise error
    except Exception:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        wrapper.reraise()
    except Exception as reraised:  # noqa: BLE001 - the type is torch's choice
        return reraised
    raise AssertionError("reraise() returned")


@pytest.mark.parametrize("error, expected", [
    (ValueError("mask /m.png has mode RGB;\nexpected a single-channel PNG"),
     "ValueError: mask /m.png has mode RGB; expected a single-channel PNG"),
    # not constructible from one message: torch re-raises it as a RuntimeError
    (CorruptImageError(Path("/d/a.png"), "OSError: image file is truncated"),
     "CorruptImageError: cannot decode image /d/a.png: OSError: image file is truncated"),
    (KeyError("no such key"), "KeyError: 'no such key'"),
])
def test_dataloader_worker_error_reports_the_original(error, expected):
    reraised = _as_torch_reraises_it(error)
    assert "Original Traceback" in str(reraised)  # what torch hands the main process
    assert one_line_message(reraised) == f"{expected} (raised in DataLoader worker process 0)"


def test_other_types_are_named_and_keyerror_loses_its_quotes():
    assert one_line_message(RuntimeError("CUDA error:\n out of memory")) == (
        "RuntimeError: CUDA error: out of memory")
    assert one_line_message(KeyError("models.x: unknown key")) == "models.x: unknown key"
    assert one_line_message(AssertionError()) == "AssertionError"


def test_keyboard_interrupt_is_one_line(capsys, monkeypatch):
    @one_line_errors("robustft-x")
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "argv", ["robustft-x"])
    with pytest.raises(SystemExit) as exit_info:
        interrupted()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "robustft-x: interrupted (KeyboardInterrupt)\n"


def test_called_with_a_config_the_entry_point_raises():
    # Hydra's main(cfg) is the library/test path: the error stays an exception
    with pytest.raises(ValueError, match="missing config value"):
        train_cli.main(OmegaConf.create({"data": {"root": "???"}, "seed": 0}))


# --------------------------------------------------------------------------- composition


def test_unknown_key_is_one_line(tmp_path, pairs, capsys, monkeypatch):
    code, lines = _run(train_cli.main, _train_argv(tmp_path, pairs, "model.not_a_key=1"),
                       capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-train")
    assert message.startswith("model.not_a_key: Key 'not_a_key' not in 'ModelSpec' (model takes: "
                              "name, family, pretrained, weights_file, checkpoint, num_classes, kwargs, "
                              "tag, zero_shot, hf_id, hf_path, probe_head)")
    assert "+model.not_a_key=1" in message


def test_a_renamed_key_is_one_line_naming_the_new_key(tmp_path, pairs, capsys, monkeypatch):
    """loss.lambda_acc is loss.lambda_cls now: refused, on the command line and in YAML,
    with one line that names the new key."""
    code, lines = _run(train_cli.main, _train_argv(tmp_path, pairs, "loss.lambda_acc=0.5"),
                       capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-train")
    assert message.startswith("loss.lambda_acc: Key 'lambda_acc' not in 'LossConfig' (renamed: "
                              "use loss.lambda_cls)"), message
    own = tmp_path / "own_configs" / "experiment"
    own.mkdir(parents=True)
    (own / "old_keys.yaml").write_text("# @package _global_\nloss:\n  lambda_acc: 1.0\n")
    argv = _train_argv(tmp_path, pairs, "experiment=old_keys")
    code, lines = _run(train_cli.main, [argv[0], "--config-dir", str(own.parent), *argv[1:]],
                       capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-train")
    assert message.startswith("loss.lambda_acc: Key 'lambda_acc' not in 'LossConfig' (renamed: "
                              "use loss.lambda_cls)"), message


@pytest.mark.parametrize("how", ["HYDRA_FULL_ERROR", "verbose=true"])
def test_full_error_or_verbose_raises_with_the_traceback(tmp_path, pairs, monkeypatch, how):
    argv = _train_argv(tmp_path, pairs, "model.not_a_key=1")
    if how == "HYDRA_FULL_ERROR":
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    else:
        argv.append(how)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(ConfigCompositionException, match="model.not_a_key"):
        train_cli.main()
    if how != "HYDRA_FULL_ERROR":
        assert "HYDRA_FULL_ERROR" not in os.environ  # verbose set it for the run only
    assert sys.argv == argv  # restored for the caller


def test_composition_errors_of_the_other_hydra_commands(capsys, monkeypatch):
    for main, command in ((demo_main.main, "robustft-demo"), (evaluate_main.main, "robustft-eval"),
                          (masks_cli.main, "robustft-masks")):
        code, lines = _run(main, [command, "not_a_key=1"], capsys, monkeypatch)
        message = _one_error_line(code, lines, command)
        # the typed top level names itself and the keys it takes
        assert message.startswith("not_a_key: Key 'not_a_key' not in '"), message
        assert "(the top level takes: task_name, " in message


def test_argparse_command_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        data_cli.main(["verify", "not-a-dataset", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "no data manifest 'not-a-dataset'" in _one_error_line(exit_info.value.code, lines,
                                                                "robustft-data")
    with pytest.raises(KeyError, match="no data manifest 'not-a-dataset'"):
        data_cli.main(["verify", "not-a-dataset", str(tmp_path), "verbose=true"])


def test_multirun_error_names_the_job_and_the_sweep_still_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["robustft-train", "-m", f"paths.root_dir={tmp_path}",
                                      *TINY_MODEL, "seed=0,1"])  # no data.root: both fail
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    message = _one_error_line(exit_info.value.code, lines, "robustft-train")
    assert message.startswith("missing config value(s) data.root")
    assert "(multirun job 0, " in message
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_weights_file_in_training(tmp_path, pairs, capsys, monkeypatch, suffix):
    path = tmp_path / f"vit{suffix}"
    model = create_model("vit_tiny_patch16_224", num_classes=4, **TINY)
    if suffix == ".safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    truncate(path)
    code, lines = _run(train_cli.main, _train_argv(tmp_path, pairs, f"model.weights_file={path}"),
                       capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-train")
    assert message.startswith(f"model.weights_file: {path} is not a readable ")
    assert "(truncated?)" in message


def test_weights_file_of_another_architecture_in_training(tmp_path, pairs, capsys, monkeypatch):
    path = tmp_path / "wide.safetensors"
    wide = create_model("vit_tiny_patch16_224", num_classes=4, **{**TINY, "embed_dim": 64})
    save_file(wide.state_dict(), str(path))
    code, lines = _run(train_cli.main, _train_argv(tmp_path, pairs, f"model.weights_file={path}"),
                       capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-train")
    assert message.startswith(f"model.weights_file: {path} does not fit "
                              "model.name=vit_tiny_patch16_224")
    assert "tensors differ, e.g. cls_token: file (1, 1, 64) vs model (1, 1, 32)" in message


def test_manifest_label_outside_the_head(tmp_path, pairs, capsys, monkeypatch):
    manifest = tmp_path / "selection.csv"
    manifest.write_text("split,label,class_name,image,mask\n"
                        "train,0,c0,images/c0/img0.png,masks/c0/img0.png\n"
                        "train,99,c1,images/c1/img0.png,masks/c1/img0.png\n"
                        "val,2,c2,images/c2/img0.png,masks/c2/img0.png\n")
    code, lines = _run(train_cli.main, _train_argv(tmp_path, pairs, f"data.manifest={manifest}"),
                       capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-train")
    assert message.startswith(f"data.manifest: {manifest} gives label 99 (class 'c1', ")
    assert "but the model has 4 outputs" in message


def _eval_argv(tmp_path, data_root, *models):
    # a real val folder: the datasets are checked before any model is built
    make_wnid_folders(Path(data_root) / "imagenet" / "val", imagenet_synsets()[:2], per_class=1)
    return ["robustft-eval", f"data_root={data_root}", f"paths.root_dir={tmp_path}", "eval=full",
            "only=imagenet-val", "device=cpu", "num_workers=0", "progress=false", "plots=false",
            "models.baseline.name=vit_tiny_patch16_224", f"models.baseline.kwargs={TINY_ENTRY}",
            *models]


def test_checkpoint_of_another_architecture_in_evaluation(tmp_path, capsys, monkeypatch):
    wide = create_model("vit_tiny_patch16_224", **{**TINY, "embed_dim": 64})
    checkpoint = tmp_path / "wide.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in wide.state_dict().items()}}, checkpoint)
    code, lines = _run(evaluate_main.main, _eval_argv(
        tmp_path, tmp_path / "data", "models.baseline.pretrained=false",
        "+models.ft.name=vit_tiny_patch16_224", f"+models.ft.checkpoint={checkpoint}",
        f"+models.ft.kwargs={TINY_ENTRY}"), capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-eval")
    assert message.startswith(f"models.ft.checkpoint: {checkpoint} does not fit "
                              "vit_tiny_patch16_224")
    assert "tensors differ, e.g. cls_token: checkpoint (1, 1, 64) vs model (1, 1, 32)" in message


def test_truncated_weights_file_in_evaluation(tmp_path, capsys, monkeypatch):
    path = tmp_path / "vit.safetensors"
    save_file(create_model("vit_tiny_patch16_224", **TINY).state_dict(), str(path))
    truncate(path)
    code, lines = _run(evaluate_main.main, _eval_argv(
        tmp_path, tmp_path / "data", f"models.baseline.weights_file={path}"), capsys, monkeypatch)
    message = _one_error_line(code, lines, "robustft-eval")
    assert message.startswith(f"models.baseline.weights_file: {path} is not a readable "
                              "safetensors file (truncated?)")


# --------------------------------------------------------------------------- console scripts


def _console(command: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / command
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                        "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
                                        **env})


def test_console_script_one_line_and_full_error(tmp_path):
    # robustft-data starts in a fraction of a second (no torch import before the error)
    plain = _console("robustft-data", "verify", "not-a-dataset", str(tmp_path), cwd=tmp_path)
    assert plain.returncode == 1
    assert plain.stderr.startswith("robustft-data: error: no data manifest 'not-a-dataset'")
    assert plain.stderr.count("\n") == 1 and plain.stderr.endswith("\n")
    full = _console("robustft-data", "verify", "not-a-dataset", str(tmp_path), cwd=tmp_path,
                    HYDRA_FULL_ERROR="1")
    assert full.returncode == 1
    assert full.stderr.startswith("Traceback (most recent call last)")
    assert "no data manifest 'not-a-dataset'" in full.stderr.splitlines()[-1]


def test_console_script_bad_training_image_is_one_line(tmp_path):
    # the selection's decode check finds it before any worker starts (the worker path is
    # test_dataloader_worker_error_reports_the_original)
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=2, size=(36, 36))
    broken = truncate(root / "images" / "c1" / "img0.png")
    completed = _console(
        "robustft-train", f"data.root={root}", f"paths.root_dir={tmp_path}", "trainer=cpu",
        "trainer.max_epochs=1", "data.num_workers=1", "data.class_fraction=1.0",
        "~callbacks.progress_bar", "trainer.enable_progress_bar=false", *TINY_MODEL,
        cwd=tmp_path)
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    # before it, stderr holds Lightning's own start-up lines (GPU available..., the summary)
    errors = [line for line in lines if line.startswith("robustft-train:")]
    assert errors == [lines[-1]]
    assert errors[0] == (f"robustft-train: error: {broken}: cannot decode the image (OSError: "
                         "image file is truncated); fix or remove it")


def test_error_carrying_a_remote_traceback_reports_the_original():
    class FailedJobError(RuntimeError):
        pass

    remote = ("Job (task=0) failed during processing with trace:\n----------------------\n"
              "Traceback (most recent call last):\n  File \"/x/run.py\", line 3, in train\n"
              "    raise ValueError(...)\nValueError: data.root: /d is not a folder\n")
    assert one_line_message(FailedJobError(remote)) == (
        "ValueError: data.root: /d is not a folder "
        "(FailedJobError: Job (task=0) failed during processing with trace)")
