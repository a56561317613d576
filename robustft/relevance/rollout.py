"""Attention rollout ("Quantifying Attention Flow in Transformers", Abnar & Zuidema, ACL
2020), docs/method.md §1.1.

Per block, the heads' mean attention is mixed with the identity for the residual path,
``Ã_l = 0.5 I + 0.5 mean_heads(A_l)``, and row-normalised; the rollout is the product
``R = Ã_L ... Ã_1`` and the map is the CLS row of ``R`` over the patch tokens. It uses no
gradient, so it is not class-specific: every ``target`` gives the same map.

``start_layer`` (default 0, every block) starts the product at that block (0-based):
``R = Ã_L ... Ã_{start_layer + 1}``. The public Transformer-Explainability / RobustViT
segmentation and perturbation scripts call their rollout with ``start_layer=1`` (block 0
left out), so ``start_layer=1`` reproduces those tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustft.backbones import Backbone
from robustft.relevance.capture import capture, subject_of
from robustft.relevance.methods import register_method
from robustft.relevance.readout import mean_pool_row, read_out, readout_row
from robustft.relevance.settings import GradientMode, RelevanceBackend, RelevanceOutput, widen

__all__ = ["attention_rollout", "check_start_layer", "rollout_cls_row_of_attention",
           "rollout_row_of_attention"]


def check_start_layer(start_layer: int, num_blocks: int | None = None) -> int:
    """``start_layer`` as an int; a ``ValueError`` naming it unless it is a block index
    (0 <= start_layer < num_blocks; only the lower bound when ``num_blocks`` is None)."""
    if isinstance(start_layer, bool) or not isinstance(start_layer, int) or start_layer < 0 or (
            num_blocks is not None and start_layer >= num_blocks):
        blocks = f" of a model with {num_blocks} blocks (0..{num_blocks - 1})" if num_blocks else ""
        raise ValueError(f"rollout: start_layer (method_options.rollout.start_layer) must be "
                         f"a block index >= 0{blocks}, got {start_layer!r}")
    return start_layer


def rollout_row_of_attention(attentions: Sequence[Tensor], start: Tensor, *,
                             start_layer: int = 0) -> Tensor:
    """The row ``e R`` of ``R = Ã_L ... Ã_{start_layer + 1}`` for per-block attention
    (B, heads, N, N), first block first (``start_layer`` 0-based: blocks before it are left
    out), and the (B, 1, N) read-out row ``e``. Returns (B, N).

    Evaluated as a row vector from the last block down, ``r <- r Ã_l``: O(L N^2)."""
    attentions = list(attentions)[check_start_layer(start_layer, len(attentions)):]
    first = widen(attentions[0])
    identity = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device)
    row = start
    for attention in reversed(attentions):
        mixed = 0.5 * identity + 0.5 * widen(attention).mean(dim=1)
        # attention rows sum to 1 already; dividing keeps the rule exact for any input
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        row = row @ mixed
    return row[:, 0]


def rollout_cls_row_of_attention(attentions: Sequence[Tensor], cls_index: int = 0, *,
                                 start_layer: int = 0) -> Tensor:
    """:func:`rollout_row_of_attention` read at the token ``cls_index``. Returns (B, N)."""
    first = widen(attentions[0])
    batch, _, num_tokens, _ = first.shape
    start = torch.zeros(batch, 1, num_tokens, dtype=first.dtype, device=first.device)
    start[:, 0, cls_index] = 1.0
    return rollout_row_of_attention(attentions, start, start_layer=start_layer)


# a smooth function of the captured A_l
@register_method("rollout", differentiable=True, options={"start_layer": 0},
                 check_options=lambda options: check_start_layer(options["start_layer"]))
def attention_rollout(
    model: nn.Module | Backbone,
    images: Tensor,
    target: Tensor | None = None,
    gradient_mode: GradientMode | str = GradientMode.detached,
    *,
    backend: RelevanceBackend | str = RelevanceBackend.eager,
    start_layer: int = 0,
) -> RelevanceOutput:
    """Attention rollout of ``images`` (B, 3, H, W) -> :class:`RelevanceOutput` with the
    (B, h, w) patch map, the product from block ``start_layer`` (0-based) to the last.
    ``target`` is only passed through (``None`` = the argmax class);
    ``gradient_mode`` and ``backend`` are ignored (no gradient; the attention must be
    materialised). Runs under the caller's grad mode: inside ``torch.no_grad()`` nothing is
    kept for a backward, with grad enabled the map is differentiable in the weights."""
    del backend
    check_start_layer(start_layer)
    subject = subject_of("rollout", model, images, gradient_mode, autograd=False)
    captured = capture(subject, images, target)
    with torch.autocast(device_type=images.device.type, enabled=False):
        first = widen(captured.attentions[0])
        start = readout_row(subject.layout, first.shape[0], dtype=first.dtype,
                            device=first.device, pool=mean_pool_row(captured.pool))
        row = rollout_row_of_attention(captured.attentions, start, start_layer=start_layer)
    return read_out(row, subject.layout, captured.logits, captured.target)
