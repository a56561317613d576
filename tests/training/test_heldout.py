"""The held-out measures against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robustft.training.heldout import (
    background_partners,
    decision_measures,
    fill_from_surroundings,
    map_measures,
    share_change,
    summarize_heldout,
    swap_backgrounds,
)


def test_map_measures_by_hand():
    # one image, 2 x 2: the object is the left column
    relevance = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    measures = map_measures(relevance, mask)
    assert measures["share"].item() == pytest.approx(1.5 / 2.0)
    # threshold at the mean 0.5: only the top-left pixel is above -> IoU 1 / 2
    assert measures["iou"].item() == pytest.approx(0.5)
    # AP of scores [1-S, S] against [1-M, M]: the ranking (1.0 fg, 1.0 bg (1-0), 0.5 x4, 0.0 x2)
    scores = torch.tensor([0.0, 1.0, 0.5, 0.5, 1.0, 0.0, 0.5, 0.5])
    truth = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    order = torch.argsort(scores, descending=True, stable=True)
    # exact AP over distinct thresholds: sum over thresholds of (recall step) x precision
    ap = 0.0
    previous_recall = 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= threshold
        precision = (predicted & (truth == 1)).sum().item() / predicted.sum().item()
        recall = (predicted & (truth == 1)).sum().item() / (truth == 1).sum().item()
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    assert order.numel() == 8
    assert measures["ap"].item() == pytest.approx(ap)


def test_ignored_pixels_count_in_no_measure():
    relevance = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    ignore = torch.tensor([[[False, True], [False, False]]])
    measures = map_measures(relevance, mask, ignore)
    assert measures["share"].item() == pytest.approx(1.0)
    assert measures["iou"].item() == pytest.approx(1.0)


def test_decision_measures_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    original = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0])
    measures = decision_measures(logits, original, labels)
    assert measures["agreement"].tolist() == [1.0, 0.0]
    assert measures["correct"].tolist() == [1.0, 0.0]
    assert measures["correct_original"].tolist() == [1.0, 1.0]
    p = torch.softmax(original.double(), -1)
    q = torch.softmax(logits.double(), -1)
    expected = (p * (p.log() - q.log())).sum(-1)
    assert torch.allclose(measures["kl"], expected)


def test_share_change_is_the_paired_mean_and_two_standard_errors():
    share = torch.tensor([0.5, 0.7, 0.9])
    original = torch.tensor([0.4, 0.4, 0.4])
    gain, margin = share_change(share, original)
    differences = [0.1, 0.3, 0.5]
    mean = sum(differences) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    assert gain == pytest.approx(mean) and margin == pytest.approx(2 * std / math.sqrt(3))
    assert share_change(torch.tensor([0.5]), torch.tensor([0.1]))[1] == math.inf


def test_summary_refuses_shares_of_different_images():
    with pytest.raises(ValueError, match="not of the same images"):
        summarize_heldout({"share": [torch.ones(3)]}, {"share": [torch.ones(2)]}, {})
    summary = summarize_heldout({"share": [torch.tensor([0.6, 0.8])], "ap": [torch.ones(2)],
                                 "iou": [torch.zeros(2)]},
                                {"share": [torch.tensor([0.5, 0.5])]},
                                {"agreement": [torch.tensor([1.0, 0.0, 1.0])],
                                 "kl": [torch.zeros(3)]})
    assert summary.pairs == 2 and summary.images == 3
    assert summary.share == pytest.approx(0.7) and summary.agreement == pytest.approx(2 / 3)
    assert math.isnan(summary.accuracy)


# --------------------------------------------------------------- backgrounds swapped

def test_every_image_gets_a_partner_of_another_class_and_the_same_one_each_time():
    labels = torch.tensor([2, 0, 0, 1, 2, 1, 0, 2])
    partners = background_partners(labels)
    assert partners.shape == (8, 1) and (partners >= 0).all()
    assert (labels[partners[:, 0]] != labels).all()
    assert torch.equal(partners, background_partners(labels.clone()))
    assert (background_partners(torch.tensor([3, 3, 3])) == -1).all()


def test_several_backgrounds_come_from_classes_spread_over_the_label_order():
    labels = torch.arange(6).repeat_interleave(4)  # 6 classes x 4 images, class-ordered
    partners = background_partners(labels, backgrounds=3)
    assert partners.shape == (24, 3)
    assert (labels[partners] != labels[:, None]).all()
    # the three backgrounds of an image are of three different classes
    assert all(len(set(labels[row].tolist())) == 3 for row in partners)


def test_a_hole_in_a_flat_background_is_filled_with_that_background():
    images = torch.full((1, 3, 16, 16), 0.25)
    images[0, :, 4:12, 4:12] = 5.0  # the object to remove
    holes = torch.zeros(1, 16, 16, dtype=torch.bool)
    holes[0, 4:12, 4:12] = True
    filled = fill_from_surroundings(images, holes)
    assert torch.allclose(filled, torch.full_like(images, 0.25))


def test_a_hole_between_two_colours_is_filled_between_them():
    images = torch.zeros(1, 1, 8, 32)
    images[..., 16:] = 1.0
    holes = torch.zeros(1, 8, 32, dtype=torch.bool)
    holes[0, :, 12:20] = True
    filled = fill_from_surroundings(images, holes)[0, 0]
    assert torch.equal(filled[~holes[0]], images[0, 0][~holes[0]])
    inside = filled[holes[0]]
    assert inside.min() >= 0.0 and inside.max() <= 1.0
    assert filled[0, 12] < filled[0, 19]  # nearer the dark side, darker


def test_a_composite_is_the_object_over_the_partners_emptied_background():
    # image 0: background 0.1, object 0.9 (left block); image 1: background 0.5, object 7.0
    images = torch.stack([torch.full((3, 12, 12), 0.1), torch.full((3, 12, 12), 0.5)])
    masks = torch.zeros(2, 12, 12)
    masks[0, 2:6, 1:5] = 1
    masks[1, 6:10, 6:10] = 1
    images[0][:, masks[0] > 0] = 0.9
    images[1][:, masks[1] > 0] = 7.0
    ignore = torch.zeros(2, 12, 12, dtype=torch.bool)
    composites, sources = swap_backgrounds(images, masks, ignore, torch.tensor([1, 0]))
    assert sources.tolist() == [0, 1]
    expected_first = torch.full((3, 12, 12), 0.5)
    expected_first[:, masks[0] > 0] = 0.9
    assert torch.allclose(composites[0], expected_first)
    expected_second = torch.full((3, 12, 12), 0.1)
    expected_second[:, masks[1] > 0] = 7.0
    assert torch.allclose(composites[1], expected_second)


def test_an_image_without_a_partner_makes_no_composite():
    images, masks = torch.rand(3, 3, 8, 8), torch.zeros(3, 8, 8)
    composites, sources = swap_backgrounds(images, masks, None, torch.tensor([[1, 2], [-1, -1], [0, -1]]))
    assert composites.shape[0] == 3 and sources.tolist() == [0, 0, 2]
    assert torch.equal(composites[1], images[2])  # an empty mask: all background
