"""robustft.resources: what the process may use of the machine (CPUs, device)."""

from __future__ import annotations

import os

import pytest
import torch

from robustft import resources


def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert resources.usable_cpus() == 3


def test_usable_cpus_without_affinity_falls_back_to_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert resources.usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert resources.usable_cpus() == 1


# --------------------------------------------------------------------------- resolve_device

def _cuda(monkeypatch, available: bool, count: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_resolve_device_auto_picks_cuda_only_when_available(monkeypatch):
    _cuda(monkeypatch, available=False)
    assert resources.resolve_device("auto") == torch.device("cpu")
    _cuda(monkeypatch, available=True, count=1)
    assert resources.resolve_device("auto") == torch.device("cuda")


def test_resolve_device_names_are_checked_against_the_machine(monkeypatch):
    _cuda(monkeypatch, available=True, count=2)
    assert resources.resolve_device("cpu") == torch.device("cpu")
    assert resources.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^device='cuda:2': .*2 CUDA device") as error:
        resources.resolve_device("cuda:2")
    assert "\n" not in str(error.value)


def test_resolve_device_unavailable_cuda_names_the_key(monkeypatch):
    _cuda(monkeypatch, available=False)
    with pytest.raises(ValueError, match=r"^eval\.device='cuda': CUDA is not available") as error:
        resources.resolve_device("cuda", key="eval.device")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "tpu:0"])
def test_resolve_device_unknown_name_is_one_line(monkeypatch, name):
    _cuda(monkeypatch, available=False)
    with pytest.raises(ValueError, match=r"^device=.*expected auto, cpu, cuda") as error:
        resources.resolve_device(name)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- resolve_num_workers


def test_num_workers_null_means_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert resources.resolve_num_workers(None) == 2
    assert resources.resolve_num_workers(0) == 0
    assert resources.resolve_num_workers(5) == 5


@pytest.mark.parametrize("value", [-1, 1.5, "many", True])
def test_num_workers_must_be_a_count(value):
    with pytest.raises(ValueError, match=r"^masks\.num_workers=.*expected null .* or an integer >= 0"):
        resources.resolve_num_workers(value, key="masks.num_workers")
