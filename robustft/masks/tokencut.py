"""TokenCut (Wang et al., CVPR 2022): an unsupervised foreground mask from a
self-supervised ViT by a normalised cut on the patch graph.

The stages, as specified in ``docs/method.md`` §4 and as TokenCut's public code does it:

1. :func:`extract_patch_keys` — keys of the last block, read from ``attn.qkv`` with a
   forward hook (timm layout ``(B, N, 3, heads, head_dim)``), heads concatenated, prefix
   tokens (CLS, distillation, registers) dropped -> (B, P, D).
2. :func:`tokencut_affinity` — L2-normalised rows, cosine affinity ``F F^T``, binarised:
   1 where > tau, eps elsewhere.
3. :func:`normalized_cut_eigenvector` — ``D = diag(row sums)``, the generalised
   eigenproblem ``(D - A) v = lambda D v`` (scipy), second-smallest eigenvector.
4. :func:`bipartition_from_eigenvector` — ``v > mean(v)``; seed = ``argmax |v|``; flip
   when the seed is not in the foreground; keep the 4-connected component holding the seed.
5. :func:`upsample_nearest` — patch mask -> image size (nearest).

:func:`graph_cut` is stages 2-4 on plain arrays (features + grid), so it can be tested on
constructed features without a model. :func:`tokencut_masks` runs everything on a batch.
The optional bilateral-solver refinement lives in :mod:`robustft.masks.bilateral`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy import ndimage
from torch import Tensor, nn

from robustft.attention import attention_blocks
from robustft.models import token_layout

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_TAU",
    "OFFICIAL_MIN_FOREGROUND_FRACTION",
    "GraphCut",
    "bipartition_from_eigenvector",
    "extract_patch_keys",
    "graph_cut",
    "normalized_cut_eigenvector",
    "tokencut_affinity",
    "tokencut_masks",
    "upsample_nearest",
]

DEFAULT_TAU = 0.2
DEFAULT_EPS = 1e-5
# The official fine-tuning dropped TokenCut masks with fewer than 520 foreground pixels
# at 224x224; as a fraction it scales with any image size.
OFFICIAL_MIN_FOREGROUND_FRACTION = 520 / (224 * 224)

# 4-connectivity on the patch grid (scipy's default for 2-D labelling, made explicit).
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class GraphCut:
    """Result of the graph-cut stage for one image.

    ``mask``: (h, w) bool patch mask, the seed's 4-connected foreground component.
    ``partition``: (h, w) bool, the full foreground side of the bipartition (before the
    component step). ``eigenvector``: (h, w) float64, the second-smallest generalised
    eigenvector, sign-flipped so that the foreground side is ``v > mean(v)``.
    ``eigenvalue``: its eigenvalue. ``seed``: (row, col) of ``argmax |v|`` on the grid.
    """

    mask: np.ndarray
    partition: np.ndarray
    eigenvector: np.ndarray
    eigenvalue: float
    seed: tuple[int, int]


def _last_block_qkv(model: nn.Module) -> tuple[nn.Module, int]:
    """The last block's ``attn.qkv`` linear layer and the number of heads."""
    attn = attention_blocks(model)[-1]  # TypeError naming the class for non-ViTs
    qkv = getattr(attn, "qkv", None)
    num_heads = getattr(attn, "num_heads", None)
    if not isinstance(qkv, nn.Module) or num_heads is None:
        raise TypeError(
            f"{type(model).__name__}.blocks[-1].attn has no fused `qkv` projection with "
            "`num_heads`; TokenCut reads the keys from timm's Attention.qkv"
        )
    return qkv, int(num_heads)


