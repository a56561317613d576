"""Run directories named by the second: two runs started in the same second (the tasks of a
job array) get two directories, for every entry point that names its directory by the
time; a resumed run keeps its own; printing the config creates nothing."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import hydra.core.utils
import pytest
import torch
from fixtures.frozen_clock import FrozenClock
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module

from robustft.cli.common import claim_new_directory

TESTS_DIR = Path(__file__).parents[1]
INSTANT = "2031-05-06T07:08:09"
STAMP = "2031-05-06_07-08-09"
TINY_VIT = ["model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.num_classes=4",
            "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=2",
            "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]


def _start_frozen(go: Path, root_dir: Path, module: str, *overrides: str) -> subprocess.Popen:
    python_path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "fixtures.frozen_clock", str(go), INSTANT, module, *overrides],
        cwd=root_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
             "PYTHONPATH": python_path})


def test_two_trainings_released_at_one_instant_get_two_directories(tmp_path):
    data_root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=2, size=(36, 36))
    go = tmp_path / "go"
    common = [f"data.root={data_root}", f"paths.root_dir={tmp_path}", "data.num_workers=0",
              "trainer=cpu", "trainer.max_epochs=1", "validate_best=false",
              "callbacks.progress_bar=null", *TINY_VIT]
    runs = [_start_frozen(go, tmp_path, "robustft.cli.train", *common, f"seed={seed}")
            for seed in (0, 1)]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("go.ready.*"))) < 2:  # both imported, waiting at the gate
        assert time.monotonic() < deadline and all(run.poll() is None for run in runs), \
            [run.communicate()[1][-2000:] for run in runs if run.poll() is not None]
        time.sleep(0.05)
    go.touch()
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]

    run_dirs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert [path.name for path in run_dirs] == [STAMP, f"{STAMP}_1"]
    seeds = set()
    for run_dir in run_dirs:
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        seeds |= {seed for seed in (0, 1) if f"seed={seed}" in overrides}
        assert (run_dir / "selection_manifest.csv").is_file()
        assert len(list((run_dir / "csv").glob("version_*/metrics.csv"))) == 1
    assert seeds == {0, 1}  # each run's own config in its own directory
    last = [torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
            for run_dir in run_dirs]
    assert not torch.equal(last[0]["state_dict"]["model.head.weight"],
                           last[1]["state_dict"]["model.head.weight"])
    # each printed its own last checkpoint
    printed = {line.split("last checkpoint: ")[1].strip() for out, err in outputs
               for line in (out + err).splitlines() if "last checkpoint: " in line}
    assert printed == {str(run_dir / "checkpoints" / "last.ckpt") for run_dir in run_dirs}


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(FrozenClock, "instant", datetime.datetime.fromisoformat(INSTANT))
    monkeypatch.setattr(hydra.core.utils, "datetime", FrozenClock)


def _hydra_dirs(config: str, overrides: list[str]) -> tuple[str, str]:
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    return cfg.hydra.run.dir, cfg.hydra.sweep.dir


@pytest.mark.parametrize("config", ["train", "demo", "compare", "tune", "explain", "masks"])
def test_every_entry_point_named_by_the_second_claims_its_directory(config, tmp_path,
                                                                     monkeypatch, frozen_clock):
    monkeypatch.chdir(tmp_path)  # masks: Hydra's outputs/ and multirun/ under the cwd
    overrides = [] if config == "masks" else [f"paths.root_dir={tmp_path}"]
    first_run, first_sweep = _hydra_dirs(config, overrides)
    second_run, second_sweep = _hydra_dirs(config, overrides)
    for first, second in ((first_run, second_run), (first_sweep, second_sweep)):
        assert Path(first).is_dir() and Path(second).is_dir()
        assert second == f"{first}_1"
        assert STAMP in first or STAMP.replace("_", "/") in first


def test_a_directory_is_claimed_once_per_composition(tmp_path, frozen_clock):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    # read again and again (Hydra reads it, then every copy of the config): the same one
    assert len({cfg.hydra.run.dir for _ in range(3)}) == 1
    assert len({cfg.hydra.sweep.dir for _ in range(3)}) == 1
    assert len(list((tmp_path / "logs" / "train" / "runs").iterdir())) == 1


def test_a_resumed_run_continues_in_its_directory_and_claims_none(tmp_path, frozen_clock):
    run = tmp_path / "logs" / "train" / "runs" / "2030-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    for ckpt_path in ("last", str(run / "checkpoints" / "last.ckpt")):
        run_dir, _sweep = _hydra_dirs("train", [f"paths.root_dir={tmp_path}",
                                                f"ckpt_path={ckpt_path}"])
        assert run_dir == str(run)
    assert sorted(path.name for path in run.parent.iterdir()) == [run.name]


def test_printing_the_config_creates_no_directory(tmp_path, monkeypatch, frozen_clock):
    monkeypatch.setattr(sys, "argv", ["robustft-train", "-m", "--cfg", "all", "--resolve"])
    run_dir, sweep_dir = _hydra_dirs("train", [f"paths.root_dir={tmp_path}"])
    assert run_dir.endswith(STAMP) and sweep_dir.endswith(STAMP)
    assert not (tmp_path / "logs").exists()


def test_claim_takes_the_first_free_suffix(tmp_path):
    wanted = tmp_path / "runs" / STAMP
    assert claim_new_directory(str(wanted)) == str(wanted)
    (tmp_path / "runs" / f"{STAMP}_1").mkdir()  # taken by another run
    assert claim_new_directory(str(wanted)) == f"{wanted}_2"
    assert claim_new_directory(str(wanted)) == f"{wanted}_3"
