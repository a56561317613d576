"""A classifier for a backbone that has none (DINOv2-style self-supervised ViTs): a head
fitted on a few labelled images' frozen features.

Two kinds, both stored in small safetensors files:

- **linear probe** (:func:`fit_linear_probe`): multinomial logistic regression on the
  pooled features (``weight`` (C, D), ``bias`` (C,)), fitted full-batch with L-BFGS and an
  L2 penalty. :func:`save_probe_head` writes it; ``model.probe_head=<file>`` loads it:
  for a timm model built with ``num_classes=0`` (whose output is its pooled feature, the
  normalised CLS token for DINOv2) robustft wraps the model in a :class:`ProbeClassifier`
  whose ``head`` is a trainable ``nn.Linear``; for a Hugging Face classifier the probe is
  written into the model's own ``classifier`` (a DINOv2 classifier reads the CLS token and
  the mean patch token side by side: the probe fills the CLS half and the patch half is
  zero, so both families give the same scores).
- **class-mean prototypes** (:func:`class_mean_prototypes`): each class's mean of the
  unit-length features, scored by scaled cosine. That is a zero-shot head with image
  prototypes instead of text embeddings, so it is written with
  :func:`~robustft.backbones.zero_shot.save_zero_shot_head` and loaded by
  ``model.zero_shot.embeddings_file`` (frozen buffers, :class:`ZeroShotClassifier`).

The features are what the tower returns (:func:`pooled_features`); fitting them from a
folder of images is ``robustft-head`` (:mod:`robustft.cli.head`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft.backbones.heads.zero_shot import ZeroShotBackbone, ZeroShotHead
from robustft.backbones.registry import register_backbone

__all__ = ["ProbeClassifier", "ProbeHead", "attach_probe_head", "class_mean_prototypes",
           "fit_linear_probe", "pooled_features", "read_probe_head", "save_probe_head"]


@dataclass
class ProbeHead:
    """A linear head: ``scores = features @ weight.T + bias``; ``weight`` (C, D), ``bias``
    (C,), ``class_names`` in label order (may be empty)."""

    weight: Tensor
    bias: Tensor
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[1])


class ProbeClassifier(nn.Module):
    """``visual`` (images -> (B, D) pooled features) followed by a linear ``head``; both
    are trained by fine-tuning (``optim.frozen=[head]`` keeps the probe fixed)."""

    def __init__(self, visual: nn.Module, head: ProbeHead, *, feature_dim: int | None = None,
                 key: str = "model.probe_head") -> None:
        super().__init__()
        if feature_dim is not None and head.feature_dim != feature_dim:
            raise ValueError(f"{key}: the probe reads {head.feature_dim} features but the backbone "
                             f"outputs {feature_dim}")
        self.visual = visual
        self.head = nn.Linear(head.feature_dim, head.num_classes)
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            self.head.bias.copy_(head.bias)
        self.class_names = tuple(head.class_names)

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.visual(images))


class ProbeBackbone(ZeroShotBackbone):
    """A :class:`ProbeClassifier` as the method sees it: like a zero-shot model, the tower's
    adapter for tokens and attention and the wrapper's output as the class scores."""


register_backbone(ProbeClassifier, ProbeBackbone)


@torch.no_grad()
def pooled_features(tower: nn.Module, images: Tensor, batch_size: int = 32) -> Tensor:
    """(N, D) float32 features of a tower whose output is its pooled feature (a timm model
    with ``num_classes=0``), in eval mode, ``batch_size`` images at a time."""
    was_training = tower.training
    tower.eval()
    try:
        return torch.cat([tower(images[i:i + batch_size]).float()
                          for i in range(0, len(images), batch_size)])
    finally:
        tower.train(was_training)


def _check_labels(features: Tensor, labels: Tensor, num_classes: int) -> None:
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) with (N,) labels, got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"no labelled image of class(es) {missing} to fit a head on")