@torch.no_grad()
def extract_patch_keys(model: nn.Module, pixels: Tensor) -> Tensor:
    """Keys of the last transformer block for the patch tokens, heads concatenated.

    ``pixels``: (B, 3, H, W), already normalised for the model. Returns (B, P, D) with
    ``P = h * w`` patch tokens in row-major grid order and ``D = heads * head_dim``;
    the prefix tokens (CLS, distillation, register tokens) are dropped.

    The keys come from a forward hook on the last block's ``attn.qkv``, split with timm's
    layout ``reshape(B, N, 3, heads, head_dim)`` — the same read-out as TokenCut's code.
    Raises ``TypeError`` naming the model class for models without timm attention blocks.
    """
    qkv_layer, num_heads = _last_block_qkv(model)
    layout = token_layout(model, (int(pixels.shape[-2]), int(pixels.shape[-1])))
    captured: list[Tensor] = []

    def record(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append(output)

    handle = qkv_layer.register_forward_hook(record)
    try:
        # forward_features: the head plays no part in the keys.
        model.forward_features(pixels) if hasattr(model, "forward_features") else model(pixels)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one call of the last block's qkv, got {len(captured)}")
    qkv = captured[0]
    batch, num_tokens, three_dim = qkv.shape
    if num_tokens != layout.num_tokens:
        raise RuntimeError(
            f"{type(model).__name__}: qkv has {num_tokens} tokens, the token layout "
            f"expects {layout.num_tokens} ({layout.num_prefix_tokens} prefix + grid "
            f"{layout.grid_size})"
        )
    head_dim = three_dim // (3 * num_heads)
    keys = qkv.reshape(batch, num_tokens, 3, num_heads, head_dim)[:, :, 1]  # (B, N, H, d)
    keys = keys.reshape(batch, num_tokens, num_heads * head_dim)
    return keys[:, layout.num_prefix_tokens :]


def tokencut_affinity(
    features: np.ndarray, tau: float = DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> np.ndarray:
    """Binarised cosine affinity of ``features`` (P, D): 1 where ``cos > tau``, ``eps``
    elsewhere (eps keeps the graph connected so D is invertible). Returns (P, P) float64."""
    feats = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    feats = feats / np.maximum(norms, 1e-12)  # F.normalize's clamp, as TokenCut
    cosine = feats @ feats.T
    return np.where(cosine > tau, 1.0, eps)


def normalized_cut_eigenvector(affinity: np.ndarray) -> tuple[float, np.ndarray]:
    """Second-smallest solution of ``(D - A) v = lambda D v`` with ``D = diag(A 1)``.

    Solved with ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 1])``; scipy returns
    ``v`` normalised to ``v^T D v = 1`` (its sign is arbitrary). Returns (lambda, v).
    """
    affinity = np.asarray(affinity, dtype=np.float64)
    degree = np.diag(affinity.sum(axis=1))
    values, vectors = scipy.linalg.eigh(degree - affinity, degree, subset_by_index=[1, 1])
    return float(values[0]), vectors[:, 0]


def bipartition_from_eigenvector(
    eigenvector: np.ndarray, grid_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """TokenCut's seed/flip rule and connected component.

    Foreground = ``v > mean(v)``; seed = ``argmax |v|``; if the seed falls on the
    background side the partition (and the vector) is flipped, so the foreground is the
    side with the most salient patch (for a clean two-cluster graph: the smaller
    cluster). Only the 4-connected component containing the seed is kept.

    Returns ``(mask, partition, oriented_eigenvector, seed)`` on the (h, w) grid.
    """
    h, w = grid_size
    vector = np.asarray(eigenvector, dtype=np.float64).reshape(-1)
    if vector.size != h * w:
        raise ValueError(f"eigenvector has {vector.size} entries, grid {grid_size} has {h * w}")
    partition = vector > vector.mean()
    seed_index = int(np.argmax(np.abs(vector)))
    if not partition[seed_index]:
        partition = ~partition
        vector = -vector
    partition = partition.reshape(h, w)
    seed = (seed_index // w, seed_index % w)
    components, _ = ndimage.label(partition, structure=FOUR_CONNECTED)
    mask = components == components[seed]
    return mask, partition, vector.reshape(h, w), seed


def graph_cut(
    features: np.ndarray | Tensor,
    grid_size: tuple[int, int],
    tau: float = DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
) -> GraphCut:
    """The pure graph-cut stage: patch features (P, D) on an (h, w) grid -> patch mask.

    Affinity (:func:`tokencut_affinity`), normalised-cut eigenvector
    (:func:`normalized_cut_eigenvector`), seed/flip rule and the seed's 4-connected
    component (:func:`bipartition_from_eigenvector`).
    """
    if isinstance(features, Tensor):
        features = features.detach().float().cpu().numpy()
    h, w = grid_size
    if features.ndim != 2 or features.shape[0] != h * w:
        raise ValueError(f"features must be (h*w, D) = ({h * w}, D), got {features.shape}")
    if h * w < 2:
        raise ValueError(f"a graph cut needs at least 2 patches, grid is {grid_size}")
    affinity = tokencut_affinity(features, tau=tau, eps=eps)
    eigenvalue, eigenvector = normalized_cut_eigenvector(affinity)
    mask, partition, oriented, seed = bipartition_from_eigenvector(eigenvector, grid_size)
    return GraphCut(
        mask=mask, partition=partition, eigenvector=oriented, eigenvalue=eigenvalue, seed=seed
    )


def upsample_nearest(patch_mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling of an (h, w) patch mask to ``image_size = (H, W)``.

    Source index ``floor(i * h / H)``, the same rule as ``F.interpolate(mode="nearest")``;
    works for sizes that are not a multiple of the grid.
    """
    h, w = patch_mask.shape
    height, width = image_size
    rows = np.minimum((np.arange(height) * h) // height, h - 1)
    cols = np.minimum((np.arange(width) * w) // width, w - 1)
    return patch_mask[rows[:, None], cols[None, :]]


@torch.no_grad()
def tokencut_masks(
    model: nn.Module, pixels: Tensor, tau: float = DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> list[GraphCut]:
    """Coarse TokenCut for a batch: ``pixels`` (B, 3, H, W), normalised model input ->
    one :class:`GraphCut` (patch-grid mask) per image. Upsample with
    :func:`upsample_nearest`."""
    keys = extract_patch_keys(model, pixels).float().cpu().numpy()
    grid = token_layout(model, (int(pixels.shape[-2]), int(pixels.shape[-1]))).grid_size
    return [graph_cut(k, grid, tau=tau, eps=eps) for k in keys]
