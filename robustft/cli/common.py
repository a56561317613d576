"""Start-up steps shared by the entry points."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from robustft.resources import usable_cpus
from robustft.training.resume import run_dir_to_resume

log = logging.getLogger(__name__)


def _run_dir(ckpt_path: str | None, runs_dir: str, new_run_dir: str) -> str:
    """``hydra.run.dir``: the directory of the run that ``ckpt_path`` resumes, else a new one."""
    resumed = run_dir_to_resume(ckpt_path, runs_dir)
    return new_run_dir if resumed is None else str(resumed)


def _hydra_output_subdir(ckpt_path: str | None, runs_dir: str, stamp: str) -> str:
    """``hydra.output_subdir``: a resumed run keeps the run's own ``.hydra/`` (its original
    config and overrides) and writes its own beside them."""
    return ".hydra" if run_dir_to_resume(ckpt_path, runs_dir) is None else f".hydra/resumed_{stamp}"


def register_resolvers() -> None:
    """The resolvers ``configs/hydra/default.yaml`` uses. Hydra resolves the run directory
    while composing, before the task function runs, so they are registered on import of
    this module, which every entry point imports before ``hydra.main`` runs."""
    for name, resolver in (("robustft_run_dir", _run_dir),
                           ("robustft_hydra_output_subdir", _hydra_output_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


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
    from robustft.benchmark import SynthConfig, generate_benchmark

    settings = {key: tuple(value) if isinstance(value, list) else value
                for key, value in OmegaConf.to_container(data_cfg.synth, resolve=True).items()}
    benchmark_root = Path(data_cfg.root).parent
    # rendering is CPU-bound and the files do not depend on the worker count
    generate_benchmark(benchmark_root, SynthConfig(**settings), num_workers=usable_cpus())


def compose_run(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """robustft's config ``config_name`` with ``overrides``, typed by its schemas; inside a
    Hydra app (this command) through its config search path, elsewhere (a worker process)
    through robustft's config package."""
    if GlobalHydra.instance().is_initialized():
        return hydra.compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return hydra.compose(config_name=config_name, overrides=list(overrides))


def typed_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The command line's overrides as typed. Hydra keeps them in its own config, where an
    interpolation in a value (``data.unmasked_root=${data.benchmark}/...``) resolves when
    read, against the first composition (the default benchmark); read unresolved, it
    resolves in each benchmark's own composition."""
    return [str(item) for item in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]
