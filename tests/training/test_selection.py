"""The held-out checkpoint selection on hand-made tables, and its callback's state."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from robustft.training.selection import EpochRecord, HeldOutSelection, select_epoch, verdict_line


def _row(epoch: int, share: float, agreement: float = 1.0, margin: float = 0.02,
         original: float = 0.5) -> EpochRecord:
    return EpochRecord(share=share, share_original=original, share_gain=share - original,
                       share_margin=margin, ap=0.7, iou=0.5, agreement=agreement, kl=0.01,
                       accuracy=0.9, accuracy_original=0.9, pairs=100, images=200, epoch=epoch)


def test_the_best_share_among_epochs_that_keep_the_agreement():
    table = [_row(0, 0.55), _row(1, 0.62, agreement=0.995), _row(2, 0.70, agreement=0.97),
             _row(3, 0.60)]
    result = select_epoch(table, agreement_tolerance=0.01)
    assert result.epoch == 1 and result.clearly_improved
    # a looser tolerance admits epoch 2
    assert select_epoch(table, agreement_tolerance=0.05).epoch == 2


def test_ties_take_the_earliest_epoch():
    assert select_epoch([_row(4, 0.6), _row(2, 0.6), _row(7, 0.6)]).epoch == 2


def test_the_original_when_no_epoch_keeps_the_agreement_or_raises_the_share():
    drifting = [_row(0, 0.8, agreement=0.9), _row(1, 0.9, agreement=0.5)]
    result = select_epoch(drifting)
    assert result.epoch is None and result.record is None and "agreement" in result.reason
    assert "original model" in verdict_line(result, 0.01)
    lower = [_row(0, 0.45), _row(1, 0.5)]
    result = select_epoch(lower)
    assert result.epoch is None and result.record.epoch == 1


def test_a_gain_within_the_margin_is_said_not_to_be_clear():
    result = select_epoch([_row(0, 0.51, margin=0.03)])
    assert result.epoch == 0 and not result.clearly_improved
    assert "NOT clearly above the original" in verdict_line(result, 0.01)


def test_a_tolerance_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="agreement_tolerance"):
        select_epoch([_row(0, 0.6)], agreement_tolerance=1.5)
    with pytest.raises(ValueError, match="callbacks.heldout_selection.agreement_tolerance"):
        HeldOutSelection("x", agreement_tolerance=-0.1)


def test_the_callback_state_round_trips_and_decides_again(tmp_path):
    callback = HeldOutSelection(str(tmp_path))
    callback.records = [_swap_row(0, 0.6, 0.4), _swap_row(1, 0.65, 0.5)]
    restored = HeldOutSelection(str(tmp_path))
    restored.load_state_dict(json.loads(json.dumps(callback.state_dict())))
    assert restored.records == callback.records
    assert restored.result.epoch == 1
    summary = restored.summary()
    assert summary["checkpoint"] == str(tmp_path / "selected.ckpt")
    assert summary["record"]["share"] == pytest.approx(0.65)
    assert replace(restored.records[0], share=0.7) != restored.records[0]


def test_the_epochs_are_plotted_with_the_selected_one_marked(tmp_path):
    from PIL import Image

    from robustft.training.heldout_plot import plot_heldout

    path = plot_heldout([_row(1, 0.62), _row(0, 0.55)], tmp_path / "p.png", selected=1,
                        agreement_floor=0.99)
    with Image.open(path) as picture:
        assert picture.size[0] > picture.size[1] > 100


def _swap_row(epoch: int, share: float, swap: float, agreement: float = 1.0,
              swap_original: float = 0.3) -> EpochRecord:
    return replace(_row(epoch, share, agreement), swap_accuracy=swap,
                   swap_accuracy_original=swap_original)


def test_the_swap_objective_takes_the_best_swapped_top1_among_epochs_that_raise_the_share():
    table = [_swap_row(0, 0.62, 0.40), _swap_row(1, 0.55, 0.70),
             _swap_row(2, 0.48, 0.90),                    # share below the original's 0.5
             _swap_row(3, 0.70, 0.95, agreement=0.90),    # decisions moved
             _swap_row(4, 0.60, 0.60)]
    assert select_epoch(table, objective="swap_accuracy").epoch == 1
    assert select_epoch(table, objective="share").epoch == 0


def test_the_swap_objective_keeps_the_original_when_no_epoch_raises_the_swapped_top1():
    table = [_swap_row(0, 0.62, 0.30), _swap_row(1, 0.58, 0.25)]
    result = select_epoch(table, objective="swap_accuracy")
    assert result.epoch is None and "swapped backgrounds" in result.reason


def test_the_swap_objective_falls_back_to_the_share_with_one_class():
    table = [_row(0, 0.55), _row(1, 0.62)]  # swap_accuracy NaN: nothing to recombine
    assert select_epoch(table, objective="swap_accuracy").epoch == 1


def test_an_unknown_objective_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="callbacks.heldout_selection.objective"):
        HeldOutSelection(str(tmp_path), objective="accuracy")


def test_records_written_before_the_swap_measures_still_load(tmp_path):
    callback = HeldOutSelection(str(tmp_path), objective="swap_accuracy")
    old = {k: v for k, v in _row(0, 0.6).__dict__.items()
           if k not in ("swap_accuracy", "swap_accuracy_original")}
    callback.load_state_dict({"records": [old]})
    assert callback.result.epoch == 0
