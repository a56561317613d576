"""The LightningModule that wraps the method: one forward pass gives logits and the
relevance map, the losses of ``robustft.losses`` are computed on it, every term is
logged. Nothing of the method lives here; this only wires it to Lightning."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from robustft.losses import (
    CLASSIFICATION_TERMS,
    LossWeights,
    foreground_share,
    l2_sp_penalty,
    relevance_loss,
)
from robustft.models import frozen_copy
from robustft.relevance import GRADIENT_MODES, relevance_map, upsample_and_normalize

__all__ = ["RelevanceFinetuner", "step_decay"]


def _freeze(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Turn off ``requires_grad`` of every parameter whose name starts with a prefix."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise ValueError(f"optim.frozen: {prefix!r} matches no parameter of the model "
                             f"(its parameters start with e.g. {sorted({n.split('.')[0] for n in names})})")
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad_(False)


def _l2_sp_names(model: nn.Module, exclude: Sequence[str]) -> frozenset[str]:
    """Names of the trained parameters that L2-SP pulls back: all but those matching an
    ``exclude`` pattern (``fnmatch``, e.g. ``blocks.*.attn.*``)."""
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in trained):
            raise ValueError(f"loss.l2sp_exclude: {pattern!r} matches no trained parameter of "
                             f"the model (e.g. {trained[:3]})")
    return frozenset(name for name in trained
                     if not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude))


def step_decay(gamma: float, every: int):
    """The paper's schedule: lr * gamma^(epoch // every)."""
    return lambda epoch: gamma ** (epoch // every)


class RelevanceFinetuner(pl.LightningModule):
    """Relevance-guided fine-tuning of a timm ViT.

    Args:
        model: the timm model to fine-tune (built by ``robustft.models.create_model``).
        classification: ``own_argmax_ce`` | ``kl_to_teacher`` | ``label_ce``.
        lambda_bg, lambda_fg, lambda_seg, lambda_acc: loss weights (paper: 2, 0.3, 0.8, 0.2).
        temperature: T of the classification term (paper: 1; DeiT-B 0.65, DeiT-S 0.55).
        lambda_l2sp: weight of the L2-SP term, the squared distance of the trained weights
            from the original model's (0 = off, the paper's loss).
        l2sp_exclude: ``fnmatch`` patterns of parameter names that L2-SP leaves free (they
            are still trained), e.g. ``["blocks.*.attn.*"]``; each must match a trained
            parameter.
        gradient_mode: ``detached`` (public code) or ``second_order``.
        relevance_target: explain the ground-truth ``label`` (official) or the ``predicted``
            class.
        lr, weight_decay, lr_gamma, lr_every: AdamW and the step decay lr*gamma^(epoch//every).
        frozen: parameter-name prefixes that are not trained (e.g. ``["head"]``); each must
            match at least one parameter of ``model``.
        model_config: the model's creation arguments, stored in the checkpoint's
            hyper-parameters so evaluation can rebuild the architecture.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        classification: str = "own_argmax_ce",
        lambda_bg: float = 2.0,
        lambda_fg: float = 0.3,
        lambda_seg: float = 0.8,
        lambda_acc: float = 0.2,
        temperature: float = 1.0,
        lambda_l2sp: float = 0.0,
        l2sp_exclude: Sequence[str] = (),
        gradient_mode: str = "detached",
        relevance_target: str = "label",
        attention_backend: str = "hooks",
        lr: float = 3e-6,
        weight_decay: float = 1e-4,
        lr_gamma: float = 0.85,
        lr_every: int = 2,
        frozen: Sequence[str] = (),
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if classification not in CLASSIFICATION_TERMS:
            raise ValueError(f"loss.classification must be one of {CLASSIFICATION_TERMS}, "
                             f"got {classification!r}")
        if gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"loss.gradient_mode must be one of {GRADIENT_MODES}, "
                             f"got {gradient_mode!r}")
        if relevance_target not in ("label", "predicted"):
            raise ValueError(f"loss.relevance_target must be 'label' or 'predicted', "
                             f"got {relevance_target!r}")
        if lambda_l2sp < 0:
            raise ValueError(f"loss.lambda_l2sp must be >= 0, got {lambda_l2sp}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        _freeze(model, frozen)
        # The frozen original model, for the KL term and as the L2-SP starting point; it is
        # part of the state dict, so resume restores it exactly.
        needs_original = classification == "kl_to_teacher" or lambda_l2sp > 0
        self.teacher = frozen_copy(model) if needs_original else None
        self._l2sp_names = _l2_sp_names(model, l2sp_exclude)
        if lambda_l2sp > 0 and not self._l2sp_names:
            raise ValueError(f"loss.l2sp_exclude {list(l2sp_exclude)} leaves no trained "
                             "parameter for L2-SP; set loss.lambda_l2sp=0 to turn it off")
        self.weights = LossWeights(background=lambda_bg, foreground=lambda_fg,
                                   segmentation=lambda_seg, classification=lambda_acc)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def on_fit_start(self) -> None:
        # Labels index the model's outputs: more data classes than outputs would fail deep
        # inside the loss (or, for label targets, explain other classes) without this check.
        datamodule = getattr(self.trainer, "datamodule", None)
        data_classes = getattr(datamodule, "num_classes", None)
        outputs = getattr(self.model, "num_classes", None)
        if data_classes is not None and outputs is not None and data_classes > outputs:
            raise ValueError(
                f"the data has {data_classes} classes but the model has {outputs} outputs: set "
                "model.num_classes to the number of class folders, or data.class_index to map "
                "the folders onto the model's classes (e.g. data.class_index=imagenet)")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        images, masks, ignore, labels = batch["image"], batch["mask"], batch["ignore"], batch["label"]
        hp = self.hparams
        target = labels if hp.relevance_target == "label" else None
        out = relevance_map(self.model, images, target, gradient_mode=hp.gradient_mode,
                            attention_backend=hp.attention_backend)
        relevance = upsample_and_normalize(out.relevance, masks.shape[-2:])
        teacher_logits = None
        if hp.classification == "kl_to_teacher":  # the copy may exist for L2-SP alone
            with torch.no_grad():
                teacher_logits = self.teacher(images)
        terms = relevance_loss(relevance, masks, out.logits, classification=hp.classification,
                               weights=self.weights, temperature=hp.temperature, labels=labels,
                               teacher_logits=teacher_logits, ignore=ignore)
        total = terms.total
        logged = {}
        if hp.lambda_l2sp > 0 and stage == "train":
            # a prior on the weights, not a fit to data: kept out of val/loss, which picks
            # the best checkpoint, so that it does not favour the epochs closest to the start
            l2sp = self._l2_sp()
            total = total + hp.lambda_l2sp * l2sp
            logged["train/l2sp"] = l2sp
        with torch.no_grad():
            accuracy = (out.logits.argmax(-1) == labels).float().mean()
            share = foreground_share(relevance.detach(), masks, ignore).mean()
        batch_size = images.shape[0]
        values = {
            f"{stage}/loss": total, f"{stage}/seg": terms.segmentation,
            f"{stage}/bg": terms.background, f"{stage}/fg": terms.foreground,
            f"{stage}/cls": terms.classification, f"{stage}/acc": accuracy,
            f"{stage}/fg_share": share, **logged,
        }
        if stage == "train":
            # Per step: this process's batch, as Lightning's `<name>_step` would be; syncing
            # it would cost one all-reduce per metric and step under DDP for a noisy value.
            self.log_dict({f"{name}_step": value for name, value in values.items()},
                          on_step=True, on_epoch=False, batch_size=batch_size)
        # Per epoch: the mean over every process's batches (sync_dist), as the validation
        # metrics; unsynced it would be rank 0's share of the data alone.
        self.log_dict(values, prog_bar=stage == "val", on_step=False, on_epoch=True,
                      batch_size=batch_size, sync_dist=True)
        return total

    def _l2_sp(self) -> Tensor:
        """Squared distance of the L2-SP parameters from the original model's."""
        start = dict(self.teacher.named_parameters())
        pulled = {name: p for name, p in self.model.named_parameters()
                  if name in self._l2sp_names}
        return l2_sp_penalty(pulled.values(), (start[name] for name in pulled))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # Relevance needs gradients: the Trainer runs with inference_mode=False, and
        # relevance_map enables grad itself; .detach() keeps validation from holding graphs.
        return self._step(batch, "val").detach()

    def configure_optimizers(self):
        hp = self.hparams
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      step_decay(hp.lr_gamma, hp.lr_every))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
