"""Fine-tuning on free prompts per image (docs/method.md §11, "Fine-tuning on free
prompts"): when the data carries captions (``data.captions``, or a ``data.manifest`` with a
``caption`` column), the run fine-tunes a :class:`~robustft.backbones.heads.captions.
CaptionClassifier` built from the model's image-text model, and every batch's captions
become its explained classes. Plain functions: :mod:`robustft.training.run` and
:mod:`robustft.training.module` call them."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustft.backbones.heads.captions import CaptionClassifier
from robustft.backbones.image_text import image_text_model
from robustft.backbones.spec import ModelSpec
from robustft.data.generic import CAPTION_COLUMN

__all__ = ["CLASS_ONLY_CALLBACKS", "caption_model", "caption_run_callbacks", "caption_targets",
           "check_caption_run", "uses_captions"]
log = logging.getLogger(__name__)

# callbacks that read class labels across batches (the held-out selection's swapped-
# background top-1) or explain images without their batch's captions (the overlays): a
# caption index means something within its batch only
CLASS_ONLY_CALLBACKS = ("heldout_selection", "relevance_overlays")


def uses_captions(data_cfg: Mapping[str, Any]) -> bool:
    """Whether the ``data`` config gives captions: ``data.captions`` set, or a
    ``data.manifest`` whose header has a ``caption`` column."""
    if data_cfg.get("captions"):
        return True
    manifest = data_cfg.get("manifest")
    if not manifest or not Path(manifest).is_file() or Path(manifest).suffix != ".csv":
        return False
    with Path(manifest).open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return CAPTION_COLUMN in header


def check_caption_run(data_cfg: Mapping[str, Any]) -> None:
    """What a caption run cannot use, in one line naming the key: images without masks have
    no caption to be scored against."""
    if data_cfg.get("unmasked_root"):
        raise ValueError(f"data.unmasked_root={data_cfg.get('unmasked_root')}: images without "
                         "masks have no caption to be scored against in a caption run "
                         "(data.captions); set data.unmasked_root=null")


def caption_run_callbacks(callbacks: Mapping[str, Any]) -> dict[str, Any]:
    """``callbacks`` (the config group) without :data:`CLASS_ONLY_CALLBACKS`, said in one
    log line when one is dropped."""
    dropped = [name for name in CLASS_ONLY_CALLBACKS if callbacks.get(name) is not None]
    if dropped:
        log.info("data.captions: callbacks %s are not run in a caption run (they read class "
                 "labels across batches; a caption's index is its batch's own)", dropped)
    return {name: value for name, value in callbacks.items() if name not in dropped}


def caption_model(spec: ModelSpec, *, train_text_tower: bool = False) -> CaptionClassifier:
    """The model of ``spec`` with both towers (its family's image-text model, e.g. an
    OpenCLIP ``CLIP``) as a caption classifier; one line naming ``model.family`` when the
    family has no text tower."""
    pair = image_text_model(spec, key="model")
    return CaptionClassifier(pair, train_text_tower=train_text_tower)


def caption_targets(batch: dict[str, Any], model: nn.Module,
                    original: nn.Module | None = None) -> dict[str, Any]:
    """A captioned pair batch with its captions set on ``model`` (and on ``original``, the
    frozen copy, without gradients) and ``label`` replaced by each image's own caption
    index: the class its relevance explains and the label of the classification terms.
    A batch without captions is returned as it is."""
    if "caption" not in batch:
        return batch
    if not isinstance(model, CaptionClassifier):
        raise TypeError("the batch has captions (data.captions) but the model is a "
                        f"{type(model).__name__}, not a CaptionClassifier")
    labels: Tensor = model.set_captions(list(batch["caption"]))
    if original is not None:
        with torch.no_grad():
            original.set_captions(list(batch["caption"]))
    return {**batch, "label": labels.to(batch["image"].device)}
