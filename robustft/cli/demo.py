"""``robustft-demo``: the whole method on the generated benchmark, offline, in minutes
(configs/demo.yaml; the steps: :mod:`robustft.demo.run`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from robustft.cli.common import continue_requeued_job, prepare_environment
from robustft.cli.errors import one_line_errors
from robustft.demo.run import run_demo


@one_line_errors("robustft-demo")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    prepare_environment()
    continue_requeued_job(cfg)  # a requeued sweep job fine-tunes on from its last checkpoint
    run_demo(cfg)


if __name__ == "__main__":
    main()
