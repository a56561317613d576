"""The evaluation run of ``robustft-eval`` (:func:`run_evaluation`): several models on a
suite of datasets, one pass per dataset, resumable.

Writes ``results.csv`` (rewritten after each dataset), ``fingerprints.json``, ``results.md``
and plots to the run directory (``output_dir``, by default
``${paths.log_dir}/eval/<run_name>``, fixed so that rerunning the same command resumes).
Resume reuses a (model, dataset) pair's rows only when their fingerprint
(``robustft.evaluation.fingerprint``: model entry and weights/checkpoint sha256, protocol,
preprocessing, precision, dataset root and file count) equals the pair's fingerprint now;
any other pair is evaluated, its old rows replaced, with one log line saying what changed.
The fingerprints are computed before any model is built: a rerun with nothing changed
builds no model and reads no image. Images that do not decode are skipped for every model
and listed in ``unreadable_images.csv`` (dataset, path, error).

``metrics=[top1,perturbation,segmentation,share]`` adds the explanation-quality metrics of
``relevance_method``'s maps in the same pass (the metrics registered in
``robustft.evaluation.metrics``, by name); segmentation and share need a dataset with
masks, and the settings enter the fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from robustft.checkpoints import training_preprocessing_of
from robustft.data.eval.registry import build_eval_dataset, dataset_folder, has_labels, has_masks
from robustft.evaluation.fingerprint import (
    FINGERPRINTS_NAME,
    FileHasher,
    Fingerprint,
    dataset_inputs,
    describe_change,
    fingerprint_record,
    load_fingerprints,
    model_inputs,
    pair_fingerprint,
    preprocessing_inputs,
    save_fingerprints,
)
from robustft.evaluation.metrics.map_scoring import ExplanationSettings
from robustft.evaluation.model_loading import build_model_from_entry
from robustft.evaluation.report import (
    CSV_NAME,
    read_results_csv,
    recorded_fingerprints,
    replace_results,
    results_have_fingerprints,
    write_report,
)
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.evaluation.unreadable import (
    UNREADABLE_NAME,
    UnreadableImage,
    write_unreadable_images,
)
from robustft.labels import check_protocol_kind
from robustft.relevance import relevance_choices
from robustft.resources import resolve_device, resolve_num_workers
from robustft.schemas.checks import check_config

__all__ = ["run_evaluation"]

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def folder_datasets(folders: list[str]) -> dict[str, dict[str, Any]]:
    """``eval.folders``: each folder of the user's own labelled images as a dataset named by
    the folder: the generic images+masks layout (``images/``, ``masks/``: top-1 and the
    metrics that need masks) or class folders (``<folder>/<class>/<image>``: top-1)."""
    datasets: dict[str, dict[str, Any]] = {}
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise FileNotFoundError(f"eval.folders: {path} is not a folder")
        name = path.name
        while name in datasets:  # two folders of one name (a/test, b/test)
            name = f"{path.parent.name}_{name}"
            path = path.parent
        generic = (Path(folder) / "images").is_dir() and (Path(folder) / "masks").is_dir()
        datasets[name] = {"type": "generic" if generic else "imagefolder", "root": str(folder)}
    return datasets


def _selected_datasets(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    suite = OmegaConf.to_container(cfg.eval.datasets, resolve=True) or {}
    suite.update(folder_datasets(list(cfg.eval.get("folders") or [])))
    only = cfg.get("only")
    if only is None:
        return suite  # type: ignore[return-value]
    names = [only] if isinstance(only, str) else list(only)
    unknown = [name for name in names if name not in suite]
    if unknown:
        raise KeyError(
            f"only={unknown}: not in the suite eval={cfg.eval.name}; known: {sorted(suite)}"
        )
    return {name: suite[name] for name in names}  # type: ignore[misc]


@dataclass
class _DatasetJob:
    """One dataset of the suite and the models whose results on it must be (re)computed."""

    name: str
    kind: str
    root: str
    spec: dict[str, Any]
    todo: dict[str, Fingerprint]  # label -> the fingerprint its new rows will carry


def _dataset_spec(name: str, spec: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    rest = dict(spec)
    kind = rest.pop("type", name)
    root = rest.pop("root", None)
    if root is None:
        raise KeyError(f"eval.datasets.{name}: 'root' is required")
    return kind, str(root), rest


PREPROCESSING_SOURCES = ("model", "training")


def preprocessing_overrides(cfg: DictConfig, entries: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing keys that replace each model's own: ``preprocessing.source=model``
    (the standard suites' default) keeps each model's own (its family's); ``training`` (the default
    of the suites of the user's own data, ``eval=folders`` and ``eval=generated``) prepares
    every model's images as the fine-tuning run validated them, read from the first robustft
    checkpoint among the models, so that the original and the fine-tuned model see the same
    pixels as in training. ``preprocessing.crop_pct`` and the other keys still override."""
    settings = OmegaConf.to_container(cfg.preprocessing, resolve=True) or {}
    source = settings.pop("source", None) or cfg.eval.get("preprocessing_source") or "model"
    if source not in PREPROCESSING_SOURCES:
        raise ValueError(f"preprocessing.source must be one of {list(PREPROCESSING_SOURCES)}, "
                         f"got {source!r}")
    explicit = {key: value for key, value in settings.items() if value is not None}
    if source == "model":
        return explicit
    recorded = {label: training_preprocessing_of(entry["checkpoint"],
                                                 key=f"models.{label}.checkpoint")
                for label, entry in entries.items() if entry.get("checkpoint")}
    found = {label: value for label, value in recorded.items() if value is not None}
    if not found:
        log.info("preprocessing.source=training: no model's checkpoint records its training "
                 "preprocessing; each model's own is used")
        return explicit
    first_label, first = next(iter(found.items()))
    for label, value in found.items():
        if value != first:
            raise ValueError(f"preprocessing.source=training: models.{label} and models."
                             f"{first_label} were trained with different preprocessing ({value} "
                             f"vs {first}); set preprocessing.source=model or evaluate them apart")
    chosen = {key: first[key] for key in ("input_size", "crop_pct", "interpolation", "mean", "std")
              if key in first}
    log.info("preprocessing.source=training: every model's images as models.%s's run validated "
             "them: %s", first_label, chosen)
    return {**chosen, **explicit}


