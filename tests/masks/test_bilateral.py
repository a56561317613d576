"""The bilateral-solver refinement on tiny images whose true edge is known."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from robustft.masks.bilateral import (
    BilateralGrid,
    BilateralSolverParams,
    bilateral_solve,
    finalize_refined_mask,
    mask_iou,
    refine_mask,
)


def two_region_image(
    size: int = 48, edge: int = 21, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Dark left part, bright right part from column ``edge`` on, mild noise.
    Returns (RGB uint8 image, true foreground mask = the bright part)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 30.0)
    image[:, edge:] = (220.0, 200.0, 180.0)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((size, size), dtype=bool)
    truth[:, edge:] = True
    return image, truth


def noisy_coarse_mask(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A patch-aligned (8 px) version of the truth, edge off by 3 px, with flipped pixels."""
    rng = np.random.default_rng(seed)
    coarse = np.zeros_like(truth)
    coarse[:, 24:] = True
    flips = rng.random(truth.shape) < 0.03
    return coarse ^ flips


def test_defaults_are_tokencuts_parameters() -> None:
    params = BilateralSolverParams()
    assert (params.sigma_spatial, params.sigma_luma, params.sigma_chroma) == (16, 16, 8)
    assert params.lam == 256 and params.confidence == 0.999 and params.cg_maxiter == 25


def test_noisy_coarse_mask_is_pulled_to_the_true_edge() -> None:
    image, truth = two_region_image()
    coarse = noisy_coarse_mask(truth)
    assert mask_iou(coarse, truth) < 0.9
    refined = refine_mask(image, coarse)
    np.testing.assert_array_equal(refined, truth)


def test_soft_output_follows_the_edge_and_stays_in_range() -> None:
    image, truth = two_region_image()
    soft = bilateral_solve(image, noisy_coarse_mask(truth).astype(float))
    assert soft.shape == truth.shape
    assert soft[truth].min() > 0.5 > soft[~truth].max()
    assert -0.05 < soft.min() and soft.max() < 1.05


def test_colour_bandwidths_are_respected() -> None:
    # With luma/chroma bandwidths far wider than the image's contrast the grid is
    # purely spatial: the refinement can no longer find the edge.
    image, truth = two_region_image()
    coarse = noisy_coarse_mask(truth)
    blind = dataclasses.replace(BilateralSolverParams(), sigma_luma=1000.0, sigma_chroma=1000.0)
    refined = refine_mask(image, coarse, blind)
    assert not np.array_equal(refined, truth)
    assert mask_iou(refined, truth) < mask_iou(refine_mask(image, coarse), truth)


def test_lambda_is_respected() -> None:
    image, truth = two_region_image()
    coarse = noisy_coarse_mask(truth).astype(float)
    weak = bilateral_solve(image, coarse, dataclasses.replace(BilateralSolverParams(), lam=1e-6))
    # Almost no smoothness: each vertex keeps its own data mean instead of being pulled
    # towards its grid neighbours, so the solution differs.
    strong = bilateral_solve(image, coarse)
    assert np.abs(weak - strong).max() > 1e-3


def test_grid_vertices_are_the_distinct_cells() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 30, 3)).astype(np.uint8)
    grid = BilateralGrid(image, sigma_spatial=8, sigma_luma=32, sigma_chroma=32)
    yuv = image.astype(float) @ np.array(
        [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
    ).T + np.array([0, 128, 128])
    cells = {
        (x // 8, y // 8, int(yuv[y, x, 0] / 32), int(yuv[y, x, 1] / 32), int(yuv[y, x, 2] / 32))
        for y, x in itertools.product(range(20), range(30))
    }
    assert grid.num_vertices == len(cells)
    ones = np.ones(grid.num_pixels)
    assert grid.splat(ones).sum() == grid.num_pixels
    np.testing.assert_array_equal(grid.slice(grid.splat(ones)) >= 1, True)
    # The blur is symmetric (neighbour relations go both ways).
    total = sum(grid.blurs)
    assert abs(total - total.T).max() == 0


def test_finalize_fills_holes_and_keeps_the_largest_component() -> None:
    soft = np.zeros((20, 20))
    soft[2:12, 2:12] = 0.9
    soft[5:7, 5:7] = 0.1  # a hole
    soft[15:18, 15:18] = 0.9  # a smaller second component
    coarse = np.zeros((20, 20), dtype=bool)
    coarse[2:12, 2:12] = True
    final = finalize_refined_mask(soft, coarse)
    np.testing.assert_array_equal(final, coarse)


def test_finalize_keeps_the_largest_component_when_the_object_is_larger() -> None:
    # TokenCut's code took the second-largest label overall; here the object is larger
    # than the background and must still be the result.
    soft = np.full((10, 10), 0.9)
    soft[:, :2] = 0.0
    soft[0, 5] = 0.0  # on the border: not a hole, stays background
    coarse = soft > 0.5
    np.testing.assert_array_equal(finalize_refined_mask(soft, coarse), coarse)


def test_low_iou_with_the_coarse_mask_inverts_or_falls_back() -> None:
    soft = np.zeros((10, 10))
    soft[:, 6:] = 1.0
    coarse = np.zeros((10, 10), dtype=bool)
    coarse[:, :6] = True  # IoU 0 with the refined mask
    np.testing.assert_array_equal(finalize_refined_mask(soft, coarse), coarse)  # inverted
    shifted = coarse.copy()
    shifted[:, 0] = False
    np.testing.assert_array_equal(
        finalize_refined_mask(soft, shifted, low_iou_action="coarse"), shifted
    )
    with pytest.raises(ValueError, match="low_iou_action"):
        finalize_refined_mask(soft, coarse, low_iou_action="drop")


def test_mask_iou() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    assert mask_iou(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert mask_iou(a, b) == pytest.approx(1 / 3)
