"""Watch relevance move during fine-tuning: a Lightning callback that, every N epochs,
draws the same validation images with their relevance overlays and logs the grid, and
draws them once more in a ``trainer.validate`` run (robustft-train's validation of the best
checkpoint after fitting, ``validate_best``).

The images are chosen once (evenly spaced over the validation set, so every class of a
class-sorted set shows), read with the validation transform (no random crop or flip, the
same pixels every time), and explained with the fine-tuning's own relevance method and
target (``relevance.method``, ``relevance.target``). One row per image: the image (titled
with its class), its mask, and the overlay (titled with the explained class and the
model's probability for it); a legend below says which class was explained and has the
colour bar. The grid goes to every active logger that takes images (TensorBoard
``add_image``, wandb ``wandb.Image``) under ``key`` at the trainer's global step, and always
to a PNG in ``dirpath``: ``epoch_<NNN>.png`` while fitting (NNN = Lightning's 0-based epoch,
as in ``best-<NNN>.ckpt``), ``validate_<checkpoint stem>.png`` in a ``trainer.validate``
run (``validate_best-007.png``: the weights of ``best-007.ckpt``; ``validate.png`` without
a checkpoint). ``<dirpath>/images.csv`` lists the chosen files. Drawn on the global-zero
process only, never in a sanity check or ``fast_dev_run``, and from the validation loop's
eval-mode model without touching the global RNG, so a run's weights are the same with and
without it.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from robustft.backbones import backbone_of, preprocessing_config
from robustft.evaluation.explain.overlay_grid import (
    add_legend,
    denormalize,
    draw_grid,
    heat_overlay,
    mask_picture,
    percent,
)
from robustft.evaluation.explain.targets import ClassNames, model_class_names
from robustft.labels import imagenet_synsets
from robustft.relevance import RELEVANCE_METHODS, RelevanceConfig, upsample_and_normalize

__all__ = ["RelevanceOverlays"]

log = logging.getLogger(__name__)


class RelevanceOverlays(pl.Callback):
    """Every ``every_n_epochs`` epochs (after validation of epochs N, 2N, ...), the
    relevance overlays of ``num_images`` fixed validation images, logged as ``key`` and
    written to ``dirpath`` (default ``<trainer.default_root_dir>/relevance_overlays``);
    ``scale`` enlarges the cells."""

    def __init__(self, every_n_epochs: int = 10, num_images: int = 8, dirpath: str | None = None,
                 key: str = "val/relevance_overlays", scale: int = 2) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("num_images", num_images)):
            if value < 1:
                raise ValueError(f"callbacks.relevance_overlays.{name} must be >= 1, got {value}")
        self.every_n_epochs, self.num_images = every_n_epochs, num_images
        self.dirpath, self.key, self.scale = dirpath, key, scale
        self.indices: list[int] | None = None  # the chosen validation samples, fixed once
        self.written: list[Path] = []

    # -- Lightning's callback state: a resumed run draws the images it drew before
    def state_dict(self) -> dict[str, Any]:
        return {"indices": self.indices}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.indices = state_dict.get("indices")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        # a validate run draws the weights it validates, whatever the epoch counter says
        # (after fit it still holds the fit's last epoch, not the checkpoint's)
        validating = trainer.state.fn == TrainerFn.VALIDATING
        if not validating and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dataset = _validation_dataset(trainer)
        if dataset is None:
            log.warning("relevance overlays: no validation set to draw from; skipped")
            return
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "relevance_overlays")
        if self.indices is None:
            count = min(self.num_images, len(dataset))
            self.indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, count).round()})
            _write_image_list(folder / "images.csv", dataset, self.indices)
        # the validation loop's eval-mode model; grad on (inference mode off) for the map,
        # and the global RNG left as it was (resume must give the uninterrupted weights)
        stage = _stage_name(trainer, validating)
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            picture = self.draw(pl_module, dataset, trainer, title=stage.replace("_", " "))
        self.written.append(self._save(picture, folder, stage))
        for logger in trainer.loggers:
            _log_image(logger, self.key, picture, trainer.global_step, stage.replace("_", " "))

    def draw(self, pl_module: pl.LightningModule, dataset: Any, trainer: pl.Trainer, *,
             title: str | None = None) -> Image.Image:
        """The grid of the chosen images for the module's model now; ``title`` heads the
        first column (default: the epoch)."""
        samples = [dataset[i] for i in self.indices or ()]
        images = torch.stack([s["image"] for s in samples]).to(pl_module.device)
        masks = torch.stack([s["mask"] for s in samples]).float()
        labels = torch.tensor([int(s["label"]) for s in samples], device=pl_module.device)
        # a RelevanceFinetuner's own method and target; the defaults for another module
        relevance = getattr(pl_module, "relevance_config", None) or RelevanceConfig()
        model = getattr(pl_module, "model", pl_module)
        method = RELEVANCE_METHODS[relevance.method]
        target = labels if relevance.target == "label" else None
        out = method.compute(model, images, target, "detached", backend=relevance.backend)
        maps = upsample_and_normalize(out.relevance.detach().float().cpu(), tuple(images.shape[-2:]))
        probabilities = out.logits.detach().float().softmax(-1).cpu()
        mean, std = _normalisation(trainer, model)
        names = _class_names(trainer, model)
        rows, titles = [], []
        for i, sample in enumerate(samples):
            picture = denormalize(sample["image"], mean, std)
            explained = int(out.target[i])
            rows.append([picture, mask_picture(masks[i]), heat_overlay(picture, maps[i])])
            titles.append([names.short(int(sample["label"])), "",
                           f"{names.short(explained)} {percent(float(probabilities[i, explained]))}"])
        header = [title or f"epoch {trainer.current_epoch}", "mask", relevance.method]
        explained = ("each image's label" if relevance.target == "label"
                     else "the predicted class")
        legend = [f"explained: {explained} (relevance.target={relevance.target})",
                  "colour: relevance for that class, each map scaled to its own min-max"]
        return add_legend(draw_grid(rows, column_titles=header, cell_titles=titles,
                                    scale=self.scale), legend)

    def _save(self, picture: Image.Image, folder: Path, stage: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage}.png"
        picture.save(path)
        return path


def _stage_name(trainer: pl.Trainer, validating: bool) -> str:
    """What the drawn weights are: ``epoch_<NNN>`` while fitting, ``validate_<checkpoint
    stem>`` (or ``validate``) in a ``trainer.validate`` run."""
    if not validating:
        return f"epoch_{trainer.current_epoch:03d}"
    checkpoint = trainer.ckpt_path
    return f"validate_{Path(checkpoint).stem}" if checkpoint else "validate"


def _validation_dataset(trainer: pl.Trainer) -> Any | None:
    loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    dataset = getattr(loaders, "dataset", None)
    return dataset if dataset is not None and len(dataset) > 0 else None


def _write_image_list(path: Path, dataset: Any, indices: list[int]) -> None:
    records = getattr(dataset, "records", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "index", "image", "label"])
        for row, index in enumerate(indices):
            record = records[index] if records is not None else None
            writer.writerow([row, index, getattr(record, "image_path", ""),
                             getattr(record, "label", "")])


def _normalisation(trainer: pl.Trainer, model: torch.nn.Module
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    datamodule = getattr(trainer, "datamodule", None)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is None or std is None:
        config = preprocessing_config(model)
        mean, std = config["mean"], config["std"]
    return tuple(mean), tuple(std)


def _class_names(trainer: pl.Trainer, model: torch.nn.Module) -> ClassNames:
    """The model's class names: the data's class folders when they index the head, the
    ``data.class_index`` names, or ImageNet's for a 1000-way head."""
    datamodule = getattr(trainer, "datamodule", None)
    class_index = getattr(datamodule, "class_index", None)
    folders = getattr(getattr(datamodule, "selection", None), "class_names", None)
    if class_index is None:
        dataset_classes = folders
    else:  # wnids name no one: ImageNet's own names instead
        dataset_classes = None if list(class_index) == imagenet_synsets() else list(class_index)
    return model_class_names(backbone_of(model).num_classes, dataset_classes=dataset_classes)


def _log_image(logger: Any, key: str, picture: Image.Image, step: int, caption: str) -> None:
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, np.asarray(picture), global_step=step, dataformats="HWC")
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=key, images=[picture], step=step, caption=[caption])
