"""Result files of an evaluation run: ``results.csv``, ``results.md`` and plots.

- ``results.csv``: one row per model x dataset x metric (plus per-factor-value rows), the
  columns of ``robustft.evaluation.runner.RESULT_COLUMNS`` and ``fingerprint`` (the digest
  of what produced the row, ``robustft.evaluation.fingerprint``). After each dataset the
  file is rewritten atomically with that dataset's new rows in place of the pairs' old
  ones (:func:`replace_results`), so an interrupted run keeps everything it finished and
  a re-evaluated pair is never listed twice; :func:`recorded_fingerprints` tells a rerun
  which pairs it may reuse. A file written before fingerprints existed reads with
  ``fingerprint == ""``: nothing in it is reused.
- ``results.md``: per metric, a table with one row per dataset and one column per model;
  every model after the first shows its change from the first (``81.20 (+0.45)``). The
  protocol of each dataset is a column; legacy-protocol numbers get a warning line.
- plots (matplotlib Agg): ``accuracy_per_dataset.png`` (grouped bars, top-1) and
  ``factors_<dataset>.png`` (top-1 against each factor: SI-Score area, x/y location,
  rotation; the generated benchmark's sweeps); ``perturbation_<dataset>.png``.
- the explanation metrics (``<method>:<quantity>`` rows, values in the ``value``
  column) get their own tables (``robustft.evaluation.metrics.report_tables``).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.evaluation.metrics.report_tables import (
    explanation_markdown,
    is_explanation_metric,
    plot_perturbation_curves,
)
from robustft.evaluation.runner import RESULT_COLUMNS

__all__ = [
    "CSV_COLUMNS",
    "plot_results",
    "read_results_csv",
    "recorded_fingerprints",
    "replace_results",
    "results_have_fingerprints",
    "results_markdown",
    "write_report",
    "write_results_markdown",
]

CSV_NAME = "results.csv"
MARKDOWN_NAME = "results.md"
FINGERPRINT_COLUMN = "fingerprint"
VALUE_COLUMN = "value"  # a row's number: top-1 / top-5 (%), or an explanation metric's
OLD_VALUE_COLUMN = "accuracy"  # its name before (results.csv files written then still read)
CSV_COLUMNS: tuple[str, ...] = (*RESULT_COLUMNS, FINGERPRINT_COLUMN)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as strings) of a results.csv; ValueError if it is not one."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or ())
        rows = [dict(row) for row in reader]
    if OLD_VALUE_COLUMN in header and VALUE_COLUMN not in header:
        # written before the column was renamed (it holds top-1, IoU and AUC alike): read
        # as ``value``, so that a resumed run keeps its rows and rewrites them renamed
        header = [VALUE_COLUMN if column == OLD_VALUE_COLUMN else column for column in header]
        for row in rows:
            row[VALUE_COLUMN] = row.pop(OLD_VALUE_COLUMN)
    missing = [column for column in RESULT_COLUMNS if column not in header]
    if missing:
        raise ValueError(
            f"{path}: not a robustft results.csv (missing columns {missing}); "
            "use another output directory"
        )
    return header, rows


def read_results_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` (value as float, num_images as int, fingerprint "" when
    the file predates fingerprints); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for row in _read_rows(path)[1]:
        row = dict(row)
        row["value"] = float(row["value"])
        row["num_images"] = int(row["num_images"])
        row[FINGERPRINT_COLUMN] = row.get(FINGERPRINT_COLUMN) or ""
        rows.append(row)
    return rows


def results_have_fingerprints(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists and has the fingerprint column (written by this version)."""
    path = Path(path)
    return path.is_file() and FINGERPRINT_COLUMN in _read_rows(path)[0]


def recorded_fingerprints(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """``{(model, dataset): fingerprint}`` of the pairs with an overall row (a pair's rows
    are written together, after the whole dataset, so a pair whose run was interrupted
    has none; a run without top-1 has only explanation rows)."""
    recorded: dict[tuple[str, str], str] = {}
    for row in rows:
        if not row["factor"]:
            recorded.setdefault((row["model"], row["dataset"]),
                                str(row.get(FINGERPRINT_COLUMN) or ""))
    return recorded


def _csv_row(row: Mapping[str, Any]) -> dict[str, str]:
    value = row["value"]
    text = value if isinstance(value, str) else f"{float(value):.6f}"
    return {
        **{column: str(row.get(column, "")) for column in CSV_COLUMNS},
        "value": text,
    }


def replace_results(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """Write ``rows`` into ``path``: every earlier row of the same (model, dataset) pairs
    goes, the new rows take the place of the first of them (so the model order that
    results.md follows is kept), new pairs go at the end. The file is rewritten through
    a temporary file and a rename: a crash leaves the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old_rows = _read_rows(path)[1] if path.is_file() and path.stat().st_size else []
    new_by_pair: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        new_by_pair[(str(row["model"]), str(row["dataset"]))].append(_csv_row(row))
    merged: list[dict[str, str]] = []
    placed: set[tuple[str, str]] = set()
    for row in old_rows:
        pair = (row["model"], row["dataset"])
        if pair not in new_by_pair:
            merged.append(_csv_row(row))
        elif pair not in placed:
            merged.extend(new_by_pair[pair])
            placed.add(pair)
    merged.extend(
        _csv_row(row) for row in rows if (str(row["model"]), str(row["dataset"])) not in placed
    )
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(merged)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def results_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "Results",
                     notes: Sequence[str] = ()) -> str:
    """The markdown tables (see module docstring) for ``rows``; models in first-seen order.
    ``notes`` are lines printed under the title (the run's metric settings)."""
    overall = [row for row in rows if not row["factor"]]
    models = _ordered(row["model"] for row in overall)
    datasets = _ordered(row["dataset"] for row in overall)
    metrics = sorted(m for m in _ordered(row["metric"] for row in overall)
                     if not is_explanation_metric(m))
    value = {(r["model"], r["dataset"], r["metric"]): float(r["value"]) for r in overall}
    protocol_of = {r["dataset"]: r["protocol"] for r in overall}
    lines = [f"# {title}", ""]
    lines += [line for note in notes for line in (note, "")]
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
                cells.append("—" if row is None else f"{float(row['value']):.2f}")
                count = count or ("" if row is None else str(row["num_images"]))
            lines.append(
                f"| {dataset} | {factor} | {factor_value} | {count} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    lines += explanation_markdown(rows, models)
    return "\n".join(lines)


def write_results_markdown(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = "Results",
    notes: Sequence[str] = (),
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_markdown(rows, title=title, notes=notes), encoding="utf-8")
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
        value = {(r["model"], r["dataset"]): float(r["value"]) for r in overall}
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
                    (_as_number(r["factor_value"]), float(r["value"]))
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
    return written + plot_perturbation_curves(rows, out_dir)


def write_report(
    out_dir: str | os.PathLike[str], *, title: str = "Results", plots: bool = True,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Re-read ``out_dir/results.csv`` and (re)write ``results.md`` and the plots."""
    out_dir = Path(out_dir)
    rows = read_results_csv(out_dir / CSV_NAME)
    if not rows:
        raise FileNotFoundError(f"no results in {out_dir / CSV_NAME}")
    markdown = write_results_markdown(rows, out_dir / MARKDOWN_NAME, title=title, notes=notes)
    figures = plot_results(rows, out_dir) if plots else []
    return {"csv": out_dir / CSV_NAME, "markdown": markdown, "plots": figures}
