"""``robustft-eval``: evaluate several models on a suite of datasets, one pass per dataset
(configs/eval.yaml; the run: :func:`robustft.evaluation.run.run_evaluation`).

Examples::

    robustft-eval data_root=/data eval=paper \\
        models.baseline.name=vit_base_patch16_224.orig_in21k_ft_in1k \\
        +models.ft.checkpoint=logs/train/runs/x/checkpoints/best-<epoch>.ckpt \\
        +models.ft.name=vit_base_patch16_224.orig_in21k_ft_in1k
    robustft-eval ... protocol=legacy run_name=legacy      # the public code's protocol
    robustft-eval ... only=[imagenet-a,objectnet]          # a subset of the suite
    robustft-eval -m ... only=imagenet-a,objectnet         # one job (and dir) per dataset
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from robustft.cli.errors import one_line_errors
from robustft.evaluation.run import run_evaluation


@one_line_errors("robustft-eval")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    run_evaluation(cfg)


if __name__ == "__main__":  # pragma: no cover
    main()
