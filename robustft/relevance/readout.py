"""The read-out (docs/method.md §1, step 6): which row of a matrix over the tokens the
classifier's decision reads, and that row's patch columns as the (h, w) grid.

The relevance is the row ``e R`` of the rollout that the classifier reads; what the
backbone's :class:`~robustft.backbones.TokenLayout` says (its ``readout``) picks ``e``:

- ``cls``: the classifier reads the first token (the class token): ``e`` is its indicator;
- ``avg``: the classifier reads the mean of the pooled tokens (timm ``global_pool='avg'``,
  the patch tokens, or every token with ``pool_prefix``): ``e`` is ``1/P`` on each of the
  ``P`` pooled tokens, so ``e R`` is the mean of ``R``'s rows over them;
- ``map``: an attention pool (timm ``global_pool='map'``, SigLIP) whose one learned query
  attends to the pooled tokens, then an MLP: the pool is one more block with a single
  query and no residual path, so ``e`` is the pool's own row, built from its captured
  :class:`~robustft.backbones.BlockAttention` by the method (the gradient-weighted
  head mean ``abar_pool`` for ``grad_rollout``, :func:`pool_relevance`; the head mean of
  its attention for the gradient-free methods, :func:`pool_attention`).

:func:`readout_row` gives ``e`` for every token-level method: the rollouts start from it
(evaluated as a row vector from the last block down), the single-block methods multiply by
it (:func:`read_row`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustft.backbones import BlockAttention, TokenLayout
from robustft.relevance.settings import RelevanceOutput, widen

__all__ = ["mean_pool_row", "patch_columns", "patch_grid", "pool_attention", "pool_relevance", "read_out",
           "read_row", "readout_row"]


def readout_row(layout: TokenLayout, batch: int, *, dtype: torch.dtype,
                device: torch.device, pool: Tensor | None = None) -> Tensor:
    """(B, 1, N): per image, the weights with which the classifier reads the N tokens.
    ``pool`` is the (B, 1, P) row of the attention pool over the pooled tokens, which the
    ``map`` read-out needs (and the others refuse)."""
    tokens, first = layout.num_tokens, layout.first_pooled_token
    if layout.readout == "map":
        if pool is None or pool.shape != (batch, 1, tokens - first):
            got = None if pool is None else tuple(pool.shape)
            raise ValueError(f"the 'map' read-out needs the attention pool's (B, 1, P) row over "
                             f"its {tokens - first} pooled tokens for {batch} images, got {got}")
        prefix = torch.zeros(batch, 1, first, dtype=pool.dtype, device=pool.device)
        return torch.cat([prefix, pool], dim=-1).to(dtype)
    if pool is not None:
        raise ValueError(f"the {layout.readout!r} read-out takes no attention pool row")
    row = torch.zeros(batch, 1, tokens, dtype=dtype, device=device)
    if layout.readout == "cls":
        row[:, 0, 0] = 1.0
    elif layout.readout == "avg":
        row[:, 0, first:] = 1.0 / (tokens - first)
    else:
        raise ValueError(f"no relevance read-out for TokenLayout.readout={layout.readout!r}")
    return row


def pool_attention(pool: BlockAttention) -> Tensor:
    """The attention pool's probabilities (B, heads, 1, P), recomputed from its captured
    query and key as its kernel computes them, ``softmax(q k^T * scale)`` (float32 at
    least), in the autograd graph of q and k."""
    scores = (widen(pool.query) * pool.scale) @ widen(pool.key).transpose(-2, -1)
    return scores.softmax(dim=-1)


def mean_pool_row(pool: BlockAttention | None) -> Tensor | None:
    """The gradient-free methods' pool row: the head mean of the attention pool's
    probabilities (B, 1, P); None without a pool (any read-out but ``map``)."""
    return None if pool is None else pool_attention(pool).mean(dim=1)


def pool_relevance(pool: BlockAttention, output_grad: Tensor, *, second_order: bool) -> Tensor:
    """``abar_pool`` (B, 1, P): the rule of every block (docs/method.md §1, step 4),
    ``mean_heads(clamp(G * A, min=0))``, for the pool's one query. ``G = ds/dA = dO V^T``
    per head (``O = A V``), from ``output_grad = ds/dO`` (B, 1, heads * head_dim); in the
    detached mode ``G`` is a constant, in the second-order mode it keeps its graph (give
    ``output_grad`` taken with ``create_graph``)."""
    batch, heads, queries, head_dim = pool.query.shape
    per_head = widen(output_grad).reshape(batch, queries, heads, head_dim).transpose(1, 2)
    value = widen(pool.value)
    if not second_order:
        per_head, value = per_head.detach(), value.detach()
    gradient = per_head @ value.transpose(-2, -1)
    return (gradient * pool_attention(pool)).clamp(min=0).mean(dim=1)


def read_row(matrices: Tensor, layout: TokenLayout, pool: Tensor | None = None) -> Tensor:
    """The read-out row of (B, ..., N, N) matrices (e.g. per-head attention): ``e M``, a
    (B, ..., N) row over the tokens (``pool`` as for :func:`readout_row`). For the CLS
    read-out this is row 0 exactly."""
    row = readout_row(layout, matrices.shape[0], dtype=matrices.dtype, device=matrices.device,
                      pool=pool)
    row = row.reshape(row.shape[0], *([1] * (matrices.ndim - 3)), 1, row.shape[-1])
    return (row @ matrices).squeeze(-2)


def patch_columns(token_row: Tensor, layout: TokenLayout) -> Tensor:
    """A (..., N) row over the tokens restricted to the patch tokens: (..., h * w)."""
    return token_row[..., layout.num_prefix_tokens:]


def patch_grid(token_row: Tensor, layout: TokenLayout) -> Tensor:
    """A (B, N) row over the tokens, restricted to the patch tokens, as the (B, h, w) grid."""
    return patch_columns(token_row, layout).reshape(token_row.shape[0], *layout.grid_size)


def read_out(token_row: Tensor, layout: TokenLayout, logits: Tensor,
             target: Tensor) -> RelevanceOutput:
    """The :class:`RelevanceOutput` of a map given as a (B, N) row over the tokens."""
    return RelevanceOutput(relevance=patch_grid(token_row, layout), logits=logits, target=target)
