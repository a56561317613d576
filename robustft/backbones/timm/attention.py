"""Capturing a timm ViT's attention inputs and output with the fused kernel on (the fused
relevance step, :mod:`robustft.relevance.fused`).

Mechanism, chosen because every captured tensor is the very object timm's
``Attention.forward`` passes on, so nothing is recomputed and nothing can drift from timm:

- ``q`` and ``k``: forward hooks on ``attn.q_norm`` / ``attn.k_norm``, whose outputs are
  exactly what ``scaled_dot_product_attention`` receives (after qk-norm when the model has
  one; ``nn.Identity`` returns its input otherwise).
- ``v``: a forward hook on ``attn.qkv``, split with timm's own layout
  ``reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4)[2]`` (``v`` has no norm).
- the attention output ``O``: a forward pre-hook on ``attn.norm``, whose input is
  ``O.transpose(1, 2).reshape(B, N, heads * head_dim)``, the kernel's result before the
  scale-norm, the gate and the projection. (A hook on ``attn.proj``'s input would see ``O``
  after ``attn.norm`` and the gate, so d/dO would be wrong for models that have them.)

Only timm's plain ``Attention`` (``forward`` not overridden) is accepted: other attention
classes order these calls differently. ``attn_layer=`` (building the model with a capturing
attention class) would need the model rebuilt; hooks work on any model a user holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.layers.attention import Attention
from timm.layers.attention_pool import AttentionPoolLatent
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from robustft.backbones.base import BlockAttention

__all__ = ["attention_blocks", "capture_pool", "capture_qkv", "capture_hook",
           "fused_attention_blocks", "hooked_attention"]


def capture_hook(hook: Callable) -> Callable:
    """``hook`` run outside ``torch.compile``'s graphs: on a compiled model (``model.compile()``)
    Dynamo would otherwise trace the hook into the model's graph, and the tensors it captures
    would be side outputs of one compiled autograd node, not on the path from the input to
    the class scores, so ``autograd.grad(score, captured)`` would find them unused. Disabled,
    the hook is a graph break and each captured tensor is a boundary between two compiled
    graphs, in the autograd graph as in an uncompiled model."""
    return torch.compiler.disable(hook)


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The attention modules (``block.attn``) of a timm ViT, first block first; a
    ``TypeError`` naming the model class when a block has no timm attention."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise TypeError(f"{type(model).__name__} has no `blocks`: robustft explains timm "
                        "VisionTransformer-style models (model.blocks[i].attn)")
    attns = []
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "fused_attn") or not hasattr(attn, "attn_drop"):
            raise TypeError(f"{type(model).__name__}.blocks[{i}] has no timm attention module "
                            "with `fused_attn` and `attn_drop`; its attention cannot be captured")
        attns.append(attn)
    return attns


def fused_attention_blocks(model: nn.Module) -> list[Attention]:
    """The ``block.attn`` modules of a timm ViT, first block first; a ``TypeError`` naming
    the block when one is not timm's plain ``Attention``."""
    attns = attention_blocks(model)
    for i, attn in enumerate(attns):
        if not isinstance(attn, Attention) or type(attn).forward is not Attention.forward:
            raise TypeError(f"{type(model).__name__}.blocks[{i}].attn is "
                            f"{type(attn).__name__}, not timm's Attention: the fused relevance "
                            "backend cannot capture it; use relevance.backend=eager")
    return attns


@contextmanager
def hooked_attention(attns: list[nn.Module], *, fused: bool,
                     register: Callable[[nn.Module], list[RemovableHandle]]) -> Iterator[None]:
    """For the duration of the block: every attention module's ``fused_attn`` set to
    ``fused`` and the hooks ``register(attn)`` returns in place; on exit (also on error) the
    hooks are removed and each module's own flag restored. Both captures (eager and fused)
    change a model only through this."""
    saved_flags = [attn.fused_attn for attn in attns]
    handles: list[RemovableHandle] = []
    try:
        for attn in attns:
            attn.fused_attn = fused
            handles += register(attn)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn, flag in zip(attns, saved_flags):
            attn.fused_attn = flag


