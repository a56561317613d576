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
from torch.profiler import record_function

from robustft.relevance.capture import (
    Subject,
    captured_pool,
    explained_classes,
    pool_capture,
    score_gradients,
)
from robustft.relevance.readout import pool_relevance
from robustft.relevance.settings import widen

__all__ = ["HeadWeightedAttention", "fused_block_relevance"]


def _dense(tensor: Tensor, scale: float = 1.0) -> Tensor:
    """``tensor * scale`` as a new contiguous (B, heads, N, head_dim) tensor. The captured
    q, k, v and dO are strided views (timm's (B, N, 3, heads, head_dim) qkv layout), and a
    batched matmul would otherwise copy them into the (head_dim, N) transposed layout, a
    slow transposing copy, once per product."""
    return torch.mul(tensor, scale,
                     out=torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device))


def _attention(query: Tensor, key: Tensor) -> Tensor:
    """``A = softmax(q k^T)`` (B, heads, N, N) from the scaled query and the key."""
    return torch.matmul(query, key.transpose(-2, -1)).softmax(dim=-1)


def _positive_weighted(attention: Tensor, value: Tensor, output_grad: Tensor) -> Tensor:
    """``clamp(G * A, min=0)`` with ``G = dO V^T``, as ``relu(G) * A`` (A >= 0), in place on
    a fresh ``G``: one (B, heads, N, N) buffer and two passes over it."""
    return torch.matmul(output_grad, value.transpose(-2, -1)).clamp_(min=0).mul_(attention)


class HeadWeightedAttention(torch.autograd.Function):
    """``Abar = mean_heads(clamp(G * A, min=0))`` from (B, heads, N, head_dim) q, k, v and
    dO; differentiable in q and k only (``G`` is a constant: the detached mode).

    On a CPU the cost is the passes over (B, heads, N, N) buffers and the copies of strided
    operands, not the matmuls' arithmetic, so both directions build as few buffers as they
    can and work in place: the forward two (``A``, then ``relu(G) * A`` in ``G``'s buffer),
    the backward the same two again, recomputed from the saved q, k, v, dO (saving ``A``
    would hold one such buffer per block until the backward)."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor, output_grad: Tensor,
                scale: float) -> Tensor:
        ctx.save_for_backward(query, key, value, output_grad)
        ctx.scale = scale
        attention = _attention(_dense(query, scale), _dense(key))
        return _positive_weighted(attention, _dense(value), _dense(output_grad)).mean(dim=1)

    @staticmethod
    @record_function("robustft.relevance.block_maps_backward")
    def backward(ctx, grad_abar: Tensor):
        query, key, value, output_grad = ctx.saved_tensors
        scale, heads = ctx.scale, query.shape[1]
        scaled_query, dense_key = _dense(query, scale), _dense(key)
        attention = _attention(scaled_query, dense_key)
        # dL/dA = relu(G) * dL/dAbar / heads (clamp passes the gradient where G * A >= 0;
        # where A == 0 and G < 0 the two differ, but such an entry is multiplied by A == 0
        # below). Softmax backward dS = A * dA - A * sum_j(A * dA)_j, with X = A * dA built
        # in place; S = (q * scale) k^T, so dq = dS k * scale and dk = dS^T (q * scale).
        weighted = _positive_weighted(attention, _dense(value), _dense(output_grad))
        weighted = weighted.mul_((grad_abar / heads).unsqueeze(1))
        grad_scores = weighted.addcmul_(attention, weighted.sum(dim=-1, keepdim=True), value=-1)
        return (torch.matmul(grad_scores, dense_key).mul_(scale),
                torch.matmul(grad_scores.transpose(-2, -1), scaled_query), None, None, None)


def fused_block_relevance(subject: Subject, images: Tensor, target: Tensor | None
                          ) -> tuple[list[Tensor], Tensor | None, Tensor, Tensor, int]:
    """Steps 1-4 of the rule on the fused path: the per-block maps ``Abar_l`` (B, N, N)
    (float32 at least), the attention pool's row ``abar_pool`` (B, 1, P) for the ``map``
    read-out (None otherwise), the class scores, the explained classes and the token count."""
    backbone = subject.backbone
    with record_function("robustft.relevance.forward"), backbone.capture_qkv() as blocks, \
            pool_capture(subject) as pools:
        logits = backbone.class_scores(images)
    if len(blocks) == 0:
        raise RuntimeError(f"no attention was captured from {type(backbone.model).__name__}")
    pool = captured_pool(pools, subject)
    target = explained_classes(logits, target)
    # activations only (no parameter is an input), down to the first block's O; the graph
    # is kept for the training loss's backward, which needs the same saved tensors
    output_grads = score_gradients(
        logits, target,
        [block.output for block in blocks] + ([pool.output] if pool is not None else []))
    pool_row = None
    if pool is not None:
        # one query: its (B, heads, 1, P) attention is small, formed eagerly
        with torch.autocast(device_type=images.device.type, enabled=False):
            pool_row = pool_relevance(pool, output_grads[-1], second_order=False)
        output_grads = output_grads[:-1]
    block_relevance = []
    # float32 even under fp16/bf16 autocast, as on the eager path
    with record_function("robustft.relevance.block_maps"), \
            torch.autocast(device_type=images.device.type, enabled=False):
        for block, output_grad in zip(blocks, output_grads):
            batch, heads, tokens, head_dim = block.query.shape
            per_head_grad = output_grad.reshape(batch, tokens, heads, head_dim).transpose(1, 2)
            block_relevance.append(HeadWeightedAttention.apply(
                widen(block.query), widen(block.key), widen(block.value.detach()),
                widen(per_head_grad.detach()), block.scale))
    return block_relevance, pool_row, logits, target, blocks[0].query.shape[-2]
