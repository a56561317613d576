"""From a composed Hydra config to a fitted model: builds the timm model, the data module
(with the model's preprocessing), the LightningModule, loggers and callbacks, and runs
``Trainer.fit``. Shared by ``robustft-train`` and ``robustft-demo``."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from robustft.backbones import ModelSpec, backbone_of, preprocessing_config
from robustft.checkpoints import lightning_load_context, load_checkpoint
from robustft.data.transforms import crop_height_width
from robustft.schemas.checks import check_config, typed_group
from robustft.training.captions import (
    caption_model,
    caption_run_callbacks,
    check_caption_run,
    uses_captions,
)
from robustft.training.loggers import build_loggers
from robustft.training.module import RelevanceFinetuner
from robustft.training.resume import checkpoint_to_resume
from robustft.training.seeding import SeedEveryTrainingBatch
from robustft.training.selection import HeldOutSelection

__all__ = [
    "TrainResult", "model_spec", "build_model", "build_run_model", "build_datamodule", "build_finetuner",
    "check_training_config", "checkpoint_paths", "train",
]
log = logging.getLogger(__name__)
# ckpt_path values that Lightning resolves itself rather than reading a file of that name
LIGHTNING_CKPT_KEYWORDS = frozenset({"last", "best", "hpc"})


@dataclass
class TrainResult:
    """What a run wrote: the best (lowest val/loss) and last checkpoints, the epoch-end
    metrics, the run directory, and the held-out selection (``selection``: what
    ``selection.json`` holds, None without held-out pairs; ``selected_checkpoint``: its
    weights, None when the selection is the original model)."""

    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    output_dir: Path
    selected_checkpoint: Path | None = None
    selection: dict[str, Any] | None = None


def model_spec(model_cfg: DictConfig | ModelSpec) -> ModelSpec:
    """``model`` config group -> :class:`ModelSpec` (typed by its schema)."""
    if isinstance(model_cfg, ModelSpec):
        return model_cfg
    return ModelSpec.from_mapping(OmegaConf.to_container(model_cfg, resolve=True))


def build_model(model_cfg: DictConfig | ModelSpec) -> nn.Module:
    """``model`` config group -> timm model."""
    return model_spec(model_cfg).build()


def build_datamodule(data_cfg: DictConfig, model: nn.Module) -> pl.LightningDataModule:
    """``data`` config group -> data module; null crop_size/mean/std come from the model's
    timm pretrained_cfg."""
    preprocessing = preprocessing_config(model)
    cfg = OmegaConf.to_container(data_cfg, resolve=True)
    cfg.pop("synth", None)  # generator settings, consumed before (see robustft.cli.common)
    cfg.pop("benchmark", None)  # the generated benchmark's name, for the demo's paths
    if cfg.get("crop_size") is None:
        height, width = preprocessing["input_size"][-2:]
        cfg["crop_size"] = height if height == width else [height, width]
    else:
        check_input_size(model, cfg["crop_size"])
    for key in ("mean", "std"):
        if cfg.get(key) is None:
            cfg[key] = list(preprocessing[key])
        elif len(cfg[key]) != len(preprocessing[key]):
            # torchvision's Normalize would fail on the first batch, naming no key
            raise ValueError(f"data.{key} must have one value per channel of the model's input "
                             f"({len(preprocessing[key])}), got {cfg[key]}")
    return hydra.utils.instantiate(cfg)


def check_input_size(model: nn.Module, crop_size: int | list[int]) -> None:
    """``data.crop_size`` must be an input the model takes (its ``img_size``, or a multiple
    of its patch size for a model of dynamic size): one line naming the key now, before the
    images are read, rather than an assertion inside the first forward."""
    if not isinstance(crop_size, int) and len(crop_size) != 2:
        raise ValueError(f"data.crop_size must be one size or [height, width], got {crop_size}")
    size = crop_height_width(crop_size)
    try:
        backbone_of(model).token_layout(size)
    except ValueError as error:
        raise ValueError(f"data.crop_size={crop_size}: {error}") from None


def build_run_model(cfg: DictConfig) -> nn.Module:
    """The model a run fine-tunes: ``model``'s, or with captions in the data (``data.captions``)
    its image-text model scored against each batch's captions (``training.captions``)."""
    if not uses_captions(cfg.data):
        return build_model(cfg.model)
    check_caption_run(cfg.data)
    return caption_model(model_spec(cfg.model),
                         train_text_tower=bool(cfg.optim.get("train_text_tower", False)))


def build_finetuner(cfg: DictConfig, model: nn.Module) -> RelevanceFinetuner:
    """The LightningModule from the ``loss``, ``relevance`` and ``optim`` groups."""
    optim = cfg.optim
    scheduler = hydra.utils.instantiate(optim.scheduler) if optim.scheduler is not None else None
    callbacks = run_callbacks(cfg)
    return RelevanceFinetuner(
        model, loss=typed_group(cfg, "loss"), relevance=typed_group(cfg, "relevance"),
        optimizer=hydra.utils.instantiate(optim.optimizer), scheduler=scheduler,
        frozen=list(optim.frozen), model_spec=model_spec(cfg.model).to_dict(),
        optimizer_config=OmegaConf.to_container(optim, resolve=True),
        # the held-out measures feed the held-out selection; without it nobody reads them
        measure_heldout=callbacks.get("heldout_selection") is not None)


def run_callbacks(cfg: DictConfig) -> dict[str, Any]:
    """The ``callbacks`` group, less those a caption run cannot use (``training.captions``)."""
    callbacks = cfg.get("callbacks") or {}
    return caption_run_callbacks(callbacks) if uses_captions(cfg.data) else callbacks


