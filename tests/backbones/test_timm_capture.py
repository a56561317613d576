"""The timm family's attention capture leaves the model as it found it: each block's
own ``fused_attn`` flag restored and no hook left, after a relevance step and after an error
inside one; the captured forward's logits are the fused forward's."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_vit

from robustft.relevance import relevance_map


def test_fused_attention_restored_and_logits_match_fused_path():
    model = tiny_vit("plain", depth=3)
    flags = [True, False, True]
    for block, flag in zip(model.blocks, flags):
        block.attn.fused_attn = flag
    images = torch.randn(2, 3, 32, 32)
    out = relevance_map(model, images)
    assert [b.attn.fused_attn for b in model.blocks] == flags
    for block in model.blocks:
        block.attn.fused_attn = True
    with torch.no_grad():
        fused_logits = model(images)
    torch.testing.assert_close(out.logits.detach(), fused_logits, rtol=0, atol=1e-5)


def test_fused_attention_restored_after_error():
    model = tiny_vit("plain")
    handle = model.blocks[1].register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        relevance_map(model, torch.randn(1, 3, 32, 32))
    handle.remove()
    assert all(b.attn.fused_attn for b in model.blocks)
    assert all(len(b.attn.attn_drop._forward_hooks) == 0 for b in model.blocks)
