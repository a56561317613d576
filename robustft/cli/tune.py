"""``robustft-tune``: the fine-tuning recipe chosen on the user's own held-out masks
(configs/tune.yaml; the search itself is :mod:`robustft.training.tune`)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from robustft.cli.common import prepare_environment
from robustft.cli.errors import one_line_errors
from robustft.schemas.checks import check_config, typed_group
from robustft.schemas.compose import compose_run, typed_overrides
from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import TrainResult, train
from robustft.training.tune import (
    prune_search,
    prune_trial,
    run_search,
    searched_keys,
    trials_markdown,
    write_search,
)

log = logging.getLogger(__name__)


def _keys(overrides: list[str]) -> list[str]:
    return [override.key_or_group for override in OverridesParser.create().parse_overrides(overrides)]


def reproducing_overrides(task_overrides: list[str], searched: set[str]) -> list[str]:
    """The run's command-line overrides that ``tuned.yaml`` does not replace: everything but
    the experiment (tuned.yaml builds on it), the searched keys, the run's length and the
    search's own settings (``tune.*``, ``hydra.*``)."""
    replaced = searched | {"experiment", "trainer.max_epochs"}
    return [override for override, key in zip(task_overrides, _keys(task_overrides), strict=True)
            if key not in replaced and not key.startswith(("tune.", "hydra.")) and key != "tune"]


@one_line_errors("robustft-tune")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="tune")
def main(cfg: DictConfig) -> None:
    prepare_environment()
    check_config(cfg)
    settings = typed_group(cfg, "tune")
    prepare_generated_data(cfg.data)
    output_dir = Path(cfg.paths.output_dir)
    hydra_cfg = HydraConfig.get()
    task_overrides = typed_overrides(hydra_cfg)

    def train_trial(overrides: list[str], trial_dir: Path) -> TrainResult:
        run = compose_run("tune", [*task_overrides, *overrides,
                                   f"paths.output_dir={trial_dir}", "validate_best=false"])
        result = train(run)
        prune_trial(result, settings.keep_checkpoints)
        return result

    searched = searched_keys(settings.search)
    base_values = {key: OmegaConf.select(cfg, key) for key in searched}
    result = run_search(train_trial, settings, output_dir, base_values)
    if not settings.keep_checkpoints:
        prune_search(result)
    written = write_search(result, output_dir, hydra_cfg.runtime.choices.get("experiment"),
                           reproducing_overrides(task_overrides, set(searched)))
    text = trials_markdown(result)
    (output_dir / "trials.md").write_text(text)
    print("\n" + text)
    if "reproduce" in written:
        print(f"tuned recipe: {written['experiment']}\nreproduce: {written['reproduce'].read_text().strip()}")
    print(f"run directory: {output_dir}")


if __name__ == "__main__":
    main()
