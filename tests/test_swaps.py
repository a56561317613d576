"""Objects moved onto other images' backgrounds (robustft.swaps): the partners, the fill,
the composites, and the training term on them (loss.lambda_swap)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_vit

from robustft.losses import LossConfig
from robustft.swaps import (
    background_partners,
    fill_from_surroundings,
    swap_backgrounds,
    swapped_background_loss,
)
from robustft.training.module import RelevanceFinetuner


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


def test_the_loss_is_the_cross_entropy_of_the_composites_and_zero_without_any():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    by_hand = -(torch.log_softmax(logits.detach(), -1)[[0, 1], [0, 1]]).mean()
    assert torch.allclose(swapped_background_loss(logits, labels), by_hand)
    empty = swapped_background_loss(logits[:0], labels[:0])
    assert empty.detach().item() == 0.0 and empty.requires_grad  # a one-class batch still trains


def _pairs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    masks = torch.zeros(4, 32, 32)
    for index, (top, left) in enumerate([(4, 4), (12, 16), (16, 2), (2, 18)]):
        masks[index, top:top + 12, left:left + 12] = 1.0
    return {"image": torch.randn(4, 3, 32, 32, generator=generator), "mask": masks,
            "ignore": torch.zeros(4, 32, 32, dtype=torch.bool),
            "label": torch.tensor([0, 1, 2, 0])}


@pytest.mark.parametrize("objective", ["relevance", "plain"])
def test_the_training_term_adds_the_composites_cross_entropy_against_the_object_s_label(objective):
    from robustft.backbones import backbone_of

    torch.manual_seed(0)
    model = tiny_vit("plain", img_size=(32, 32), num_classes=3)
    pairs = _pairs()
    without = RelevanceFinetuner(model, loss=LossConfig(objective=objective))
    with_swaps = RelevanceFinetuner(model, loss=LossConfig(objective=objective, lambda_swap=0.7))
    for module in (without, with_swaps):
        module.log_dict = lambda *args, **kwargs: None
    alone, together = without.training_step(pairs, 0), with_swaps.training_step(pairs, 0)
    # by hand: each image's object over the next image of another class in label order, whose
    # object is filled from its surroundings
    labels, images, masks = pairs["label"], pairs["image"], pairs["mask"]
    order = torch.argsort(labels, stable=True).tolist()  # [0, 3, 1, 2]
    composites, targets = [], []
    for position, index in enumerate(order):
        partner = next(order[(position + 2 + step) % 4] for step in range(4)
                       if labels[order[(position + 2 + step) % 4]] != labels[index])
        grown = F.max_pool2d(masks[partner][None, None], 3, stride=1, padding=1)[0, 0] > 0
        background = fill_from_surroundings(images[partner][None], grown[None])[0]
        composites.append(torch.where(masks[index] > 0.5, images[index], background))
        targets.append(labels[index])
    order_back = torch.argsort(torch.tensor(order))
    composites = torch.stack(composites)[order_back]
    with torch.no_grad():
        logits = backbone_of(model).class_scores(composites)
    expected = 0.7 * F.cross_entropy(logits, torch.stack(targets)[order_back])
    assert torch.allclose(together - alone, expected, rtol=1e-4, atol=1e-6)
    # it trains the weights, and only in training: validation's loss has no such term
    model.zero_grad()
    (together - alone).backward()
    assert model.head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(with_swaps._step(pairs, "val")[0], without._step(pairs, "val")[0])


def test_a_negative_swap_weight_is_named():
    with pytest.raises(ValueError, match=r"^lambda_swap must be >= 0, got -1.0$"):
        LossConfig(lambda_swap=-1.0)
