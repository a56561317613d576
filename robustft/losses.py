"""The loss terms of relevance fine-tuning (docs/method.md §2).

``S`` is a relevance map normalised to [0, 1], ``M`` a foreground mask in [0, 1] at the
same resolution (soft edges allowed: ``1 - M`` is computed, not made by swapping 0s and
1s as the public code does), ``ignore`` an optional boolean mask of pixels that count in
neither term (ImageNet-S id 1000). Each term is a mean over the counted pixels.

    L_bg  = mean((S * (1 - M))^2)        relevance on the background -> 0
    L_fg  = mean((S * M - M)^2)          relevance on the object     -> 1
    L_seg = lambda_bg * L_bg + lambda_fg * L_fg
    L     = lambda_seg * L_seg + lambda_cls * L_cls

Classification terms ``L_cls``: ``own_argmax_ce`` (the paper's: cross-entropy of
logits / T against the model's own current argmax), ``kl_to_teacher`` (KL from a frozen
copy of the original model) and ``label_ce`` (ground-truth cross-entropy).

Optional, not in the paper (weight 0 by default): ``l2_sp_penalty``, the squared distance
of the weights from where fine-tuning started (L2-SP, Li et al., ICML 2018; its alpha/2 is
``lambda_l2sp`` here). ``relevance_loss`` does not include it: the training module adds
``lambda_l2sp * ||theta - theta_0||^2`` to the training loss (not to the validation
loss). With a few masked images it keeps the fine-tune near the original model: what the
model knows about the objects survives while the relevance terms move it off the background.

Optional, not in the paper: images without masks (``data.unmasked_root``) add
``lambda_unmasked * L_cls`` over them to the training loss, ``L_cls`` being the objective's
own classification term: the model's decisions are then kept on more than the masked images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

from robustft.baselines import Objective

__all__ = [
    "ClassificationTerm",
    "LossConfig",
    "LossWeights",
    "LossTerms",
    "background_loss",
    "foreground_loss",
    "own_argmax_ce",
    "kl_to_teacher",
    "label_ce",
    "classification_loss",
    "l2_sp_penalty",
    "relevance_loss",
    "foreground_share",
]

class ClassificationTerm(StrEnum):
    """The classification term ``L_cls``; a ``str`` enum, so ``"label_ce"`` works too."""

    own_argmax_ce = "own_argmax_ce"
    kl_to_teacher = "kl_to_teacher"
    label_ce = "label_ce"


CLASSIFICATION_TERMS: tuple[str, ...] = tuple(term.value for term in ClassificationTerm)


def _masked_mean(values: Tensor, ignore: Tensor | None) -> Tensor:
    if ignore is None:
        return values.mean()
    keep = (~ignore.bool()).to(values.dtype)
    # An all-ignored batch contributes 0 rather than NaN.
    return (values * keep).sum() / keep.sum().clamp_min(1.0)


def background_loss(relevance: Tensor, mask: Tensor, ignore: Tensor | None = None) -> Tensor:
    """``mean((S * (1 - M))^2)`` over the pixels not in ``ignore``."""
    return _masked_mean((relevance * (1.0 - mask)) ** 2, ignore)


def foreground_loss(relevance: Tensor, mask: Tensor, ignore: Tensor | None = None) -> Tensor:
    """``mean((S * M - M)^2)`` over the pixels not in ``ignore``."""
    return _masked_mean((relevance * mask - mask) ** 2, ignore)


def own_argmax_ce(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of ``logits / T`` against the model's own current argmax (detached):
    keeps the decisions the model already makes confident (the paper's term)."""
    return F.cross_entropy(logits / temperature, logits.detach().argmax(dim=-1))


