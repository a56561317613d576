"""The timm models robustft does not explain are refused in one line that says why."""

from __future__ import annotations

import re

import pytest
import torch

from robustft.backbones import create_model
from robustft.relevance import relevance_map

REFUSED = [
    ("xcit_nano_12_p16_224", dict(img_size=32, depth=1, embed_dim=32, num_heads=2),
     r"XCiT's cross-covariance attention mixes channels, not tokens: there is no "
     r"token-to-token attention to roll out$"),
    ("swin_tiny_patch4_window7_224", dict(img_size=32, depths=(1, 1), num_heads=(1, 2),
                                          embed_dim=16, window_size=4),
     r"Swin attends within \(shifted\) windows and merges patches between stages: no one "
     r"token sequence runs through every block$"),
    ("samvit_base_patch16", dict(img_size=32, depth=1, embed_dim=32, num_heads=2,
                                 global_attn_indexes=(), num_classes=3, global_pool="avg"),
     r"SAM's image encoder attends within windows in most blocks: its attention is not "
     r"token-to-token over the whole image$"),
]


@pytest.mark.parametrize(("name", "kwargs", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refusal_is_one_line_naming_why(name, kwargs, why):
    model = create_model(name, **{"num_classes": 3, **kwargs}).eval()
    with pytest.raises(TypeError) as error:
        relevance_map(model, torch.randn(1, 3, 32, 32))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{type(model).__module__}.{type(model).__name__} is not a model "
                              "robustft can explain: ")
    assert re.search(why, message), message
