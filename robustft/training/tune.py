"""Choosing a recipe on the user's own held-out masks (docs/method.md §10): a small search over
the settings that matter, each trial a full fine-tuning run whose weights are chosen by the
held-out selection (:mod:`robustft.training.selection`), so the number of epochs is searched
too, for free.

The search space is written in Hydra's sweep grammar, as for any Hydra sweeper
(``optim.optimizer.lr: tag(log, interval(3e-5, 1e-3))``, ``loss.lambda_fg: choice(0.3, 1.0)``,
``range(...)``); Optuna samples it (TPE, random, or a grid over ``choice`` / ``range``
spaces) through its ask-and-tell interface. A trial's value is its selected weights'
held-out objective (``callbacks.heldout_selection.objective``: the share of relevance on
the object, or robustft-tune's default, the top-1 on the held-out pairs pasted onto other
classes' backgrounds; the original model's when its selection is the original), and the
search stops after ``max_trials`` or when the next trial would overrun ``time_budget_min``.
The chosen trial is written as an experiment config (``tuned.yaml``) that reproduces its
weights exactly: the trial's overrides and ``trainer.max_epochs`` = its selected epoch + 1
(the schedule and the batches of an epoch do not depend on the run's length).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import OmegaConf

from robustft.schemas.schemas import SAMPLERS, TuneSettings
from robustft.training.run import TrainResult

__all__ = ["SAMPLERS", "TrialRecord", "TuneResult", "TuneSettings", "parse_search_space",
           "run_search", "searched_keys", "trials_markdown", "tuned_experiment_text",
           "write_search"]
log = logging.getLogger(__name__)
TUNED_EXPERIMENT = "tuned"


def parse_search_space(search: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Optuna distributions of the swept keys, fixed values of the others), from Hydra sweep
    overrides (``key=choice(...)``, ``key=range(...)``, ``key=interval(a, b)``,
    ``key=tag(log, interval(a, b))``, ``key=value``); one that does not parse, or a key given
    twice, is a ``ValueError`` naming it."""
    if not search:
        raise ValueError("tune.search is empty: give at least one sweep, e.g. "
                         "'tune.search=[\"optim.optimizer.lr=tag(log, interval(3e-5, 1e-3))\"]'")
    parser = OverridesParser.create()
    distributions: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for item in search:
        try:
            (override,) = parser.parse_overrides([item])
        except Exception as error:  # noqa: BLE001 - Hydra's grammar errors vary in type
            raise ValueError(f"tune.search: {item!r} is not a sweep of Hydra's grammar "
                             "(key=choice(...), key=range(...), key=interval(a, b), "
                             f"key=tag(log, interval(a, b)) or key=value): {error}") from error
        key, value = override.key_or_group, override.value()
        if key in distributions or key in fixed:
            raise ValueError(f"tune.search: {key} is given twice")
        if isinstance(value, ChoiceSweep):
            distributions[key] = optuna.distributions.CategoricalDistribution(list(value.list))
        elif isinstance(value, RangeSweep):
            choices = list(override.sweep_iterator())
            distributions[key] = optuna.distributions.CategoricalDistribution(choices)
        elif isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if log_scale and value.start <= 0:
                raise ValueError(f"tune.search: {item!r}: a log interval needs a start > 0")
            distributions[key] = optuna.distributions.FloatDistribution(
                float(value.start), float(value.end), log=log_scale)
        else:
            fixed[key] = value
    return distributions, fixed


def searched_keys(search: Sequence[str]) -> list[str]:
    """The config keys ``tune.search`` sets."""
    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(search))]


@dataclass
class TrialRecord:
    """One trial: its number, the swept values, what its held-out selection chose and
    measured, its value (the selected weights' held-out ``objective``: the share, or the
    top-1 on swapped backgrounds; the original's when the selection kept the original) and
    wall time."""

    number: int
    params: dict[str, Any]
    chosen: str
    epoch: int | None
    objective: str
    value: float
    share: float
    share_original: float
    share_gain: float
    share_margin: float
    agreement: float
    kl: float
    accuracy: float
    clearly_improved: bool
    seconds: float
    checkpoint: str | None
    run_dir: str
    swap_accuracy: float = math.nan
    swap_accuracy_original: float = math.nan


