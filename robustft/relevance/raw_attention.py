"""Raw attention (docs/method.md §1.1): the last block's attention from the CLS token to
the patch tokens, averaged over heads. It uses no gradient, so it is not class-specific:
every ``target`` gives the same map."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustft.backbones import Backbone
from robustft.relevance.capture import capture, subject_of
from robustft.relevance.methods import register_method
from robustft.relevance.readout import mean_pool_row, read_out, read_row
from robustft.relevance.settings import GradientMode, RelevanceBackend, RelevanceOutput, widen

__all__ = ["raw_attention"]


@register_method("raw_attention", differentiable=True)  # a function of the captured A_L
def raw_attention(
    model: nn.Module | Backbone,
    images: Tensor,
    target: Tensor | None = None,
    gradient_mode: GradientMode | str = GradientMode.detached,
    *,
    backend: RelevanceBackend | str = RelevanceBackend.eager,
) -> RelevanceOutput:
    """``mean_heads(A_L)[CLS, patches]`` of ``images`` (B, 3, H, W) as the (B, h, w) grid.
    ``target`` is only passed through (``None`` = the argmax class); ``gradient_mode`` and
    ``backend`` are ignored. Runs under the caller's grad mode (differentiable in the
    weights with grad enabled, nothing kept under ``torch.no_grad()``)."""
    del backend
    subject = subject_of("raw_attention", model, images, gradient_mode, autograd=False)
    captured = capture(subject, images, target)
    with torch.autocast(device_type=images.device.type, enabled=False):
        row = read_row(widen(captured.attentions[-1]).mean(dim=1), subject.layout,
                       mean_pool_row(captured.pool))
    return read_out(row, subject.layout, captured.logits, captured.target)
