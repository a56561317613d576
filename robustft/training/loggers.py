"""Lightning loggers from the ``logger`` config group, with ``offline: auto`` for wandb: a
run syncs live only when it can (an API key and a reachable server), and otherwise logs
offline for a later ``wandb sync`` instead of failing at start-up. ``WANDB_MODE=disabled``
(or ``WANDB_DISABLED=true``) in the environment turns wandb off whatever ``offline`` says:
nothing is written."""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

import hydra
from omegaconf import DictConfig

__all__ = ["build_loggers", "wandb_can_sync", "wandb_disabled"]


def wandb_disabled() -> bool:
    """True when the environment turns wandb off (``WANDB_MODE=disabled``, or the older
    ``WANDB_DISABLED=true``)."""
    return (os.environ.get("WANDB_MODE", "").lower() == "disabled"
            or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"))


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
    """One logger per non-null entry; ``offline: auto`` becomes ``not wandb_can_sync()``.

    Under :func:`wandb_disabled` a wandb logger gets ``offline=False`` and
    ``mode="disabled"``: Lightning's ``WandbLogger(offline=True)`` sets ``WANDB_MODE=dryrun``
    in the environment when its run starts, which overrode ``disabled`` and wrote
    ``wandb/offline-run-*`` folders."""
    loggers = []
    for value in (cfg or {}).values():
        if value is None:
            continue
        overrides = {}
        if "offline" in value and wandb_disabled():
            overrides.update(offline=False, mode="disabled")
        elif value.get("offline") == "auto":
            overrides["offline"] = not wandb_can_sync()
        loggers.append(hydra.utils.instantiate(value, **overrides))
    return loggers
