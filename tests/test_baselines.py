"""The input-gradient baselines (RRR, GradMask): each penalty equals its closed form on a
linear model, and its gradient with respect to the weights is non-zero and matches a
finite-difference estimate (float64) only because the input gradient stays in the graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_vit

from robustft.backbones import backbone_of
from robustft.baselines import (
    Objective,
    background_weight,
    baseline_loss,
    gradmask_penalty,
    rrr_penalty,
)


def _masks(batch: int, size: int) -> torch.Tensor:
    masks = torch.zeros(batch, size, size, dtype=torch.float64)
    masks[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    masks[0, 0, 0] = 0.5  # a soft edge counts as half background
    return masks


def _penalty(objective: str, logits, labels, images, background, create_graph: bool):
    if objective == "rrr":
        return rrr_penalty(logits, images, background, create_graph=create_graph)
    return gradmask_penalty(logits, labels, images, background, create_graph=create_graph)


@pytest.mark.parametrize("objective", ["rrr", "gradmask"])
def test_penalty_is_the_closed_form_on_a_linear_model(objective):
    generator = torch.Generator().manual_seed(0)
    batch, channels, size, classes = 3, 2, 6, 4
    weight = torch.randn(classes, channels * size * size, generator=generator, dtype=torch.float64)
    images = torch.randn(batch, channels, size, size, generator=generator, dtype=torch.float64)
    images.requires_grad_(True)
    labels = torch.tensor([0, 3, 1])
    masks = _masks(batch, size)
    ignore = torch.zeros(batch, size, size, dtype=torch.bool)
    ignore[1, 0, :] = True
    logits = images.flatten(1) @ weight.T
    penalty = _penalty(objective, logits, labels, images, background_weight(masks, ignore), True)

    p = F.softmax(logits.detach(), dim=-1)
    if objective == "rrr":  # d(sum_k log p_k)/dx = sum_k W_k - K * p^T W
        gradient = weight.sum(0) - classes * p @ weight
    else:  # dCE/dx = (p - onehot(y))^T W
        gradient = (p - F.one_hot(labels, classes).double()) @ weight
    outside = ((1 - masks) * ~ignore).unsqueeze(1).expand(-1, channels, -1, -1).flatten(1)
    per_image = (outside * gradient)
    expected = (per_image.pow(2) if objective == "rrr" else per_image.abs()).sum(1).mean()
    assert torch.allclose(penalty, expected, rtol=1e-10)


def _weight_gradient(value: torch.Tensor, parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    """d value / d parameters; zero where ``value`` does not depend on them (no graph)."""
    if not value.requires_grad:
        return [torch.zeros_like(p) for p in parameters]
    gradients = torch.autograd.grad(value, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, gradients)]


@pytest.mark.parametrize("objective", ["rrr", "gradmask"])
def test_penalty_gradient_reaches_the_weights_and_matches_finite_differences(objective):
    model = tiny_vit("plain", img_size=(16, 16), patch_size=8, num_classes=3, depth=1,
                     dtype=torch.float64)
    backbone = backbone_of(model)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 16, 16, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 2])
    background = background_weight(_masks(2, 16))
    parameters = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # timm's initialisation leaves the scores nearly flat: input gradients ~0
        for p in parameters:
            if p.dim() > 1:
                p.normal_(0, 0.3, generator=generator)

    def penalty(create_graph: bool = True) -> torch.Tensor:
        inputs = images.clone().requires_grad_(True)
        with backbone.capture_attention():  # eager attention: the fused kernel has no 2nd derivative
            logits = backbone.class_scores(inputs)
        return _penalty(objective, logits, labels, inputs, background, create_graph)

    with_graph = _weight_gradient(penalty(True), parameters)
    without_graph = _weight_gradient(penalty(False), parameters)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in with_graph))
    assert norm > 1e-6
    # the public scripts' bug: without create_graph the penalty does not move the weights
    assert all(torch.count_nonzero(g) == 0 for g in without_graph)
    assert torch.sqrt(sum((a - b).pow(2).sum() for a, b in zip(with_graph, without_graph))) > 1e-6

    # directional derivative along a random direction against a central difference
    direction = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in parameters]
    analytic = sum((g * d).sum() for g, d in zip(with_graph, direction))
    step = 1e-6
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, d in zip(parameters, direction):
                p.add_(sign * step * d)
        values.append(penalty(False).detach())
        with torch.no_grad():
            for p, d in zip(parameters, direction):
                p.sub_(sign * step * d)
    numeric = (values[0] - values[1]) / (2 * step)
    assert abs(analytic) > 1e-6
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-9), (analytic, numeric)


def test_baseline_loss_adds_the_weighted_penalty_to_the_label_cross_entropy():
    model = tiny_vit("plain", img_size=(16, 16), num_classes=3, depth=1, dtype=torch.float64)
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64).requires_grad_(True)
    logits = backbone_of(model).class_scores(images)
    labels = torch.tensor([1, 2])
    masks = _masks(2, 16)
    cross_entropy = F.cross_entropy(logits, labels)
    plain = baseline_loss("plain", logits, images, masks, labels, lambda_rrr=5.0,
                          lambda_gradmask=7.0)
    assert torch.equal(plain.total, cross_entropy) and plain.penalty == 0
    for objective, weight in ((Objective.rrr, 5.0), (Objective.gradmask, 7.0)):
        terms = baseline_loss(objective, logits, images, masks, labels, lambda_rrr=5.0,
                              lambda_gradmask=7.0)
        expected = _penalty(objective.value, logits, labels, images, background_weight(masks),
                            True)
        assert torch.allclose(terms.penalty, expected) and terms.penalty > 0
        assert torch.allclose(terms.total, cross_entropy + weight * expected)


def test_images_that_do_not_require_grad_are_named():
    images = torch.randn(1, 3, 8, 8)
    logits = images.flatten(1)[:, :3]
    with pytest.raises(ValueError, match="requires_grad_") as error:
        rrr_penalty(logits, images, background_weight(torch.zeros(1, 8, 8)))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="relevance_loss"):
        baseline_loss("relevance", logits, images, torch.zeros(1, 8, 8), torch.tensor([0]),
                      lambda_rrr=1.0, lambda_gradmask=1.0)
