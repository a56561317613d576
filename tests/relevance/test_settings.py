"""The post-processing every map shares (docs/method.md §1, step 7): bilinear upsampling
and per-image min-max normalisation, a constant map giving zeros."""

from __future__ import annotations

import torch

from robustft.relevance import upsample_and_normalize


def test_upsample_and_normalize():
    constant = torch.full((2, 3, 3), 0.7)
    out = upsample_and_normalize(constant, (6, 6))
    assert torch.equal(out, torch.zeros(2, 6, 6))
    ramp = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    out = upsample_and_normalize(ramp, (4, 4))
    assert out.shape == (1, 4, 4)
    assert out.min() == 0 and out.max() == 1
    # align_corners=False: output column 1 samples source x = 0.25 (0.75*0 + 0.25*1), and
    # the border pixels clamp to the source corners, so the range stays [0, 3].
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([0.0, 0.25 / 3.0]))
