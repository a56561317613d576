"""TokenCut (Wang et al., CVPR 2022): an unsupervised foreground mask from a
self-supervised ViT by a normalised cut on the patch graph.

The stages, as specified in docs/method.md §4 and as TokenCut's public code does it:

1. :func:`extract_patch_features` — keys of the last block (``Backbone.token_features``;
   or queries, values, a block's output tokens, any block), heads concatenated, prefix
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

When the graph is degenerate (:func:`degenerate_reason`): on DINOv2 every pair of
last-block keys has a cosine above 0.2 (a large key bias, invisible to softmax attention,
dominates every key), the graph is complete, its second eigenvalue is 1 and the
"eigenvector" is arbitrary. :func:`cut_image` with ``features="auto"`` (the default) then
cuts the centred keys (each image's mean patch key subtracted: attention is unchanged) at
``tau="auto"`` (the median cosine) instead; any other graph gets TokenCut's own cut
(docs/method.md §4).
The optional bilateral-solver refinement lives in :mod:`robustft.masks.bilateral`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy import ndimage
from torch import Tensor, nn

from robustft.backbones import backbone_of

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_TAU",
    "FEATURE_CHOICES",
    "OFFICIAL_MIN_FOREGROUND_FRACTION",
    "GraphCut",
    "bipartition_from_eigenvector",
    "centred",
    "cut_image",
    "degenerate_reason",
    "extract_patch_features",
    "extract_patch_keys",
    "graph_cut",
    "median_cosine",
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

# what TokenCut cuts: "auto" = TokenCut's keys, or the centred keys at the median cosine when
# the keys' graph is degenerate; the others as named (Backbone.token_features, centred_keys
# = keys minus each image's mean patch key)
FEATURE_CHOICES = ("auto", "keys", "centred_keys", "queries", "values", "output")
# A graph is degenerate (its cut arbitrary) when its second generalised eigenvalue is this
# close to 1 (a complete graph's is exactly 1) or fewer than this share of the pairs fall
# below tau; measured: DINOv2-S keys 1.0000 / 0.000, every working graph here <= 0.92 / >= 0.015.
MAX_EIGENVALUE = 0.99
MIN_SHARE_BELOW_TAU = 0.01

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
    ``tau``: the threshold used; ``share_below_tau``: the share of the pairs of distinct
    patches whose cosine is not above it (0 = a complete graph).
    """

    mask: np.ndarray
    partition: np.ndarray
    eigenvector: np.ndarray
    eigenvalue: float
    seed: tuple[int, int]
    tau: float = DEFAULT_TAU
    share_below_tau: float = float("nan")


@torch.no_grad()
def extract_patch_features(model: nn.Module, pixels: Tensor, kind: str = "keys",
                           block: int = -1) -> Tensor:
    """``kind`` (keys, queries, values, output; ``Backbone.token_features``) of block
    ``block`` for the patch tokens.

    ``pixels``: (B, 3, H, W), already normalised for the model. Returns (B, P, D) with
    ``P = h * w`` patch tokens in row-major grid order; the prefix tokens (CLS,
    distillation, register tokens) are dropped — the read-out of TokenCut's code. Raises
    ``TypeError`` naming the model class for a model no backbone family explains.
    """
    backbone = backbone_of(model)
    layout = backbone.token_layout((int(pixels.shape[-2]), int(pixels.shape[-1])))
    features = backbone.token_features(pixels, kind, block)
    if features.shape[1] != layout.num_tokens:
        raise RuntimeError(
            f"{type(model).__name__}: block {block} has {features.shape[1]} tokens, the token "
            f"layout expects {layout.num_tokens} ({layout.num_prefix_tokens} prefix + grid "
            f"{layout.grid_size})"
        )
    return features[:, layout.num_prefix_tokens:]


def extract_patch_keys(model: nn.Module, pixels: Tensor) -> Tensor:
    """Keys of the last block for the patch tokens, heads concatenated: TokenCut's features
    (:func:`extract_patch_features` with ``kind="keys"``, ``block=-1``)."""
    return extract_patch_features(model, pixels, "keys", -1)


