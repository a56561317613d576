"""The exact-resume tests' shared data and uninterrupted reference run (computed once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.exact_resume import load_checkpoint, robustft_train, run_dirs
from fixtures.generic_layout import make_generic_layout


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return make_generic_layout(tmp_path_factory.mktemp("pairs"), num_classes=4, per_class=4,
                               size=(36, 36))


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_root) -> dict:
    """The reference: the run never interrupted, with ``num_workers=0``: its last.ckpt."""
    root_dir = tmp_path_factory.mktemp("uninterrupted")
    completed = robustft_train(root_dir, data_root, "data.num_workers=0")
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(root_dir)
    return load_checkpoint(run / "checkpoints" / "last.ckpt")
