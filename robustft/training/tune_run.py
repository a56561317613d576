"""The run of ``robustft-tune`` (:func:`run_tune`): the search of :mod:`robustft.training.tune`
over trials that are ``robustft-train`` runs of the same config, then what it writes (the
trials' table, the chosen recipe and the command that reproduces it)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from robustft.schemas.checks import check_config, typed_group
from robustft.schemas.compose import compose_run
from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import TrainResult, train
from robustft.training.tune import (
    TuneResult,
    prune_search,
    prune_trial,
    run_search,
    searched_keys,
    trials_markdown,
    write_search,
)

__all__ = ["reproducing_overrides", "run_tune"]
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


def run_tune(cfg: DictConfig, task_overrides: list[str], experiment: str | None) -> TuneResult:
    """Search ``cfg.tune``'s space, each trial ``cfg`` (the ``tune`` config composed with
    ``task_overrides``, the command line) plus the trial's values; writes ``trials.md`` and
    :func:`robustft.training.tune.write_search`'s files to the run directory and prints the
    table and the reproducing command."""
    check_config(cfg)
    settings = typed_group(cfg, "tune")
    prepare_generated_data(cfg.data)
    output_dir = Path(cfg.paths.output_dir)

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
    written = write_search(result, output_dir, experiment,
                           reproducing_overrides(task_overrides, set(searched)))
    text = trials_markdown(result)
    (output_dir / "trials.md").write_text(text)
    print("\n" + text)
    if "reproduce" in written:
        print(f"tuned recipe: {written['experiment']}\nreproduce: {written['reproduce'].read_text().strip()}")
    print(f"run directory: {output_dir}")
    return result
