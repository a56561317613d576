"""timm ViTs without a class token end to end: a ``global_pool='avg'`` ViT (the ``*_gap_*``
models) and a ``global_pool='map'`` one (SigLIP's attention pool) fine-tune one
``fast_dev_run`` step with the relevance loss and are explained by ``robustft-explain``;
the maps themselves are checked against a brute force in
``tests/relevance/test_pooled_readout.py``."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module

from robustft.cli.explain import run_explain
from robustft.training.run import train

POOLINGS = {
    "avg": ["++model.kwargs.class_token=false", "++model.kwargs.global_pool=avg",
            "++model.kwargs.fc_norm=true"],
    "map": ["++model.kwargs.class_token=false", "++model.kwargs.global_pool=map"],
}
TINY = ["model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.weights_file=null",
        "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=2",
        "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2"]


def _compose(config: str, overrides: list[str]):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose(config, overrides=overrides)


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_fast_dev_run_trains_with_the_relevance_loss(pooling, tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=3, size=(36, 36))
    cfg = _compose("train", [f"data.root={root}", "data.num_workers=0", "debug=fast_dev_run",
                             f"paths.output_dir={tmp_path / 'run'}", "model.num_classes=4",
                             "trainer=cpu", *TINY, *POOLINGS[pooling]])
    result = train(cfg)
    assert result.metrics["train/loss"] > 0
    assert result.metrics["train/seg"] > 0  # the relevance terms ran on the pooled read-out


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_explain_writes_the_maps(pooling, tmp_path):
    pairs = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=1, size=(32, 32))
    result = run_explain(_compose("explain", [
        f"image={pairs}", f"output_dir={tmp_path / 'out'}", "device=cpu", "progress=false",
        "model.num_classes=2", "methods=[grad_rollout,rollout]", *TINY, *POOLINGS[pooling]]))
    assert len(result.maps) == 2 * 2
    for explained in result.maps:
        maps = np.load(tmp_path / "out" / explained.npy)
        assert maps.shape[-2:] == (4, 4) and np.isfinite(maps).all() and maps.max() > 0
