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

from robustft.backbones import Backbone
from robustft.relevance.capture import capture, score_gradients, subject_of
from robustft.relevance.methods import register_method
from robustft.relevance.readout import mean_pool_row, patch_columns, read_row
from robustft.relevance.settings import GradientMode, RelevanceBackend, RelevanceOutput, widen

__all__ = ["attention_gradcam"]


# differentiable as the rule is: the map is a function of the captured A_L (and of its
# gradient in second-order mode)
@register_method("attn_gradcam", differentiable=True)
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
    del backend
    subject = subject_of("attn_gradcam", model, images, gradient_mode, autograd=True)
    layout = subject.layout
    with torch.enable_grad():
        captured = capture(subject, images, target)
        (gradient,) = score_gradients(captured.logits, captured.target, captured.attentions[-1:],
                                      subject.gradient_mode)
        with torch.autocast(device_type=images.device.type, enabled=False):
            # the read-out row of each head, over the patch columns: (B, heads, patches)
            # (the map read-out reads through the head mean of the attention pool's row)
            pool = mean_pool_row(captured.pool)
            cls_attention = patch_columns(read_row(widen(captured.attentions[-1]), layout, pool),
                                          layout)
            head_weights = patch_columns(read_row(widen(gradient), layout, pool), layout).mean(
                dim=-1, keepdim=True)
            patches = (head_weights * cls_attention).mean(dim=1).clamp(min=0)
    relevance = patches.reshape(patches.shape[0], *layout.grid_size)
    return RelevanceOutput(relevance=relevance, logits=captured.logits, target=captured.target)
