"""RelevanceFinetuner: frozen parameters stay exactly as they were, the rest trains."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_vit

from robustft.training.module import RelevanceFinetuner


def _batch(num_classes: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 32, 32)
    masks[:, 8:24, 8:24] = 1.0
    return {"image": torch.randn(4, 3, 32, 32, generator=generator), "mask": masks,
            "ignore": torch.zeros(4, 32, 32, dtype=torch.bool),
            "label": torch.arange(4) % num_classes}


def test_frozen_prefixes_are_not_trained() -> None:
    torch.manual_seed(0)
    model = tiny_vit("plain", img_size=(32, 32))
    module = RelevanceFinetuner(model, lr=1e-2, frozen=["head"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all((id(p) in trained) != name.startswith("head")
               for name, p in model.named_parameters())
    module.log_dict = lambda *args, **kwargs: None  # no Trainer attached
    for _ in range(3):
        loss = module.training_step(_batch(), 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed != name.startswith("head"), name


def test_unknown_frozen_prefix_is_named() -> None:
    with pytest.raises(ValueError, match="'hed' matches no parameter"):
        RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32)), frozen=["hed"])
