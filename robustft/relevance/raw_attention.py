"""Raw attention (docs/method.md §1.1): the last block's attention from the CLS token to
the patch tokens, averaged over heads. It uses no gradient, so it is not class-specific:
every ``target`` gives the same map."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustft.backbones import Backbone, backbone_of
from robustft.relevance.capture import explained_classes, forward_with_attention, read_out
from robustft.relevance.settings import GradientMode, RelevanceBackend, RelevanceOutput, widen

__all__ = ["raw_attention"]


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
    del gradient_mode, backend
    backbone = backbone_of(model)
    layout = backbone.token_layout((images.shape[-2], images.shape[-1]))
    attentions, logits = forward_with_attention(backbone, images, layout)
    with torch.autocast(device_type=images.device.type, enabled=False):
        cls_row = widen(attentions[-1]).mean(dim=1)[:, 0]
    return read_out(cls_row, layout, logits, explained_classes(logits, target))
