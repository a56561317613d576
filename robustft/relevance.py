"""The relevance map: gradient-weighted attention rollout (Chefer et al., ICCV 2021), as
used by "Optimizing Relevance Maps of Vision Transformers Improves Robustness".

Read against docs/method.md §1:

1. one forward pass, keeping every block's post-softmax attention ``A_l`` (B, H, N, N);
2. score ``s = sum_b logit[b, target[b]]``;
3. ``G_l = ds/dA_l`` for all blocks in ONE autograd call (samples are independent in a
   ViT, so the batched sum gives every sample its own gradient);
4. ``Abar_l = mean_heads(clamp(G_l * A_l, min=0))`` (B, N, N);
5. rollout ``R = I; R = R + Abar_l @ R`` for l = 1..L, no row normalisation;
6. read-out: the CLS row of ``R`` over the patch-token columns -> (B, h, w);
7. :func:`upsample_and_normalize`: bilinear upsampling to the mask size and per-image
   min-max normalisation (with an epsilon: a constant map gives 0, not NaN).

Only the CLS row of ``R`` is needed, and ``R = (I + Abar_L) ... (I + Abar_1)``, so the
rollout is evaluated as a row vector from the last block down, ``r <- r + r @ Abar_l``:
O(L N^2) instead of the O(L N^3) of the full matrix product, with identical values.

Gradient modes:
- ``"detached"`` (the public code): ``G_l`` is a constant; a loss on the map reaches the
  weights only through ``A_l``.
- ``"second_order"`` (what the paper describes): ``create_graph=True``; the loss also
  flows through ``G_l`` (a double backward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft.attention import capture_attention
from robustft.models import TokenLayout, token_layout

__all__ = [
    "GradientMode",
    "RelevanceOutput",
    "relevance_map",
    "head_weighted_attention",
    "rollout_cls_row",
    "upsample_and_normalize",
]

GradientMode = Literal["detached", "second_order"]
GRADIENT_MODES: tuple[str, ...] = ("detached", "second_order")


@dataclass
class RelevanceOutput:
    """Result of :func:`relevance_map`.

    relevance: (B, h, w) raw rollout relevance of the CLS token over the patch grid.
    logits:    (B, num_classes) logits of the same forward pass (training needs no second).
    target:    (B,) the classes that were explained.
    """

    relevance: Tensor
    logits: Tensor
    target: Tensor


def head_weighted_attention(attention: Tensor, gradient: Tensor) -> Tensor:
    """Step 4: ``mean over heads of clamp(G * A, min=0)``: (B, H, N, N) -> (B, N, N)."""
    return (gradient * attention).clamp(min=0).mean(dim=1)


def rollout_cls_row(block_relevance: Sequence[Tensor], cls_index: int = 0) -> Tensor:
    """Steps 5-6 without the column selection: the ``cls_index`` row of
    ``R = (I + Abar_L) ... (I + Abar_1)`` for per-block maps ``Abar_l`` (B, N, N), first
    block first. Returns (B, N)."""
    batch, num_tokens, _ = block_relevance[0].shape
    row = torch.zeros(batch, 1, num_tokens, dtype=block_relevance[0].dtype,
                      device=block_relevance[0].device)
    row[:, 0, cls_index] = 1.0
    for abar in reversed(block_relevance):
        row = row + row @ abar
    return row[:, 0]


def relevance_map(
    model: nn.Module,
    images: Tensor,
    target: Tensor | None = None,
    gradient_mode: GradientMode = "detached",
    attention_backend: str = "hooks",
) -> RelevanceOutput:
    """Relevance of the CLS token over the patch grid for ``target`` classes.

    Args:
        model: a timm VisionTransformer (also distilled and register-token variants; the
            prefix tokens never appear in the map). It is not modified: fused attention is
            switched off only during the capture and restored afterwards.
        images: (B, 3, H, W) normalised input.
        target: (B,) classes to explain; ``None`` explains the argmax of the logits.
        gradient_mode: ``"detached"`` or ``"second_order"`` (see module docstring).
        attention_backend: how attention probabilities are captured (robustft.attention).

    Returns:
        :class:`RelevanceOutput` with the raw (B, h, w) map and the forward's logits. The
        map is differentiable w.r.t. the model's parameters (through ``A_l``, and in
        second-order mode through ``G_l`` too).
    """
    if gradient_mode not in GRADIENT_MODES:
        raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}, got {gradient_mode!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("relevance_map needs autograd, but inference mode is on "
                           "(torch.inference_mode(); in Lightning set trainer.inference_mode=false)")
    layout = token_layout(model, (images.shape[-2], images.shape[-1]))
    with torch.enable_grad():
        with capture_attention(model, attention_backend) as attentions:
            logits = model(images)
        if len(attentions) == 0:
            raise RuntimeError(f"no attention was captured from {type(model).__name__}")
        _check_token_count(attentions[0].shape[-1], layout, model)
        if target is None:
            target = logits.argmax(dim=-1)
        target = target.to(device=logits.device, dtype=torch.long)
        score = logits.gather(1, target[:, None]).sum()
        gradients = torch.autograd.grad(
            score,
            list(attentions),
            retain_graph=True,
            create_graph=gradient_mode == "second_order",
        )
        # float32 rollout even under fp16/bf16 autocast: the per-block maps are small next to
        # the identity, and half precision would round them away (and underflow eps).
        with torch.autocast(device_type=images.device.type, enabled=False):
            block_relevance = [head_weighted_attention(_widen(a), _widen(g))
                               for a, g in zip(attentions, gradients)]
            cls_row = rollout_cls_row(block_relevance, cls_index=0)
    patches = cls_row[:, layout.num_prefix_tokens:]
    relevance = patches.reshape(images.shape[0], *layout.grid_size)
    return RelevanceOutput(relevance=relevance, logits=logits, target=target)


def _widen(tensor: Tensor) -> Tensor:
    """Half-precision tensors as float32; float32/float64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _check_token_count(num_tokens: int, layout: TokenLayout, model: nn.Module) -> None:
    """The map needs one token per patch: timm's patch dropout (``patch_drop_rate`` > 0, active
    in training mode) removes some, which would scramble the grid."""
    expected = layout.num_tokens
    if num_tokens != expected:
        hint = ""
        if model.training and not isinstance(getattr(model, "patch_drop", None), nn.Identity):
            hint = (" The model drops patch tokens in training mode (timm patch_drop_rate > 0):"
                    " create it with patch_drop_rate=0 for relevance fine-tuning.")
        raise ValueError(f"{type(model).__name__} attended over {num_tokens} tokens, but a "
                         f"{layout.grid_size[0]}x{layout.grid_size[1]} patch grid with "
                         f"{layout.num_prefix_tokens} prefix tokens has {expected}.{hint}")


def upsample_and_normalize(
    relevance: Tensor, size: tuple[int, int], eps: float = 1e-8
) -> Tensor:
    """Step 7: bilinear upsampling of a (B, h, w) map to ``size`` and per-image min-max
    normalisation to [0, 1]. The range is clamped below at ``eps``, so a constant map
    becomes all zeros instead of NaN (the public code divides by zero there). Half-precision
    maps are normalised in float32, where ``eps`` does not underflow."""
    relevance = _widen(relevance)
    upsampled = F.interpolate(
        relevance[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0]
    flat = upsampled.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (upsampled - low) / (high - low).clamp_min(eps)
