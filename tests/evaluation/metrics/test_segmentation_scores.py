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
from robustft.evaluation.metrics.segmentation_scores import SegmentationScores, average_precision

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


def _average_precision_by_hand(scores: list[float], positive: list[int]) -> float:
    """scikit-learn's ``average_precision_score`` written out: over the distinct scores from
    the highest, sum of (recall gained) x (precision) of predicting every score >= it."""
    total, precision_sum, recalled = sum(positive), 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        predicted = [score >= threshold for score in scores]
        hits = sum(1 for p, y in zip(predicted, positive) if p and y)
        recall = hits / total
        precision_sum += (recall - recalled) * hits / sum(predicted)
        recalled = recall
    return precision_sum


# a 4 x 4 mask whose object covers f = 4 / 16 of the pixels
MASK_F = torch.zeros(4, 4, dtype=torch.uint8)
MASK_F[1:3, 1:3] = 1


def test_a_map_without_information_scores_the_ap_of_chance() -> None:
    """The public script's min-max of a constant map is 0 / 0; its NaNs become 0 in both
    channels, and equal scores give AP = the share of positives, exactly half of the
    one-hot [1 - M, M]. Scored as [1 - S, S] with S = 0 the same map would get
    (1 - f)^2 + f / 2 = 0.6875 at f = 1/4: better than chance for saying nothing."""
    truth = torch.cat([1 - MASK_F.flatten(), MASK_F.flatten()]).tolist()
    public = _average_precision_by_hand([0.0] * 32, truth)  # both channels zeroed
    assert public == 0.5
    as_scores = _average_precision_by_hand([1.0] * 16 + [0.0] * 16, truth)  # [1 - 0, 0]
    assert as_scores == pytest.approx((1 - 0.25) ** 2 + 0.25 / 2) == 0.6875
    for value in (0.0, 0.3, 1.0):
        assert average_precision(torch.full((4, 4), value), MASK_F) == public
    # one pixel apart is information: scored as [1 - S, S]
    nearly = torch.zeros(4, 4)
    nearly[1, 1] = 1.0
    scores = torch.cat([1 - nearly.flatten(), nearly.flatten()]).tolist()
    assert average_precision(nearly, MASK_F) == pytest.approx(
        _average_precision_by_hand(scores, truth))


def test_constant_maps_are_counted_and_averaged_as_chance() -> None:
    scores = SegmentationScores()
    scores.update(torch.stack([torch.zeros(4, 4), MAP_B[0]]), torch.stack([MASK_F, MASK_B[0]]))
    scores.update(torch.full((1, 4, 4), 0.5), MASK_F[None])
    assert scores.constant_maps == 2
    assert scores.mean_average_precision() == pytest.approx(100 * (0.5 + 1.0 + 0.5) / 3)
    # a constant map is all background under its own mean: 12 of 16 pixels right, twice
    assert scores.pixel_accuracy() == pytest.approx(100 * (12 + 16 + 12) / 48)
