"""benchmarks/demo_library_loop.py, the plain-PyTorch harness behind
docs/demo_measurements.md, on a miniature benchmark: it fine-tunes and reports, so it
does not rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors.torch import save_file

from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import build_model

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_library_loop.py"
MINIATURE = ["++data.synth.num_classes=4", "++data.synth.train_per_class=4",
             "++data.synth.pretrain_per_class=4", "++data.synth.eval_per_class=4",
             "model.num_classes=4", "model.kwargs.depth=1", "model.kwargs.embed_dim=32",
             "trainer.max_epochs=2"]


def _harness():
    spec = importlib.util.spec_from_file_location("demo_library_loop", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A miniature benchmark and a random stand-in where the demo would have left them."""
    root = tmp_path_factory.mktemp("demo_root")
    cfg = _harness().demo_config([f"paths.root_dir={root}", *MINIATURE])
    prepare_generated_data(cfg.data)
    model = build_model(OmegaConf.merge(cfg.model, {"weights_file": None}))
    weights = Path(cfg.model.weights_file)
    weights.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return root


def test_the_loop_fine_tunes_and_reports_three_splits(root, capsys):
    harness = _harness()
    overrides = [f"paths.root_dir={root}", *MINIATURE]
    results = harness.main(["--images", "6", *overrides, "optim.optimizer.lr=1e-2"])
    assert set(results) == {"in_distribution", "shuffled", "anti_correlated"}
    printed = capsys.readouterr().out
    assert "6 images, 2 epochs" in printed and "anti_correlated" in printed
    for (top1, share), _after in results.values():
        assert 0 <= top1 <= 100 and 0 <= share <= 1
    # lr 1e-2 moves the relevance; lr 0 leaves the stand-in exactly as it was
    assert any(before[1] != after[1] for before, after in results.values())
    frozen = harness.main(["--images", "6", *overrides, "optim.optimizer.lr=0.0"])
    assert all(before == after for before, after in frozen.values())


def test_a_missing_stand_in_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.weights_file.*robustft-demo") as error:
        _harness().main([f"paths.root_dir={tmp_path}"])
    assert "\n" not in str(error.value)
