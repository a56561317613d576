"""Fitting a head (:mod:`robustft.backbones.heads.probe_head`) on the frozen features of a folder
of labelled images: ``robustft-head`` and the real-backbone demo's stand-in use it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustft.backbones import preprocessing_config
from robustft.backbones.heads.probe_head import (
    class_mean_prototypes,
    fit_linear_probe,
    pooled_features,
    save_probe_head,
)
from robustft.backbones.zero_shot import ZeroShotClassifier, save_zero_shot_head
from robustft.data.layout import load_rgb
from robustft.evaluation.eval_transforms import model_eval_transform
from robustft.masks.inputs import ImageEntry, find_images

__all__ = ["FittedHead", "fit_head_on_folder", "labelled_images"]


@dataclass(frozen=True)
class FittedHead:
    path: Path
    kind: str
    classes: tuple[str, ...]
    images: int
    feature_dim: int
    training_top1: float


def labelled_images(folder: str | os.PathLike[str], per_class: int | None
                    ) -> tuple[list[ImageEntry], list[int], list[str]]:
    """The images of ``folder``'s class folders (``<class>/<name>`` or
    ``images/<class>/<name>``), at most ``per_class`` of each (sorted by name), their
    labels (sorted class positions) and the class names."""
    _layout, entries = find_images(folder)
    classes = sorted({entry.class_name for entry in entries})
    chosen: list[ImageEntry] = []
    for name in classes:
        ordered = sorted((e for e in entries if e.class_name == name), key=lambda e: e.relative)
        chosen += ordered[:per_class]
    return chosen, [classes.index(e.class_name) for e in chosen], classes


def fit_head_on_folder(tower: nn.Module, folder: str | os.PathLike[str],
                       output: str | os.PathLike[str], *, kind: str = "linear",
                       per_class: int | None = None, weight_decay: float = 1e-3,
                       scale: float = 20.0, batch_size: int = 32,
                       device: str | torch.device = "cpu") -> FittedHead:
    """Features of every chosen image (the tower's eval transform, eval mode), then a
    ``linear`` probe (:func:`save_probe_head`) or ``prototypes`` (a zero-shot head file)
    written to ``output``."""
    if kind not in ("linear", "prototypes"):
        raise ValueError(f"kind: expected linear or prototypes, got {kind!r}")
    entries, labels, classes = labelled_images(folder, per_class)
    transform = model_eval_transform(preprocessing_config(tower))
    tower = tower.to(device).eval()
    features = []
    for start in range(0, len(entries), batch_size):
        batch = torch.stack([transform(load_rgb(e.path)) for e in entries[start:start + batch_size]])
        features.append(pooled_features(tower, batch.to(device), batch_size).cpu())
    features_t, targets = torch.cat(features), torch.tensor(labels)
    if kind == "linear":
        head = fit_linear_probe(features_t, targets, len(classes), weight_decay=weight_decay,
                                class_names=tuple(classes))
        path = save_probe_head(head, output)
        scores = features_t @ head.weight.T + head.bias
    else:
        prototypes = class_mean_prototypes(features_t, targets, len(classes), scale=scale,
                                           class_names=tuple(classes))
        path = save_zero_shot_head(prototypes, output)
        with torch.no_grad():
            scores = ZeroShotClassifier(nn.Identity(), prototypes)(features_t)
    top1 = float((scores.argmax(1) == targets).float().mean())
    return FittedHead(Path(path), kind, tuple(classes), len(entries), int(features_t.shape[1]), top1)
