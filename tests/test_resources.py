"""robustft.resources: what the process may use of the machine."""

from __future__ import annotations

import os

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
