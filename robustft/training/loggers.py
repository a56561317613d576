"""Lightning loggers from the ``logger`` config group, with ``offline: auto`` for wandb: a
run syncs live only when it can (an API key and a reachable server), and otherwise logs
offline for a later ``wandb sync`` instead of failing at start-up."""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

import hydra
from omegaconf import DictConfig

__all__ = ["build_loggers", "wandb_can_sync"]


def wandb_can_sync(timeout: float = 3.0) -> bool:
    """True when wandb has an API key (``WANDB_API_KEY`` or ~/.netrc) and its server
    (``WANDB_BASE_URL``, default api.wandb.ai) accepts a TCP connection."""
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if not has_key:
        try:
            has_key = netrc.netrc().authenticators(host) is not None
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            has_key = False
    if not has_key:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    """One logger per non-null entry; ``offline: auto`` becomes ``not wandb_can_sync()``."""
    loggers = []
    for value in (cfg or {}).values():
        if value is None:
            continue
        overrides = {}
        if value.get("offline") == "auto":
            overrides["offline"] = not wandb_can_sync()
        loggers.append(hydra.utils.instantiate(value, **overrides))
    return loggers
