"""benchmarks/baseline_weights.py (where experiment=demo's baseline weights come from) runs on
a miniature benchmark with a random stand-in, so it does not rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors.torch import save_file

from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import build_model

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline_weights.py"
MINIATURE = ["++data.synth.num_classes=4", "++data.synth.train_per_class=4",
             "++data.synth.pretrain_per_class=4", "++data.synth.eval_per_class=4",
             "model.num_classes=4", "model.kwargs.depth=1", "model.kwargs.embed_dim=32"]


def _script():
    spec = importlib.util.spec_from_file_location("baseline_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_weights_are_the_ratio_of_gradient_norms(tmp_path, capsys):
    script = _script()
    overrides = [f"paths.root_dir={tmp_path}", *MINIATURE]
    with pytest.raises(FileNotFoundError, match=r"model\.weights_file"):
        script.measure(overrides)
    cfg = script._demo_config(overrides)
    prepare_generated_data(cfg.data)
    model = build_model(OmegaConf.merge(cfg.model, {"weights_file": None}))
    weights = Path(cfg.model.weights_file)
    weights.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    values = script.measure(overrides)
    assert values["rrr_grad"] > 0 and values["gradmask_grad"] > 0 and values["relevance_grad"] > 0
    found = script.main(["--seeds", "0", *overrides])
    assert found["rrr"] == pytest.approx(values["relevance_grad"] / values["rrr_grad"])
    assert found["gradmask"] == pytest.approx(values["relevance_grad"] / values["gradmask_grad"])
    assert "lambda_rrr" in capsys.readouterr().out
