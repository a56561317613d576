"""Result files of an evaluation run: ``results.csv``, ``results.md`` and plots.

- ``results.csv``: one row per model x dataset x metric (plus per-factor-value rows), the
  columns of ``robustft.evaluation.runner.RESULT_COLUMNS``. Rows are APPENDED after each
  dataset, so an interrupted run keeps everything it finished, and
  :func:`finished_pairs` tells a rerun which (model, dataset) pairs to skip.
- ``results.md``: per metric, a table with one row per dataset and one column per model;
  every model after the first shows its change from the first (``81.20 (+0.45)``). The
  protocol of each dataset is a column; legacy-protocol numbers get a warning line.
- plots (matplotlib Agg): ``accuracy_per_dataset.png`` (grouped bars, top-1) and
  ``factors_<dataset>.png`` (top-1 against each factor: SI-Score area, x/y location,
  rotation; the generated benchmark's sweeps).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.evaluation.runner import RESULT_COLUMNS

__all__ = [
    "append_results_csv",
    "finished_pairs",
    "plot_results",
    "read_results_csv",
    "results_markdown",
    "write_report",
    "write_results_markdown",
]

CSV_NAME = "results.csv"
MARKDOWN_NAME = "results.md"


def append_results_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Append ``rows`` to ``path`` (header written when the file is new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    is_new = not path.exists() or path.stat().st_size == 0
    if not is_new:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if tuple(header) != RESULT_COLUMNS:
            raise ValueError(
                f"{path} has columns {header}, expected {list(RESULT_COLUMNS)}; "
                "use another output directory"
            )
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore")
        if is_new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**row, "accuracy": f"{float(row['accuracy']):.6f}"})
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_results_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` (accuracy as float, num_images as int); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(RESULT_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a robustft results.csv (missing {sorted(missing)})")
        rows = []
        for row in reader:
            row = dict(row)
            row["accuracy"] = float(row["accuracy"])
            row["num_images"] = int(row["num_images"])
            rows.append(row)
    return rows


def finished_pairs(path: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """(model, dataset) pairs with an overall top-1 row in ``path`` — done, skip them."""
    return {
        (row["model"], row["dataset"])
        for row in read_results_csv(path)
        if row["metric"] == "top1" and not row["factor"]
    }


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def results_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "Results") -> str:
    """The markdown tables (see module docstring) for ``rows``; models in first-seen order."""
    overall = [row for row in rows if not row["factor"]]
    models = _ordered(row["model"] for row in overall)
    datasets = _ordered(row["dataset"] for row in overall)
    metrics = sorted(_ordered(row["metric"] for row in overall))
    value = {(r["model"], r["dataset"], r["metric"]): float(r["accuracy"]) for r in overall}
    protocol_of = {r["dataset"]: r["protocol"] for r in overall}
    lines = [f"# {title}", ""]
    if any(str(p).startswith("legacy") for p in protocol_of.values()):
        lines += [
            (
                "> **Legacy protocol** (public RobustViT code: mean = std = 0.5, Resize 256 / "
                "CenterCrop 224, everything scored 1000-way, ObjectNet = first mapped class, "
                "no border crop). These numbers are NOT comparable with the standard protocol."
            ),
            "",
        ]
    if len(models) > 1:
        lines += [f"Change in parentheses: relative to `{models[0]}` (percentage points).", ""]
    for metric in metrics:
        lines += [f"## {metric} accuracy (%)", ""]
        lines.append("| dataset | protocol | " + " | ".join(f"`{m}`" for m in models) + " |")
        lines.append("|---|---|" + "---:|" * len(models))
        for dataset in datasets:
            base = value.get((models[0], dataset, metric))
            cells = []
            for index, model in enumerate(models):
                accuracy = value.get((model, dataset, metric))
                if accuracy is None:
                    cells.append("—")
                elif index == 0 or base is None:
                    cells.append(f"{accuracy:.2f}")
                else:
                    cells.append(f"{accuracy:.2f} ({accuracy - base:+.2f})")
            lines.append(f"| {dataset} | {protocol_of[dataset]} | " + " | ".join(cells) + " |")
        lines.append("")
    factor_rows = [row for row in rows if row["factor"] and row["metric"] == "top1"]
    if factor_rows:
        lines += ["## top1 accuracy (%) per factor value", ""]
        lines.append(
            "| dataset | factor | value | images | " + " | ".join(f"`{m}`" for m in models) + " |"
        )
        lines.append("|---|---|---:|---:|" + "---:|" * len(models))
        keyed = {(r["model"], r["dataset"], r["factor"], r["factor_value"]): r for r in factor_rows}
        seen = _ordered((r["dataset"], r["factor"], r["factor_value"]) for r in factor_rows)
        for dataset, factor, factor_value in seen:
            cells = []
            count = ""
            for model in models:
                row = keyed.get((model, dataset, factor, factor_value))
                cells.append("—" if row is None else f"{float(row['accuracy']):.2f}")
                count = count or ("" if row is None else str(row["num_images"]))
            lines.append(
                f"| {dataset} | {factor} | {factor_value} | {count} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def write_results_markdown(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = "Results"
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_markdown(rows, title=title), encoding="utf-8")
    return path


def _as_number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def plot_results(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the plots for ``rows`` to ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    overall = [r for r in rows if not r["factor"] and r["metric"] == "top1"]
    models = _ordered(r["model"] for r in rows)
    if overall:
        datasets = _ordered(r["dataset"] for r in overall)
        value = {(r["model"], r["dataset"]): float(r["accuracy"]) for r in overall}
        figure, axes = plt.subplots(
            figsize=(max(6.0, 1.2 * len(datasets) * max(1, len(models)) / 2), 4)
        )
        width = 0.8 / max(1, len(models))
        for index, model in enumerate(models):
            xs = [d + (index - (len(models) - 1) / 2) * width for d in range(len(datasets))]
            ys = [value.get((model, dataset), math.nan) for dataset in datasets]
            axes.bar(xs, ys, width=width, label=model)
        axes.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_ylim(0, 100)
        axes.legend(fontsize="small")
        axes.set_title("Accuracy per dataset")
        figure.tight_layout()
        path = out_dir / "accuracy_per_dataset.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)

    by_dataset: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        if row["factor"] and row["metric"] == "top1":
            by_dataset[row["dataset"]][row["factor"]].append(row)
    for dataset, factors in by_dataset.items():
        figure, axes_list = plt.subplots(
            1, len(factors), figsize=(4.5 * len(factors), 3.6), squeeze=False
        )
        for axes, (factor, factor_rows) in zip(axes_list[0], sorted(factors.items()), strict=True):
            for model in models:
                points = sorted(
                    (_as_number(r["factor_value"]), float(r["accuracy"]))
                    for r in factor_rows
                    if r["model"] == model
                )
                if points:
                    axes.plot(
                        [p[0] for p in points], [p[1] for p in points], marker="o", label=model
                    )
            axes.set_xlabel(factor)
            axes.set_ylabel("top-1 accuracy (%)")
            axes.set_ylim(0, 100)
            axes.set_title(f"{dataset}: {factor}")
        axes_list[0][0].legend(fontsize="small")
        figure.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
        path = out_dir / f"factors_{safe}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def write_report(
    out_dir: str | os.PathLike[str], *, title: str = "Results", plots: bool = True
) -> dict[str, Any]:
    """Re-read ``out_dir/results.csv`` and (re)write ``results.md`` and the plots."""
    out_dir = Path(out_dir)
    rows = read_results_csv(out_dir / CSV_NAME)
    if not rows:
        raise FileNotFoundError(f"no results in {out_dir / CSV_NAME}")
    markdown = write_results_markdown(rows, out_dir / MARKDOWN_NAME, title=title)
    figures = plot_results(rows, out_dir) if plots else []
    return {"csv": out_dir / CSV_NAME, "markdown": markdown, "plots": figures}
