"""The fused relevance step (detached mode): the rule of :mod:`robustft.relevance.grad_rollout`
without keeping any (B, heads, N, N) tensor between the forward and the backward.

For block l with attention output ``O_l = A_l V_l`` (per head), the rule needs
``G_l = ds/dA_l = dO_l V_l^T`` and ``A_l = softmax(q_l k_l^T * scale)``. So:

1. the forward runs timm's fused scaled-dot-product attention and keeps each block's
   q, k, v and O (:meth:`Backbone.capture_qkv`);
2. ONE autograd call gives ``dO_l = ds/dO_l`` for every block (activations only, graph kept);
3. per block, :class:`HeadWeightedAttention` recomputes ``A_l`` from q, k and forms
   ``Abar_l = mean_heads(clamp(G_l * A_l, min=0))``, saving only q, k, v, dO; its backward
   turns dL/dAbar_l into dL/dq_l, dL/dk_l (softmax backward with ``G_l`` constant: the
   detached mode), recomputing ``A_l`` one block at a time;
4. the rollout and the losses are unchanged, and the training loss's single backward carries
   those gradients together with the classification term's to the weights.

The second-order mode needs a double backward through attention, which fused kernels lack;
it stays on the eager path (:func:`robustft.relevance.grad_rollout.relevance_map` chooses).
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustft.backbones import Backbone
from robustft.relevance.settings import widen

__all__ = ["HeadWeightedAttention", "fused_block_relevance"]


def _attention_and_weights(query: Tensor, key: Tensor, value: Tensor, output_grad: Tensor,
                           scale: float) -> tuple[Tensor, Tensor]:
    """``A = softmax(q k^T * scale)`` and ``G = dO V^T``, both (B, heads, N, N)."""
    attention = ((query * scale) @ key.transpose(-2, -1)).softmax(dim=-1)
    return attention, output_grad @ value.transpose(-2, -1)


class HeadWeightedAttention(torch.autograd.Function):
    """``Abar = mean_heads(clamp(G * A, min=0))`` from (B, heads, N, head_dim) q, k, v and
    dO; differentiable in q and k only (``G`` is a constant: the detached mode)."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor, output_grad: Tensor,
                scale: float) -> Tensor:
        attention, weights = _attention_and_weights(query, key, value, output_grad, scale)
        ctx.save_for_backward(query, key, value, output_grad)
        ctx.scale = scale
        return (weights * attention).clamp(min=0).mean(dim=1)

    @staticmethod
    def backward(ctx, grad_abar: Tensor):
        query, key, value, output_grad = ctx.saved_tensors
        scale = ctx.scale
        attention, weights = _attention_and_weights(query, key, value, output_grad, scale)
        weighted = weights * attention
        # clamp(min=0) passes the gradient where its input is >= 0, as torch's clamp does
        grad_weighted = torch.where(weighted >= 0, grad_abar[:, None] / attention.shape[1], 0.0)
        grad_attention = grad_weighted * weights
        # softmax backward: dS = A * (dA - sum_j dA_j A_j)
        grad_scores = attention * (grad_attention
                                   - (grad_attention * attention).sum(dim=-1, keepdim=True))
        grad_query = (grad_scores @ key) * scale
        grad_key = (grad_scores.transpose(-2, -1) @ query) * scale
        return grad_query, grad_key, None, None, None


def fused_block_relevance(backbone: Backbone, images: Tensor,
                          target: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor, int]:
    """Steps 1-4 of the rule on the fused path: the per-block maps ``Abar_l`` (B, N, N)
    (float32 at least), the class scores, the explained classes and the token count."""
    with backbone.capture_qkv() as blocks:
        logits = backbone.class_scores(images)
    if len(blocks) == 0:
        raise RuntimeError(f"no attention was captured from {type(backbone.model).__name__}")
    if target is None:
        target = logits.argmax(dim=-1)
    target = target.to(device=logits.device, dtype=torch.long)
    score = logits.gather(1, target[:, None]).sum()
    output_grads = torch.autograd.grad(score, [block.output for block in blocks],
                                       retain_graph=True)
    block_relevance = []
    # float32 even under fp16/bf16 autocast, as on the eager path
    with torch.autocast(device_type=images.device.type, enabled=False):
        for block, output_grad in zip(blocks, output_grads):
            batch, heads, tokens, head_dim = block.query.shape
            per_head_grad = output_grad.reshape(batch, tokens, heads, head_dim).transpose(1, 2)
            block_relevance.append(HeadWeightedAttention.apply(
                widen(block.query), widen(block.key), widen(block.value.detach()),
                widen(per_head_grad.detach()), block.scale))
    return block_relevance, logits, target, blocks[0].query.shape[-2]