def kl_to_teacher(logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(p_teacher || p_model)`` at temperature T, averaged over the batch: preserves
    the original model's predictive distribution, not only its argmax."""
    log_p_model = F.log_softmax(logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(log_p_model, log_p_teacher, log_target=True, reduction="batchmean")


def label_ce(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy against the ground-truth labels (the paper's ablation)."""
    return F.cross_entropy(logits / temperature, labels)


def classification_loss(
    classification: ClassificationTerm | str,
    logits: Tensor,
    *,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    teacher_logits: Tensor | None = None,
) -> Tensor:
    """The classification term ``L_cls`` named by ``classification``. ``labels`` is
    required by ``label_ce``, ``teacher_logits`` by ``kl_to_teacher``."""
    if classification == "own_argmax_ce":
        return own_argmax_ce(logits, temperature)
    if classification == "kl_to_teacher":
        if teacher_logits is None:
            raise ValueError("classification='kl_to_teacher' needs teacher_logits")
        return kl_to_teacher(logits, teacher_logits, temperature)
    if classification == "label_ce":
        if labels is None:
            raise ValueError("classification='label_ce' needs labels")
        return label_ce(logits, labels, temperature)
    raise ValueError(f"unknown classification term {classification!r}; one of {CLASSIFICATION_TERMS}")


def l2_sp_penalty(parameters: Iterable[Tensor], start: Iterable[Tensor]) -> Tensor:
    """``sum_i ||p_i - p0_i||^2`` over paired tensors: the squared L2 distance of the
    weights ``parameters`` from their starting point ``start`` (L2-SP). A sum, not a mean,
    so that each weight's gradient, ``2 * (p - p0)``, does not depend on the model's size."""
    pairs = list(zip(parameters, start, strict=True))
    if not pairs:
        raise ValueError("l2_sp_penalty needs at least one parameter")
    for index, (parameter, reference) in enumerate(pairs):
        if parameter.shape != reference.shape:
            raise ValueError(f"l2_sp_penalty: parameter {index} has shape {tuple(parameter.shape)}, "
                             f"its starting point {tuple(reference.shape)}")
    return torch.stack([(p - p0.detach()).pow(2).sum() for p, p0 in pairs]).sum()


@dataclass
class LossConfig:
    """Everything that defines the training loss (the ``loss`` config group): the objective
    (``relevance``, the method, or a baseline of ``robustft.baselines``), the terms'
    weights (``lambda_*``), the classification term and its temperature, and the optional
    L2-SP pull towards the starting weights (``lambda_l2sp``, 0 = off) with ``fnmatch``
    patterns of parameter names it leaves free (``l2sp_exclude``, e.g. ``blocks.*.attn.*``),
    and the weight of the classification term on images without masks (``lambda_unmasked``,
    used when the data has them). The baselines use ``lambda_rrr`` / ``lambda_gradmask``,
    L2-SP and ``lambda_unmasked``, and ignore the relevance terms' weights and
    ``classification`` (they use cross-entropy on the labels).
    The defaults are the paper's loss for ImageNet-S masks."""

    objective: Objective = Objective.relevance
    classification: ClassificationTerm = ClassificationTerm.own_argmax_ce
    temperature: float = 1.0
    lambda_bg: float = 2.0
    lambda_fg: float = 0.3
    lambda_seg: float = 0.8
    lambda_cls: float = 0.2
    lambda_l2sp: float = 0.0
    # the classification term on the images without masks (data.unmasked_root), if any
    lambda_unmasked: float = 1.0
    # cross-entropy on the pairs' objects pasted on each other's backgrounds (0 = off)
    lambda_swap: float = 0.0
    l2sp_exclude: list[str] = field(default_factory=list)
    # Ross et al.'s weight (their code's l2_grads=1000); docs/method.md §7 on its scale
    lambda_rrr: float = 1000.0
    lambda_gradmask: float = 1.0

    def __post_init__(self) -> None:
        self.objective = Objective(self.objective)
        self.classification = ClassificationTerm(self.classification)
        for name in ("lambda_bg", "lambda_fg", "lambda_seg", "lambda_cls", "lambda_l2sp",
                     "lambda_unmasked", "lambda_swap", "lambda_rrr", "lambda_gradmask"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def weights(self) -> LossWeights:
        return LossWeights(background=self.lambda_bg, foreground=self.lambda_fg,
                           segmentation=self.lambda_seg, classification=self.lambda_cls)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms, as ``relevance_loss`` takes them; the defaults are
    :class:`LossConfig`'s (the paper's, ImageNet-S masks), read from there."""

    background: float = LossConfig.lambda_bg
    foreground: float = LossConfig.lambda_fg
    segmentation: float = LossConfig.lambda_seg
    classification: float = LossConfig.lambda_cls


@dataclass
class LossTerms:
    """Every term of one evaluation of the loss, for logging; ``total`` is optimised."""

    total: Tensor
    segmentation: Tensor
    background: Tensor
    foreground: Tensor
    classification: Tensor


def relevance_loss(
    relevance: Tensor,
    mask: Tensor,
    logits: Tensor,
    *,
    classification: ClassificationTerm | str = ClassificationTerm.own_argmax_ce,
    weights: LossWeights = LossWeights(),
    temperature: float = 1.0,
    labels: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    ignore: Tensor | None = None,
) -> LossTerms:
    """``L = lambda_seg * (lambda_bg * L_bg + lambda_fg * L_fg) + lambda_cls * L_cls``.

    ``relevance`` and ``mask`` are (B, H, W) at the same resolution (normalised relevance,
    see ``robustft.relevance.upsample_and_normalize``). ``labels`` is required by
    ``label_ce``, ``teacher_logits`` by ``kl_to_teacher``.
    """
    if relevance.shape != mask.shape:
        raise ValueError(f"relevance {tuple(relevance.shape)} and mask {tuple(mask.shape)} differ")
    mask = mask.to(relevance.dtype)
    l_bg = background_loss(relevance, mask, ignore)
    l_fg = foreground_loss(relevance, mask, ignore)
    l_seg = weights.background * l_bg + weights.foreground * l_fg
    l_cls = classification_loss(classification, logits, temperature=temperature, labels=labels,
                                teacher_logits=teacher_logits)
    total = weights.segmentation * l_seg + weights.classification * l_cls
    return LossTerms(total=total, segmentation=l_seg, background=l_bg, foreground=l_fg,
                     classification=l_cls)


def foreground_share(relevance: Tensor, mask: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Per-image share of relevance mass on the foreground, ``sum(S*M) / sum(S)`` over the
    counted pixels: (B,). A map with no mass gives 0."""
    keep = torch.ones_like(relevance) if ignore is None else (~ignore.bool()).to(relevance.dtype)
    mass = (relevance * keep).flatten(1).sum(1)
    on_object = (relevance * mask.to(relevance.dtype) * keep).flatten(1).sum(1)
    return on_object / mass.clamp_min(torch.finfo(relevance.dtype).tiny)
