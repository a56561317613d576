"""The relevance map: gradient-weighted attention rollout (Chefer et al., ICCV 2021), as
used by "Optimizing Relevance Maps of Vision Transformers Improves Robustness".

Read against docs/method.md §1:

1. one forward pass, keeping every block's post-softmax attention ``A_l`` (B, H, N, N);
2. score ``s = sum_b logit[b, target[b]]``;
3. ``G_l = ds/dA_l`` for all blocks in ONE autograd call (samples are independent in a
   ViT, so the batched sum gives every sample its own gradient);
4. ``Abar_l = mean_heads(clamp(G_l * A_l, min=0))`` (B, N, N);
5. rollout ``R = I; R = R + Abar_l @ R`` for l = 1..L, no row normalisation;
6. read-out: the row of ``R`` the classifier reads over the patch-token columns -> (B, h, w)
   (:mod:`robustft.relevance.readout`: the CLS row; the mean of the pooled tokens' rows for
   an average-pooled ViT; ``abar_pool R`` for an attention pool, its own gradient-weighted
   head-mean row ``abar_pool`` formed by the rule of step 4 for its single query);
7. :func:`upsample_and_normalize`: bilinear upsampling to the mask size and per-image
   min-max normalisation (with an epsilon: a constant map gives 0, not NaN).

Only one row of ``R`` is needed, and ``R = (I + Abar_L) ... (I + Abar_1)``, so the
rollout is evaluated as a row vector from the last block down, ``r <- r + r @ Abar_l``,
starting from the read-out row ``r = e`` (``e_cls`` for a class token): O(L N^2) instead of
the O(L N^3) of the full matrix product, with identical values.

Steps 1-3 are what every relevance method starts with (:mod:`robustft.relevance.capture`:
``capture`` records the attention and picks the explained classes, ``score_gradients``
takes the score's gradient); steps 4-6 are this method's own.

Gradient modes:
- ``"detached"`` (the public code): ``G_l`` is a constant; a loss on the map reaches the
  weights only through ``A_l``.
- ``"second_order"`` (what the paper describes): ``create_graph=True``; the loss also
  flows through ``G_l`` (a double backward).

Backends: ``eager`` keeps every ``A_l`` and ``G_l``; ``fused`` (:mod:`robustft.relevance.fused`)
runs fused attention and recomputes each ``A_l`` from q, k, same values and gradients. The
fused kernels have no double backward, so ``second_order`` runs eager, as does a model the
backbone cannot capture fused (``Backbone.fused_capture_refusal``: attention dropout in
training, which a recomputation cannot repeat, or another attention class), said once in the
log. ``auto`` (the default) is ``fused`` wherever it can run and ``eager`` elsewhere, and says
which once in the log: the two give the same maps and gradients, and fused keeps no
(B, H, N, N) tensor between the forward and the backward.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from robustft.backbones import Backbone
from robustft.relevance.capture import (
    capture,
    check_token_count,
    score_gradients,
    subject_of,
)
from robustft.relevance.fused import fused_block_relevance
from robustft.relevance.methods import register_method
from robustft.relevance.readout import pool_relevance, read_out, readout_row
from robustft.relevance.settings import (
    GradientMode,
    RelevanceBackend,
    RelevanceOutput,
    widen,
)

__all__ = ["head_weighted_attention", "relevance_map", "rollout_cls_row", "rollout_row"]

log = logging.getLogger(__name__)


def head_weighted_attention(attention: Tensor, gradient: Tensor) -> Tensor:
    """Step 4: ``mean over heads of clamp(G * A, min=0)``: (B, H, N, N) -> (B, N, N)."""
    return (gradient * attention).clamp(min=0).mean(dim=1)


def rollout_row(block_relevance: Sequence[Tensor], start: Tensor) -> Tensor:
    """Steps 5-6 without the column selection: the row ``e R`` of
    ``R = (I + Abar_L) ... (I + Abar_1)`` for per-block maps ``Abar_l`` (B, N, N), first
    block first, and the (B, 1, N) read-out row ``e`` (:func:`robustft.relevance.readout.
    readout_row`). Returns (B, N)."""
    row = start
    for abar in reversed(block_relevance):
        row = row + row @ abar
    return row[:, 0]


def rollout_cls_row(block_relevance: Sequence[Tensor], cls_index: int = 0) -> Tensor:
    """:func:`rollout_row` read at the token ``cls_index``. Returns (B, N)."""
    batch, num_tokens, _ = block_relevance[0].shape
    start = torch.zeros(batch, 1, num_tokens, dtype=block_relevance[0].dtype,
                        device=block_relevance[0].device)
    start[:, 0, cls_index] = 1.0
    return rollout_row(block_relevance, start)


@register_method("grad_rollout", differentiable=True)
def relevance_map(
    model: nn.Module | Backbone,
    images: Tensor,
    target: Tensor | None = None,
    gradient_mode: GradientMode | str = GradientMode.detached,
    backend: RelevanceBackend | str = RelevanceBackend.auto,
) -> RelevanceOutput:
    """Relevance of the CLS token over the patch grid for ``target`` classes.

    Args:
        model: a model of a backbone family (``robustft.backbones``: any timm
            VisionTransformer, distilled and register-token ones too; the prefix tokens never
            appear in the map), or its :class:`~robustft.backbones.Backbone`. It is not
            modified: attention is captured only for the duration of the forward.
        images: (B, 3, H, W) normalised input.
        target: (B,) classes to explain; ``None`` explains the argmax of the class scores.
        gradient_mode: ``"detached"`` or ``"second_order"`` (see module docstring).
        backend: ``"auto"`` (fused where it can run, else eager), ``"eager"`` or
            ``"fused"`` (see module docstring; the same map).

    Returns:
        :class:`RelevanceOutput` with the raw (B, h, w) map and the forward's class scores.
        The map is differentiable w.r.t. the model's parameters (through ``A_l``, and in
        second-order mode through ``G_l`` too).
    """
    if backend not in tuple(RelevanceBackend):
        raise ValueError(f"relevance.backend must be one of {[b.value for b in RelevanceBackend]}, "
                         f"got {backend!r}")
    subject = subject_of("grad_rollout", model, images, gradient_mode, autograd=True)
    layout = subject.layout
    if _runs_fused(subject.backbone, subject.gradient_mode, RelevanceBackend(backend)):
        with torch.enable_grad():
            # steps 1-4 on the fused path (robustft.relevance.fused)
            block_relevance, pool_row, logits, target, num_tokens = fused_block_relevance(
                subject, images, target)
            check_token_count(num_tokens, layout, subject.backbone)
            with record_function("robustft.relevance.rollout"), \
                    torch.autocast(device_type=images.device.type, enabled=False):
                start = readout_row(layout, len(images), dtype=block_relevance[0].dtype,
                                    device=block_relevance[0].device, pool=pool_row)
                row = rollout_row(block_relevance, start)
        return read_out(row, layout, logits, target)
    with torch.enable_grad():
        # 1. one forward keeping every A_l (and the explained classes)
        captured = capture(subject, images, target)
        # 2-3. the score of the explained classes, G_l = ds/dA_l in one autograd call
        # (the map read-out's attention pool: d(score)/dO of its output, G = dO V^T)
        pool = captured.pool
        gradients = score_gradients(
            captured.logits, captured.target,
            [*captured.attentions, *([pool.output] if pool is not None else [])],
            subject.gradient_mode)
        # float32 rollout even under fp16/bf16 autocast: the per-block maps are small next to
        # the identity, and half precision would round them away (and underflow eps).
        with torch.autocast(device_type=images.device.type, enabled=False):
            with record_function("robustft.relevance.block_maps"):
                # 4. Abar_l = mean_heads(clamp(G_l * A_l, min=0))
                block_relevance = [head_weighted_attention(widen(a), widen(g))
                                   for a, g in zip(captured.attentions, gradients)]
            with record_function("robustft.relevance.rollout"):
                # 5. R = (I + Abar_L) ... (I + Abar_1), read from the read-out row (6.)
                # 6. the row the classifier reads: for the map read-out the pool's abar row
                pool_row = None if pool is None else pool_relevance(
                    pool, gradients[-1],
                    second_order=subject.gradient_mode == GradientMode.second_order)
                start = readout_row(layout, len(images), dtype=block_relevance[0].dtype,
                                    device=block_relevance[0].device, pool=pool_row)
                row = rollout_row(block_relevance, start)
    # 6. the read-out row's patch columns as the (h, w) grid (7. is upsample_and_normalize)
    return read_out(row, layout, captured.logits, captured.target)


def _runs_fused(backbone: Backbone, gradient_mode: str, backend: RelevanceBackend) -> bool:
    """Whether a step with ``backend`` runs the fused path; ``fused`` and ``auto`` say once
    in the log which path they run and why."""
    if backend == RelevanceBackend.eager:
        return False
    if gradient_mode == GradientMode.second_order:
        reason = "gradient_mode=second_order needs a double backward through attention"
    else:
        reason = backbone.fused_capture_refusal()
    if reason:
        _log_once(f"relevance.backend={backend.value} runs eager: {reason}")
        return False
    if backend == RelevanceBackend.auto:
        _log_once(f"relevance.backend=auto runs fused: detached mode and "
                  f"{type(backbone.model).__name__} captures q, k, v with fused attention")
    return True


@functools.cache
def _log_once(message: str) -> None:
    log.info(message)
