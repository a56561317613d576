"""The segmentation test on hand-computed maps and masks: dataset-summed pixel accuracy and
IoU (which differ from the image averages), the mAP of [1-S, S], ignored pixels; and the
masks following the image through the model's eval geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from robustft.evaluation.mask_views import mask_geometry, transform_normalization
from robustft.evaluation.segmentation import SegmentationScores, average_precision

# image A (2 x 2): foreground = the one pixel above the mean 0.25; the mask is the top row
MAP_A = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
MASK_A = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.uint8)
# image B (4 x 4): the map's 2 x 2 block is exactly the mask
MAP_B = torch.zeros(1, 4, 4)
MAP_B[0, :2, :2] = 1.0
MASK_B = (MAP_B > 0).to(torch.uint8)


def test_pixel_accuracy_and_iou_are_summed_over_the_dataset() -> None:
    scores = SegmentationScores()
    scores.update(MAP_A, MASK_A)
    scores.update(MAP_B, MASK_B)
    # A: 3 of 4 pixels right, B: 16 of 16. Summed 19 / 20; the image mean would be 87.5.
    assert scores.pixel_accuracy() == pytest.approx(95.0)
    # foreground: A 1 / 2, B 4 / 4 -> 5 / 6; background: A 2 / 3, B 12 / 12 -> 14 / 15
    background, foreground = scores.iou()
    assert foreground == pytest.approx(100 * 5 / 6)
    assert background == pytest.approx(100 * 14 / 15)
    assert scores.mean_iou() == pytest.approx(100 * (5 / 6 + 14 / 15) / 2)
    image_mean_iou = 100 * ((0.5 + 2 / 3) / 2 + 1.0) / 2
    assert scores.mean_iou() != pytest.approx(image_mean_iou)
    # AP of A by hand: scores [1-S, S] = [0,1,1,1, 1,0,0,0], one-hot [0,0,1,1, 1,1,0,0]:
    # at score 1: 3 of 4 predicted are positive (recall 3/4), at 0: precision 4/8, recall 1
    # -> 3/4 * 3/4 + 1/4 * 1/2 = 0.6875; B is separated perfectly: 1.
    assert average_precision(MAP_A[0], MASK_A[0]) == pytest.approx(0.6875)
    assert scores.mean_average_precision() == pytest.approx(100 * (0.6875 + 1.0) / 2)


def test_ignored_pixels_count_nowhere() -> None:
    mask = MASK_A.clone()
    mask[0, 0, 1] = 255  # the one wrong pixel of A becomes "not labelled"
    scores = SegmentationScores()
    scores.update(MAP_A, mask)
    assert scores.pixel_accuracy() == pytest.approx(100.0)
    assert scores.iou() == pytest.approx((100.0, 100.0))
    assert scores.mean_average_precision() == pytest.approx(100.0)


def test_threshold_is_each_images_own_mean() -> None:
    # the same map scaled: above-mean pixels do not change
    scores = SegmentationScores()
    scores.update(torch.cat([MAP_B, 0.5 * MAP_B]), torch.cat([MASK_B, MASK_B]))
    assert scores.pixel_accuracy() == 100.0


def test_mask_follows_the_image_geometry() -> None:
    # 32 x 40 -> Resize(16) halves it to 16 x 20 -> CenterCrop(16) drops columns 0-1, 18-19
    image = np.zeros((32, 40, 3), np.uint8)
    mask = np.zeros((32, 40), np.uint8)
    image[4:20, 20:36] = 255
    mask[4:20, 20:36] = 1
    mask[1, 5] = 255
    transform = T.Compose([T.Resize(16, interpolation=T.InterpolationMode.BICUBIC),
                           T.CenterCrop(16), T.ToTensor(), T.Normalize((0.2,) * 3, (0.4,) * 3)])
    out = mask_geometry(transform)(mask)
    assert out.dtype == torch.uint8 and out.shape == (16, 16)
    # nearest neighbour samples source pixel 2i + 1: rows 2-9, columns 10-17 -> 8-15 cropped
    expected = torch.zeros(16, 16, dtype=torch.uint8)
    expected[2:10, 8:16] = 1
    expected[0, 0] = 255
    assert torch.equal(out, expected)
    pixels = transform(Image.fromarray(image))[0] * 0.4 + 0.2
    assert torch.equal(pixels[3:9, 9:15] > 0.9, torch.ones(6, 6, dtype=torch.bool))
    assert float(pixels[:, :6].abs().max()) < 0.05 and float(pixels[12:].abs().max()) < 0.05
    mean, std = transform_normalization(transform)
    assert mean == pytest.approx((0.2,) * 3) and std == pytest.approx((0.4,) * 3)


def test_a_transform_that_moves_pixels_otherwise_is_refused() -> None:
    with pytest.raises(TypeError, match="RandomCrop") as error:
        mask_geometry(T.Compose([T.RandomCrop(4), T.ToTensor()]))
    assert "\n" not in str(error.value)
