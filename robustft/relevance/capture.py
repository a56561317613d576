"""What every relevance method shares: the forward that records each block's attention,
the explained classes, and the read-out of a token row as the patch grid."""

from __future__ import annotations

import torch
from torch import Tensor

from robustft.backbones import Backbone, TokenLayout
from robustft.relevance.settings import RelevanceOutput

__all__ = ["check_token_count", "explained_classes", "forward_with_attention", "patch_grid",
           "read_out", "require_autograd"]


def require_autograd(method: str) -> None:
    """A ``RuntimeError`` naming ``method`` when inference mode forbids the gradient it needs."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"relevance method {method} needs autograd, but inference mode is on "
                           "(torch.inference_mode(); in Lightning set trainer.inference_mode=false)")


def explained_classes(logits: Tensor, target: Tensor | None) -> Tensor:
    """``target`` as a (B,) long tensor on the logits' device; ``None`` = the argmax class."""
    if target is None:
        return logits.argmax(dim=-1)
    return target.to(device=logits.device, dtype=torch.long)


def forward_with_attention(backbone: Backbone, images: Tensor,
                           layout: TokenLayout) -> tuple[list[Tensor], Tensor]:
    """One forward of the class scores recording every block's (B, heads, N, N) attention,
    first block first (in the autograd graph when grad is enabled), and the scores."""
    with backbone.capture_attention() as attentions:
        logits = backbone.class_scores(images)
    if len(attentions) == 0:
        raise RuntimeError(f"no attention was captured from {type(backbone.model).__name__}")
    check_token_count(attentions[0].shape[-1], layout, backbone)
    return list(attentions), logits


def patch_grid(token_row: Tensor, layout: TokenLayout) -> Tensor:
    """A (B, N) row over the tokens, restricted to the patch tokens, as the (B, h, w) grid."""
    patches = token_row[:, layout.num_prefix_tokens:]
    return patches.reshape(token_row.shape[0], *layout.grid_size)


def read_out(token_row: Tensor, layout: TokenLayout, logits: Tensor,
             target: Tensor) -> RelevanceOutput:
    """The :class:`RelevanceOutput` of a map given as a (B, N) row over the tokens."""
    return RelevanceOutput(relevance=patch_grid(token_row, layout), logits=logits, target=target)


def check_token_count(num_tokens: int, layout: TokenLayout, backbone: Backbone) -> None:
    """The map needs one token per patch (a family's patch dropout, for one, removes some,
    which would scramble the grid)."""
    expected = layout.num_tokens
    if num_tokens != expected:
        hint = backbone.explain_token_count_mismatch(num_tokens, layout)
        raise ValueError(f"{type(backbone.model).__name__} attended over {num_tokens} tokens, "
                         f"but a {layout.grid_size[0]}x{layout.grid_size[1]} patch grid with "
                         f"{layout.num_prefix_tokens} prefix tokens has {expected}.{hint}")
