"""``robustft-compare``: every training objective on the same draws of the demo's
fine-tuning images, against the original stand-in and a shortcut-free reference
(configs/compare.yaml; the run and what it writes: :mod:`robustft.demo.comparison`)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from robustft.cli.common import prepare_environment
from robustft.cli.errors import one_line_errors
from robustft.demo.comparison import run_comparison
from robustft.schemas.compose import typed_overrides


@one_line_errors("robustft-compare")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="compare")
def main(cfg: DictConfig) -> None:
    prepare_environment()
    run_comparison(cfg, typed_overrides(HydraConfig.get()))


if __name__ == "__main__":
    main()
