"""``offline: auto`` for wandb: offline unless it can sync."""

from __future__ import annotations

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
    monkeypatch.setenv("WANDB_MODE", "disabled")  # no run is started either way
    monkeypatch.setattr(loggers, "wandb_can_sync", lambda: can_sync)
    built = loggers.build_loggers(_config(tmp_path, "auto"))
    assert [type(x).__name__ for x in built] == ["CSVLogger", "WandbLogger"]
    assert built[1]._offline is (not can_sync)


def test_explicit_offline_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(loggers, "wandb_can_sync", lambda: pytest.fail("must not probe"))
    assert loggers.build_loggers(_config(tmp_path, True))[1]._offline is True


def test_no_api_key_means_no_sync(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    assert loggers.wandb_can_sync(timeout=0.1) is False
