"""Capturing an OpenCLIP image tower's attention (:mod:`robustft.backbones.open_clip`).

OpenCLIP's ``ResidualAttentionBlock`` calls ``nn.MultiheadAttention`` with
``need_weights=False`` (a fused kernel: no probabilities). For the duration of a capture
each block's ``attention`` method is replaced, on the instance, by the same computation
written out from the module's own ``in_proj_weight``, ``in_proj_bias`` and ``out_proj``
(q, k, v = split(x W_in^T + b_in); A = softmax(q k^T / sqrt(head_dim)); dropout as the
module's; out_proj(A v)), which keeps ``A`` in the autograd graph (a leaf requiring grad
when the tower is frozen); on exit the instance attribute is removed. The fused variant
does the same with ``scaled_dot_product_attention`` and hands over q, k, v and the heads'
output. Both read the token layout from ``attn.batch_first``: OpenCLIP 3.x runs its
transformers batch first, older releases (N, B, D).

Only plain ``ResidualAttentionBlock`` self-attention is accepted (not the
``CustomResidualAttentionBlock`` of qk-norm / scaled-cosine models, not cross-attention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import Tensor, nn

__all__ = ["explicit_attention", "leaf_if_frozen", "replaced_attention", "vision_blocks"]


def vision_blocks(visual: nn.Module) -> list[ResidualAttentionBlock]:
    """The transformer blocks of an OpenCLIP ``VisionTransformer``, first first; a
    ``TypeError`` naming the block when its attention cannot be captured."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not blocks:
        raise TypeError(f"{type(visual).__name__} has no transformer.resblocks: robustft explains "
                        "OpenCLIP VisionTransformer image towers")
    for i, block in enumerate(blocks):
        where = f"{type(visual).__name__}.transformer.resblocks[{i}]"
        if type(block) is not ResidualAttentionBlock:
            raise TypeError(f"{where} is {type(block).__name__}, not OpenCLIP's "
                            "ResidualAttentionBlock (qk-norm or scaled-cosine attention): its "
                            "attention cannot be captured")
        attn = block.attn
        if (not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim
                or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv")):
            raise TypeError(f"{where}.attn is not a plain self-attention nn.MultiheadAttention "
                            "(shared in_proj, no bias_k/v, no zero attention)")
    return list(blocks)


def _split_heads(attn: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, heads, N, head_dim) from batch-first ``x`` (B, N, D), as the module's
    packed in-projection computes them."""
    batch, tokens, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def leaf_if_frozen(tensor: Tensor) -> Tensor:
    """A frozen tower still needs d(score)/d(tensor): make it a leaf of the graph."""
    if torch.is_grad_enabled() and not tensor.requires_grad:
        return tensor.detach().requires_grad_()
    return tensor


def explicit_attention(block: ResidualAttentionBlock, *, fused: bool,
                        record: Callable[..., Tensor], masked: bool = False
                        ) -> Callable[..., Tensor]:
    """A replacement for ``block.attention`` (see the module docstring). ``record`` gets
    the eager path's probabilities (B, heads, N, N), or the fused path's q, k, v and
    heads' output (B, N, D), and returns the tensor the block goes on with. ``masked``
    (the text tower's causal attention) adds the block's additive ``attn_mask`` to the
    scores before the softmax, as ``nn.MultiheadAttention`` does."""
    attn = block.attn

    def attention(q_x: Tensor, k_x: Tensor | None = None, v_x: Tensor | None = None,
                  attn_mask: Tensor | None = None) -> Tensor:
        if k_x is not None or v_x is not None or (attn_mask is not None and not masked):
            raise TypeError("robustft captures the image tower's self-attention only (no "
                            "cross-attention, no attention mask)")
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            raise TypeError("robustft reads an additive (float) attention mask, not a boolean one")
        x = q_x if attn.batch_first else q_x.transpose(0, 1)
        query, key, value = _split_heads(attn, x)
        batch, heads, tokens, head_dim = query.shape
        dropout = attn.dropout if attn.training else 0.0
        if fused:
            output = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout,
                                                    attn_mask=_as_dtype(attn_mask, query))
            output = record(query, key, value,
                            output.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
        else:
            scores = (query * head_dim ** -0.5) @ key.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores + attn_mask.to(scores.dtype)
            probabilities = scores.softmax(dim=-1)
            probabilities = F.dropout(record(probabilities), dropout, training=attn.training)
            output = (probabilities @ value).transpose(1, 2).reshape(batch, tokens, -1)
        output = F.linear(output, attn.out_proj.weight, attn.out_proj.bias)
        return output if attn.batch_first else output.transpose(0, 1)

    return attention


def _as_dtype(mask: Tensor | None, like: Tensor) -> Tensor | None:
    return None if mask is None else mask.to(like.dtype)


@contextmanager
def replaced_attention(blocks: list[ResidualAttentionBlock],
                        make: Callable[[ResidualAttentionBlock], Callable[..., Tensor]]
                        ) -> Iterator[None]:
    """Each block's ``attention`` replaced by ``make(block)`` on the instance for the
    duration; restored on exit (also on error)."""
    missing = object()
    saved = [block.__dict__.get("attention", missing) for block in blocks]
    try:
        for block in blocks:
            block.__dict__["attention"] = make(block)
        yield
    finally:
        for block, before in zip(blocks, saved):
            if before is missing:
                block.__dict__.pop("attention", None)
            else:
                block.__dict__["attention"] = before
