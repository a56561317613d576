"""``robustft-explain``: relevance maps of your images, for several models, methods and
explained classes, as PNG grids, ``.npy`` maps and an ``index.md``.

Examples::

    robustft-explain image=cat.jpg model.name=vit_base_patch16_224.augreg_in21k_ft_in1k
    robustft-explain image=cat.jpg model.name=... 'classes=[tabby,"Egyptian cat"]'
    robustft-explain image=data/synth/shuffled max_images=8 target=topk k=2 \\
        +models.before.checkpoint=a.ckpt +models.after.checkpoint=b.ckpt

Config: ``configs/explain.yaml``; the run: :func:`robustft.evaluation.explain.run.run_explain`.
Everything goes to the Hydra run directory (``logs/explain/runs/<date>_<time>/`` by
default, ``output_dir=...`` elsewhere).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from robustft.cli.errors import one_line_errors
from robustft.evaluation.explain.run import run_explain


@one_line_errors("robustft-explain")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="explain")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    run_explain(cfg)


if __name__ == "__main__":  # pragma: no cover
    main()
