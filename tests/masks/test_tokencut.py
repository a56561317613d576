"""TokenCut's graph-cut stage on constructed features, the eigenproblem against an
independent dense solution, and the key read-out of a timm ViT."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from robustft.backbones import create_model
from robustft.masks.tokencut import (
    OFFICIAL_MIN_FOREGROUND_FRACTION,
    bipartition_from_eigenvector,
    extract_patch_keys,
    graph_cut,
    normalized_cut_eigenvector,
    tokencut_affinity,
    tokencut_masks,
    upsample_nearest,
)


def constructed_features(
    region: np.ndarray, dim: int = 16, noise: float = 0.15, seed: int = 0
) -> np.ndarray:
    """Patch features: one direction inside ``region`` (h, w bool), an orthogonal one
    outside, plus Gaussian noise. Returns (h*w, dim)."""
    rng = np.random.default_rng(seed)
    object_direction = np.zeros(dim)
    object_direction[0] = 1.0
    background_direction = np.zeros(dim)
    background_direction[1] = 1.0
    flat = region.reshape(-1)
    features = np.where(flat[:, None], object_direction, background_direction)
    return features + noise * rng.standard_normal(features.shape)


def test_mask_equals_the_region_of_shared_direction() -> None:
    h, w = 10, 12
    region = np.zeros((h, w), dtype=bool)
    region[3:7, 4:9] = True
    region[7, 5] = True  # not a rectangle
    cut = graph_cut(constructed_features(region), (h, w))
    assert cut.mask.dtype == bool and cut.mask.shape == (h, w)
    np.testing.assert_array_equal(cut.mask, region)
    np.testing.assert_array_equal(cut.partition, region)
    assert region[cut.seed]
    # The oriented eigenvector puts the object above its mean.
    assert cut.eigenvector[region].min() > cut.eigenvector.mean() > cut.eigenvector[~region].max()


def test_mask_is_the_object_whatever_the_eigenvector_sign() -> None:
    h, w = 8, 8
    region = np.zeros((h, w), dtype=bool)
    region[2:5, 2:6] = True
    cut = graph_cut(constructed_features(region, seed=3), (h, w))
    for sign in (1.0, -1.0):
        mask, _partition, oriented, seed = bipartition_from_eigenvector(
            sign * cut.eigenvector, (h, w)
        )
        np.testing.assert_array_equal(mask, region)
        np.testing.assert_array_equal(oriented, cut.eigenvector)
        assert seed == cut.seed


def test_seed_flip_rule_picks_the_side_of_the_largest_magnitude() -> None:
    # The seed's side is below the mean: v > mean(v) would pick the background; the flip
    # rule must return the seed's side.
    h, w = 4, 5
    vector = np.full(h * w, 0.5)
    obj = [6, 7, 11]
    vector[obj] = -3.0
    vector[12] = -3.5  # the seed, also on the object side
    mask, _partition, oriented, seed = bipartition_from_eigenvector(vector, (h, w))
    expected = np.zeros(h * w, dtype=bool)
    expected[obj + [12]] = True
    np.testing.assert_array_equal(mask.reshape(-1), expected)
    assert seed == (12 // w, 12 % w)
    np.testing.assert_allclose(oriented.reshape(-1), -vector)


def test_disconnected_second_blob_is_dropped() -> None:
    h, w = 10, 10
    blob_a = np.zeros((h, w), dtype=bool)
    blob_a[1:4, 1:4] = True
    # Touches blob_a only diagonally at (3, 3)-(4, 4): a separate 4-connected component.
    blob_b = np.zeros((h, w), dtype=bool)
    blob_b[4:8, 4:8] = True
    cut = graph_cut(constructed_features(blob_a | blob_b, seed=1), (h, w))
    np.testing.assert_array_equal(cut.partition, blob_a | blob_b)
    kept, dropped = (blob_a, blob_b) if blob_a[cut.seed] else (blob_b, blob_a)
    np.testing.assert_array_equal(cut.mask, kept)
    assert not (cut.mask & dropped).any()


def test_affinity_is_binarised_cosine() -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((12, 5)) * rng.uniform(0.1, 10, size=(12, 1))
    affinity = tokencut_affinity(features, tau=0.2, eps=1e-5)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.testing.assert_array_equal(affinity, np.where(cosine > 0.2, 1.0, 1e-5))


def test_eigenvector_matches_an_independent_dense_solution() -> None:
    rng = np.random.default_rng(7)
    h, w = 5, 6
    features = rng.standard_normal((h * w, 6))
    # The same affinity, built here without robustft.
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    affinity = np.where(unit @ unit.T > 0.2, 1.0, 1e-5)
    degrees = affinity.sum(axis=1)
    d_inv_sqrt = np.diag(1.0 / np.sqrt(degrees))
    # (D - A) v = lambda D v  <=>  D^-1/2 (D - A) D^-1/2 u = lambda u with v = D^-1/2 u;
    # |u| = 1 gives v^T D v = 1, scipy's normalisation of the generalised problem.
    symmetric = d_inv_sqrt @ (np.diag(degrees) - affinity) @ d_inv_sqrt
    values, vectors = np.linalg.eigh(symmetric)
    assert values[2] - values[1] > 1e-3, "test needs a simple second eigenvalue"
    expected = d_inv_sqrt @ vectors[:, 1]

    eigenvalue, vector = normalized_cut_eigenvector(affinity)
    assert eigenvalue == pytest.approx(values[1], abs=1e-9)
    sign = np.sign(vector @ expected)
    np.testing.assert_allclose(sign * vector, expected, atol=1e-8)

    cut = graph_cut(features, (h, w))
    assert cut.eigenvalue == pytest.approx(values[1], abs=1e-9)
    sign = np.sign(cut.eigenvector.reshape(-1) @ expected)
    np.testing.assert_allclose(sign * cut.eigenvector.reshape(-1), expected, atol=1e-8)
    # And the bipartition is the mean split of that vector, on the seed's side.
    oriented = cut.eigenvector.reshape(-1)
    assert cut.partition.reshape(-1)[np.argmax(np.abs(oriented))]
    np.testing.assert_array_equal(cut.partition.reshape(-1), oriented > oriented.mean())


def test_graph_cut_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="h\\*w"):
        graph_cut(np.zeros((10, 4)), (3, 3))


@pytest.mark.parametrize("size", [(64, 64), (37, 50), (5, 3)])
def test_upsample_nearest_matches_torch(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    patch_mask = rng.random((8, 6)) > 0.5
    expected = (
        F.interpolate(torch.from_numpy(patch_mask).float()[None, None], size=size, mode="nearest")[
            0, 0
        ]
        .bool()
        .numpy()
    )
    np.testing.assert_array_equal(upsample_nearest(patch_mask, size), expected)


def tiny_vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
    args.update(kwargs)
    return create_model("vit_tiny_patch16_224", **args).eval()


@pytest.mark.parametrize("extra", [{}, {"reg_tokens": 4, "no_embed_class": True}])
def test_keys_are_the_last_blocks_keys_without_prefix_tokens(extra: dict) -> None:
    model = tiny_vit(**extra)
    pixels = torch.randn(3, 3, 64, 64)
    keys = extract_patch_keys(model, pixels)
    assert keys.shape == (3, 64, 64)  # 8x8 patches, 2 heads x 32 dims

    # Independent read-out: the last block's normalised input times the k-slice of qkv.
    captured = []
    block = model.blocks[-1]
    handle = block.norm1.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        model.forward_features(pixels)
    handle.remove()
    dim = block.attn.qkv.in_features
    weight = block.attn.qkv.weight[dim : 2 * dim]
    bias = block.attn.qkv.bias[dim : 2 * dim] if block.attn.qkv.bias is not None else None
    expected = F.linear(captured[0], weight, bias)[:, model.num_prefix_tokens :]
    torch.testing.assert_close(keys, expected)


def test_tokencut_masks_on_a_batch() -> None:
    model = tiny_vit()
    cuts = tokencut_masks(model, torch.randn(2, 3, 64, 64))
    assert len(cuts) == 2 and all(cut.mask.shape == (8, 8) for cut in cuts)
    assert all(cut.mask[cut.seed] for cut in cuts)


def test_keys_need_timm_attention_blocks() -> None:
    with pytest.raises(TypeError, match="ResNet"):
        extract_patch_keys(timm.create_model("resnet18"), torch.randn(1, 3, 64, 64))


def test_official_minimum_foreground_fraction() -> None:
    assert OFFICIAL_MIN_FOREGROUND_FRACTION * 224 * 224 == pytest.approx(520)
