"""The options of a relevance computation, the result type of a relevance method, and the
map post-processing every method shares (docs/method.md §1, step 7)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PHASES", "ExplainedClass", "GradientMode", "RelevanceBackend", "RelevanceOutput",
           "upsample_and_normalize"]


class GradientMode(StrEnum):
    """How a loss on the map reaches the weights: ``detached`` (the gradients weighting the
    attention are constants, as in the public code) or ``second_order`` (the loss also flows
    through them: a double backward)."""

    detached = "detached"
    second_order = "second_order"


class ExplainedClass(StrEnum):
    """Which class the map explains while fine-tuning: the ground-truth ``label`` (the
    public code) or the model's ``predicted`` class."""

    label = "label"
    predicted = "predicted"


class RelevanceBackend(StrEnum):
    """How the attention reaches the rule: ``eager`` = the backbone's materialised
    post-softmax attention in the autograd graph (``Backbone.capture_attention``);
    ``fused`` = fused attention kernels, each block's attention recomputed from q and k
    (``Backbone.capture_qkv``, :mod:`robustft.relevance.fused`; detached mode only, the
    second-order mode falls back to ``eager``); ``auto`` = ``fused`` where it can run (detached
    mode, a backbone that captures fused), else ``eager``, said once in the log."""

    auto = "auto"
    eager = "eager"
    fused = "fused"


# The phases of a relevance step, as ``torch.profiler.record_function`` ranges named
# ``robustft.relevance.<phase>`` (benchmarks/relevance_step.py --phases reads them): the
# capturing forward, the score's backward to every block's attention (eager: dA, fused: dO),
# the per-block maps Abar_l, the rollout, and (fused) the per-block maps' own backward inside
# the loss's backward.
PHASES = ("forward", "score_backward", "block_maps", "rollout", "block_maps_backward")


GRADIENT_MODES: tuple[str, ...] = tuple(mode.value for mode in GradientMode)


@dataclass
class RelevanceOutput:
    """Result of a relevance method.

    relevance: (B, h, w) raw relevance: over the patch grid for the token-level methods
               (one value per patch token), or at the input's (H, W) for the pixel-level
               ones (``input_x_gradient``). Either goes to :func:`upsample_and_normalize`.
    logits:    (B, num_classes) class scores of the same forward pass (training needs no second).
    target:    (B,) the classes that were explained.
    """

    relevance: Tensor
    logits: Tensor
    target: Tensor


def widen(tensor: Tensor) -> Tensor:
    """Half-precision tensors as float32; float32/float64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def upsample_and_normalize(
    relevance: Tensor, size: tuple[int, int], eps: float = 1e-8
) -> Tensor:
    """Step 7: bilinear upsampling of a (B, h, w) map to ``size`` and per-image min-max
    normalisation to [0, 1]. A map already at ``size`` (a pixel-level method's at the mask's
    resolution) is only normalised; one at another resolution is resized bilinearly either
    way. The range is clamped below at ``eps``, so a constant map becomes all zeros instead
    of NaN (the public code divides by zero there). Half-precision maps are normalised in
    float32, where ``eps`` does not underflow."""
    relevance = widen(relevance)
    if tuple(relevance.shape[-2:]) == tuple(size):
        upsampled = relevance
    else:
        upsampled = F.interpolate(
            relevance[:, None], size=tuple(size), mode="bilinear", align_corners=False
        )[:, 0]
    flat = upsampled.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (upsampled - low) / (high - low).clamp_min(eps)