def explanation_settings(cfg: DictConfig) -> ExplanationSettings:
    """The ``metrics``, ``relevance_method``, ``method_options``, ``perturbation.*`` and
    ``share.*`` keys."""
    options = OmegaConf.to_container(cfg.method_options, resolve=True)
    (relevance,) = relevance_choices(str(cfg.relevance_method), options,  # type: ignore[arg-type]
                                     key="relevance_method")
    return ExplanationSettings(
        metrics=tuple(str(metric) for metric in cfg.metrics),
        relevance=relevance,
        fractions=tuple(float(value) for value in cfg.perturbation.fractions),
        removal_value=float(cfg.perturbation.removal_value),
        perturbation_target=str(cfg.perturbation.target),
        share_target=str(cfg.share.target),
    )


def _notes(settings: ExplanationSettings) -> list[str]:
    """The run's metric settings, for results.md."""
    if not settings.explains:
        return []
    return [f"Explanation metrics: {', '.join(settings.explains)} of the "
            f"`{settings.method_label}` relevance maps (segmentation: predicted class). Maps "
            "with one value at every pixel are counted (`*_constant_maps`) and scored as "
            "chance: segmentation AP 50 %, foreground share the object's area.",
            *settings.notes()]


def _plan(
    cfg: DictConfig, protocol: str, entries: Mapping[str, Any], out_dir: Path,
    settings: ExplanationSettings, overrides: Mapping[str, Any],
) -> tuple[list[_DatasetJob], dict[str, dict[str, Any]]]:
    """The datasets to evaluate and, per dataset, the models whose recorded rows are
    missing or carry another fingerprint (each such stale pair logged in one line).
    Reads files and hashes model files; builds no model, decodes no image."""
    results_csv = out_dir / CSV_NAME
    rows = read_results_csv(results_csv)
    recorded = recorded_fingerprints(rows)
    if rows and not results_have_fingerprints(results_csv):
        log.warning(
            "%s was written without fingerprints (an older robustft): its %d (model, dataset) "
            "pair(s) are stale and are re-evaluated when selected",
            results_csv,
            len(recorded),
        )
        recorded = {pair: "" for pair in recorded}
        explain_stale = False
    else:
        explain_stale = True
    known = load_fingerprints(out_dir / FINGERPRINTS_NAME)
    preprocessing = preprocessing_inputs(protocol, overrides)
    hasher = FileHasher()
    model_parts = {label: model_inputs(label, entry, hasher) for label, entry in entries.items()}
    jobs: list[_DatasetJob] = []
    for name, spec in _selected_datasets(cfg).items():
        kind, root, rest = _dataset_spec(name, spec)
        folder = dataset_folder(kind, root, **rest)
        if not folder.is_dir():
            if cfg.skip_missing:
                log.warning("skipping %s: folder not found: %s (skip_missing=true)", name, folder)
                continue
            raise FileNotFoundError(
                f"eval.datasets.{name}: folder not found: {folder} "
                "(skip_missing=true skips missing datasets)"
            )
        data_part = dataset_inputs(kind, root, rest, folder)
        todo: dict[str, Fingerprint] = {}
        for label, (model_part, sources) in model_parts.items():
            fingerprint = pair_fingerprint(
                model_part,
                data_part,
                protocol=protocol,
                preprocessing=preprocessing,
                precision=str(cfg.precision),
                sources=sources,
                explanations=settings.fingerprint_inputs(),
            )
            old = recorded.get((label, name))
            if old == fingerprint.digest:
                continue
            if old is not None and explain_stale:
                if old:
                    previous = known.get(old, {}).get("inputs")
                    why = describe_change(previous, fingerprint.inputs)
                    why = f"{why} [fingerprint {old} -> {fingerprint.digest}]"
                else:
                    why = "its rows carry no fingerprint (written by an older robustft)"
                log.warning("models.%s on %s: %s, re-evaluating", label, name, why)
            todo[label] = fingerprint
        reused = sorted(set(model_parts) - set(todo))
        if reused:
            log.info("%s: reusing the rows of %s (fingerprints match)", name, reused)
        if todo:
            jobs.append(_DatasetJob(name, kind, root, rest, todo))
    return jobs, known