def centred(features: np.ndarray) -> np.ndarray:
    """``features`` (P, D) minus their mean over the patches. For keys this leaves
    attention unchanged (softmax ignores ``q . c`` added to every key of a query) but
    removes a bias shared by every key, which otherwise dominates their cosines."""
    feats = np.asarray(features, dtype=np.float64)
    return feats - feats.mean(axis=0, keepdims=True)


def _cosine(features: np.ndarray) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    feats = feats / np.maximum(norms, 1e-12)  # F.normalize's clamp, as TokenCut
    return feats @ feats.T


def median_cosine(features: np.ndarray) -> float:
    """The median cosine over the pairs of distinct patches: ``tau="auto"``, which makes
    half of the pairs edges of the graph."""
    cosine = _cosine(features)
    return float(np.median(cosine[~np.eye(len(cosine), dtype=bool)]))


def tokencut_affinity(
    features: np.ndarray, tau: float = DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> np.ndarray:
    """Binarised cosine affinity of ``features`` (P, D): 1 where ``cos > tau``, ``eps``
    elsewhere (eps keeps the graph connected so D is invertible). Returns (P, P) float64."""
    return np.where(_cosine(features) > tau, 1.0, eps)


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
    off_diagonal = ~np.eye(len(affinity), dtype=bool)
    return GraphCut(
        mask=mask, partition=partition, eigenvector=oriented, eigenvalue=eigenvalue, seed=seed,
        tau=float(tau), share_below_tau=float((affinity[off_diagonal] < 1.0).mean()),
    )


def degenerate_reason(cut: GraphCut) -> str:
    """Why the cut of a degenerate graph means nothing ("" when the graph is not): a
    second eigenvalue within 0.01 of 1 (a complete graph's is exactly 1 and its eigenvector
    is whatever LAPACK returns) or fewer than 1 % of the patch pairs below tau."""
    if cut.eigenvalue > MAX_EIGENVALUE or cut.share_below_tau < MIN_SHARE_BELOW_TAU:
        return (f"degenerate graph: second eigenvalue {cut.eigenvalue:.4f}, "
                f"{100 * cut.share_below_tau:.2f} % of patch pairs below tau {cut.tau:.3f}")
    return ""


def cut_image(
    features: np.ndarray | Tensor,
    grid_size: tuple[int, int],
    features_choice: str = "auto",
    tau: float | str = DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
) -> tuple[GraphCut, str]:
    """One image's cut with TokenCut's options: ``features`` (P, D) are the block's keys for
    ``auto`` / ``keys`` / ``centred_keys``, else the features named; ``tau`` a number or
    ``"auto"`` (:func:`median_cosine`). ``auto``: the keys' cut, unless their graph is
    degenerate (:func:`degenerate_reason`); then the centred keys at ``tau="auto"``.
    Returns the cut and the features it used (``centred_keys`` when ``auto`` fell back)."""
    if isinstance(features, Tensor):
        features = features.detach().float().cpu().numpy()
    if features_choice not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {list(FEATURE_CHOICES)}, got {features_choice!r}")
    used = "keys" if features_choice == "auto" else features_choice
    feats = centred(features) if used == "centred_keys" else features
    cut = graph_cut(feats, grid_size, tau=median_cosine(feats) if tau == "auto" else float(tau),
                    eps=eps)
    if features_choice == "auto" and degenerate_reason(cut):
        used, feats = "centred_keys", centred(features)
        cut = graph_cut(feats, grid_size, tau=median_cosine(feats), eps=eps)
    return cut, used


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
    model: nn.Module, pixels: Tensor, tau: float | str = DEFAULT_TAU, eps: float = DEFAULT_EPS,
    features: str = "auto", block: int = -1,
) -> list[GraphCut]:
    """Coarse TokenCut for a batch: ``pixels`` (B, 3, H, W), normalised model input ->
    one :class:`GraphCut` (patch-grid mask) per image (:func:`cut_image`'s options).
    Upsample with :func:`upsample_nearest`."""
    kind = "keys" if features in ("auto", "centred_keys") else features
    batch = extract_patch_features(model, pixels, kind, block).float().cpu().numpy()
    grid = backbone_of(model).token_layout((int(pixels.shape[-2]), int(pixels.shape[-1]))).grid_size
    return [cut_image(f, grid, features, tau, eps)[0] for f in batch]
