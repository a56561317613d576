"""What this process may use of the machine it runs on: its CPUs and its device.

The one place where ``num_workers: null`` and ``device: auto`` are resolved, for every
entry point (``robustft-eval``, ``robustft-masks``, the demo), so they agree.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a device is resolved: usable_cpus stays cheap
    import torch

__all__ = ["resolve_device", "resolve_num_workers", "usable_cpus"]

DEVICE_CHOICES = "expected auto, cpu, cuda or cuda:<index>"


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one, as under
    SLURM or taskset, where ``os.cpu_count()`` reports the whole node), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def resolve_num_workers(value: Any, *, key: str = "num_workers") -> int:
    """DataLoader workers for config value ``value``: null = :func:`usable_cpus` (more
    workers than CPUs only makes the DataLoader warn and the workers compete)."""
    if value is None:
        return usable_cpus()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{key}={value!r}: expected null (= the {usable_cpus()} usable CPUs) "
            "or an integer >= 0"
        )
    return value


def resolve_device(name: Any, *, key: str = "device") -> torch.device:
    """The torch device for config value ``name``: ``auto`` = the first CUDA device when
    there is one, else the CPU; ``cpu``, ``cuda``, ``cuda:<index>`` (or another torch
    device type whose backend is available) are checked against this machine, so a
    wrong name fails before any model is built, with one line naming ``key``."""
    import torch

    text = str(name).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{key}={text!r}: not a device; {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{key}={text!r}: CUDA is not available on this machine; "
                f"use {key}=cpu or {key}=auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{key}={text!r}: this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1})"
            )
        return device
    backend = getattr(torch, device.type, None) or getattr(torch.backends, device.type, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        raise ValueError(f"{key}={text!r}: {device.type} is not available here; {DEVICE_CHOICES}")
    return device
