"""Start-up steps shared by the entry points."""

from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from robustft.training.resume import CHECKPOINT_DIR, LAST_CHECKPOINT, run_dir_to_resume

log = logging.getLogger(__name__)


# Hydra's flags that print the config or help instead of running a job: resolving a run
# directory for them must not create it (hydra._internal.utils.get_args_parser's names).
_SHOW_ONLY_FLAGS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help",
                    "--shell-completion", "-sc")


def _only_shows_config() -> bool:
    return any(argument.split("=", 1)[0] in _SHOW_ONLY_FLAGS for argument in sys.argv[1:])


def claim_new_directory(path: str) -> str:
    """A directory for a new run named ``path``, created now and no other run's: ``path``
    itself, or the first free ``<path>_1``, ``<path>_2``, ... when another run has it (two
    runs started in the same second, e.g. the tasks of a job array). ``os.mkdir`` creates a
    directory or fails when it exists, atomically (on NFS too), so of two runs that try the
    same name one gets it and the other the next. With Hydra's ``--cfg`` / ``--info`` the
    name is only shown, and nothing is created."""
    if _only_shows_config():
        return path
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count():
        candidate = target if attempt == 0 else target.with_name(f"{target.name}_{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)
    raise AssertionError("unreachable")  # itertools.count() never ends


def _run_dir(ckpt_path: str | None, runs_dir: str, new_run_dir: str) -> str:
    """``hydra.run.dir``: the directory of the run that ``ckpt_path`` resumes, else a new one
    (claimed: :func:`claim_new_directory`)."""
    resumed = run_dir_to_resume(ckpt_path, runs_dir)
    return claim_new_directory(new_run_dir) if resumed is None else str(resumed)


def _hydra_output_subdir(ckpt_path: str | None, runs_dir: str, stamp: str) -> str:
    """``hydra.output_subdir``: a resumed run keeps the run's own ``.hydra/`` (its original
    config and overrides) and writes its own beside them."""
    return ".hydra" if run_dir_to_resume(ckpt_path, runs_dir) is None else f".hydra/resumed_{stamp}"


def register_resolvers() -> None:
    """The resolvers the configs use for their run and sweep directories
    (``configs/hydra/default.yaml``, ``explain.yaml``, ``masks.yaml``). Hydra resolves them
    while composing, before the task function runs; ``robustft.configs`` registers them
    when Hydra imports it, and so does importing this module.

    The two that create a directory are cached (``use_cache``): OmegaConf resolves them
    once per composed config, and Hydra copies that cache into every job of a sweep and
    pickles it to submitit's jobs (as it does for ``${now:...}``), so a run or a sweep
    keeps the one directory it claimed however often its path is read."""
    for name, resolver, cached in (("robustft_run_dir", _run_dir, True),
                                   ("robustft_new_dir", claim_new_directory, True),
                                   ("robustft_hydra_output_subdir", _hydra_output_subdir, False)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=cached)


register_resolvers()


def continue_requeued_job(cfg: DictConfig) -> None:
    """A ``-m`` sweep job that finds ``checkpoints/last.ckpt`` in its own directory continues
    from it (``ckpt_path``): submitit requeues a job that got its scheduler's pre-timeout or
    preemption signal as it was, and the job runs again in its directory, where
    ``robustft.training.preemption`` has just written that checkpoint (a job SLURM requeued
    after a node failure finds the last epoch's). A new sweep's job directories are new, so
    only a job run again finds one; a job given its own ``ckpt_path`` keeps it."""
    if cfg.get("ckpt_path") is not None or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    last = Path(cfg.paths.output_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    if last.is_file():
        log.warning("this job ran before and left %s: continuing from it (ckpt_path)", last)
        cfg.ckpt_path = str(last)


def prepare_environment() -> None:
    """Offline-friendly defaults: fail fast instead of waiting on an unreachable hub, and
    let float32 matmuls use TF32 where a GPU has it."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    torch.set_float32_matmul_precision("high")