def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    if not cfg:
        return []
    return [hydra.utils.instantiate(value) for value in cfg.values() if value is not None]


def checkpoint_paths(trainer: pl.Trainer) -> tuple[Path | None, Path | None]:
    """(best, last) checkpoint files written by the trainer's ModelCheckpoint callbacks: the
    best file of the first callback that monitors a metric, and the newest file of a
    callback without a metric (or a ``save_last`` file)."""
    best = last = None
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.monitor is not None and callback.best_model_path and best is None:
            best = Path(callback.best_model_path)
        if callback.monitor is None and callback.best_model_path:
            last = Path(callback.best_model_path)
        elif callback.last_model_path and last is None:
            last = Path(callback.last_model_path)
    return best, last


def _data_config_to_resume(data_cfg: DictConfig) -> DictConfig:
    """A resumed run trains on the files of the run it continues: its selection manifest,
    when the run wrote one and ``data.manifest`` names none, is read back instead of
    selecting again (so a changed ``data.*`` key cannot swap the training images mid-run)."""
    manifest = data_cfg.get("manifest_out")
    if data_cfg.get("manifest") or not manifest or not Path(manifest).is_file():
        return data_cfg
    log.info("resuming: reading the run's selection from %s (data.manifest)", manifest)
    return OmegaConf.merge(data_cfg, {"manifest": manifest})


def check_training_config(cfg: DictConfig) -> None:
    """Everything about ``cfg`` that can be checked without building anything: unknown keys,
    values outside their key's range, missing values, and the loss, relevance and model
    groups' own checks (``LossConfig``, ``RelevanceConfig``, ``ModelSpec``), so that a bad
    value is one line naming its key before a model is built or an image read."""
    check_config(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing config value(s) {', '.join(missing)}: set them on the command "
                         f"line, e.g. {missing[0]}=...")
    typed_group(cfg, "loss")
    typed_group(cfg, "relevance")
    model_spec(cfg.model)
    _check_accelerator(cfg.trainer.get("accelerator"))


def _check_accelerator(accelerator: Any) -> None:
    """``trainer=gpu`` (or ``ddp``) on a machine without a GPU: Lightning says only "No
    supported gpu backend found!", once the model is built."""
    wants_gpu = str(accelerator) in ("gpu", "cuda")
    if wants_gpu and not torch.cuda.is_available() and not torch.backends.mps.is_available():
        raise ValueError(f"trainer.accelerator={accelerator}: this machine has no GPU that torch "
                         "can use (torch.cuda.is_available() is False); use trainer=cpu")


def train(cfg: DictConfig) -> TrainResult:
    """Fit the relevance fine-tuner described by ``cfg``; returns checkpoints and metrics.

    Resuming (``ckpt_path``) from a checkpoint at the end of an epoch gives the weights of
    the uninterrupted run exactly: the batch order and augmentation are functions of (seed,
    epoch, sample) (``robustft.data.samplers``) and module randomness of (seed, epoch,
    batch) (``SeedEveryTrainingBatch``)."""
    check_training_config(cfg)
    ckpt_path = checkpoint_to_resume(cfg.get("ckpt_path"), cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    model = build_run_model(cfg)
    data_cfg = cfg.data if ckpt_path is None else _data_config_to_resume(cfg.data)
    datamodule = build_datamodule(data_cfg, model)
    module = build_finetuner(cfg, model)
    callbacks = [SeedEveryTrainingBatch(cfg.seed), *_instantiate_dict(run_callbacks(cfg))]
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks,
                                                  logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    local_file = (ckpt_path and str(ckpt_path) not in LIGHTNING_CKPT_KEYWORDS
                  and not str(ckpt_path).startswith("registry") and "://" not in str(ckpt_path))
    if local_file:
        # One line naming the file for a payload or a truncated file, before Lightning's own
        # load (whose errors are tracebacks); mapped, so the tensors are not read twice.
        load_checkpoint(ckpt_path, key="ckpt_path", mmap=True)
    with warnings.catch_warnings(), lightning_load_context():
        if ckpt_path is not None:
            log.info("resuming from %s into %s", ckpt_path, cfg.paths.output_dir)
            # expected when continuing in the run's own directory
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* is not empty")
        # weights_only=True explicitly: with None, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the
        # environment would make torch unpickle anything.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best, last = checkpoint_paths(trainer)
    selection = next((c for c in trainer.callbacks if isinstance(c, HeldOutSelection)), None)
    summary = selection.summary() if selection is not None else None
    if cfg.get("validate_best") and best is not None and not trainer.fast_dev_run:
        with lightning_load_context():
            rows = trainer.validate(module, datamodule=datamodule, ckpt_path=str(best),
                                    weights_only=True)
        for row in rows:
            metrics.update({f"best/{k}": float(v) for k, v in row.items()})
    _leave_process_group()
    selected = Path(summary["checkpoint"]) if summary and summary["checkpoint"] else None
    return TrainResult(best_checkpoint=best, last_checkpoint=last, metrics=metrics,
                       output_dir=Path(cfg.paths.output_dir), selected_checkpoint=selected,
                       selection=summary)


def _leave_process_group() -> None:
    """End a DDP run together: wait for every process, then destroy the process group.

    Lightning leaves a gloo group to the interpreter's exit, where the ranks tear it down at
    different moments and one can abort ("terminate called without an active exception",
    seen in about one CPU DDP run in seven). Done here, after fit and the best-checkpoint
    validation, a next run in the same process (a sweep) also starts a fresh group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
