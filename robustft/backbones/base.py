"""What the method needs from a model, and nothing more.

Relevance fine-tuning, evaluation and TokenCut use a model only through a
:class:`Backbone`: its token layout (prefix tokens, patch grid), its preprocessing, the class
scores to explain, each block's post-softmax attention kept in the autograd graph (or, for
the fused relevance step, each block's queries, keys, values and attention output), and the
last block's keys. A model family (timm, Hugging Face, OpenCLIP) implements these once in
its subpackage of ``backbones/``; nothing outside this package reads ``model.blocks``,
``patch_embed`` or attention internals.

The adapter is a light view of an ``nn.Module``, not a wrapper module: the trained object,
its ``state_dict`` and so its checkpoints stay the family's own (a timm model's keys), and
:func:`robustft.backbones.registry.backbone_of` finds the adapter for any model of a
registered family (:class:`robustft.backbones.registry.Family`).
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = ["READOUTS", "TOKEN_FEATURES", "Backbone", "BlockAttention", "TokenLayout", "frozen_copy"]

# How a classifier reads its token sequence, as TokenLayout.readout names it: "cls" = the
# head reads the first token (the class token); "avg" = the mean of the pooled tokens
# (timm global_pool='avg'); "map" = an attention pool whose one learned query attends to the
# pooled tokens (timm global_pool='map': SigLIP). Each one's read-out row is in
# robustft.relevance.readout.
READOUTS = ("cls", "avg", "map")

# what Backbone.token_features can return for a block (TokenCut's choice of features)
TOKEN_FEATURES = ("keys", "queries", "values", "output")


@dataclass(frozen=True)
class TokenLayout:
    """Where things sit in a ViT's token sequence: ``num_prefix_tokens`` tokens (CLS first,
    then a distillation token or register tokens) followed by the patch tokens of a
    ``grid_size = (h, w)`` patch grid in row-major order. ``readout`` (one of
    :data:`READOUTS`) says which tokens the classifier reads: the relevance maps read the
    same row of the rollout (:mod:`robustft.relevance.readout`). ``pool_prefix`` says
    whether a pooling read-out (``avg``, ``map``) pools the prefix tokens too or the patch
    tokens only (timm's ``pool_include_prefix``)."""

    num_prefix_tokens: int
    grid_size: tuple[int, int]
    readout: str = "cls"
    pool_prefix: bool = False

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"TokenLayout.readout must be one of {READOUTS}, got {self.readout!r}")

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def first_pooled_token(self) -> int:
        """Index of the first token a pooling read-out pools (the rest follow it)."""
        return 0 if self.pool_prefix else self.num_prefix_tokens


@dataclass(frozen=True)
class BlockAttention:
    """One block's attention as a fused kernel computes it, ``output = softmax(query @
    key^T * scale) @ value`` per head: ``query``, ``key``, ``value`` (B, heads, N, head_dim)
    exactly as the kernel received them (after any q/k normalisation), and ``output``
    (B, N, heads * head_dim), the heads concatenated as the block's output projection
    consumes them; all in the autograd graph (``output`` a leaf requiring grad when the
    model is frozen, so that d(score)/d(output) exists)."""

    query: Tensor
    key: Tensor
    value: Tensor
    output: Tensor
    scale: float


class Backbone(ABC):
    """The method's view of one model (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    @abstractmethod
    def patch_size(self) -> tuple[int, int]:
        """(height, width) of one patch in pixels."""

    @property
    @abstractmethod
    def num_classes(self) -> int | None:
        """Width of the class scores (None when the model has no classifier)."""

    @abstractmethod
    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        """The token layout for inputs of spatial size ``(H, W)``; a ``ValueError`` naming
        the size when the model cannot take it, or when there is no CLS token to read out."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """timm-style data config: ``input_size`` (C, H, W), ``mean``, ``std``,
        ``crop_pct``, ``interpolation`` (and ``crop_mode`` where the family has one)."""

    def class_scores(self, images: Tensor) -> Tensor:
        """(B, num_classes) scores the relevance rule explains (logits by default)."""
        return self.model(images)

    @abstractmethod
    def capture_attention(self) -> AbstractContextManager[list[Tensor]]:
        """Context manager: a forward of :meth:`class_scores` inside it fills the yielded
        list with one (B, heads, N, N) post-softmax attention per block, first block first,
        in the autograd graph (a leaf requiring grad when the model is frozen)."""

    def capture_pool(self) -> AbstractContextManager[list[BlockAttention]]:
        """Context manager, for a model whose layout reads out ``"map"``: a forward of
        :meth:`class_scores` inside it fills the yielded list with the attention pool's
        :class:`BlockAttention` (``query`` (B, heads, 1, head_dim) for its one learned
        query, ``key`` and ``value`` over the pooled tokens, ``output`` (B, 1, heads *
        head_dim)), in the autograd graph, with the eager and the fused capture alike. A
        family without an attention pool yields an empty list."""
        return contextlib.nullcontext([])

    def fused_capture_refusal(self) -> str:
        """Why :meth:`capture_qkv` cannot reproduce this model's forward now ("" when it
        can); the relevance step then runs eager."""
        return f"{type(self.model).__name__} has no fused attention capture"

    def capture_qkv(self) -> AbstractContextManager[list[BlockAttention]]:
        """Context manager: a forward of :meth:`class_scores` inside it runs attention with
        the fused kernel (no (N, N) probabilities kept) and fills the yielded list with one
        :class:`BlockAttention` per block, first block first. A ``TypeError`` naming the
        model when the family cannot (then ``relevance.backend=eager``)."""
        raise TypeError(f"{type(self.model).__name__} has no fused attention capture "
                        "(Backbone.capture_qkv); use relevance.backend=eager")

    @abstractmethod
    def last_block_keys(self, images: Tensor) -> Tensor:
        """(B, N, heads * head_dim) keys of the last block for every token (no grad)."""

    def token_features(self, images: Tensor, kind: str = "keys", block: int = -1) -> Tensor:
        """(B, N, D) features of every token in block ``block`` (Python indexing: -1 = the
        last), no grad: ``kind`` one of :data:`TOKEN_FEATURES` (``keys``, ``queries``,
        ``values``: heads concatenated; ``output``: the block's output tokens). A family
        that offers only the last block's keys raises a ``TypeError`` for anything else."""
        if kind == "keys" and block == -1:
            return self.last_block_keys(images)
        raise TypeError(f"{type(self.model).__name__} offers only the last block's keys "
                        f"(asked for {kind} of block {block})")

    def check_explainable(self) -> None:  # noqa: B027 - a ViT family has nothing to check
        """A ``TypeError`` naming the model when it has no token sequence to explain (a
        classifier that can only be evaluated); nothing for a ViT family."""

    def explain_token_count_mismatch(self, num_tokens: int, layout: TokenLayout) -> str:
        """Why a forward attended over ``num_tokens`` instead of ``layout.num_tokens``;
        families override it with what they know (e.g. patch dropout)."""
        return ""

    def describe(self) -> str:
        """What the model is, in a few words, for records such as the TokenCut settings
        file: the class name here; a family that knows its weights' name says it (timm:
        ``architecture.tag`` from the ``pretrained_cfg``)."""
        return type(self.model).__name__


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter frozen: the original
    model of the ``kl_to_teacher`` term and the L2-SP starting point."""
    original = copy.deepcopy(model).eval()
    for parameter in original.parameters():
        parameter.requires_grad_(False)
    return original
