"""``robustft-eval``: evaluate several models on a suite of datasets, one pass per dataset.

Examples::

    robustft-eval data_root=/data eval=paper \\
        models.vit_b.name=vit_base_patch16_224.orig_in21k_ft_in1k \\
        +models.ft.checkpoint=logs/train/runs/x/checkpoints/best.ckpt \\
        +models.ft.name=vit_base_patch16_224.orig_in21k_ft_in1k
    robustft-eval ... protocol=legacy run_name=legacy      # the public code's protocol
    robustft-eval ... only=[imagenet-a,objectnet]          # a subset of the suite
    robustft-eval -m ... only=imagenet-a,objectnet         # one job (and dir) per dataset

Writes ``results.csv`` (appended after each dataset), ``results.md``, plots and, when
some images do not decode, ``unreadable_images.csv`` (dataset, path, error) to the run
directory (``output_dir``, by default ``${paths.log_dir}/eval/<run_name>``, fixed so that
rerunning the same command resumes: (model, dataset) pairs already in its results.csv are
skipped).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from robustft.cli.errors import one_line_errors
from robustft.data.eval_datasets import build_eval_dataset
from robustft.data.layout import DatasetLayoutError
from robustft.evaluation.model_loading import build_model_from_entry
from robustft.evaluation.protocols import check_protocol_kind
from robustft.evaluation.report import (
    CSV_NAME,
    append_results_csv,
    finished_pairs,
    write_report,
)
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.evaluation.unreadable import (
    UNREADABLE_NAME,
    UnreadableImage,
    write_unreadable_images,
)

__all__ = ["main", "run_evaluation"]

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def _selected_datasets(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    suite = OmegaConf.to_container(cfg.eval.datasets, resolve=True) or {}
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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_evaluation(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.models`` on ``cfg.eval.datasets``; returns the output directory."""
    protocol = check_protocol_kind(cfg.protocol)
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision={cfg.precision!r}; expected one of {sorted(PRECISIONS)}")
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_csv = out_dir / CSV_NAME
    done = finished_pairs(results_csv)

    entries: Mapping[str, Any] = OmegaConf.to_container(cfg.models, resolve=True) or {}  # type: ignore[assignment]
    entries = {label: entry for label, entry in entries.items() if entry is not None}
    if not entries:
        raise ValueError("no models: set models.<label>.name=<timm name> (and .checkpoint=...)")
    datasets = _selected_datasets(cfg)
    pending = [name for name in datasets if any((label, name) not in done for label in entries)]
    if not pending:
        log.info("all (model, dataset) pairs already in %s; nothing to evaluate", results_csv)
    else:
        models = {label: build_model_from_entry(label, entry) for label, entry in entries.items()}
        overrides = OmegaConf.to_container(cfg.preprocessing, resolve=True) or {}
        transforms = build_eval_transforms(models, protocol=protocol, **overrides)
        device = _device(cfg.device)
        unreadable: list[UnreadableImage] = []
        unreadable_csv, evaluated = out_dir / UNREADABLE_NAME, []
        for dataset_name in pending:
            spec = dict(datasets[dataset_name])
            kind = spec.pop("type", dataset_name)
            root = spec.pop("root", None)
            if root is None:
                raise KeyError(f"eval.datasets.{dataset_name}: 'root' is required")
            try:
                dataset = build_eval_dataset(
                    kind, root, protocol=protocol, name=dataset_name, **spec
                )
            except (DatasetLayoutError, FileNotFoundError) as error:
                if cfg.skip_missing and not Path(root).exists():
                    log.warning("skipping %s: %s", dataset_name, error)
                    continue
                raise
            todo = {label: m for label, m in models.items() if (label, dataset_name) not in done}
            skipped = sorted(set(models) - set(todo))
            if skipped:
                log.info("%s: already done for %s (resume)", dataset_name, skipped)
            rows = evaluate_models(
                todo,
                dataset,
                transforms={label: transforms[label] for label in todo},
                batch_size=cfg.batch_size,
                num_workers=cfg.num_workers,
                device=device,
                progress=cfg.progress,
                autocast_dtype=PRECISIONS[cfg.precision],
                unreadable=unreadable,
            )
            append_results_csv(rows, results_csv)
            evaluated.append(dataset_name)
            if unreadable or unreadable_csv.is_file():
                write_unreadable_images(unreadable_csv, evaluated, unreadable)
        if unreadable:
            log.warning("%d unreadable image(s) listed in %s", len(unreadable), unreadable_csv)
    if results_csv.is_file():
        title = f"robustft-eval: {cfg.eval.name} ({protocol} protocol)"
        report = write_report(out_dir, title=title, plots=cfg.plots)
        log.info("results: %s, %s", report["csv"], report["markdown"])
    return out_dir


@one_line_errors("robustft-eval")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point (see module docstring)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    run_evaluation(cfg)


if __name__ == "__main__":  # pragma: no cover
    main()
