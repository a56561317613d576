"""timm's ``Cait`` (class-attention image transformers) as the method sees it.

CaiT runs its patch tokens alone through the self-attention blocks (``model.blocks``, talking-
heads attention), then the class token through the class-attention blocks
(``model.blocks_token_only``), where only the class token attends, to [class, patches], and
the patch tokens pass unchanged; the head reads the class token.

The adapter shows the rollout one token sequence ``[class, patches]`` through every block,
so that the rule of docs/method.md §1.2 for class attention needs nothing of its own: a
self-attention block's (B, H, P, P) attention is captured inside a (B, H, 1 + P, 1 + P)
tensor whose class row and column are zero (the class token neither attends nor is
attended there: an identity row of ``I + Abar``), a class-attention block's (B, H, 1, 1 + P)
row inside one whose patch rows are zero (the patches do not attend: identity rows). The
class row of the rollout of these blocks is then the class row of the class-attention
rollout with its patch part carried through the self-attention blocks' rollout. The model
computes with a view of each captured tensor (exactly the attention it produced), so the
score's gradient with respect to the captured tensor is the gradient with respect to the
attention, zero in the padding.

Talking-heads attention mixes the heads after the softmax (``proj_w``); the captured
attention is what the block multiplies the values with (``attn.attn_drop``'s output), as
for every family. The fused capture does not apply: the talking-heads blocks have no fused
path, so every relevance step runs eager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from robustft.backbones.base import TokenLayout
from robustft.backbones.timm.adapter import TimmViT
from robustft.backbones.timm.attention import capture_hook, hooked_attention

__all__ = ["CaitViT", "class_attention_blocks"]


def class_attention_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The attention modules of a timm ``Cait``: (self-attention blocks', class-attention
    blocks'), first block first; a ``TypeError`` naming the model when it has no
    class-attention blocks (``prune_intermediate_layers`` removes them) or a block's
    attention records no probabilities at ``attn.attn_drop``."""
    name = type(model).__name__
    class_blocks = getattr(model, "blocks_token_only", None)
    if not class_blocks or getattr(model, "cls_token", None) is None:
        raise TypeError(f"{name} has no class-attention blocks (blocks_token_only) and class "
                        "token: there is no class token to explain")
    found = []
    for group, blocks in (("blocks", model.blocks), ("blocks_token_only", class_blocks)):
        attns = [getattr(block, "attn", None) for block in blocks]
        for i, attn in enumerate(attns):
            if attn is None or not hasattr(attn, "attn_drop"):
                raise TypeError(f"{name}.{group}[{i}] has no attention module with `attn_drop`; "
                                "its attention cannot be captured")
        found.append(attns)
    return found[0], found[1]


def _embed(attention: Tensor, *, class_row: bool) -> tuple[Tensor, Tensor]:
    """(captured, used): the block's attention inside the (B, H, 1 + P, 1 + P) token
    sequence [class, patches], and the view of it the block computes with (equal to
    ``attention``). ``class_row``: a class-attention block's (B, H, 1, 1 + P) row (the rest
    zero); otherwise a self-attention block's (B, H, P, P) (class row and column zero)."""
    if class_row:
        tokens = attention.shape[-1]
        captured = F.pad(attention, (0, 0, 0, tokens - 1))
        return captured, captured[..., :1, :]
    captured = F.pad(attention, (1, 0, 1, 0))
    return captured, captured[..., 1:, 1:]


class CaitViT(TimmViT):
    """A timm ``Cait`` (see the module docstring)."""

    @contextmanager
    def capture_attention(self) -> Iterator[list[Tensor]]:
        patch_attns, class_attns = class_attention_blocks(self.model)
        captured: list[Tensor] = []

        def recorder(class_row: bool) -> Callable[..., Tensor]:
            def record(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
                if torch.is_grad_enabled() and not output.requires_grad:
                    # a frozen model still needs d(score)/dA (see TimmViT.capture_attention)
                    output = output.detach().requires_grad_()
                full, used = _embed(output, class_row=class_row)
                captured.append(full)
                return used
            return capture_hook(record)

        handles = [attn.attn_drop.register_forward_hook(recorder(False)) for attn in patch_attns]
        try:
            # the class-attention blocks have a fused path (switched off for the capture);
            # the talking-heads blocks have none
            with hooked_attention(class_attns, fused=False, register=lambda attn: [
                    attn.attn_drop.register_forward_hook(recorder(True))]):
                yield captured
        finally:
            for handle in handles:
                handle.remove()

    def fused_capture_refusal(self) -> str:
        return ("Cait's talking-heads attention mixes the heads after the softmax and has no "
                "fused path")

    def token_features(self, images: Tensor, kind: str = "keys", block: int = -1) -> Tensor:
        raise TypeError(f"{type(self.model).__name__} has no block over every token (its class "
                        "token joins in the class-attention blocks only): no token features for "
                        "TokenCut")

    def explain_token_count_mismatch(self, num_tokens: int, layout: TokenLayout) -> str:
        return ""
