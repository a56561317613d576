"""Lightning DDP on CPU (gloo, 2 processes): the relevance step, including the second-order
mode, runs under DistributedDataParallel and rank 0 writes the checkpoints.

Marked slow: strategy="ddp" re-executes the launching command, so it runs in a subprocess
(~25 s), and Lightning's CPU DDP occasionally aborts at interpreter exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import sys
    from hydra import compose, initialize_config_module
    from robustft.training.run import train

    root, run = sys.argv[1], sys.argv[2]
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"data.root={root}", "data.num_workers=0", f"paths.output_dir={run}",
            "model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.num_classes=4",
            "++model.kwargs.img_size=32", "++model.kwargs.patch_size=8", "++model.kwargs.depth=2",
            "++model.kwargs.embed_dim=32", "++model.kwargs.num_heads=2", "trainer=cpu",
            "trainer.devices=2", "+trainer.strategy=ddp", "trainer.max_epochs=2",
            "relevance.gradient_mode=second_order", "validate_best=false", "logger=csv"])
    result = train(cfg)
    print("RANK_DONE", result.metrics["train/loss"] > 0)
''')


@pytest.mark.slow
def test_two_process_ddp_second_order(tmp_path):
    from fixtures.generic_layout import make_generic_layout

    root = make_generic_layout(tmp_path / "pairs", num_classes=4, per_class=4, size=(36, 36))
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    completed = subprocess.run(
        [sys.executable, str(script), str(root), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
             "PYTHONPATH": str(Path(__file__).parents[1])})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("RANK_DONE True") == 2
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
