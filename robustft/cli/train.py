"""``robustft-train``: relevance-guided fine-tuning from a Hydra config (configs/train.yaml)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from robustft.cli.common import prepare_environment, prepare_generated_data
from robustft.cli.errors import one_line_errors
from robustft.training.run import train

log = logging.getLogger(__name__)


@one_line_errors("robustft-train")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    prepare_environment()
    prepare_generated_data(cfg.data)
    result = train(cfg)
    log.info("best checkpoint: %s", result.best_checkpoint)
    log.info("last checkpoint: %s", result.last_checkpoint)
    # Returned for Hydra sweepers (e.g. Optuna) that minimise the validation loss.
    return result.metrics.get("best/val/loss", result.metrics.get("val/loss"))


if __name__ == "__main__":
    main()
