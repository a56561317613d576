"""Capturing a Hugging Face ViT's attention: one attention function registered with
transformers' ``AttentionInterface``, switched on for the duration of a capture.

Why not forward hooks or ``output_attentions=True``: HF's eager attention computes the
probabilities ``A`` inside a plain function (``eager_attention_forward``: softmax, dropout,
``A @ V``) and only returns them afterwards, so a hook sees ``A`` too late to replace it.
For a frozen model (no parameter requires grad) the relevance rule still needs
d(score)/dA, which exists only if ``A`` is made a leaf of the graph *before* ``A @ V`` uses
it. A registered function is the one place where that can happen; it is also where the
fused path sees q, k, v and the attention output exactly as the kernel does, so the fused
capture costs nothing extra.

The function dispatches on the attention module it is called with: a module with an active
recorder (:func:`recording`) is computed eagerly (``"eager"``: softmax in float32, as HF's
ViT eager does, then dropout, then the recorder, then ``A @ V``) or with PyTorch's fused
kernel (``"fused"``); any other call (none is expected while a model's implementation is
switched) runs transformers' own SDPA attention. ``recording`` sets
``config._attn_implementation`` of every attention module's config to this function's name
and restores it on exit (also on error), as the timm family flips ``fused_attn``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robustft.backbones.base import BlockAttention

__all__ = ["CAPTURE_IMPLEMENTATION", "attention_dropout_active", "recording"]

CAPTURE_IMPLEMENTATION = "robustft_capture"

# attention module -> (mode, sink); only modules inside an active `recording` block
_RECORDERS: WeakKeyDictionary[nn.Module, tuple[str, list[Any]]] = WeakKeyDictionary()


def _leaf_if_detached(tensor: Tensor) -> Tensor:
    """``tensor`` itself, or, when autograd is on but nothing upstream requires grad (a
    frozen model), a leaf requiring grad, so that d(score)/d(tensor) exists."""
    if torch.is_grad_enabled() and not tensor.requires_grad:
        return tensor.detach().requires_grad_()
    return tensor


def _capturing_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                         attention_mask: Tensor | None, scaling: float | None = None,
                         dropout: float = 0.0, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
    """transformers' attention-function signature: q, k, v (B, heads, N, head_dim) ->
    (output (B, N, heads, head_dim), probabilities or None)."""
    recorder = _RECORDERS.get(module)
    if recorder is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    mode, sink = recorder
    scale = float(query.shape[-1] ** -0.5 if scaling is None else scaling)
    if mode == "fused":
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scale,
            dropout_p=dropout if module.training else 0.0)
        batch, heads, tokens, head_dim = output.shape
        # O as the output projection consumes it, heads concatenated; the returned
        # (B, N, heads, head_dim) tensor is a view of it, so d(score)/dO flows through it
        concatenated = _leaf_if_detached(output.transpose(1, 2).reshape(batch, tokens,
                                                                         heads * head_dim))
        sink.append(BlockAttention(query=query, key=key, value=value, output=concatenated,
                                   scale=scale))
        return concatenated.view(batch, tokens, heads, head_dim), None
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    attention = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    attention = F.dropout(attention, p=dropout, training=module.training)
    attention = _leaf_if_detached(attention)
    sink.append(attention)
    output = torch.matmul(attention, value).transpose(1, 2).contiguous()
    return output, attention


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capturing_attention)


_register()


@contextmanager
def recording(attention_modules: list[nn.Module], mode: str) -> Iterator[list[Any]]:
    """For the duration of the block, every module of ``attention_modules`` (first block
    first) runs :func:`_capturing_attention` in ``mode`` (``"eager"``: the yielded list gets
    one (B, heads, N, N) probability tensor per block; ``"fused"``: one
    :class:`BlockAttention`). Configs and recorders are restored on exit."""
    if mode not in ("eager", "fused"):
        raise ValueError(f"capture mode must be 'eager' or 'fused', got {mode!r}")
    busy = [module for module in attention_modules if module in _RECORDERS]
    if busy:
        raise RuntimeError(f"{type(busy[0]).__name__} is already being captured "
                           "(nested attention captures of one model)")
    sink: list[Any] = []
    configs = {id(module.config): module.config for module in attention_modules}
    saved = {config_id: config._attn_implementation for config_id, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = CAPTURE_IMPLEMENTATION
        for module in attention_modules:
            _RECORDERS[module] = (mode, sink)
        yield sink
    finally:
        for module in attention_modules:
            _RECORDERS.pop(module, None)
        for config_id, config in configs.items():
            config._attn_implementation = saved[config_id]


def attention_dropout_active(attention_modules: list[nn.Module]) -> bool:
    """Whether any module would drop attention probabilities now (training mode with
    ``attention_probs_dropout_prob > 0``): a fused recomputation could not repeat it."""
    return any(module.training and float(getattr(module, "attention_dropout", 0.0)) > 0
               for module in attention_modules)

