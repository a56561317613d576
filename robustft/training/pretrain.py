"""Plain supervised training of a timm model from scratch, cached as a safetensors file:
the demo's stand-in for ImageNet pre-training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from safetensors.torch import save_file
from torch import nn

from robustft.training.classifier import ClassifierModule

__all__ = ["pretrain_cached", "settings_fingerprint"]
log = logging.getLogger(__name__)


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A stable hash of JSON-serialisable settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_cached(
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    weights_file: str | os.PathLike[str],
    *,
    settings: dict[str, Any],
    max_epochs: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: int,
    trainer_kwargs: dict[str, Any] | None = None,
) -> bool:
    """Train ``model`` with cross-entropy on ``datamodule``'s training split and save its
    weights to ``weights_file`` (safetensors), unless the file already exists with the
    same ``settings`` fingerprint (stored beside it as ``<file>.json``). Returns True
    when it trained, False when the cache was reused. The write is atomic."""
    weights_file = Path(weights_file)
    sidecar = weights_file.with_suffix(weights_file.suffix + ".json")
    fingerprint = settings_fingerprint(settings)
    if weights_file.is_file() and sidecar.is_file():
        if json.loads(sidecar.read_text()).get("fingerprint") == fingerprint:
            log.info("reusing pre-trained weights %s", weights_file)
            return False
        log.info("pre-training settings changed: retraining %s", weights_file)
    module = ClassifierModule(model, lr=lr, weight_decay=weight_decay,
                              warmup_epochs=warmup_epochs)
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                         limit_val_batches=0, num_sanity_val_steps=0,
                         **(trainer_kwargs or {}))
    trainer.fit(module, datamodule=datamodule)
    weights_file.parent.mkdir(parents=True, exist_ok=True)
    partial = weights_file.with_suffix(".partial")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(partial))
    os.replace(partial, weights_file)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    sidecar.write_text(json.dumps({"fingerprint": fingerprint, "settings": settings,
                                   "final_metrics": metrics}, indent=2, default=str))
    return True
