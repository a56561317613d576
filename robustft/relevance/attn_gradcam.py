"""Attention Grad-CAM, the "GradCAM (attention)" baseline of "Transformer Interpretability
Beyond Attention Visualization" (Chefer, Gur, Wolf; CVPR 2021), docs/method.md §1.1.

On the last block only: each head's CLS-to-patch attention ``A_L[h, CLS, patches]`` is
weighted by that head's mean gradient of the target score over the same entries,
``w_h = mean_patches(dscore/dA_L[h, CLS, patches])``; the map is
``max(mean_h(w_h A_L[h, CLS, patches]), 0)`` (the clamp after the head mean, as in the
authors' ViT baseline ``Baselines.generate_cam_attn``). Class-specific through the gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustft.backbones import Backbone, backbone_of
from robustft.relevance.capture import (
    explained_classes,
    forward_with_attention,
    require_autograd,
)
from robustft.relevance.settings import (
    GRADIENT_MODES,
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
    widen,
)

__all__ = ["attention_gradcam"]


def attention_gradcam(
    model: nn.Module | Backbone,
    images: Tensor,
    target: Tensor | None = None,
    gradient_mode: GradientMode | str = GradientMode.detached,
    *,
    backend: RelevanceBackend | str = RelevanceBackend.eager,
) -> RelevanceOutput:
    """Attention Grad-CAM of ``images`` (B, 3, H, W) for ``target`` (B,) classes (``None``
    = the argmax class) -> the (B, h, w) patch map. ``gradient_mode`` as for
    ``grad_rollout``: ``detached`` treats the head weights as constants (the map reaches the
    weights through ``A_L``), ``second_order`` builds them with ``create_graph=True``.
    ``backend`` is ignored (the last block's attention is materialised)."""
    if gradient_mode not in GRADIENT_MODES:
        raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}, got {gradient_mode!r}")
    del backend
    require_autograd("attn_gradcam")
    backbone = backbone_of(model)
    layout = backbone.token_layout((images.shape[-2], images.shape[-1]))
    with torch.enable_grad():
        attentions, logits = forward_with_attention(backbone, images, layout)
        target = explained_classes(logits, target)
        score = logits.gather(1, target[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, attentions[-1], retain_graph=True,
                                          create_graph=gradient_mode == GradientMode.second_order)
        with torch.autocast(device_type=images.device.type, enabled=False):
            prefix = layout.num_prefix_tokens
            cls_attention = widen(attentions[-1])[:, :, 0, prefix:]       # (B, heads, patches)
            head_weights = widen(gradient)[:, :, 0, prefix:].mean(dim=-1, keepdim=True)
            patches = (head_weights * cls_attention).mean(dim=1).clamp(min=0)
    relevance = patches.reshape(patches.shape[0], *layout.grid_size)
    return RelevanceOutput(relevance=relevance, logits=logits, target=target)
