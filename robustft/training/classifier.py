"""Plain cross-entropy training of a timm model: the baseline "plain fine-tuning with the
same data and steps", and the demo's from-scratch pre-training of its stand-in model."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassifierModule"]


class ClassifierModule(pl.LightningModule):
    """Cross-entropy on labels; AdamW with cosine decay over ``max_epochs`` after a linear
    warm-up of ``warmup_epochs`` (from-scratch ViTs need the warm-up)."""

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, weight_decay: float = 0.05,
                 warmup_epochs: int = 1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self.model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"],
                               label_smoothing=self.hparams.label_smoothing)
        accuracy = (logits.argmax(-1) == batch["label"]).float().mean()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/acc": accuracy}, prog_bar=True,
                      on_step=False, on_epoch=True, batch_size=logits.shape[0])
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=hp.lr,
                                      weight_decay=hp.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = max(1, int(total * hp.warmup_epochs / max(1, self.trainer.max_epochs)))
        schedule = torch.optim.lr_scheduler.SequentialLR(
            optimizer,
            [torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, warmup),
             torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total - warmup))],
            milestones=[warmup])
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
