"""Input x gradient at the pixel level (docs/method.md §1.1): ``sum_c |x_c * dscore/dx_c|``
over the three channels of the model's (normalised) input, a (B, H, W) map at image
resolution. Class-specific through the gradient.

The absolute value is taken per channel before the sum: the map says how much each pixel
moves the score, either way, which is what a mask or a perturbation test compares against
(a signed sum lets the channels of one pixel cancel). A pixel equal to the normalisation
mean is a zero input and so gets zero relevance, as in any input x gradient.

Not differentiable: the gradient is a first-order one (no ``create_graph``), so the map
carries no graph to the weights; training on it would need a double backward through the
whole network at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustft.backbones import Backbone
from robustft.relevance.capture import explained_classes, score_gradients, subject_of
from robustft.relevance.methods import register_method
from robustft.relevance.settings import GradientMode, RelevanceBackend, RelevanceOutput, widen

__all__ = ["input_x_gradient"]


@register_method("input_x_gradient", differentiable=False)  # a first-order gradient only
def input_x_gradient(
    model: nn.Module | Backbone,
    images: Tensor,
    target: Tensor | None = None,
    gradient_mode: GradientMode | str = GradientMode.detached,
    *,
    backend: RelevanceBackend | str = RelevanceBackend.eager,
) -> RelevanceOutput:
    """``sum_c |images * d score[target] / d images|`` -> (B, H, W), for ``target`` (B,)
    classes (``None`` = the argmax class); ``gradient_mode`` and ``backend`` are ignored.
    Works for any classifier the backbones know (no token sequence needed). The map and the
    logits are detached; the model's parameters get no ``.grad``."""
    del backend
    subject = subject_of("input_x_gradient", model, images, gradient_mode, autograd=True,
                         tokens=False)
    with torch.enable_grad():
        inputs = images.detach().requires_grad_()
        logits = subject.backbone.class_scores(inputs)
        target = explained_classes(logits, target)
        (gradient,) = score_gradients(logits, target, [inputs], retain_graph=False)
    relevance = (widen(inputs.detach()) * widen(gradient)).abs().sum(dim=1)
    return RelevanceOutput(relevance=relevance, logits=logits.detach(), target=target)