@dataclass
class TuneResult:
    """The search: every trial, the chosen one (None when no trial selected fine-tuned
    weights), why the search ended, its wall time, and the verdict line."""

    trials: list[TrialRecord]
    chosen: TrialRecord | None
    ended_by: str
    seconds: float
    verdict: str


def _trial_record(number: int, params: dict[str, Any], result: TrainResult,
                  seconds: float) -> TrialRecord:
    summary = result.selection
    if summary is None:
        raise ValueError("a tuning trial measured nothing held out: robustft-tune needs "
                         "validation pairs (data.holdout_per_class > 0) and the "
                         "callbacks.heldout_selection callback")
    record = summary["record"] or {}

    def number_of(name: str) -> float:
        value = record.get(name)
        return math.nan if value is None else float(value)

    chosen_weights = summary["epoch"] is not None
    objective = summary.get("objective", "share")
    if objective == "swap_accuracy" and math.isnan(number_of("swap_accuracy")):
        objective = "share"  # one class held out: nothing to recombine (as the selection does)
    return TrialRecord(
        number=number, params=params, chosen=summary["chosen"], epoch=summary["epoch"],
        objective=objective,
        value=number_of(objective) if chosen_weights else number_of(f"{objective}_original"),
        share=number_of("share") if chosen_weights else number_of("share_original"),
        share_original=number_of("share_original"),
        share_gain=number_of("share_gain") if chosen_weights else 0.0,
        share_margin=number_of("share_margin"), agreement=number_of("agreement"),
        kl=number_of("kl"), accuracy=number_of("accuracy"),
        clearly_improved=bool(summary["clearly_improved"]), seconds=seconds,
        checkpoint=summary["checkpoint"], run_dir=str(result.output_dir),
        swap_accuracy=(number_of("swap_accuracy") if chosen_weights
                       else number_of("swap_accuracy_original")),
        swap_accuracy_original=number_of("swap_accuracy_original"))


def _sampler(settings: TuneSettings, distributions: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    if settings.sampler == "grid":
        continuous = [k for k, d in distributions.items()
                      if not isinstance(d, optuna.distributions.CategoricalDistribution)]
        if continuous:
            raise ValueError(f"tune.sampler=grid needs choice(...) or range(...) for every key; "
                             f"{continuous} are intervals")
    if settings.sampler in ("random", "grid"):  # the grid's points are enqueued in order
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials,
                                      multivariate=True)


