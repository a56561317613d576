"""The held-out recorder's swapped-background top-1 on models whose answer is known: one that
reads the object, one that reads the background."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from robustft.training.heldout_recorder import HeldOutRecorder

OBJECT_COLOURS = torch.tensor([0.1, 0.4, 0.7])
BACKGROUND_COLOURS = torch.tensor([0.9, 0.6, 0.3])


class ReadsOnePixel(nn.Module):
    """Scores each class by how close one pixel is to that class's colour."""

    def __init__(self, row: int, column: int, colours: Tensor) -> None:
        super().__init__()
        self.row, self.column, self.colours = row, column, colours
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, images: Tensor) -> Tensor:
        pixel = images[:, 0, self.row, self.column]
        return -(pixel[:, None] - self.colours[None]).abs()


def _batch(labels: list[int]) -> dict[str, Tensor]:
    label = torch.tensor(labels)
    images = BACKGROUND_COLOURS[label][:, None, None, None].expand(-1, 3, 12, 12).clone()
    masks = torch.zeros(len(labels), 12, 12)
    masks[:, 4:8, 4:8] = 1
    images[:, :, 4:8, 4:8] = OBJECT_COLOURS[label][:, None, None, None]
    return {"image": images, "mask": masks, "ignore": torch.zeros_like(masks, dtype=torch.bool),
            "label": label}


def _recorder() -> HeldOutRecorder:
    def explain(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return model(batch["image"]), batch["mask"]  # a map exactly on the object
    return HeldOutRecorder(explain, lambda model, images: model(images))


@pytest.mark.parametrize("batches", [[[0, 1, 2, 0, 1, 2]], [[0, 0, 0], [1, 1], [2]]])
def test_an_object_reader_is_right_on_every_swap_and_a_background_reader_on_none(batches):
    object_reader = ReadsOnePixel(5, 5, OBJECT_COLOURS)
    background_reader = ReadsOnePixel(0, 0, BACKGROUND_COLOURS)
    recorder = _recorder()
    for index, labels in enumerate(batches):  # class-ordered batches pair across batches
        recorder.record_pairs(object_reader, background_reader, _batch(labels), index, None, None)
    summary = recorder.summary(object_reader, background_reader)
    assert summary.swap_accuracy == 1.0 and summary.swap_accuracy_original == 0.0
    assert summary.pairs == 6 and summary.share == pytest.approx(1.0)
    # the next pass reuses the composites and the original's answers: the model's are new
    recorder.reset()
    for index, labels in enumerate(batches):
        recorder.record_pairs(background_reader, background_reader, _batch(labels), index, None, None)
    again = recorder.summary(background_reader, background_reader)
    assert again.swap_accuracy == 0.0 and again.swap_accuracy_original == 0.0
    # on the unswapped images both are right: the swap is what tells them apart
    assert summary.accuracy == 1.0 and summary.accuracy_original == 1.0


def test_one_class_has_no_swap_and_a_new_pass_starts_empty():
    reader = ReadsOnePixel(5, 5, OBJECT_COLOURS)
    recorder = _recorder()
    recorder.record_pairs(reader, reader, _batch([1, 1]), 0, None, None)
    assert math.isnan(recorder.summary(reader, reader).swap_accuracy)
    recorder.reset()
    assert recorder.summary(reader, reader) is None
