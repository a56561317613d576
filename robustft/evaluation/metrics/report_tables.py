"""The explanation metrics' part of ``results.md`` and their plots.

Rows come from ``results.csv`` (metric ``<method>:<quantity>``, see
``robustft.evaluation.metrics.map_scoring``; their headings come from the metric classes of
``robustft.evaluation.metrics``). ``results.md`` gains one table per explanation
quantity (datasets x models, change from the first model) and, per dataset, the
perturbation curves (top-1 per removed fraction); the AUC's x-grid is stated from the
fractions the rows hold. Plots: ``perturbation_<dataset>.png``, each model's positive
(solid) and negative (dashed) curve.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.evaluation.metrics import map_metrics

__all__ = ["explanation_markdown", "is_explanation_metric", "plot_perturbation_curves",
           "quantity_titles"]


def quantity_titles() -> dict[str, str]:
    """Each row quantity's heading, in the order of the tables: every registered map
    metric's quantities, then their constant-map rows."""
    metrics = map_metrics()
    titles = {quantity: title for metric in metrics for quantity, title in metric.titles.items()}
    titles.update({metric.constant_maps_quantity(): metric.constant_maps_title()
                   for metric in metrics})
    return titles


CURVE_QUANTITIES = ("perturbation_positive", "perturbation_negative")


def is_explanation_metric(metric: str) -> bool:
    return ":" in metric


def _split(metric: str) -> tuple[str, str]:
    method, _, quantity = metric.partition(":")
    return method, quantity


def _ordered(values: Any) -> list[Any]:
    return list(dict.fromkeys(values))


def _cells(values: Sequence[float | None]) -> list[str]:
    base = values[0] if values else None
    cells = []
    for index, value in enumerate(values):
        if value is None:
            cells.append("—")
        elif index == 0 or base is None:
            cells.append(f"{value:.2f}")
        else:
            cells.append(f"{value:.2f} ({value - base:+.2f})")
    return cells


def explanation_markdown(rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> list[str]:
    """Markdown lines of the explanation metrics in ``rows`` ([] when there are none)."""
    rows = [row for row in rows if is_explanation_metric(str(row["metric"]))]
    if not rows:
        return []
    overall = [row for row in rows if not row["factor"]]
    datasets = _ordered(row["dataset"] for row in rows)
    value = {(r["model"], r["dataset"], r["metric"]): float(r["value"]) for r in overall}
    titles = quantity_titles()
    order = list(titles)
    metrics = sorted(_ordered(r["metric"] for r in overall),
                     key=lambda m: (_split(m)[0], order.index(_split(m)[1])
                                    if _split(m)[1] in order else len(order), m))
    lines = ["# Explanation quality", ""]
    curves = [row for row in rows if _split(str(row["metric"]))[1] in CURVE_QUANTITIES]
    grid = sorted({float(row["factor_value"]) for row in curves})
    if grid:
        lines += [f"Perturbation AUC = `np.trapezoid(top-1 %, x=removed fraction)` over the "
                  f"x-grid {', '.join(f'{x:g}' for x in grid)} (p = 0 is the unperturbed "
                  "top-1; pixels ranked by the map upsampled to the input).", ""]
    for metric in metrics:
        method, quantity = _split(metric)
        lines += [f"## `{method}`: {titles.get(quantity, quantity)}", ""]
        lines.append("| dataset | " + " | ".join(f"`{m}`" for m in models) + " |")
        lines.append("|---|" + "---:|" * len(models))
        for dataset in datasets:
            if not any((m, dataset, metric) in value for m in models):
                continue
            cells = _cells([value.get((m, dataset, metric)) for m in models])
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        lines.append("")
    if curves:
        lines += ["## Perturbation curves: top-1 (%) per removed fraction", ""]
        lines.append("| dataset | method | direction | fraction | "
                     + " | ".join(f"`{m}`" for m in models) + " |")
        lines.append("|---|---|---|---:|" + "---:|" * len(models))
        keyed = {(r["model"], r["dataset"], r["metric"], r["factor_value"]): float(r["value"])
                 for r in curves}
        for dataset, metric, fraction in _ordered(
                (r["dataset"], r["metric"], r["factor_value"]) for r in curves):
            method, quantity = _split(metric)
            cells = _cells([keyed.get((m, dataset, metric, fraction)) for m in models])
            lines.append(f"| {dataset} | {method} | {quantity.removeprefix('perturbation_')} | "
                         f"{fraction} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot_perturbation_curves(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]
                             ) -> list[Path]:
    """One PNG per dataset with perturbation rows; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_dataset: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if _split(str(row["metric"]))[1] in CURVE_QUANTITIES and row["factor"]:
            by_dataset[row["dataset"]].append(row)
    written = []
    for dataset, dataset_rows in by_dataset.items():
        figure, axes = plt.subplots(figsize=(5.5, 4))
        for model in _ordered(r["model"] for r in dataset_rows):
            for metric in _ordered(r["metric"] for r in dataset_rows):
                method, quantity = _split(metric)
                points = sorted((float(r["factor_value"]), float(r["value"]))
                                for r in dataset_rows if r["model"] == model and r["metric"] == metric)
                if not points:
                    continue
                direction = quantity.removeprefix("perturbation_")
                axes.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                          linestyle="-" if direction == "positive" else "--",
                          label=f"{model} ({method}, {direction})")
        axes.set_xlabel("removed fraction of pixels")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_ylim(0, 100)
        axes.set_title(f"{dataset}: perturbation test")
        axes.legend(fontsize="x-small")
        figure.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
        path = Path(out_dir) / f"perturbation_{safe}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written