def run_evaluation(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.models`` on ``cfg.eval.datasets``; returns the output directory."""
    check_config(cfg)
    protocol = check_protocol_kind(cfg.protocol)
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision={cfg.precision!r}; expected one of {sorted(PRECISIONS)}")
    device = resolve_device(cfg.device)
    num_workers = resolve_num_workers(cfg.num_workers)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_csv = out_dir / CSV_NAME

    entries: Mapping[str, Any] = OmegaConf.to_container(cfg.models, resolve=True) or {}  # type: ignore[assignment]
    entries = {label: entry for label, entry in entries.items() if entry is not None}
    if not entries:
        raise ValueError("no models: set models.<label>.name=<timm name> (and .checkpoint=...)")
    settings = explanation_settings(cfg)
    overrides = preprocessing_overrides(cfg, entries)
    jobs, records = _plan(cfg, protocol, entries, out_dir, settings, overrides)
    # Every dataset to evaluate is listed, and checked against the metrics (masks,
    # labels), before any model is built.
    datasets = {}
    for job in jobs:
        datasets[job.name] = build_eval_dataset(
            job.kind, job.root, protocol=protocol, name=job.name, **job.spec)
        settings.check_dataset(job.name, has_masks=has_masks(datasets[job.name]),
                               has_labels=has_labels(datasets[job.name]))
    if not jobs:
        log.info("every selected (model, dataset) pair in %s is up to date; nothing to evaluate",
                 results_csv)
    else:
        # Only the models with a pair to (re)compute are built, in config order.
        needed = [label for label in entries if any(label in job.todo for job in jobs)]
        models = {label: build_model_from_entry(label, entries[label]) for label in needed}
        transforms = build_eval_transforms(models, protocol=protocol, **overrides)
        unreadable: list[UnreadableImage] = []
        unreadable_csv, evaluated = out_dir / UNREADABLE_NAME, []
        for job in jobs:
            rows = evaluate_models(
                {label: models[label] for label in job.todo},
                datasets[job.name],
                transforms={label: transforms[label] for label in job.todo},
                batch_size=cfg.batch_size,
                num_workers=num_workers,
                device=device,
                progress=cfg.progress,
                autocast_dtype=PRECISIONS[cfg.precision],
                unreadable=unreadable,
                explanations=settings,
            )
            for row in rows:
                row["fingerprint"] = job.todo[row["model"]].digest
            replace_results(rows, results_csv)
            records.update({fp.digest: fingerprint_record(fp) for fp in job.todo.values()})
            in_use = set(recorded_fingerprints(read_results_csv(results_csv)).values())
            save_fingerprints(
                out_dir / FINGERPRINTS_NAME,
                {digest: record for digest, record in records.items() if digest in in_use},
            )
            evaluated.append(job.name)
            if unreadable or unreadable_csv.is_file():
                write_unreadable_images(unreadable_csv, evaluated, unreadable)
        if unreadable:
            log.warning("%d unreadable image(s) listed in %s", len(unreadable), unreadable_csv)
    if results_csv.is_file():
        title = f"robustft-eval: {cfg.eval.name} ({protocol} protocol)"
        report = write_report(out_dir, title=title, plots=cfg.plots, notes=_notes(settings))
        log.info("results: %s, %s", report["csv"], report["markdown"])
    return out_dir
