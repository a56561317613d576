"""Start-up steps shared by the entry points."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from robustft.resources import usable_cpus

log = logging.getLogger(__name__)


def prepare_environment() -> None:
    """Offline-friendly defaults: fail fast instead of waiting on an unreachable hub, and
    let float32 matmuls use TF32 where a GPU has it."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    torch.set_float32_matmul_precision("high")


def prepare_generated_data(data_cfg: DictConfig) -> None:
    """Generate the synthetic benchmark when the data config asks for it (``data.synth``);
    a benchmark already generated with the same settings is reused."""
    if "synth" not in data_cfg or data_cfg.synth is None:
        return
    from robustft.data.synth import SynthConfig, generate_benchmark

    settings = {key: tuple(value) if isinstance(value, list) else value
                for key, value in OmegaConf.to_container(data_cfg.synth, resolve=True).items()}
    benchmark_root = Path(data_cfg.root).parent
    # rendering is CPU-bound and the files do not depend on the worker count
    generate_benchmark(benchmark_root, SynthConfig(**settings), num_workers=usable_cpus())
