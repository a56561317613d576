"""The perturbation test: a hand-computed tiny case, and a constructed model whose decision
depends only on a known pixel block, explained by a relevance method registered here that
returns a known map, so that the curves and AUCs are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms as T

from robustft.evaluation.metrics.map_scoring import ExplanationSettings
from robustft.evaluation.metrics.perturbation_curves import (
    PerturbationCurves,
    check_fractions,
    perturb,
    perturbation_auc,
    removal_order,
)
from robustft.evaluation.runner import evaluate_models
from robustft.labels import identity_protocol
from robustft.relevance import RELEVANCE_METHODS, RelevanceChoice, RelevanceOutput, register_method

SIZE = 8  # 8 x 8 images: 64 pixels
BLOCK = (slice(2, 6), slice(2, 6))  # the 16 pixels the model looks at


def test_perturb_by_hand() -> None:
    images = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)  # 2 channels
    relevance = torch.tensor([[[0.9, 0.1], [0.5, 0.3]]])
    fill = torch.tensor([-1.0, -2.0])
    positive = perturb(images, removal_order(relevance, "positive"), 0.5, fill)
    negative = perturb(images, removal_order(relevance, "negative"), 0.5, fill)
    # int(0.5 * 4) = 2 pixels: positive removes the 0.9 and 0.5 pixels, negative 0.1 and 0.3
    assert positive.tolist() == [[[[-1, 1], [-1, 3]], [[-2, 5], [-2, 7]]]]
    assert negative.tolist() == [[[[0, -1], [2, -1]], [[4, -2], [6, -2]]]]
    assert torch.equal(perturb(images, removal_order(relevance, "positive"), 0.2, fill), images)
    assert images[0, 0, 0, 0] == 0  # the input is not modified
    # trapezoid over the stated grid: 0.5 * (100 + 50) / 2 + 0.5 * (50 + 0) / 2
    assert perturbation_auc([0.0, 0.5, 1.0 - 1e-9], [100, 50, 0]) == pytest.approx(50.0)


def test_bad_fractions_name_the_key() -> None:
    for fractions in ([0.5], [0.0, 0.5, 0.3], [0.0, 1.0]):
        with pytest.raises(ValueError, match="perturbation.fractions") as error:
            check_fractions(fractions)
        assert "\n" not in str(error.value)


class BlockMeanClassifier(nn.Module):
    """Class 1 iff the mean of channel 0 over the 4 x 4 centre block is > 0 (normalised
    input); nothing else of the image matters."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        block = images[:, 0, BLOCK[0], BLOCK[1]].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(block), block], dim=1)


def known_map(batch: int) -> torch.Tensor:
    """Distinct values: the block's 16 pixels above every other pixel."""
    values = torch.arange(SIZE * SIZE, dtype=torch.float32).view(SIZE, SIZE) / 1000
    values[BLOCK] += 1.0
    return values.expand(batch, SIZE, SIZE).clone()


def block_map_method(model, images, target, gradient_mode, *, backend):
    logits = model(images)
    return RelevanceOutput(known_map(len(images)), logits, target)


@pytest.fixture
def block_method():
    register_method("test_block_map", block_map_method, differentiable=False)
    yield "test_block_map"
    RELEVANCE_METHODS.pop("test_block_map")


class BrightOrDark(Dataset):
    """Two white images (label 1) and two black ones (label 0), 8 x 8 RGB."""

    name = "bright_or_dark"
    protocol = identity_protocol(2)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        value = 255 if index < 2 else 0
        return Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8)), int(index < 2), {}


def test_curves_and_auc_of_a_model_that_reads_one_block(block_method) -> None:
    # mean = std = 0.5: white is +1, a removed pixel (0 before normalisation) is -1, so the
    # block mean stays > 0 while fewer than 8 of its 16 pixels are removed.
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    settings = ExplanationSettings(metrics=("top1", "perturbation"),
                                   relevance=RelevanceChoice(block_method))
    rows = evaluate_models({"block": BlockMeanClassifier()}, BrightOrDark(),
                           transforms={"block": transform}, batch_size=3, num_workers=0,
                           progress=False, explanations=settings)
    value = {(r["metric"], r["factor_value"]): r["value"] for r in rows}
    fractions = [f"{p / 10:g}" for p in range(10)]
    positive = [value[("test_block_map:perturbation_positive", f)] for f in fractions]
    negative = [value[("test_block_map:perturbation_negative", f)] for f in fractions]
    # positive: int(p * 64) most relevant pixels = block pixels: 6 at p=0.1 (kept), 12 at 0.2;
    # the black images stay class 0 whatever is removed
    assert positive == [100.0, 100.0] + [50.0] * 8
    # negative: the 48 other pixels first; at p=0.8 51 pixels (3 of the block), at 0.9 57 (9)
    assert negative == [100.0] * 9 + [50.0]
    assert value[("test_block_map:perturbation_positive_auc", "")] == pytest.approx(
        10 + 7.5 + 7 * 5)
    assert value[("test_block_map:perturbation_negative_auc", "")] == pytest.approx(80 + 7.5)
    assert value[("top1", "")] == 100.0
    assert {r["num_images"] for r in rows} == {4}


def test_removal_value_and_grid_are_settings(block_method) -> None:
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    # removal value 0.75 is +0.5 after normalisation: white block pixels stay positive (the
    # white images keep class 1), black ones turn positive (class 1 once enough are removed)
    settings = ExplanationSettings(metrics=("perturbation",), relevance=RelevanceChoice(block_method),
                                   fractions=(0.0, 0.5, 0.9), removal_value=0.75)
    rows = evaluate_models({"block": BlockMeanClassifier()}, BrightOrDark(),
                           transforms={"block": transform}, num_workers=0, progress=False,
                           explanations=settings)
    value = {(r["metric"], r["factor_value"]): r["value"] for r in rows}
    curve = [value[("test_block_map:perturbation_positive", f)] for f in ("0", "0.5", "0.9")]
    assert curve == [100.0, 50.0, 50.0]  # p=0.5: all 16 block pixels of the black images
    # negative at 0.9: 9 block pixels at +0.5 and 7 at -1, mean < 0: still class 0 (with the
    # default removal value 0 the white images would fail here)
    assert value[("test_block_map:perturbation_negative", "0.9")] == 100.0
    assert value[("test_block_map:perturbation_positive_auc", "")] == pytest.approx(37.5 + 20)
    assert value[("test_block_map:perturbation_negative_auc", "")] == pytest.approx(90.0)
    assert "top1" not in {r["metric"] for r in rows}


def test_curves_accumulate_over_batches() -> None:
    curves = PerturbationCurves([0.0, 0.5], fill=torch.zeros(1))
    images = torch.ones(2, 1, 2, 2)
    relevance = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]).expand(2, 2, 2)

    def classify(x):  # class 1 iff pixel (0, 1) survives
        return torch.stack([torch.full_like(x[:, 0, 0, 1], 0.5), x[:, 0, 0, 1]], dim=1)

    curves.update(images, relevance, torch.tensor([1, 1]), classify)
    curves.update(images[:1], relevance[:1], torch.tensor([0]), classify)
    # positive at 0.5 removes (0, 0) then (0, 1) (stable order): class 0
    assert curves.accuracies("positive") == pytest.approx([200 / 3, 100 / 3])
    # negative at 0.5 removes (0, 1), (1, 0) (the least relevant, in pixel order)
    assert curves.accuracies("negative") == pytest.approx([200 / 3, 100 / 3])
