"""Cluster launch: a `-m` sweep of robustft-train runs through the submitit local launcher
(hydra/launcher=local), each job in its own directory with its submitit logs where the
README says; hydra/launcher=slurm takes its tasks and GPUs from the trainer, trainer=ddp
its node count from the SLURM allocation, and an evaluation sweep over checkpoints x
datasets composes with the slurm launcher."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module
from lightning_fabric.plugins.environments import SLURMEnvironment
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import OmegaConf

TINY_MODEL = ["model.name=vit_tiny_patch16_224", "model.pretrained=false",
              "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8",
              "++model.kwargs.depth=2", "++model.kwargs.embed_dim=32",
              "++model.kwargs.num_heads=2"]


def _compose(config: str, overrides: list[str]):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=True)


def test_local_launcher_runs_a_two_job_sweep(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=2, size=(36, 36))
    script = Path(sys.executable).parent / "robustft-train"
    completed = subprocess.run(
        [str(script), "-m", "hydra/launcher=local", "seed=0,1", f"data.root={root}",
         "data.num_workers=0", "model.num_classes=4", "trainer=cpu", "trainer.max_epochs=1",
         "validate_best=false", f"paths.root_dir={tmp_path}", *TINY_MODEL],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    for job, seed in ((0, 0), (1, 1)):
        job_dir = sweep / str(job)
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert f"seed={seed}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
    # submitit's own folder: <sweep dir>/submitit/<job id>_<task>_log.out|err and the
    # pickled result of each job, and nothing else (no empty folder named "%j")
    logs = sorted((sweep / "submitit").glob("*_0_log.out"))
    assert len(logs) == 2
    assert all(log.with_name(log.name.replace("log.out", "result.pkl")).is_file() for log in logs)
    assert len(sorted((sweep / "submitit").glob("*_0_log.err"))) == 2
    assert [path for path in (sweep / "submitit").iterdir() if path.is_dir()] == []
    # the sweep claimed one directory, which every job (in its own process) wrote into
    assert sorted(path.name for path in (tmp_path / "logs" / "train").iterdir()) == ["multiruns"]


def test_slurm_launcher_takes_tasks_and_gpus_from_the_trainer(tmp_path):
    cfg = _compose("train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=2",
                             "hydra.launcher.nodes=3", "hydra.launcher.partition=gpu",
                             f"paths.root_dir={tmp_path}"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (2, 2, 3)
    assert launcher["partition"] == "gpu"
    assert launcher["submitit_folder"] == f"{cfg.hydra.sweep.dir}/submitit/%j"
    assert launcher["array_parallelism"] > 0 and launcher["timeout_min"] > 0
    assert launcher["setup"] == []


def test_ddp_trainer_takes_the_slurm_allocation(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_NNODES", raising=False)
    assert _compose("train", ["trainer=ddp"]).trainer.num_nodes == 1  # valid outside SLURM
    # What srun sets for the 4th of 4 tasks on 2 nodes (2 per node); the Trainer on CPU,
    # since only the node count and the cluster environment are checked here.
    slurm = {"SLURM_NNODES": "2", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
             "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "node[7-8]"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # Lightning sets them from SLURM: undone after
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    # and the process-wide rank behind every rank_zero_only (loggers): restored after
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    cfg = _compose("train", ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                             f"paths.output_dir={tmp_path}"])
    assert cfg.trainer.num_nodes == 2
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert (trainer.num_nodes, trainer.world_size, trainer.global_rank) == (2, 4, 3)
    assert environment.main_address == "node7"


def test_eval_sweep_over_checkpoints_and_datasets_composes_for_slurm(tmp_path):
    # robustft-eval -m hydra/launcher=slurm ... +models.finetuned.checkpoint=a,b only=x,y:
    # the basic sweeper composes one config per combination, each a task of the job array
    checkpoints = [str(tmp_path / "seed0.ckpt"), str(tmp_path / "seed1.ckpt")]
    datasets = ["imagenet-a", "objectnet"]
    sweep_dirs = set()
    for checkpoint, dataset in itertools.product(checkpoints, datasets):
        cfg = _compose("eval", [
            "hydra/launcher=slurm", f"paths.root_dir={tmp_path}", "run_name=finetuned",
            "+models.finetuned.name=vit_base_patch16_224",
            f"+models.finetuned.checkpoint={checkpoint}", f"only={dataset}"])
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        # robustft-eval is one process on one GPU per job
        assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (1, 1, 1)
        assert launcher["submitit_folder"] == f"{cfg.hydra.sweep.dir}/submitit/%j"
        assert cfg.models.finetuned.checkpoint == checkpoint and cfg.only == dataset
        sweep_dirs.add(cfg.hydra.sweep.dir)
    assert sweep_dirs == {f"{tmp_path}/logs/eval/finetuned/multirun"}


@pytest.mark.parametrize("config", ["train", "eval"])
def test_local_launcher_composes(config, tmp_path):
    cfg = _compose(config, ["hydra/launcher=local", f"paths.root_dir={tmp_path}"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("LocalLauncher")
    assert (launcher["tasks_per_node"], launcher["nodes"]) == (1, 1)
