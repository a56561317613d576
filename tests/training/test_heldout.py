"""The held-out measures against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robustft.training.heldout import (
    decision_measures,
    map_measures,
    share_change,
    summarize_heldout,
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
