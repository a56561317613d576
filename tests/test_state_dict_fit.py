"""The one-line description of weights that do not fit a model: what torch's strict load
refuses, counted and with the first differing tensor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustft.state_dict_fit import compare_state_dicts, mismatch_from_load_error


def _pair():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    other = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2), nn.Linear(2, 2))
    weights = {k: v for k, v in other.state_dict().items() if k != "1.bias"}
    return model, weights


def test_compare_agrees_with_torchs_strict_load():
    model, weights = _pair()
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(weights, strict=True)
    parsed = mismatch_from_load_error(error.value)
    compared = compare_state_dicts(model.state_dict(), weights)
    assert parsed == compared
    assert compared.shapes == [("0.weight", (3, 5), (3, 4))]
    assert compared.missing == ["1.bias"]
    assert sorted(compared.unexpected) == ["2.bias", "2.weight"]


def test_describe_is_one_line_with_counts_and_both_shapes():
    model, weights = _pair()
    text = compare_state_dicts(model.state_dict(), weights).describe("checkpoint")
    assert text == ("1 tensor differ, e.g. 0.weight: checkpoint (3, 5) vs model (3, 4); "
                    "1 model tensor missing from the checkpoint (e.g. 1.bias); "
                    "2 tensors of the checkpoint not in the model (e.g. 2.weight)")


def test_fitting_weights_and_other_errors_give_no_mismatch():
    model, _ = _pair()
    assert not compare_state_dicts(model.state_dict(), model.state_dict())
    assert mismatch_from_load_error(RuntimeError("CUDA out of memory")) is None
    assert mismatch_from_load_error(ValueError("Error(s) in loading state_dict")) is None
    assert compare_state_dicts({"b": torch.zeros(7)}, {"b": torch.zeros(2)}).describe() == (
        "1 tensor differ, e.g. b: checkpoint (2,) vs model (7,)")
