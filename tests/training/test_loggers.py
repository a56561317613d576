"""``offline: auto`` for wandb: offline unless it can sync."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from robustft.training import loggers


def _config(tmp_path, offline):
    return OmegaConf.create({
        "csv": {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(tmp_path)},
        "wandb": {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "p",
                  "save_dir": str(tmp_path), "offline": offline},
        "off": None,
    })


@pytest.mark.parametrize("can_sync", [True, False])
def test_auto_offline_follows_whether_wandb_can_sync(tmp_path, monkeypatch, can_sync):
    # not disabled (which forces offline=False); no run is started: .experiment is not read
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(loggers, "wandb_can_sync", lambda: can_sync)
    built = loggers.build_loggers(_config(tmp_path, "auto"))
    assert [type(x).__name__ for x in built] == ["CSVLogger", "WandbLogger"]
    assert built[1]._offline is (not can_sync)


def test_explicit_offline_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(loggers, "wandb_can_sync", lambda: pytest.fail("must not probe"))
    assert loggers.build_loggers(_config(tmp_path, True))[1]._offline is True


def test_no_api_key_means_no_sync(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    assert loggers.wandb_can_sync(timeout=0.1) is False


@pytest.mark.parametrize("offline", ["auto", True])
@pytest.mark.parametrize("variable", [("WANDB_MODE", "disabled"), ("WANDB_DISABLED", "true")])
def test_disabled_wandb_writes_nothing(tmp_path, monkeypatch, offline, variable):
    # offline=True made Lightning set WANDB_MODE=dryrun when the run started, which wrote
    # wandb/offline-run-* under the run directory although wandb was disabled
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    monkeypatch.setenv(*variable)
    monkeypatch.setattr(loggers, "wandb_can_sync", lambda: False)  # auto would go offline
    (wandb_logger,) = [logger for logger in loggers.build_loggers(_config(tmp_path, offline))
                       if type(logger).__name__ == "WandbLogger"]
    wandb_logger.log_hyperparams({"lr": 0.1})
    wandb_logger.log_metrics({"train/loss": 1.0}, step=0)
    wandb_logger.finalize("success")
    wandb_logger.experiment.finish()  # the next test's logger starts its own run
    assert not (tmp_path / "wandb").exists(), sorted(map(str, tmp_path.rglob("*")))
    assert os.environ.get(variable[0]) == variable[1]
    assert os.environ.get("WANDB_MODE") in (None, "disabled")
