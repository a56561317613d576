"""The LightningModule that wraps the method: one forward pass gives logits and the
relevance map, the losses of ``robustft.losses`` are computed on it, every term is
logged; ``loss.objective`` swaps in a baseline's loss (``robustft.baselines``) with the
data, optimiser, schedule and L2-SP unchanged. Nothing of the method lives here; this only
wires it to Lightning."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from robustft.backbones import backbone_of, frozen_copy
from robustft.backbones.heads import ZeroShotClassifier
from robustft.baselines import Objective, baseline_loss
from robustft.checkpoints import PREPROCESSING_KEY, plain_data
from robustft.data.datamodule import pairs_and_unmasked, training_preprocessing
from robustft.losses import (
    ClassificationTerm,
    LossConfig,
    classification_loss,
    foreground_share,
    l2_sp_penalty,
    relevance_loss,
)
from robustft.relevance import (
    RelevanceConfig,
    RelevanceOutput,
    check_trainable_method,
    upsample_and_normalize,
)
from robustft.swaps import swapped_background_term
from robustft.training.captions import caption_targets
from robustft.training.heldout_recorder import HeldOutRecorder

# the optimiser and schedule of the configs' _target_ paths (robustft.training.module.*)
from robustft.training.optim import (
    OptimizerFactory,
    SchedulerFactory,
    adamw,
    step_decay,
    step_decay_scheduler,
)

__all__ = ["RelevanceFinetuner", "adamw", "step_decay", "step_decay_scheduler"]
log = logging.getLogger(__name__)


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


class RelevanceFinetuner(pl.LightningModule):
    """Relevance-guided fine-tuning of a timm ViT.

    Args:
        model: the timm model to fine-tune (``robustft.backbones.ModelSpec.build``).
        loss: the loss terms and their weights (``robustft.losses.LossConfig``).
        relevance: how the map is computed (``robustft.relevance.RelevanceConfig``).
        optimizer: ``parameters -> Optimizer`` (e.g. a ``functools.partial`` of AdamW, as
            Hydra's ``_partial_: true`` builds it); default :func:`adamw`.
        scheduler: ``optimizer -> LRScheduler`` stepped every epoch, or None for a constant
            lr; default the paper's :func:`step_decay_scheduler`.
        frozen: parameter-name prefixes that are not trained (e.g. ``["head"]``); each must
            match at least one parameter of ``model``.
        model_spec: the model's ``ModelSpec.to_dict()``, stored in the checkpoint so that
            evaluation can rebuild the architecture.
        optimizer_config: plain description of ``optimizer``/``scheduler`` (the ``optim``
            config), stored beside it for the record.
        measure_heldout: measure every validation pass against the original model
            (``robustft.training.heldout``: the share of relevance on the object, the map's
            AP / IoU, top-1 agreement and KL with the original), logged as ``heldout/*``
            for the checkpoint selection; it keeps a frozen copy of the original model.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: LossConfig | None = None,
        relevance: RelevanceConfig | None = None,
        optimizer: OptimizerFactory = adamw,
        scheduler: SchedulerFactory | None = step_decay_scheduler,
        frozen: Sequence[str] = (),
        model_spec: Mapping[str, Any] | None = None,
        optimizer_config: Mapping[str, Any] | None = None,
        measure_heldout: bool = False,
    ) -> None:
        super().__init__()
        loss = loss if loss is not None else LossConfig()
        relevance = relevance if relevance is not None else RelevanceConfig()
        # Checkpoints are read with a weights-only load (robustft.checkpoints), which refuses
        # anything but plain data, and evaluation rebuilds the model from model_config: make
        # every hyper-parameter plain now rather than write an unloadable checkpoint later.
        hparams = {"loss": asdict(loss), "relevance": asdict(relevance), "frozen": list(frozen),
                   "model_config": model_spec, "optim": optimizer_config}
        self.save_hyperparameters({key: plain_data(value, key) for key, value in hparams.items()})
        self.loss_config, self.relevance_config = loss, relevance
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.model = model
        _freeze(model, frozen)
        # The frozen original model, for the KL term, as the L2-SP starting point and for the
        # held-out measures; it is part of the state dict, so resume restores it exactly.
        needs_original = (loss.classification == "kl_to_teacher" or loss.lambda_l2sp > 0
                          or measure_heldout)
        self.teacher = frozen_copy(model) if needs_original else None
        self.measure_heldout = measure_heldout
        self._heldout = HeldOutRecorder(
            lambda model, batch: self._explain_logits(model, batch),
            lambda model, images: backbone_of(model).class_scores(images))
        self._l2sp_names = _l2_sp_names(model, loss.l2sp_exclude)
        if loss.lambda_l2sp > 0 and not self._l2sp_names:
            raise ValueError(f"loss.l2sp_exclude {list(loss.l2sp_exclude)} leaves no trained "
                             "parameter for L2-SP; set loss.lambda_l2sp=0 to turn it off")
        self.weights = loss.weights

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # how the run's own validation images were prepared, so that robustft-eval can prepare
        # the user's images the same way (preprocessing.source=training)
        preprocessing = training_preprocessing(getattr(self.trainer, "datamodule", None))
        if preprocessing is not None:
            checkpoint[PREPROCESSING_KEY] = preprocessing

    def forward(self, images: Tensor) -> Tensor:
        return backbone_of(self.model).class_scores(images)

    def on_fit_start(self) -> None:
        # Labels index the model's outputs: more data classes than outputs would fail deep
        # inside the loss (or, for label targets, explain other classes) without this check.
        datamodule = getattr(self.trainer, "datamodule", None)
        data_classes = getattr(datamodule, "num_classes", None)
        outputs = backbone_of(self.model).num_classes
        if (isinstance(self.model, ZeroShotClassifier) and data_classes is not None
                and data_classes != outputs):
            # a zero-shot head scores exactly its class names: label k must be name k
            source = ("data.class_index" if getattr(datamodule, "class_index", None) is not None
                      else f"the class folders of data.root {getattr(datamodule, 'root', '?')}")
            raise ValueError(
                f"model.zero_shot.class_names: the zero-shot head has {outputs} classes but the "
                f"data has {data_classes} ({source}): give one class name per data class, in "
                "label order")
        if data_classes is not None and outputs is not None and data_classes > outputs:
            if getattr(datamodule, "class_index", None) is not None:
                raise ValueError(
                    f"data.class_index lists {data_classes} classes but the model has {outputs} "
                    "outputs: give the model's own class names in head order, or set "
                    f"model.num_classes={data_classes}")
            raise ValueError(
                f"the data has {data_classes} classes but the model has {outputs} outputs: set "
                "model.num_classes to the number of class folders, or data.class_index to map "
                "the folders onto the model's classes (e.g. data.class_index=imagenet)")
        # once, from the first process (a trainer stand-in without ranks counts as that)
        if (data_classes is not None and outputs is not None and data_classes < outputs
                and getattr(self.trainer, "is_global_zero", True)):
            source = ("data.class_index lists" if getattr(datamodule, "class_index", None) is not None
                      else f"data.root {getattr(datamodule, 'root', '?')} has")
            log.warning(
                "%s %d classes but the model has %d outputs: labels 0..%d train the first %d "
                "outputs and the other %d stay as they were, which evaluation on these classes "
                "will not expect; set model.num_classes=%d for a head of these classes, or "
                "data.class_index to map them onto the model's own (e.g. data.class_index=imagenet)",
                source, data_classes, outputs, data_classes - 1, data_classes,
                outputs - data_classes, data_classes)
        self._check_selection_labels(datamodule, outputs)
        if getattr(datamodule, "unmasked", None) and self.loss_config.lambda_unmasked == 0:
            raise ValueError(
                f"data.unmasked_root is set ({datamodule.unmasked_root}) but "
                "loss.lambda_unmasked is 0: its images would be read and never used; set "
                "data.unmasked_root=null or loss.lambda_unmasked > 0")

    @staticmethod
    def _check_selection_labels(datamodule: Any, outputs: int | None) -> None:
        """Every selected label must index the model's outputs: a manifest's label column is
        read as given, and an out-of-range label fails only inside the loss of some epoch."""
        selection = getattr(datamodule, "selection", None)
        if selection is None or outputs is None:
            return
        for record in [*selection.train, *selection.val]:
            if not 0 <= record.label < outputs:
                manifest = getattr(datamodule, "manifest", None)
                source = (f"data.manifest: {manifest}" if manifest
                          else f"data.root: {getattr(datamodule, 'root', '?')}")
                raise ValueError(
                    f"{source} gives label {record.label} (class {record.class_name!r}, "
                    f"{record.image_path}) but the model has {outputs} outputs: labels must be "
                    f"0..{outputs - 1} (model.num_classes, data.class_index)")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _step(self, batch: dict[str, Tensor], stage: str,
              unmasked: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """(total loss, the normalised relevance map when the objective made one, logits)."""
        images, labels = batch["image"], batch["label"]
        loss = self.loss_config
        relevance = None
        if loss.objective is Objective.relevance:
            total, logits, values, relevance = self._relevance_terms(batch, stage)
        else:
            total, logits, values = self._baseline_terms(batch, stage)
        if unmasked is not None:
            unmasked_cls = self._unmasked_term(unmasked)
            total = total + loss.lambda_unmasked * unmasked_cls
            values[f"{stage}/cls_unmasked"] = unmasked_cls
        if loss.lambda_swap > 0 and stage == "train":
            swap = swapped_background_term(backbone_of(self.model).class_scores, batch["image"],
                                           batch["mask"], batch["ignore"], batch["label"])
            total = total + loss.lambda_swap * swap
            values["train/swap_ce"] = swap
        if loss.lambda_l2sp > 0 and stage == "train":
            # a prior on the weights, not a fit to data: kept out of val/loss, which picks
            # the best checkpoint, so that it does not favour the epochs closest to the start
            l2sp = self._l2_sp()
            total = total + loss.lambda_l2sp * l2sp
            values["train/l2sp"] = l2sp
        with torch.no_grad():
            values[f"{stage}/acc"] = (logits.argmax(-1) == labels).float().mean()
        values[f"{stage}/loss"] = total
        batch_size = images.shape[0]
        if stage == "train":
            # Per step: this process's batch, as Lightning's `<name>_step` would be; syncing
            # it would cost one all-reduce per metric and step under DDP for a noisy value.
            self.log_dict({f"{name}_step": value for name, value in values.items()},
                          on_step=True, on_epoch=False, batch_size=batch_size)
        # Per epoch: the mean over every process's batches (sync_dist), as the validation
        # metrics; unsynced it would be rank 0's share of the data alone. The pairs are the
        # first of the validation loaders: their metrics keep their names (val/loss).
        self.log_dict(values, prog_bar=stage == "val", on_step=False, on_epoch=True,
                      batch_size=batch_size, sync_dist=True, add_dataloader_idx=False)
        return total, relevance, logits

    def _explain(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[RelevanceOutput, Tensor]:
        """The fine-tuning's own map of ``model`` on a pair batch: (raw output, the map
        upsampled to the masks and normalised)."""
        rel = self.relevance_config
        # a caption batch explains each image's own caption (its label), whatever the target
        target = batch["label"] if rel.target == "label" or "caption" in batch else None
        method = check_trainable_method(rel.method)
        out = method.compute(model, batch["image"], target, rel.gradient_mode, backend=rel.backend)
        return out, upsample_and_normalize(out.relevance, batch["mask"].shape[-2:])

    def _relevance_terms(self, batch: dict[str, Tensor],
                         stage: str) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """The method's loss: relevance map, ``relevance_loss``; (total, logits, logged,
        the normalised map)."""
        images, masks, ignore, labels = batch["image"], batch["mask"], batch["ignore"], batch["label"]
        loss = self.loss_config
        out, relevance = self._explain(self.model, batch)
        teacher_logits = None
        if loss.classification == "kl_to_teacher":  # the copy may exist for L2-SP alone
            with torch.no_grad():
                teacher_logits = backbone_of(self.teacher).class_scores(images)
        terms = relevance_loss(relevance, masks, out.logits, classification=loss.classification,
                               weights=self.weights, temperature=loss.temperature, labels=labels,
                               teacher_logits=teacher_logits, ignore=ignore)
        with torch.no_grad():
            share = foreground_share(relevance.detach(), masks, ignore).mean()
        values = {f"{stage}/seg": terms.segmentation, f"{stage}/bg": terms.background,
                  f"{stage}/fg": terms.foreground, f"{stage}/cls": terms.classification,
                  f"{stage}/fg_share": share}
        return terms.total, out.logits, values, relevance

    def _baseline_terms(self, batch: dict[str, Tensor],
                        stage: str) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """A baseline's loss (``robustft.baselines``): cross-entropy on the labels plus the
        input-gradient penalty, on the same batch; (total, logits, logged)."""
        images, masks, ignore, labels = batch["image"], batch["mask"], batch["ignore"], batch["label"]
        loss = self.loss_config
        backbone = backbone_of(self.model)
        needs_input_gradient = loss.objective is not Objective.plain
        # Validation runs under no_grad; the penalty needs the input gradient there too. The
        # penalty differentiates that gradient again: fused attention kernels have no second
        # derivative (PyTorch's CPU SDPA), the eager attention of capture_attention has.
        eager = backbone.capture_attention() if needs_input_gradient else nullcontext()
        with torch.enable_grad(), eager:
            inputs = images.detach().requires_grad_(needs_input_gradient)
            logits = backbone.class_scores(inputs)
            terms = baseline_loss(loss.objective, logits, inputs, masks, labels,
                                  lambda_rrr=loss.lambda_rrr,
                                  lambda_gradmask=loss.lambda_gradmask, ignore=ignore,
                                  create_graph=stage == "train")
        values = {f"{stage}/cls": terms.classification}
        if needs_input_gradient:
            values[f"{stage}/{loss.objective.value}"] = terms.penalty
        return terms.total, logits, values

    def _unmasked_term(self, batch: dict[str, Tensor]) -> Tensor:
        """The objective's classification term on images without masks: the relevance
        objective's ``loss.classification``, the baselines' cross-entropy on the labels."""
        loss = self.loss_config
        images, labels = batch["image"], batch["label"]
        logits = backbone_of(self.model).class_scores(images)
        term = (loss.classification if loss.objective is Objective.relevance
                else ClassificationTerm.label_ce)
        teacher_logits = None
        if term == "kl_to_teacher":
            with torch.no_grad():
                teacher_logits = backbone_of(self.teacher).class_scores(images)
        temperature = loss.temperature if loss.objective is Objective.relevance else 1.0
        return classification_loss(term, logits, temperature=temperature, labels=labels,
                                   teacher_logits=teacher_logits)

    def _l2_sp(self) -> Tensor:
        """Squared distance of the L2-SP parameters from the original model's."""
        start = dict(self.teacher.named_parameters())
        pulled = {name: p for name, p in self.model.named_parameters()
                  if name in self._l2sp_names}
        return l2_sp_penalty(pulled.values(), (start[name] for name in pulled))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        pairs, unmasked = pairs_and_unmasked(batch)  # unmasked: data.unmasked_root's images
        pairs = caption_targets(pairs, self.model, self.teacher)  # data.captions: per batch
        return self._step(pairs, "train", unmasked=unmasked)[0]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> Tensor | None:
        # Relevance needs gradients: the Trainer runs with inference_mode=False, and
        # the relevance method enables grad itself; .detach() keeps validation from holding graphs.
        if "mask" not in batch:  # held-out images without masks: decisions only
            if self.measure_heldout:
                self._heldout.record_decisions(backbone_of(self.model).class_scores(batch["image"]),
                                               self.teacher, batch)
            return None
        batch = caption_targets(batch, self.model, self.teacher)
        total, relevance, logits = self._step(batch, "val")
        if self.measure_heldout:
            self._heldout.record_pairs(self.model, self.teacher, batch, batch_idx, relevance,
                                       None if relevance is None else logits)
        return total.detach()

    # ------------------------------------------------------------------ held-out measures

    def on_validation_epoch_start(self) -> None:
        self._heldout.reset()

    def _explain_logits(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out, relevance = self._explain(model, batch)
        return out.logits, relevance

    def on_validation_epoch_end(self) -> None:
        if not self.measure_heldout:
            return
        summary = self._heldout.summary(self.model, self.teacher, self._gather)
        if summary is None:
            return
        # every process computed the same values from the gathered images; syncing them
        # (a mean of equal values) is what Lightning expects of an epoch-level metric
        self.log_dict(summary.as_metrics(), on_step=False, on_epoch=True, sync_dist=True,
                      add_dataloader_idx=False)

    def _gather(self, values: Tensor) -> Tensor:
        """Every process's per-image values (each process validates its share of the
        held-out set; the distributed sampler pads the shares to equal sizes)."""
        if self.trainer is None or self.trainer.world_size == 1:
            return values
        return self.all_gather(values.to(self.device)).flatten().cpu()

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(trainable)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                 "interval": "epoch"}}
