"""``robustft-tune``: the fine-tuning recipe chosen on the user's own held-out masks
(configs/tune.yaml; the run is :mod:`robustft.training.tune_run`, the search itself
:mod:`robustft.training.tune`)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from robustft.cli.common import prepare_environment
from robustft.cli.errors import one_line_errors
from robustft.schemas.compose import typed_overrides
from robustft.training.tune_run import run_tune


@one_line_errors("robustft-tune")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="tune")
def main(cfg: DictConfig) -> None:
    prepare_environment()
    hydra_cfg = HydraConfig.get()
    run_tune(cfg, typed_overrides(hydra_cfg), hydra_cfg.runtime.choices.get("experiment"))


if __name__ == "__main__":
    main()
