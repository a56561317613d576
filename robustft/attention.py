"""How post-softmax attention probabilities are obtained from a timm ViT.

This module is the one seam between the relevance rule and the model's attention
implementation: :func:`capture_attention` yields a list that is filled, during the
forward pass, with each block's attention probabilities ``A_l`` of shape (B, H, N, N),
kept in the autograd graph. A faster backend (e.g. a fused kernel that also returns the
probabilities) plugs in here without touching the rollout or the losses.

The ``hooks`` backend works on unmodified timm models: timm computes attention with
fused scaled-dot-product attention by default, which never materialises ``A``. For the
duration of the capture the fused path is switched off in the captured blocks only and
a forward hook on ``attn.attn_drop`` records its output, which is ``A`` (dropout is 0 in
every ViT recipe; with dropout active it is the dropped-out ``A`` the block really used).
On exit the hooks are removed and every block's ``fused_attn`` flag is restored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["attention_blocks", "capture_attention", "ATTENTION_BACKENDS"]


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """Return the attention modules (``block.attn``) of a timm ViT, first block first.

    Raises a ``TypeError`` naming the model class when the model has no timm-style
    transformer blocks (``model.blocks[i].attn`` with ``fused_attn`` and ``attn_drop``).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise TypeError(
            f"{type(model).__name__} has no `blocks`: robustft explains timm VisionTransformer-"
            "style models (model.blocks[i].attn with fused_attn and attn_drop)"
        )
    attns = []
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "fused_attn") or not hasattr(attn, "attn_drop"):
            raise TypeError(
                f"{type(model).__name__}.blocks[{i}] has no timm attention module with "
                "`fused_attn` and `attn_drop`; its attention probabilities cannot be captured"
            )
        attns.append(attn)
    return attns


@contextmanager
def _capture_with_hooks(model: nn.Module) -> Iterator[list[Tensor]]:
    attns = attention_blocks(model)
    captured: list[Tensor] = []

    def record(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        if torch.is_grad_enabled() and not output.requires_grad:
            # A frozen model (no parameter requires grad) still needs d(score)/dA: make A a
            # leaf of the graph so everything downstream of it is differentiable.
            output = output.detach().requires_grad_()
        captured.append(output)
        return output

    saved_flags = [attn.fused_attn for attn in attns]
    handles = []
    try:
        for attn in attns:
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(record))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        for attn, flag in zip(attns, saved_flags):
            attn.fused_attn = flag


ATTENTION_BACKENDS = {"hooks": _capture_with_hooks}


@contextmanager
def capture_attention(model: nn.Module, backend: str = "hooks") -> Iterator[Sequence[Tensor]]:
    """Context manager: run the model's forward inside it; the yielded list then holds one
    (B, H, N, N) attention tensor per block, in block order."""
    try:
        capture = ATTENTION_BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"unknown attention backend {backend!r}; available: {sorted(ATTENTION_BACKENDS)}"
        ) from None
    with capture(model) as captured:
        yield captured
