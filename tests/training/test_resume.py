"""Exact resume: a ``robustft-train`` run killed with a real SIGKILL in the middle of an
epoch and resumed from its ``last.ckpt`` ends with the same weights, bit for bit, as the
same run left alone, with augmentation (random crop and flip) and dropout / drop-path on,
for ``num_workers`` 0 and 2, from an explicit checkpoint path and from ``ckpt_path=last``;
and the resumed run writes into the run directory it resumes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fixtures.exact_resume import (
    MAX_EPOCHS,
    RUN,
    TINY_VIT,
    load_checkpoint,
    robustft_train,
    run_dirs,
    weight_differences,
)
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module

from robustft.data.datamodule import ImageMaskDataModule
from robustft.training.resume import checkpoint_to_resume, run_dir_to_resume
from robustft.training.run import train

KILL_EPOCH, KILL_BATCH = 3, 2  # killed after 2 of the 4 steps of epoch 3
KILLER = ["+callbacks.killer._target_=fixtures.sigkill.SigkillAt",
          f"+callbacks.killer.epoch={KILL_EPOCH}", f"+callbacks.killer.batch_idx={KILL_BATCH}"]
# data_root and uninterrupted (the reference run's last.ckpt): tests/training/conftest.py


# Each case runs robustft-train twice (~15 s each on 2 busy cores); one is in the default
# suite: workers (against the reference's num_workers=0) and ckpt_path=last.
@pytest.mark.parametrize(("num_workers", "resume_with"), [
    (2, "last"),
    pytest.param(0, "path", marks=pytest.mark.slow),
    pytest.param(0, "last", marks=pytest.mark.slow),
    pytest.param(2, "path", marks=pytest.mark.slow),
])
def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tmp_path, data_root, uninterrupted,
                                                            num_workers, resume_with):
    workers = f"data.num_workers={num_workers}"
    killed = robustft_train(tmp_path, data_root, workers, *KILLER)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["epoch"] == KILL_EPOCH - 1  # the end of the epoch before

    ckpt_path = "last" if resume_with == "last" else str(last)
    resumed = robustft_train(tmp_path, data_root, workers, f"ckpt_path={ckpt_path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(tmp_path) == [run]  # continued in the run's own directory
    final = load_checkpoint(last)
    assert final["epoch"] == MAX_EPOCHS - 1
    assert final["global_step"] == uninterrupted["global_step"]
    differing, largest = weight_differences(uninterrupted, final)
    assert not differing, f"{len(differing)} tensors differ, max abs difference {largest:.3g}"
    # the interrupted and the resumed part logged into the same run directory, and the
    # resumed part kept the original run's own Hydra config
    assert len(list((run / "csv").glob("version_*/metrics.csv"))) == 2
    assert "ckpt_path" not in (run / ".hydra" / "overrides.yaml").read_text()
    (resumed_overrides,) = (run / ".hydra").glob("resumed_*/overrides.yaml")
    assert f"ckpt_path={ckpt_path}" in resumed_overrides.read_text()


def _checkpoint(run: Path, name: str = "last.ckpt", mtime: float = 1e9) -> Path:
    path = run / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_run_dir_to_resume(tmp_path):
    runs = tmp_path / "runs"
    assert run_dir_to_resume(None, runs) is None
    assert run_dir_to_resume("last", runs) is None  # no runs yet: a new run (train() reports)
    # the run whose last.ckpt was written last, not the one started last (by name)
    older, newer = runs / "2024-01-01_00-00-00", runs / "2024-01-02_00-00-00"
    _checkpoint(older, mtime=2e9)
    _checkpoint(newer, mtime=1e9)
    (runs / "2024-01-03_00-00-00").mkdir()  # a run killed before its first checkpoint
    assert run_dir_to_resume("last", runs) == older
    best = _checkpoint(newer, "best-003.ckpt")
    assert run_dir_to_resume(str(best), runs) == newer
    outside = tmp_path / "downloaded.ckpt"
    outside.write_bytes(b"")
    assert run_dir_to_resume(str(outside), runs) is None  # not a run's checkpoint: a new run
    assert checkpoint_to_resume("s3://bucket/last.ckpt", runs) == "s3://bucket/last.ckpt"


def _in_process_config(tmp_path, *overrides: str):
    data_root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("train", overrides=[f"data.root={data_root}", "data.num_workers=0",
                                           f"paths.output_dir={tmp_path / 'run'}", *RUN, *TINY_VIT,
                                           *overrides])


def test_resumed_run_trains_on_the_files_the_run_selected(tmp_path):
    first = train(_in_process_config(tmp_path, "trainer.max_epochs=1"))
    manifest = tmp_path / "run" / "selection_manifest.csv"
    selected = manifest.read_text()
    # data.seed=1 selects other classes than seed 0 (the run's)
    other = ImageMaskDataModule(str(tmp_path / "pairs"), crop_size=32, mean=(0.0,) * 3,
                                std=(1.0,) * 3, seed=1, train_per_class=None)
    other.setup()
    other.write_selection(str(tmp_path / "seed1.csv"))
    assert (tmp_path / "seed1.csv").read_text() != selected
    resumed = train(_in_process_config(tmp_path, "trainer.max_epochs=2", "data.seed=1",
                                       f"ckpt_path={first.last_checkpoint}"))
    assert load_checkpoint(resumed.last_checkpoint)["epoch"] == 1
    assert manifest.read_text() == selected


def test_resume_last_of_a_task_without_runs_is_one_clear_line(tmp_path):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={tmp_path}", f"paths.root_dir={tmp_path}",
                                          f"paths.output_dir={tmp_path / 'run'}", "ckpt_path=last",
                                          *TINY_VIT])
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last.*last\.ckpt") as error:
        train(cfg)
    assert "\n" not in str(error.value)


def test_missing_checkpoint_file_is_one_clear_line(tmp_path):
    missing = tmp_path / "nope" / "checkpoints" / "last.ckpt"
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={tmp_path}", f"paths.output_dir={tmp_path}",
                                          f"ckpt_path={missing}", *TINY_VIT])
    with pytest.raises(FileNotFoundError, match=r"ckpt_path.*nope/checkpoints/last\.ckpt") as error:
        train(cfg)
    assert "\n" not in str(error.value)


def test_lightning_s_own_checkpoint_keywords_pass_through(tmp_path):
    from robustft.training.resume import checkpoint_to_resume

    for keyword in ("hpc", "registry:model:latest", "s3://bucket/last.ckpt"):
        assert checkpoint_to_resume(keyword, tmp_path) == keyword


@pytest.mark.slow
def test_sigkilled_run_with_images_without_masks_resumes_to_the_uninterrupted_weights(tmp_path):
    # a second loader (data.unmasked_root) whose order and augmentation must resume too
    data_root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=6, size=(36, 36))
    unmasked = ["data.train_per_class=4", f"data.unmasked_root={data_root / 'images'}",
                "data.unmasked_per_class=3", "data.num_workers=0"]
    reference = robustft_train(tmp_path / "uninterrupted", data_root, *unmasked)
    assert reference.returncode == 0, reference.stderr[-3000:]
    (reference_run,) = run_dirs(tmp_path / "uninterrupted")
    expected = load_checkpoint(reference_run / "checkpoints" / "last.ckpt")
    killed = robustft_train(tmp_path / "killed", data_root, *unmasked, *KILLER)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = robustft_train(tmp_path / "killed", data_root, *unmasked, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "killed")
    final = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert final["global_step"] == expected["global_step"]
    differing, largest = weight_differences(expected, final)
    assert not differing, f"{len(differing)} tensors differ, max abs difference {largest:.3g}"