def fit_linear_probe(features: Tensor, labels: Tensor, num_classes: int, *,
                     weight_decay: float = 1e-3, max_iter: int = 500,
                     class_names: tuple[str, ...] = ()) -> ProbeHead:
    """Multinomial logistic regression: minimise mean cross-entropy +
    ``weight_decay / 2 * ||W||^2`` (bias unpenalised) with full-batch L-BFGS in float64,
    from zero. Deterministic for given inputs."""
    _check_labels(features, labels, num_classes)
    x = features.detach().double()
    y = labels.detach().long()
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=max_iter, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return ProbeHead(weight.detach().float(), bias.detach().float(), tuple(class_names))


def class_mean_prototypes(features: Tensor, labels: Tensor, num_classes: int, *,
                          scale: float = 20.0, class_names: tuple[str, ...] = ()) -> ZeroShotHead:
    """Per class, the mean of the unit-length features, normalised: a zero-shot head whose
    scores are ``scale * cos(feature, prototype)`` (``logit_scale = log(scale)``)."""
    _check_labels(features, labels, num_classes)
    unit = F.normalize(features.detach().float(), dim=-1)
    prototypes = torch.stack([unit[labels == c].mean(0) for c in range(num_classes)])
    return ZeroShotHead(F.normalize(prototypes, dim=-1), torch.tensor(math.log(scale)), None,
                        tuple(class_names))


def save_probe_head(head: ProbeHead | ProbeClassifier, path: str | os.PathLike[str]) -> Path:
    """Write ``weight``, ``bias`` (and the class names as metadata) to a safetensors file."""
    from safetensors.torch import save_file

    if isinstance(head, ProbeClassifier):
        head = ProbeHead(head.head.weight, head.head.bias, head.class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight.detach().cpu().float().contiguous(),
               "bias": head.bias.detach().cpu().float().contiguous()}, str(path),
              metadata={"kind": "linear_probe", "class_names": json.dumps(list(head.class_names))})
    return path


def read_probe_head(path: str | os.PathLike[str], key: str = "model.probe_head") -> ProbeHead:
    """A head written by :func:`save_probe_head`; errors name ``key`` and the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: probe head file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            metadata = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - SafetensorError derives from Exception
        raise ValueError(f"{key}: {path} is not a readable safetensors file: "
                         f"{' '.join(str(error).split())}") from error
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != weight.shape[:1]:
        raise ValueError(f"{key}: {path} holds no linear probe (expected weight (classes, dim) and "
                         f"bias (classes,), got {sorted(tensors)}); a prototype head is a "
                         "zero-shot head: model.zero_shot.embeddings_file")
    return ProbeHead(weight.float(), bias.float(),
                     tuple(json.loads(metadata.get("class_names", "[]"))))


def attach_probe_head(model: nn.Module, path: str | os.PathLike[str], *,
                      key: str = "model") -> nn.Module:
    """``model`` with the probe of ``path`` as its classifier (module docstring): a timm
    model built with ``num_classes=0`` is wrapped in a :class:`ProbeClassifier`; a Hugging
    Face classifier gets the probe written into its ``classifier``."""
    head = read_probe_head(path, f"{key}.probe_head")
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear) and hasattr(model, "config"):
        return _into_hf_classifier(model, classifier, head, key)
    if getattr(model, "num_classes", None) != 0:
        raise ValueError(f"{key}.probe_head: the backbone already has a "
                         f"{getattr(model, 'num_classes', '?')}-class head; build it with "
                         f"{key}.num_classes=0 so that its output is the pooled feature")
    width = getattr(model, "num_features", None)
    return ProbeClassifier(model, head, feature_dim=width, key=f"{key}.probe_head")


@torch.no_grad()
def _into_hf_classifier(model: nn.Module, classifier: nn.Linear, head: ProbeHead,
                        key: str) -> nn.Module:
    if classifier.out_features != head.num_classes:
        raise ValueError(f"{key}.probe_head: {head.num_classes} classes, the model's classifier has "
                         f"{classifier.out_features}; set {key}.num_classes={head.num_classes}")
    width = head.feature_dim
    if classifier.in_features not in (width, 2 * width):
        raise ValueError(f"{key}.probe_head: the probe reads {width} features, the classifier "
                         f"{classifier.in_features}")
    classifier.weight.zero_()
    # DINOv2's classifier input is [CLS token, mean patch token]: the probe is the CLS half
    classifier.weight[:, :width] = head.weight
    classifier.bias.copy_(head.bias)
    return model