def _grid(distributions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every point of a grid of choices, the first key varying slowest."""
    keys = list(distributions)
    return [dict(zip(keys, point, strict=True))
            for point in itertools.product(*(distributions[k].choices for k in keys))]


def _base_trial(base_values: Mapping[str, Any], distributions: Mapping[str, Any]) -> dict[str, Any]:
    """The base config's own values of the searched keys, where each lies in its space."""
    params = {}
    for key, distribution in distributions.items():
        value = base_values.get(key)
        if value is None or not distribution._contains(distribution.to_internal_repr(value)):
            log.info("tune: the base value of %s (%s) is outside its search space; the first "
                     "trial is sampled", key, value)
            return {}
        params[key] = value
    return params


def run_search(train_trial: Callable[[list[str], Path], TrainResult], settings: TuneSettings,
               output_dir: Path, base_values: Mapping[str, Any] | None = None) -> TuneResult:
    """Run the search: ``train_trial(overrides, trial_dir)`` fine-tunes one trial (its
    overrides are ``key=value`` strings added after the run's own) and returns its result.
    ``base_values``: the base config's values of the searched keys (for ``include_base``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions, fixed = parse_search_space(settings.search)
    sampler = _sampler(settings, distributions)
    grid_size = math.prod(len(d.choices) for d in distributions.values()) \
        if settings.sampler == "grid" else None
    max_trials = settings.max_trials or grid_size or 20
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if settings.sampler == "grid":
        for point in _grid(distributions):
            study.enqueue_trial(point)
    elif settings.include_base and base_values:
        base = _base_trial(base_values, distributions)
        if base:
            study.enqueue_trial(base)
    budget = None if settings.time_budget_min is None else 60.0 * settings.time_budget_min
    started = time.perf_counter()
    records: list[TrialRecord] = []
    ended_by = "max_trials"
    while len(records) < max_trials:
        elapsed = time.perf_counter() - started
        if budget is not None and records:
            mean = elapsed / len(records)
            if elapsed + mean > budget:
                ended_by = "time_budget"
                break
        if grid_size is not None and len(records) >= grid_size:
            ended_by = "grid"
            break
        trial = study.ask(dict(distributions))
        params = {**trial.params, **fixed}
        overrides = [f"{key}={_override_value(value)}" for key, value in params.items()]
        log.info("tune: trial %d/%d: %s", len(records), max_trials, " ".join(overrides))
        trial_started = time.perf_counter()
        result = train_trial(overrides, output_dir / "trials" / f"{len(records):02d}")
        record = _trial_record(len(records), params, result, time.perf_counter() - trial_started)
        study.tell(trial, record.value)
        records.append(record)
        log.info("tune: trial %d: %s, held-out share %.1f %% (original %.1f %%), top-1 on "
                 "swapped backgrounds %.1f %% (original %.1f %%), agreement %.1f %%",
                 record.number, record.chosen, 100 * record.share, 100 * record.share_original,
                 100 * record.swap_accuracy, 100 * record.swap_accuracy_original,
                 100 * record.agreement)
    chosen = choose_trial(records)
    result = TuneResult(records, chosen, ended_by, time.perf_counter() - started,
                        tune_verdict(chosen, records))
    return result


def choose_trial(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The trial with the highest value (its selection's objective) among those that
    selected fine-tuned weights (the earliest among equals); None when every trial's
    selection was the original model."""
    fine_tuned = [r for r in records if r.epoch is not None]
    if not fine_tuned:
        return None
    return min(fine_tuned, key=lambda r: (-r.value, r.number))


def tune_verdict(chosen: TrialRecord | None, records: Sequence[TrialRecord]) -> str:
    """One line: what was chosen, and whether it is clearly better than the original."""
    if chosen is None:
        return (f"robustft-tune: none of the {len(records)} trials kept fine-tuned weights (each "
                "selection was the original model): this recipe does not move this model's "
                "held-out relevance without changing its decisions; no tuned recipe is written")
    settings = " ".join(f"{k}={_shown(v)}" for k, v in chosen.params.items())
    numbers = (f"held-out share {chosen.share:.1%} vs the original's {chosen.share_original:.1%} "
               f"({100 * chosen.share_gain:+.1f} points, margin {100 * chosen.share_margin:.1f}), "
               f"agreement {chosen.agreement:.1%}")
    if not math.isnan(chosen.swap_accuracy):
        numbers += (f", top-1 on swapped backgrounds {chosen.swap_accuracy:.1%} vs the original's "
                    f"{chosen.swap_accuracy_original:.1%}")
    if chosen.clearly_improved:
        return f"robustft-tune: trial {chosen.number} ({settings}, epoch {chosen.epoch}): {numbers}"
    return (f"robustft-tune: NO trial moved the held-out share clearly above the original's; the "
            f"best, trial {chosen.number} ({settings}, epoch {chosen.epoch}): {numbers}, within "
            "what the held-out pairs can tell apart from no change")


def _override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value) if any(c in value for c in " ,[]{}()=:'\"") else value
    return str(OmegaConf.to_yaml(value)).strip() if isinstance(value, (list, dict)) else str(value)


def tuned_experiment_text(chosen: TrialRecord, base_experiment: str | None, verdict: str) -> str:
    """``tuned.yaml``: the chosen trial as an experiment config (``# @package _global_``) on
    top of the base experiment, ending where its selection kept the weights."""
    values = OmegaConf.create()
    for key, value in chosen.params.items():
        OmegaConf.update(values, key, value, force_add=True)
    OmegaConf.update(values, "trainer.max_epochs", int(chosen.epoch) + 1, force_add=True)
    defaults = [base_experiment, "_self_"] if base_experiment else ["_self_"]
    body = OmegaConf.to_yaml(OmegaConf.merge({"defaults": defaults}, values))
    header = ["# @package _global_",
              f"# Written by robustft-tune: trial {chosen.number}, its held-out selection kept "
              f"epoch {chosen.epoch}, so trainer.max_epochs = {int(chosen.epoch) + 1}.",
              f"# {verdict}"]
    return "\n".join(header) + "\n" + body


