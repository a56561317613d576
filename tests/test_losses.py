"""Loss terms on small cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustft.losses import (
    LossWeights,
    background_loss,
    foreground_loss,
    foreground_share,
    kl_to_teacher,
    l2_sp_penalty,
    label_ce,
    own_argmax_ce,
    relevance_loss,
)

S = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
# A soft edge (0.5) as a bilinear resize of a binary mask makes.
M = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])


def test_background_loss_by_hand():
    # S*(1-M) = [0, 0.25, 0, 0.25] -> squares 0, 1/16, 0, 1/16 -> mean 1/32
    assert background_loss(S, M).item() == pytest.approx(1 / 32)


def test_foreground_loss_by_hand():
    # S*M - M = [0, -0.25, 0, 0] -> mean of squares = 1/64
    assert foreground_loss(S, M).item() == pytest.approx(1 / 64)


def test_soft_edge_is_not_swapped_to_a_hard_one():
    """The public code builds 1-M by swapping exact 0s and 1s: a 0.5 stays 0.5 and the
    soft pixel's background share would be 0.5 either way, but a 0.25 would become 0.25
    instead of 0.75."""
    mask = torch.tensor([[[0.25]]])
    relevance = torch.tensor([[[1.0]]])
    assert background_loss(relevance, mask).item() == pytest.approx(0.75 ** 2)
    assert foreground_loss(relevance, mask).item() == pytest.approx(0.0)


def test_ignore_pixels_count_in_neither_term():
    ignore = torch.tensor([[[False, True], [False, True]]])
    # kept pixels: (0,0) and (1,0): background terms 0 and 0 -> 0; foreground 0 and 0.
    assert background_loss(S, M, ignore).item() == pytest.approx(0.0)
    assert foreground_loss(S, M, ignore).item() == pytest.approx(0.0)
    only_soft = torch.tensor([[[True, False], [True, True]]])
    assert background_loss(S, M, only_soft).item() == pytest.approx(1 / 16)
    assert foreground_loss(S, M, only_soft).item() == pytest.approx(1 / 16)
    everything = torch.ones_like(only_soft)
    assert background_loss(S, M, everything).item() == 0.0


def test_own_argmax_ce_with_temperature():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    t = 0.5
    expected = 0.0
    for row, target in ((logits[0], 0), (logits[1], 1)):
        scaled = row / t
        expected += -(scaled[target] - torch.logsumexp(scaled, 0)).item() / 2
    assert own_argmax_ce(logits, t).item() == pytest.approx(expected, rel=1e-5)
    # The target is the argmax, held constant: its gradient pushes the top logit up.
    logits.requires_grad_(True)
    own_argmax_ce(logits).backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1, 1] < 0


def test_kl_to_teacher_by_hand():
    teacher = torch.tensor([[math.log(0.5), math.log(0.5)]])
    student = torch.tensor([[math.log(0.75), math.log(0.25)]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_to_teacher(student, teacher).item() == pytest.approx(expected)
    assert kl_to_teacher(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_label_ce():
    logits = torch.tensor([[1.0, 2.0]])
    assert label_ce(logits, torch.tensor([0])).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([0])).item())


def test_weighted_sum_uses_paper_defaults():
    logits = torch.tensor([[0.0, 1.0]])
    terms = relevance_loss(S, M, logits)
    w = LossWeights()
    assert (w.background, w.foreground, w.segmentation, w.classification) == (2.0, 0.3, 0.8, 0.2)
    seg = 2.0 * (1 / 32) + 0.3 * (1 / 64)
    assert terms.segmentation.item() == pytest.approx(seg)
    cls = own_argmax_ce(logits).item()
    assert terms.total.item() == pytest.approx(0.8 * seg + 0.2 * cls)


def test_missing_inputs_are_clear_errors():
    logits = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="teacher_logits"):
        relevance_loss(S, M, logits, classification="kl_to_teacher")
    with pytest.raises(ValueError, match="labels"):
        relevance_loss(S, M, logits, classification="label_ce")
    with pytest.raises(ValueError, match="unknown classification"):
        relevance_loss(S, M, logits, classification="mse")
    with pytest.raises(ValueError, match="differ"):
        relevance_loss(S, M[:, :1], logits)


def test_foreground_share():
    # mass = 1.75, on the object: 1*1 + 0.5*0.5 = 1.25
    assert foreground_share(S, M).item() == pytest.approx(1.25 / 1.75)
    assert foreground_share(torch.zeros(1, 2, 2), M).item() == 0.0


def test_l2_sp_penalty_by_hand_and_its_gradient():
    weights = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    start = [torch.tensor([0.0, 0.0], requires_grad=True), torch.tensor([[1.0]], requires_grad=True)]
    penalty = l2_sp_penalty(weights, start)
    assert penalty.item() == 1.0 + 4.0 + 4.0
    penalty.backward()
    assert torch.equal(weights[0].grad, torch.tensor([2.0, 4.0]))  # 2 * (p - p0)
    assert torch.equal(weights[1].grad, torch.tensor([[4.0]]))
    assert start[0].grad is None and start[1].grad is None  # the starting point stays put
    assert l2_sp_penalty(start, start).item() == 0.0


def test_l2_sp_penalty_bad_pairs_are_clear_errors():
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(2,\), its starting point \(3,\)"):
        l2_sp_penalty([torch.zeros(1), torch.zeros(2)], [torch.zeros(1), torch.zeros(3)])
    with pytest.raises(ValueError):
        l2_sp_penalty([torch.zeros(1)], [])
    with pytest.raises(ValueError, match="at least one"):
        l2_sp_penalty([], [])
