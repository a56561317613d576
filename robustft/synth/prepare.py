"""The benchmark a data config asks for (``data.synth``), generated before a run reads it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robustft.resources import usable_cpus
from robustft.synth.config import SynthConfig
from robustft.synth.write import generate_benchmark


def prepare_generated_data(data_cfg: DictConfig) -> None:
    """Generate the synthetic benchmark when the data config asks for it (``data.synth``);
    a benchmark already generated with the same settings is reused."""
    if "synth" not in data_cfg or data_cfg.synth is None:
        return
    settings = {key: tuple(value) if isinstance(value, list) else value
                for key, value in OmegaConf.to_container(data_cfg.synth, resolve=True).items()}
    benchmark_root = Path(data_cfg.root).parent
    # rendering is CPU-bound and the files do not depend on the worker count
    generate_benchmark(benchmark_root, SynthConfig(**settings), num_workers=usable_cpus())
