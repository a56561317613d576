"""Foreground share and the overlay grid on a tiny model."""

from __future__ import annotations

import torch
from PIL import Image
from tiny_models import tiny_vit

from robustft.demo.relevance_stats import (
    foreground_share_and_top1,
    mean_foreground_share,
    patch_coverage_share,
    relevance_overlay_grid,
)
from robustft.relevance import relevance_map, upsample_and_normalize


def test_foreground_share_bounds_and_overlay_grid(tmp_path):
    model = tiny_vit("plain")
    images = torch.randn(3, 3, 32, 32)
    full = torch.ones(3, 32, 32)
    assert abs(mean_foreground_share(model, images, full, torch.tensor([0, 1, 2])) - 1.0) < 1e-6
    assert mean_foreground_share(model, images, torch.zeros(3, 32, 32), torch.tensor([0, 1, 2])) == 0
    path = relevance_overlay_grid({"before": model, "after": model}, images, full,
                                  torch.tensor([0, 1, 2]), tmp_path / "grid.png",
                                  mean=(0.5,) * 3, std=(0.5,) * 3, scale=2)
    with Image.open(path) as grid:
        # 4 columns (image, mask, 2 models) of 32 px + 2 px gaps, 3 rows, a 14 px title band
        assert grid.size == ((4 * 34 - 2) * 2, (3 * 34 - 2) * 2 + 14)


def test_patch_coverage_share_by_hand():
    # left half of an 8x8 image is object, patches 4x4: coverage [[1, 0], [1, 0]]. Bilinear
    # upsampling (align_corners=False) gives each row 1, 1, .875, .625 | .375, .125, 0, 0,
    # already in [0, 1]: share = 3.5 / (3.5 + 0.5).
    masks = torch.zeros(1, 8, 8)
    masks[:, :, :4] = 1
    assert abs(patch_coverage_share(masks, (4, 4)) - 0.875) < 1e-6


def _share_by_pixel_loop(model, image, mask, label) -> float:
    """sum(S*M) / sum(S) for one image, S its normalised relevance, summed pixel by pixel."""
    out = relevance_map(model, image[None], label[None])
    relevance = upsample_and_normalize(out.relevance.detach(), mask.shape)[0]
    on_object = total = 0.0
    for row in range(mask.shape[0]):
        for column in range(mask.shape[1]):
            value = float(relevance[row, column])
            total += value
            on_object += value * float(mask[row, column])
    return on_object / total


def test_share_is_the_mean_of_per_image_pixel_sums_and_top1_matches_the_plain_forward():
    model = tiny_vit("plain")
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    masks = (torch.rand(6, 32, 32) > 0.5).float()
    # batches of 4 and 2: the share is a mean over images, not over batches
    share, top1 = foreground_share_and_top1(model, images, masks, labels, batch_size=4)
    with torch.no_grad():
        expected = 100.0 * int((model(images).argmax(-1) == labels).sum()) / len(labels)
    assert top1 == expected
    per_image = [_share_by_pixel_loop(model, images[i], masks[i], labels[i]) for i in range(6)]
    assert len({round(value, 3) for value in per_image}) > 1  # images differ: a mean can be wrong
    assert abs(share - sum(per_image) / len(per_image)) < 1e-5
    assert abs(mean_foreground_share(model, images, masks, labels, batch_size=4)
               - sum(per_image) / len(per_image)) < 1e-5
