"""The read-out and the method registry: the CLS read-out row is the indicator of the
class token and reads row 0 of any stack of matrices exactly; a layout names only a known
read-out; a method registers where it is defined (the decorator returns the function), and
the registry is complete whichever module is imported first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from robustft.backbones import TokenLayout
from robustft.relevance import RELEVANCE_METHODS, RelevanceOutput, register_method
from robustft.relevance.grad_rollout import rollout_cls_row, rollout_row
from robustft.relevance.readout import patch_grid, read_row, readout_row


def test_cls_readout_row_is_the_class_token_indicator():
    layout = TokenLayout(num_prefix_tokens=2, grid_size=(2, 3))
    row = readout_row(layout, 3, dtype=torch.float64, device=torch.device("cpu"))
    expected = torch.zeros(3, 1, 8, dtype=torch.float64)
    expected[:, 0, 0] = 1.0
    assert torch.equal(row, expected)


def test_read_row_is_row_zero_exactly():
    layout = TokenLayout(num_prefix_tokens=1, grid_size=(2, 2))
    matrices = torch.randn(3, 4, 5, 5)
    assert torch.equal(read_row(matrices, layout), matrices[:, :, 0, :])
    assert torch.equal(read_row(matrices[:, 0], layout), matrices[:, 0, 0, :])


def test_rollout_from_the_readout_row_equals_the_full_product():
    # R = (I + A2)(I + A1) formed in full; its CLS row over the patches, by hand
    torch.manual_seed(0)
    blocks = [torch.rand(2, 5, 5, dtype=torch.float64) for _ in range(2)]
    identity = torch.eye(5, dtype=torch.float64)
    full = (identity + blocks[1]) @ (identity + blocks[0])
    layout = TokenLayout(num_prefix_tokens=1, grid_size=(2, 2))
    start = readout_row(layout, 2, dtype=torch.float64, device=torch.device("cpu"))
    row = rollout_row(blocks, start)
    torch.testing.assert_close(row, full[:, 0, :])
    torch.testing.assert_close(rollout_cls_row(blocks), full[:, 0, :])
    assert torch.equal(patch_grid(row, layout), row[:, 1:].reshape(2, 2, 2))


def test_a_layout_names_only_a_known_readout():
    with pytest.raises(ValueError, match=r"^TokenLayout\.readout must be one of \('cls', 'avg', "
                                         r"'map'\), got 'mean'$"):
        TokenLayout(num_prefix_tokens=1, grid_size=(2, 2), readout="mean")


def test_average_readout_is_the_mean_of_the_pooled_rows():
    matrices = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    patches_only = TokenLayout(num_prefix_tokens=1, grid_size=(2, 3), readout="avg")
    every_token = TokenLayout(num_prefix_tokens=1, grid_size=(2, 3), readout="avg",
                              pool_prefix=True)
    by_hand = sum(matrices[:, :, i, :] for i in range(1, 7)) / 6
    torch.testing.assert_close(read_row(matrices, patches_only), by_hand)
    by_hand = sum(matrices[:, :, i, :] for i in range(7)) / 7
    torch.testing.assert_close(read_row(matrices, every_token), by_hand)


def test_attention_pool_readout_places_the_pool_row_on_the_pooled_tokens():
    layout = TokenLayout(num_prefix_tokens=2, grid_size=(1, 3), readout="map")
    pool = torch.tensor([[[0.2, 0.3, 0.5]]], dtype=torch.float64)
    row = readout_row(layout, 1, dtype=torch.float64, device=torch.device("cpu"), pool=pool)
    assert torch.equal(row, torch.tensor([[[0.0, 0.0, 0.2, 0.3, 0.5]]], dtype=torch.float64))
    with_prefix = TokenLayout(num_prefix_tokens=2, grid_size=(1, 1), readout="map",
                              pool_prefix=True)
    row = readout_row(with_prefix, 1, dtype=torch.float64, device=torch.device("cpu"), pool=pool)
    assert torch.equal(row, pool)
    with pytest.raises(ValueError, match=r"^the 'map' read-out needs the attention pool's "
                                         r"\(B, 1, P\) row over its 3 pooled tokens for 1 "
                                         r"images, got None$"):
        readout_row(layout, 1, dtype=torch.float64, device=torch.device("cpu"))


def test_the_decorator_registers_and_returns_the_method():
    def constant(model, images, target=None, gradient_mode="detached", *, backend="eager"):
        return RelevanceOutput(torch.zeros(len(images), 2, 2), torch.zeros(len(images), 3),
                               torch.zeros(len(images), dtype=torch.long))

    try:
        assert register_method("test_constant", differentiable=False)(constant) is constant
        assert RELEVANCE_METHODS["test_constant"].compute is constant
        assert not RELEVANCE_METHODS["test_constant"].differentiable
    finally:
        RELEVANCE_METHODS.pop("test_constant", None)


def test_the_registry_is_complete_whichever_module_is_imported_first():
    code = ("from robustft.relevance.methods import RELEVANCE_METHODS\n"
            "print(sorted(RELEVANCE_METHODS))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(["attn_gradcam", "grad_rollout", "input_x_gradient",
                                       "raw_attention", "rollout"])