def _qkv_hooks(captured: list[BlockAttention], *, packed: int, value_slot: int, num_heads: int,
               head_dim: int, scale: float, output_hook: str) -> tuple[Callable[..., Any], ...]:
    """The four hooks that capture one attention's q, k, v and output into ``captured``:
    on the packed projection (``qkv`` with ``packed=3`` or ``kv`` with 2; ``v`` is slot
    ``value_slot`` of timm's ``reshape(B, N, packed, heads, head_dim).permute(2, 0, 3, 1, 4)``),
    on ``q_norm`` and ``k_norm`` (what the kernel receives) and a pre-hook on the output
    projection (``O``)."""
    partial: dict[str, Tensor] = {}

    def on_packed(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        batch, tokens, _ = output.shape
        layout = output.reshape(batch, tokens, packed, num_heads, head_dim)
        partial["value"] = layout.permute(2, 0, 3, 1, 4)[value_slot]

    def on_query(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        partial["query"] = output

    def on_key(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        partial["key"] = output

    def on_output(_module: nn.Module, inputs: tuple[Tensor, ...]):
        output, replaced = _output_leaf(inputs)
        if set(partial) != {"query", "key", "value"}:
            raise RuntimeError(f"{output_hook} before q/k/v were seen (got {sorted(partial)})")
        captured.append(BlockAttention(query=partial.pop("query"), key=partial.pop("key"),
                                       value=partial.pop("value"), output=output, scale=scale))
        return replaced

    return on_packed, on_query, on_key, on_output


@contextmanager
def capture_qkv(model: nn.Module) -> Iterator[list[BlockAttention]]:
    """See :meth:`robustft.backbones.base.Backbone.capture_qkv`; hooks and each block's
    ``fused_attn`` flag are restored on exit."""
    attns = fused_attention_blocks(model)
    captured: list[BlockAttention] = []

    def hooks_for(attn: Attention):
        return tuple(capture_hook(hook) for hook in _qkv_hooks(
            captured, packed=3, value_slot=2, num_heads=attn.num_heads, head_dim=attn.head_dim,
            scale=float(attn.scale), output_hook="timm Attention called norm"))

    def register(attn: Attention) -> list[RemovableHandle]:
        on_qkv, on_query, on_key, on_output = hooks_for(attn)
        return [attn.qkv.register_forward_hook(on_qkv),
                attn.q_norm.register_forward_hook(on_query),
                attn.k_norm.register_forward_hook(on_key),
                attn.norm.register_forward_pre_hook(on_output)]

    with hooked_attention(attns, fused=True, register=register):
        yield captured


def _output_leaf(inputs: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """The attention output (a hooked module's first input), made a leaf requiring grad
    when the model is frozen (so that d(score)/dO exists), and the inputs to pass on in
    its place (None when unchanged)."""
    output = inputs[0]
    if torch.is_grad_enabled() and not output.requires_grad:
        output = output.detach().requires_grad_()
        return output, (output, *inputs[1:])
    return output, None


@contextmanager
def capture_pool(pool: AttentionPoolLatent) -> Iterator[list[BlockAttention]]:
    """The attention pool of a ``global_pool='map'`` ViT (timm ``AttentionPoolLatent``, one
    latent query) as a :class:`BlockAttention`, its eager attention path on for the duration:
    ``q`` and ``k`` from hooks on ``q_norm`` / ``k_norm`` (what the kernel receives), ``v``
    from ``kv`` split with timm's layout ``reshape(B, N, 2, heads, head_dim).permute(2, 0,
    3, 1, 4)[1]``, the output ``O`` (B, 1, heads * head_dim) from a pre-hook on ``proj``."""
    captured: list[BlockAttention] = []
    hooks = [capture_hook(hook) for hook in _qkv_hooks(
        captured, packed=2, value_slot=1, num_heads=pool.num_heads, head_dim=pool.head_dim,
        scale=float(pool.scale), output_hook="timm AttentionPoolLatent called proj")]
    # the pool's one query costs nothing in eager attention, and the fused kernel has no
    # double backward (the second-order mode differentiates d(score)/dO again)
    with hooked_attention([pool], fused=False, register=lambda _pool: [
            pool.kv.register_forward_hook(hooks[0]),
            pool.q_norm.register_forward_hook(hooks[1]),
            pool.k_norm.register_forward_hook(hooks[2]),
            pool.proj.register_forward_pre_hook(hooks[3])]):
        yield captured
