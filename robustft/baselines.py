"""The input-gradient baselines that relevance fine-tuning is compared with (docs/method.md §7).

Both penalise the gradient of the model's output with respect to its input image on the
pixels outside the object mask, beside a cross-entropy on the labels:

    rrr       L = CE + lambda_rrr * mean_n sum_{c,h,w} ((1 - M) * d(sum_k log p_k)/dx)^2
              (Ross, Hughes, Doshi-Velez 2017, "Right for the Right Reasons")
    gradmask  L = CE + lambda_gradmask * mean_n sum_{c,h,w} |(1 - M) * dCE_n/dx|
              (Simpson, Dutil, Bengio, Cohen 2019, "GradMask")

``x`` is the image as the model receives it (normalised), ``M`` the foreground mask
broadcast over the channels; pixels marked ``ignore`` count in neither term. The input
gradient is taken with ``create_graph=True``, so the penalty is a function of the weights
and its gradient reaches them; the public scripts of both baselines omit it, and their
penalty then has no gradient: both reduce to cross-entropy fine-tuning.

Nothing here knows a model: the caller runs the forward pass on images that require grad
(``images.requires_grad_(True)``) and passes the logits and those images.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Objective", "BaselineTerms", "background_weight", "rrr_penalty",
           "gradmask_penalty", "baseline_loss"]


class Objective(StrEnum):
    """The training objective (``loss.objective``): relevance fine-tuning (the method) or a
    baseline trained with everything else identical."""

    relevance = "relevance"
    plain = "plain"          # cross-entropy on the labels
    rrr = "rrr"              # + Right for the Right Reasons
    gradmask = "gradmask"    # + GradMask


OBJECTIVES: tuple[str, ...] = tuple(objective.value for objective in Objective)


@dataclass
class BaselineTerms:
    """The terms of one evaluation of a baseline objective; ``total`` is optimised."""

    total: Tensor
    classification: Tensor
    penalty: Tensor  # the input-gradient term before its weight (0 for ``plain``)


def background_weight(mask: Tensor, ignore: Tensor | None = None) -> Tensor:
    """``1 - M`` as (B, 1, H, W), 0 on ignored pixels: which input gradients are penalised."""
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W), got {tuple(mask.shape)}")
    background = 1.0 - mask
    if ignore is not None:
        background = background * (~ignore.bool()).to(background.dtype)
    return background.unsqueeze(1)


def _input_gradient(output: Tensor, images: Tensor, create_graph: bool) -> Tensor:
    if not images.requires_grad:
        raise ValueError("the images must require grad and the logits be computed from them "
                         "(images.requires_grad_(True) before the forward pass)")
    (gradient,) = torch.autograd.grad(output, images, create_graph=create_graph)
    return gradient


def _check_shapes(images: Tensor, background: Tensor) -> None:
    if images.dim() != 4 or background.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"images (B, C, H, W) {tuple(images.shape)} and background "
                         f"(B, 1, H, W) {tuple(background.shape)} must share B, H, W")


def rrr_penalty(logits: Tensor, images: Tensor, background: Tensor, *,
                create_graph: bool = True) -> Tensor:
    """Right for the Right Reasons: ``mean_n sum ((1 - M) * d(sum_k log p_k)/dx)^2``.

    The gradient of the summed log-probabilities of every class (not of the loss) is the
    paper's: it does not depend on the label. Summed over the batch before the gradient,
    each image gets its own gradient (the images do not interact in a ViT); the penalty is
    the sum over an image's pixels and channels, averaged over the batch (Ross et al. sum
    over the batch, as over the cross-entropy; averaging both keeps their ratio)."""
    _check_shapes(images, background)
    log_probabilities = F.log_softmax(logits, dim=-1).sum()
    gradient = _input_gradient(log_probabilities, images, create_graph)
    return (background * gradient).pow(2).flatten(1).sum(1).mean()


def gradmask_penalty(logits: Tensor, labels: Tensor, images: Tensor, background: Tensor, *,
                     create_graph: bool = True) -> Tensor:
    """GradMask: ``mean_n sum |(1 - M) * dCE_n/dx|``, the mass of the loss's saliency map
    (its absolute input gradient) outside the mask, per image, averaged over the batch.
    Each image's own cross-entropy (a sum over the batch before the gradient), so that an
    image's gradient does not shrink with the batch size."""
    _check_shapes(images, background)
    per_image_loss = F.cross_entropy(logits, labels, reduction="sum")
    gradient = _input_gradient(per_image_loss, images, create_graph)
    return (background * gradient).abs().flatten(1).sum(1).mean()


def baseline_loss(
    objective: Objective | str,
    logits: Tensor,
    images: Tensor,
    mask: Tensor,
    labels: Tensor,
    *,
    lambda_rrr: float,
    lambda_gradmask: float,
    ignore: Tensor | None = None,
    create_graph: bool = True,
) -> BaselineTerms:
    """The loss of a baseline ``objective`` (``plain``, ``rrr`` or ``gradmask``): the
    cross-entropy on ``labels`` plus the weighted input-gradient penalty. ``logits`` must be
    computed from ``images`` (requiring grad) for ``rrr`` and ``gradmask``."""
    objective = Objective(objective)
    if objective is Objective.relevance:
        raise ValueError("baseline_loss: the relevance objective is robustft.losses.relevance_loss")
    classification = F.cross_entropy(logits, labels)
    if objective is Objective.plain:
        penalty = torch.zeros((), dtype=logits.dtype, device=logits.device)
        return BaselineTerms(total=classification, classification=classification, penalty=penalty)
    background = background_weight(mask.to(images.dtype), ignore)
    if objective is Objective.rrr:
        penalty = rrr_penalty(logits, images, background, create_graph=create_graph)
        weight = lambda_rrr
    else:
        penalty = gradmask_penalty(logits, labels, images, background, create_graph=create_graph)
        weight = lambda_gradmask
    return BaselineTerms(total=classification + weight * penalty, classification=classification,
                         penalty=penalty)
