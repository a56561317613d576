"""A trial's value is what its held-out selection maximised, read from its selection summary."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from robustft.training.run import TrainResult
from robustft.training.tune import _trial_record, choose_trial


def _result(objective: str, epoch: int | None, share: float, swap: float | None) -> TrainResult:
    record = {"share": share, "share_original": 0.40, "share_gain": share - 0.40,
              "share_margin": 0.02, "agreement": 1.0, "kl": 0.01, "accuracy": 0.9,
              "swap_accuracy": swap, "swap_accuracy_original": None if swap is None else 0.30}
    selection = {"chosen": "original" if epoch is None else f"epoch {epoch}", "epoch": epoch,
                 "checkpoint": None if epoch is None else "selected.ckpt", "objective": objective,
                 "clearly_improved": epoch is not None, "record": record}
    return TrainResult(None, None, {}, Path("run"), None, selection)


def test_the_swap_objective_values_a_trial_by_its_swapped_top1():
    trials = [_trial_record(0, {"lr": 1e-4}, _result("swap_accuracy", 2, 0.70, 0.55), 1.0),
              _trial_record(1, {"lr": 3e-4}, _result("swap_accuracy", 1, 0.60, 0.80), 1.0)]
    assert [t.value for t in trials] == [0.55, 0.80]
    assert trials[0].share == 0.70
    assert choose_trial(trials).number == 1  # the lower share, the better decisions


def test_a_trial_that_kept_the_original_is_valued_at_the_originals():
    trial = _trial_record(0, {}, _result("swap_accuracy", None, 0.45, 0.50), 1.0)
    assert trial.value == pytest.approx(0.30) and trial.share == pytest.approx(0.40)
    assert choose_trial([trial]) is None


def test_with_one_class_the_swap_objective_is_the_share():
    trial = _trial_record(0, {}, _result("swap_accuracy", 3, 0.65, None), 1.0)
    assert trial.objective == "share" and trial.value == 0.65
    assert math.isnan(trial.swap_accuracy)
