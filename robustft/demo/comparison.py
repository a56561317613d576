"""The run of ``robustft-compare`` (:func:`run_comparison`): every training objective on
the same draws of the demo's fine-tuning images, against the original stand-in and a shortcut-free reference.

For each benchmark (a data config name, ``compare.benchmarks``): generate it and pre-train
its stand-in (both cached, as the demo does); pre-train the shortcut-free reference (the
same stand-in on the benchmark generated with ``compare.reference_overrides``, i.e.
``++data.synth.tie=0.0``), which is evaluated without fine-tuning; fine-tune the stand-in
with every objective (``compare.objectives``: name -> overrides of the demo's recipe) on
every draw (``data.seed`` in ``compare.draws``); evaluate every model in one pass per split
with the demo's measures. Writes ``compare_results.csv`` (one value per benchmark,
objective, draw, split and metric), ``compare.md`` (mean, min..max over the draws and the
change from the original) and ``compare_<benchmark>.png`` to the run directory, and with
``compare.readme=<page>`` (``make compare``: ``docs/demo.md``) rewrites that page's
``<!-- <compare.readme_block>:begin/end -->`` block, with the PNGs copied beside the page.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from robustft.checkpoints import load_finetuned_weights
from robustft.demo.compare_bars import bars_markdown, draw_bars
from robustft.demo.compare_plot import plot_comparison
from robustft.demo.compare_results import (
    ORIGINAL,
    REFERENCE,
    ResultRow,
    compare_markdown,
    summarize,
    write_results,
)
from robustft.demo.marked_block import replace_marked_block_in_file
from robustft.demo.split_measures import SplitMeasures, measure_generated_splits
from robustft.demo.stand_in import chosen_checkpoint, pretrain_stand_in
from robustft.resources import usable_cpus
from robustft.schemas.compose import compose_run
from robustft.schemas.schemas import TuneSettings
from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import TrainResult, build_model, check_training_config, train
from robustft.training.tune import (
    TuneResult,
    prune_search,
    prune_trial,
    run_search,
    searched_keys,
    trials_markdown,
    write_search,
)

log = logging.getLogger(__name__)


def _config_name() -> str:
    """The primary config this command runs (compare, or compare_tuned with --config-name):
    every run of the comparison is composed from it."""
    return HydraConfig.get().job.config_name


def _compose(task_overrides: Sequence[str], overrides: Sequence[str]) -> DictConfig:
    """The command's config with the command line's overrides, then ``overrides``."""
    return compose_run(_config_name(), [*task_overrides, *overrides])


def _stand_in_file(cfg: DictConfig, benchmark: str, claimed: dict[str, str]) -> str:
    """The benchmark's stand-in weights file: its config's (the demo's cache for the demo's
    benchmark), or ``<dir>/<benchmark>/<name>`` when an earlier benchmark of this run
    already uses that file (one cache file per benchmark, so neither retrains the other's)."""
    path = Path(cfg.model.weights_file)
    if claimed.get(str(path), benchmark) != benchmark:
        path = path.parent / benchmark / path.name
    claimed[str(path)] = benchmark
    return str(path)


def _check_pretrain_root(cfg: DictConfig, benchmark: str) -> None:
    data_root = Path(cfg.data.root).parent.resolve()
    pretrain_root = Path(cfg.pretrain.data_root).parent.resolve()
    if data_root != pretrain_root:
        raise ValueError(f"pretrain.data_root: {cfg.pretrain.data_root} is not in data={benchmark}'s "
                         f"benchmark {data_root}: its stand-in would be pre-trained on another "
                         "benchmark (set pretrain.data_root in that data config's experiment)")


def _rows(benchmark: str, measures: SplitMeasures, labels: dict[str, tuple[str, int | None]]
          ) -> list[ResultRow]:
    """The long results table from the measures (values in percent)."""
    rows = [ResultRow(benchmark, *labels[r["model"]], r["dataset"], "top1", float(r["value"]))
            for r in measures.rows if r["metric"] == "top1" and not r.get("factor")]
    for metric, values, scale in (
            ("fg_share", measures.foreground_share, 100.0),
            ("top1_object_only", measures.object_only_top1, 1.0),
            ("fg_share_object_only", measures.object_only_foreground_share, 100.0)):
        rows += [ResultRow(benchmark, *labels[model], split, metric, scale * value)
                 for (model, split), value in values.items()]
    return rows


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning job of the comparison: a training run of ``config_name`` with
    ``overrides``, or, with ``tune`` set, robustft-tune's search from them (its trials
    under the run's ``paths.output_dir``)."""

    config_name: str
    overrides: tuple[str, ...]
    tune: TuneSettings | None = None


def run_one(spec: RunSpec) -> TrainResult | TuneResult:
    """Train ``spec``'s run, or search its recipe (the chosen trial's weights stay on disk
    as its ``selected.ckpt``; the others' are deleted)."""
    if spec.tune is None:
        return train(compose_run(spec.config_name, spec.overrides))
    output_dir = Path(compose_run(spec.config_name, spec.overrides).paths.output_dir)

    def train_trial(overrides: list[str], trial_dir: Path) -> TrainResult:
        result = train(compose_run(spec.config_name, [*spec.overrides, *overrides,
                                                      f"paths.output_dir={trial_dir}"]))
        prune_trial(result, keep=False)
        return result

    base = compose_run(spec.config_name, spec.overrides)
    base_values = {key: OmegaConf.select(base, key) for key in searched_keys(spec.tune.search)}
    result = run_search(train_trial, spec.tune, output_dir, base_values)
    prune_search(result)
    write_search(result, output_dir, None, [])
    (output_dir / "trials.md").write_text(trials_markdown(result))
    return result


def _run_in_worker(spec: RunSpec, threads: int) -> TrainResult | TuneResult:
    """One job in a worker process, on ``threads`` intra-op threads. The run's config is
    composed here again from its overrides: the typed config (signature-derived schemas)
    does not pickle, and composing gives exactly the parent's."""
    torch.set_num_threads(threads)
    return run_one(spec)


def fine_tune_runs(runs: Sequence[RunSpec], jobs: int) -> list[TrainResult | TuneResult]:
    """Every job, in the order given; with ``jobs > 1``, that many at a time, each in a
    process of its own on an equal share of the cores (``compare.jobs``). The demo's tiny
    ViT cannot keep two threads busy (one run on 2 cores: an epoch in 2.9 s on two threads,
    3.9 s on one), so two runs side by side finish sooner than one after the other. A
    run's error is raised here, as in this process."""
    if jobs <= 1 or len(runs) <= 1:
        return [run_one(spec) for spec in runs]
    threads = max(1, usable_cpus() // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_run_in_worker, spec, threads) for spec in runs]
        return [future.result() for future in futures]


def _shortcut_free_name(path: str | Path) -> Path:
    """The shortcut-free reference's file beside a stand-in's: ``<stem>_shortcut_free<suffix>``."""
    path = Path(path)
    return path.with_name(path.stem + "_shortcut_free" + path.suffix)


def compare_benchmark(cfg: DictConfig, benchmark: str, task_overrides: Sequence[str],
                      output_dir: Path, claimed: dict[str, str], timings: dict[str, float],
                      searches: dict[tuple[str, str, int], TuneResult]) -> list[ResultRow]:
    """Every model of one benchmark, trained (or read from the cache) and measured."""
    settings = cfg.compare
    start = time.perf_counter()
    base = _compose(task_overrides, [f"data={benchmark}"])
    weights = _stand_in_file(base, benchmark, claimed)
    base = _compose(task_overrides, [f"data={benchmark}", f"model.weights_file={weights}"])
    _check_pretrain_root(base, benchmark)
    log.info("[%s] benchmark and stand-in (cached)", benchmark)
    prepare_generated_data(base.data)
    pretrain_stand_in(base)
    models = {ORIGINAL: build_model(base.model)}
    labels: dict[str, tuple[str, int | None]] = {ORIGINAL: (ORIGINAL, None)}
    if settings.reference_overrides:
        benchmark_root = Path(base.data.root).parent
        reference_root = benchmark_root.with_name(benchmark_root.name + "_shortcut_free")
        if base.model.get("probe_head"):
            # a pretrained backbone with a probe head (experiment=demo_real): the same
            # backbone, its head fitted on the shortcut-free pretrain split
            stand_in = _shortcut_free_name(base.model.probe_head)
            reference_model = [f"model.weights_file={weights}", f"model.probe_head={stand_in}"]
        else:
            stand_in = _shortcut_free_name(weights)
            reference_model = [f"model.weights_file={stand_in}"]
        log.info("[%s] shortcut-free reference (cached): %s", benchmark, stand_in)
        reference = _compose(task_overrides, [
            f"data={benchmark}", *settings.reference_overrides,
            f"data.root={reference_root / 'train'}",
            f"pretrain.data_root={reference_root / 'pretrain'}", *reference_model])
        prepare_generated_data(reference.data)
        pretrain_stand_in(reference)
        models[REFERENCE] = build_model(reference.model)
        labels[REFERENCE] = (REFERENCE, None)
    timings[f"{benchmark}: stand-ins"] = time.perf_counter() - start

    # the searches first: the longest jobs start first, the short runs fill in beside them
    objectives = {**settings.tune_objectives, **settings.objectives}
    search = OmegaConf.to_object(settings.tune) if settings.tune_objectives else None
    jobs = min(settings.jobs or usable_cpus(), len(objectives) * len(settings.draws))
    runs, run_labels = [], []
    for objective, overrides in objectives.items():
        tuned = objective in settings.tune_objectives
        for draw in settings.draws:
            run_dir = output_dir / objective / f"draw{draw}"
            run = [*task_overrides, f"data={benchmark}", f"data.seed={draw}",
                   f"model.weights_file={weights}", *overrides, f"paths.output_dir={run_dir}",
                   "validate_best=false"]
            if jobs > 1:  # the runs' progress bars would interleave
                run += ["~callbacks.progress_bar", "trainer.enable_progress_bar=false"]
            runs.append(RunSpec(_config_name(), tuple(run), search if tuned else None))
            # composed here too: a bad override fails before any run trains, and an
            # objective may choose its own evaluation.checkpoint
            run_labels.append((objective, draw, _compose([], run).evaluation.checkpoint))
    start = time.perf_counter()
    log.info("[%s] fine-tuning: %d runs (%s x data.seed %s), %d at a time", benchmark, len(runs),
             ", ".join(objectives), list(settings.draws), jobs)
    results = fine_tune_runs(runs, jobs)
    timings[f"{benchmark}: fine-tuning"] = time.perf_counter() - start
    for (objective, draw, choice), result in zip(run_labels, results, strict=True):
        label = f"{objective}@{draw}"
        labels[label] = (objective, draw)
        if isinstance(result, TuneResult):
            searches[(benchmark, objective, draw)] = result
            if result.chosen is None:  # the search kept no fine-tuned weights
                models[label] = build_model(base.model)
                continue
            checkpoint = Path(result.chosen.checkpoint)
        else:
            checkpoint = chosen_checkpoint(choice, result.best_checkpoint, result.last_checkpoint,
                                           result.selected_checkpoint)
        models[label] = load_finetuned_weights(build_model(base.model), checkpoint)
        if not settings.keep_checkpoints:
            shutil.rmtree(checkpoint.parent)

    start = time.perf_counter()
    ev = base.evaluation
    log.info("[%s] evaluating %d models", benchmark, len(models))
    measures = measure_generated_splits(
        models, Path(base.data.root).parent, list(settings.splits or ev.splits),
        batch_size=ev.batch_size, relevance_images_per_split=ev.relevance_images_per_split,
        background_fill=ev.background_fill, progress=False)
    timings[f"{benchmark}: evaluation"] = time.perf_counter() - start
    return _rows(benchmark, measures, labels)


def tuned_markdown(searches: dict[tuple[str, str, int], TuneResult], heading_level: int = 4) -> str:
    """What each draw's search chose: its settings, the epoch its selection kept, the
    held-out share against the original's, the trials and the search's wall time."""
    if not searches:
        return ""
    hashes = "#" * heading_level
    lines = [f"{hashes} The tuned recipes, draw by draw", "",
             "Each chosen by robustft-tune's search on the draw's own training pool (held-out "
             "pairs of the training classes, never the evaluation splits).", "",
             "| benchmark | objective | draw | chosen settings | epoch | held-out share (original) "
             "| held-out swapped top-1 (original) | trials | search |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for (benchmark, objective, draw), result in sorted(searches.items()):
        chosen = result.chosen
        settings = "none kept" if chosen is None else ", ".join(
            f"`{key}={value:.3g}`" if isinstance(value, float) else f"`{key}={value}`"
            for key, value in chosen.params.items())
        share = "-" if chosen is None else f"{100 * chosen.share:.1f} ({100 * chosen.share_original:.1f})"
        swapped = ("-" if chosen is None else
                   f"{100 * chosen.swap_accuracy:.1f} ({100 * chosen.swap_accuracy_original:.1f})")
        lines.append(f"| {benchmark} | {objective} | {draw} | {settings} | "
                     f"{'-' if chosen is None else chosen.epoch} | {share} | {swapped} | "
                     f"{len(result.trials)} | {result.seconds / 60:.1f} min |")
    return "\n".join([*lines, ""])


def write_report(cfg: DictConfig, rows: list[ResultRow], output_dir: Path, wall_seconds: float,
                 searches: dict[tuple[str, str, int], TuneResult] | None = None) -> str:
    """``compare_results.csv``, ``compare.md``, a PNG per benchmark and, with
    ``compare.readme`` (a Markdown page), its generated block with the PNGs copied beside
    the page; returns the Markdown."""
    settings = cfg.compare
    summaries = summarize(rows)
    write_results(rows, output_dir / "compare_results.csv")
    fine_tuned = [*settings.tune_objectives, *settings.objectives]
    objectives = [ORIGINAL, *([REFERENCE] if settings.reference_overrides else []), *fine_tuned]
    splits = list(settings.splits or cfg.evaluation.splits)
    page = Path(settings.readme) if settings.readme else None
    sections = []
    for benchmark in settings.benchmarks:
        # level 4: the page's block sits under a level-3 section
        sections.append(compare_markdown(summaries, benchmark=benchmark, objectives=objectives,
                                         splits=splits, draws=list(settings.draws),
                                         heading_level=4))
        figure = plot_comparison(summaries, output_dir / f"compare_{benchmark}.png",
                                 benchmark=benchmark, objectives=objectives, splits=splits)
        if page is not None:
            # the page shows the figure from a committed copy beside it, named by the block
            # so that compare and compare_tuned, written into one page, keep their own
            copy = page.parent / f"{settings.readme_block}_{benchmark}.png"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(figure, copy)
            sections.append(f"![{benchmark}: top-1 and share per objective]({copy.name})\n")
    if settings.bars_control:
        sections.append(bars_markdown(draw_bars(rows, settings.bars_control), objectives=fine_tuned,
                                      control=settings.bars_control))
    if searches:
        sections.append(tuned_markdown(searches))
    footer = (f"Generated by `robustft-compare` ({cfg.task_name}): {len(settings.draws)} draws x "
              f"{len(fine_tuned)} objectives on {', '.join(settings.benchmarks)}, "
              f"{wall_seconds / 60:.1f} min on {usable_cpus()} CPU cores.")
    text = "\n".join([*sections, footer, ""])
    (output_dir / "compare.md").write_text(text)
    if page is not None:
        replace_marked_block_in_file(page, text, name=settings.readme_block)
        log.info("rewrote the %s block of %s", settings.readme_block, page)
    return text


def run_comparison(cfg: DictConfig, task_overrides: Sequence[str]) -> str:
    """Every benchmark of ``cfg.compare``, each run composed from this command's config with
    the command line's ``task_overrides``; prints and returns the report's Markdown."""
    check_training_config(cfg)  # compare.jobs=0 too; each run's composition is checked again
    torch.set_num_threads(max(1, torch.get_num_threads()))
    settings = cfg.compare
    if settings.tune_objectives and settings.tune is None:
        raise ValueError("compare.tune_objectives needs compare.tune (the search's settings)")
    if not (settings.objectives or settings.tune_objectives) or not settings.draws \
            or not settings.benchmarks:
        raise ValueError("compare.objectives, compare.draws and compare.benchmarks must each "
                         "name at least one entry")
    output_dir = Path(cfg.paths.output_dir)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    claimed: dict[str, str] = {}
    rows: list[ResultRow] = []
    searches: dict[tuple[str, str, int], TuneResult] = {}
    for benchmark in settings.benchmarks:
        rows += compare_benchmark(cfg, benchmark, task_overrides, output_dir / benchmark,
                                  claimed, timings, searches)
    wall = time.perf_counter() - started
    text = write_report(cfg, rows, output_dir, wall, searches)
    print("\n" + text)
    print(f"run directory: {output_dir}  ({wall:.0f} s: "
          + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in timings.items()) + ")")
    return text
