"""``robustft-train``: relevance-guided fine-tuning from a Hydra config (configs/train.yaml)."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from robustft.cli.common import continue_requeued_job, prepare_environment
from robustft.cli.errors import one_line_errors
from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import check_training_config, train

log = logging.getLogger(__name__)


@one_line_errors("robustft-train")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    prepare_environment()
    check_training_config(cfg)  # before generating a benchmark (data=synth)
    prepare_generated_data(cfg.data)
    if cfg.get("ckpt_path") == "last" and HydraConfig.get().mode == RunMode.MULTIRUN:
        # a sweep job runs in <sweep>/<n>, not in the run it would resume
        raise ValueError("ckpt_path=last resumes a single run, not a -m sweep job: give each job "
                         "its file, ckpt_path=<run>/checkpoints/last.ckpt")
    continue_requeued_job(cfg)
    result = train(cfg)
    log.info("best checkpoint: %s", result.best_checkpoint)
    log.info("last checkpoint: %s", result.last_checkpoint)
    if result.selection is not None:
        log.info("selected checkpoint: %s", result.selected_checkpoint or "none: the original model")
        log.info(result.selection["verdict"])
    # Returned for Hydra sweepers (e.g. Optuna) that minimise the validation loss.
    return result.metrics.get("best/val/loss", result.metrics.get("val/loss"))


if __name__ == "__main__":
    main()