def write_search(result: TuneResult, output_dir: Path, base_experiment: str | None,
                 reproduce: Sequence[str]) -> dict[str, Path]:
    """``trials.csv``, ``tune.json``, and for a chosen trial ``config/experiment/tuned.yaml``
    and ``reproduce.txt`` (the command that trains exactly its weights, ``reproduce`` being
    the run's other overrides) under ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"trials": output_dir / "trials.csv", "summary": output_dir / "tune.json"}
    keys = sorted({key for record in result.trials for key in record.params})
    columns = [f.name for f in TrialRecord.__dataclass_fields__.values() if f.name != "params"]
    with written["trials"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", *keys, *[c for c in columns if c != "number"]])
        for record in result.trials:
            row = asdict(record)
            writer.writerow([record.number, *[record.params.get(k) for k in keys],
                             *[row[c] for c in columns if c != "number"]])
    summary = {"verdict": result.verdict, "ended_by": result.ended_by, "seconds": result.seconds,
               "trials": len(result.trials),
               "chosen": None if result.chosen is None else asdict(result.chosen)}
    if result.chosen is not None:
        config_dir = output_dir / "config"
        experiment = config_dir / "experiment" / f"{TUNED_EXPERIMENT}.yaml"
        experiment.parent.mkdir(parents=True, exist_ok=True)
        experiment.write_text(tuned_experiment_text(result.chosen, base_experiment, result.verdict))
        command = ["robustft-train", f"--config-dir={config_dir.resolve()}",
                   f"experiment={TUNED_EXPERIMENT}", *reproduce]
        (output_dir / "reproduce.txt").write_text(shlex.join(command) + "\n")
        written |= {"experiment": experiment, "reproduce": output_dir / "reproduce.txt"}
        summary["experiment"] = str(experiment)
        summary["reproduce"] = shlex.join(command)
    written["summary"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return written


def _shown(value: Any) -> str:
    """A searched value for a table: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else _override_value(value)


def trials_markdown(result: TuneResult) -> str:
    """The trials as a Markdown table (values in percent), the chosen one marked, and the
    verdict."""
    keys = sorted({key for record in result.trials for key in record.params})
    header = ["trial", *keys, "kept", "held-out share", "gain (margin)", "swapped top-1",
              "agreement", "KL", "accuracy", "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in result.trials:
        mark = " (chosen)" if result.chosen is not None and record.number == result.chosen.number else ""
        lines.append("| " + " | ".join([
            f"{record.number}{mark}", *[_shown(record.params.get(k)) for k in keys],
            record.chosen, f"{100 * record.share:.1f}",
            f"{100 * record.share_gain:+.1f} ({100 * record.share_margin:.1f})",
            f"{100 * record.swap_accuracy:.1f} ({100 * record.swap_accuracy_original:.1f})",
            f"{100 * record.agreement:.1f}", f"{record.kl:.4f}", f"{100 * record.accuracy:.1f}",
            f"{record.seconds:.0f}"]) + " |")
    return "\n".join([*lines, "", f"Search ended by {result.ended_by} after {len(result.trials)} "
                      f"trial(s), {result.seconds / 60:.1f} min.", "", result.verdict, ""])


def prune_trial(result: TrainResult, keep: bool = False) -> None:
    """A finished trial keeps its held-out table, logs and ``selected.ckpt``; its other
    checkpoints (best / last) are never used again."""
    for path in (result.best_checkpoint, result.last_checkpoint):
        if path is not None and path.exists() and path != result.selected_checkpoint and not keep:
            path.unlink()


def prune_search(result: TuneResult) -> None:
    """Delete the checkpoints of every trial but the chosen one."""
    for trial in result.trials:
        if result.chosen is None or trial.number != result.chosen.number:
            shutil.rmtree(Path(trial.run_dir) / "checkpoints", ignore_errors=True)
