"""The read-out (docs/method.md §1, step 6): which row of a matrix over the tokens the
classifier's decision reads, and that row's patch columns as the (h, w) grid.

A ViT that classifies from its class token reads the CLS row: a rollout ``R`` is read as
``e_cls R``, a block's attention as ``e_cls A``. :func:`readout_row` gives that row vector
``e`` for a backbone's :class:`~robustft.backbones.TokenLayout` (its ``readout``), and every
token-level method reads through it: the rollouts start from it (evaluated as a row vector
from the last block down), the single-block methods multiply by it (:func:`read_row`). A
family whose head pools the tokens otherwise (their average, an attention pooler) adds its
row here, in this one function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustft.backbones import TokenLayout
from robustft.relevance.settings import RelevanceOutput

__all__ = ["patch_columns", "patch_grid", "read_out", "read_row", "readout_row"]


def readout_row(layout: TokenLayout, batch: int, *, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    """(B, 1, N): per image, the weights with which the classifier reads the N tokens;
    ``readout="cls"``: the indicator of the class token (the first token)."""
    if layout.readout == "cls":
        row = torch.zeros(batch, 1, layout.num_tokens, dtype=dtype, device=device)
        row[:, 0, 0] = 1.0
        return row
    raise ValueError(f"no relevance read-out for TokenLayout.readout={layout.readout!r}")


def read_row(matrices: Tensor, layout: TokenLayout) -> Tensor:
    """The read-out row of (B, ..., N, N) matrices (e.g. per-head attention): ``e M``, a
    (B, ..., N) row over the tokens. For the CLS read-out this is row 0 exactly."""
    row = readout_row(layout, matrices.shape[0], dtype=matrices.dtype, device=matrices.device)
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
