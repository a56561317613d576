"""From a composed Hydra config to a fitted model: builds the timm model, the data module
(with the model's preprocessing), the LightningModule, loggers and callbacks, and runs
``Trainer.fit``. Shared by ``robustft-train`` and ``robustft-demo``."""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from robustft.models import create_model, preprocessing_config
from robustft.training.loggers import build_loggers
from robustft.training.module import RelevanceFinetuner
from robustft.training.resume import checkpoint_to_resume
from robustft.training.seeding import SeedEveryTrainingBatch

__all__ = [
    "TrainResult", "build_model", "build_datamodule", "build_finetuner", "checkpoint_paths", "train",
]
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    output_dir: Path


def build_model(model_cfg: DictConfig) -> nn.Module:
    """``model`` config group -> timm model."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    known = {"name", "pretrained", "weights_file", "num_classes", "kwargs"}
    unknown = set(cfg) - known
    if unknown:
        raise KeyError(f"unknown key(s) {sorted(unknown)} in the model config; known: {sorted(known)}")
    return create_model(cfg["name"], pretrained=bool(cfg.get("pretrained", False)),
                        weights_file=cfg.get("weights_file"), num_classes=cfg.get("num_classes"),
                        **(cfg.get("kwargs") or {}))


def build_datamodule(data_cfg: DictConfig, model: nn.Module) -> pl.LightningDataModule:
    """``data`` config group -> data module; null crop_size/mean/std come from the model's
    timm pretrained_cfg."""
    preprocessing = preprocessing_config(model)
    cfg = OmegaConf.to_container(data_cfg, resolve=True)
    cfg.pop("synth", None)  # generator settings, consumed before (see robustft.cli.train)
    _check_keys("data", {k: v for k, v in cfg.items() if k != "_target_"},
                hydra.utils.get_class(cfg["_target_"]))
    if cfg.get("crop_size") is None:
        height, width = preprocessing["input_size"][-2:]
        cfg["crop_size"] = height if height == width else [height, width]
    for key in ("mean", "std"):
        if cfg.get(key) is None:
            cfg[key] = list(preprocessing[key])
    return hydra.utils.instantiate(cfg)


def _check_keys(group: str, values: Mapping[str, Any], target: Callable[..., Any],
                exclude: tuple[str, ...] = ()) -> None:
    """A key that ``target`` does not take is named with its group (``loss.bogus``), instead
    of surfacing as an unexpected keyword argument of some constructor."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = sorted(set(parameters) - {"self", *exclude})
    unknown = sorted(set(values) - set(known))
    if unknown:
        named = ", ".join(f"{group}.{key}" for key in unknown)
        raise KeyError(f"unknown config key(s) {named}; {group} takes: {', '.join(known)}")


def build_finetuner(cfg: DictConfig, model: nn.Module) -> RelevanceFinetuner:
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    for group, values in (("loss", loss), ("optim", optim)):
        _check_keys(group, values, RelevanceFinetuner, exclude=("model", "model_config"))
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    return RelevanceFinetuner(model, **loss, **optim, model_config=model_config)


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


def train(cfg: DictConfig) -> TrainResult:
    """Fit the relevance fine-tuner described by ``cfg``; returns checkpoints and metrics.

    Resuming (``ckpt_path``) from a checkpoint at the end of an epoch gives the weights of
    the uninterrupted run exactly: the batch order and augmentation are functions of (seed,
    epoch, sample) (``robustft.data.samplers``) and module randomness of (seed, epoch,
    batch) (``SeedEveryTrainingBatch``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing config value(s) {', '.join(missing)}: set them on the command "
                         f"line, e.g. {missing[0]}=...")
    ckpt_path = checkpoint_to_resume(cfg.get("ckpt_path"), cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg.model)
    data_cfg = cfg.data if ckpt_path is None else _data_config_to_resume(cfg.data)
    datamodule = build_datamodule(data_cfg, model)
    module = build_finetuner(cfg, model)
    callbacks = [SeedEveryTrainingBatch(cfg.seed), *_instantiate_dict(cfg.get("callbacks"))]
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks,
                                                  logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    with warnings.catch_warnings():
        if ckpt_path is not None:
            log.info("resuming from %s into %s", ckpt_path, cfg.paths.output_dir)
            # expected when continuing in the run's own directory
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* is not empty")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best, last = checkpoint_paths(trainer)
    if cfg.get("validate_best") and best is not None and not trainer.fast_dev_run:
        for row in trainer.validate(module, datamodule=datamodule, ckpt_path=str(best)):
            metrics.update({f"best/{k}": float(v) for k, v in row.items()})
    return TrainResult(best_checkpoint=best, last_checkpoint=last, metrics=metrics,
                       output_dir=Path(cfg.paths.output_dir))
