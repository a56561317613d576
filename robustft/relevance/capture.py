"""What every relevance method shares, done once: checking what it was asked
(:func:`subject_of`: the gradient mode, autograd, the backbone and its token layout), the
forward that records each block's attention and picks the explained classes
(:func:`capture`: docs/method.md §1, step 1), and the gradient of the explained classes'
score (:func:`score_gradients`: steps 2-3). A method is then its own rule on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from robustft.backbones import Backbone, BlockAttention, TokenLayout, backbone_of
from robustft.relevance.settings import GRADIENT_MODES, GradientMode

__all__ = ["Captured", "Subject", "capture", "captured_pool", "check_gradient_mode",
           "check_token_count", "explained_classes", "pool_capture", "require_autograd",
           "score_gradients", "subject_of"]


def require_autograd(method: str) -> None:
    """A ``RuntimeError`` naming ``method`` when inference mode forbids the gradient it needs."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"relevance method {method} needs autograd, but inference mode is on "
                           "(torch.inference_mode(); in Lightning set trainer.inference_mode=false)")


def check_gradient_mode(gradient_mode: GradientMode | str) -> GradientMode:
    """``gradient_mode`` as a :class:`GradientMode`; a ``ValueError`` naming the modes."""
    if gradient_mode not in GRADIENT_MODES:
        raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}, got {gradient_mode!r}")
    return GradientMode(gradient_mode)


@dataclass(frozen=True)
class Subject:
    """The model a relevance method explains, as it sees it: the ``backbone`` adapter, the
    token ``layout`` of the images (None for a pixel-level method, which needs no tokens)
    and the checked ``gradient_mode``."""

    backbone: Backbone
    layout: TokenLayout | None
    gradient_mode: GradientMode


def subject_of(method: str, model: nn.Module | Backbone, images: Tensor,
               gradient_mode: GradientMode | str = GradientMode.detached, *,
               autograd: bool, tokens: bool = True) -> Subject:
    """Check and resolve what every method starts with: the gradient mode, autograd when
    the method takes a gradient (``autograd``; a ``RuntimeError`` naming ``method`` under
    inference mode), the model's backbone and, for a token-level method (``tokens``), the
    token layout of ``images`` (B, 3, H, W) (its ``ValueError`` names the size)."""
    mode = check_gradient_mode(gradient_mode)
    if autograd:
        require_autograd(method)
    backbone = backbone_of(model)
    layout = backbone.token_layout((images.shape[-2], images.shape[-1])) if tokens else None
    return Subject(backbone, layout, mode)


def explained_classes(logits: Tensor, target: Tensor | None) -> Tensor:
    """``target`` as a (B,) long tensor on the logits' device; ``None`` = the argmax class."""
    if target is None:
        return logits.argmax(dim=-1)
    return target.to(device=logits.device, dtype=torch.long)


@dataclass
class Captured:
    """One forward of the class scores with every block's attention recorded:
    ``attentions`` (B, heads, N, N) per block, first block first (in the autograd graph
    when grad is enabled), the ``logits``, the explained classes ``target`` (B,) and, for
    the ``map`` read-out, the attention ``pool`` (None otherwise)."""

    attentions: list[Tensor]
    logits: Tensor
    target: Tensor
    pool: BlockAttention | None = None


def pool_capture(subject: Subject):
    """The backbone's attention-pool capture where the layout reads out ``map`` (a context
    manager yielding the list it fills), an empty list otherwise."""
    if subject.layout is not None and subject.layout.readout == "map":
        return subject.backbone.capture_pool()
    return nullcontext([])


def captured_pool(pools: Sequence[BlockAttention], subject: Subject) -> BlockAttention | None:
    """The one attention pool a ``map`` read-out needs from a forward (None for the
    others); a ``RuntimeError`` naming the model when the forward did not run exactly one."""
    if subject.layout is None or subject.layout.readout != "map":
        return None
    if len(pools) != 1:
        raise RuntimeError(f"{type(subject.backbone.model).__name__} reads out through an "
                           f"attention pool, but its forward ran {len(pools)} of them")
    return pools[0]


def capture(subject: Subject, images: Tensor, target: Tensor | None) -> Captured:
    """Step 1: one forward recording every block's attention (the token count checked
    against the layout), and the explained classes (``None`` = the argmax class)."""
    backbone = subject.backbone
    with record_function("robustft.relevance.forward"):
        with backbone.capture_attention() as attentions, pool_capture(subject) as pools:
            logits = backbone.class_scores(images)
    if len(attentions) == 0:
        raise RuntimeError(f"no attention was captured from {type(backbone.model).__name__}")
    check_token_count(attentions[0].shape[-1], subject.layout, backbone)
    return Captured(list(attentions), logits, explained_classes(logits, target),
                    captured_pool(pools, subject))


def score_gradients(logits: Tensor, target: Tensor, inputs: Sequence[Tensor],
                    gradient_mode: GradientMode | str = GradientMode.detached, *,
                    retain_graph: bool = True) -> tuple[Tensor, ...]:
    """Steps 2-3: the score ``s = sum_b logits[b, target[b]]`` and ``ds/dx`` for every
    tensor of ``inputs`` in ONE autograd call (images are independent in a ViT, so the
    batched sum gives each its own gradient); ``second_order`` keeps the graph of the
    gradients (``create_graph``), so that a loss on the map also flows through them."""
    with record_function("robustft.relevance.score_backward"):
        score = logits.gather(1, target[:, None]).sum()
        return torch.autograd.grad(score, list(inputs), retain_graph=retain_graph,
                                   create_graph=gradient_mode == GradientMode.second_order)


def check_token_count(num_tokens: int, layout: TokenLayout, backbone: Backbone) -> None:
    """The map needs one token per patch (a family's patch dropout, for one, removes some,
    which would scramble the grid)."""
    expected = layout.num_tokens
    if num_tokens != expected:
        hint = backbone.explain_token_count_mismatch(num_tokens, layout)
        raise ValueError(f"{type(backbone.model).__name__} attended over {num_tokens} tokens, "
                         f"but a {layout.grid_size[0]}x{layout.grid_size[1]} patch grid with "
                         f"{layout.num_prefix_tokens} prefix tokens has {expected}.{hint}")
