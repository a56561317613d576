"""The comparison of training objectives over several draws of the fine-tuning images: a
long results table (one value per benchmark, objective, draw, split and metric), its
summary over draws (mean, min, max, change from the original model) and the summary as
Markdown tables, one pair (top-1, share of relevance on the object) per benchmark."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ORIGINAL", "REFERENCE", "ResultRow", "Summary", "summarize", "compare_markdown",
           "write_results", "read_results"]

#: the stand-in before fine-tuning, and the stand-in pre-trained without the shortcut
ORIGINAL = "original"
REFERENCE = "shortcut-free"
COLUMNS = ("benchmark", "objective", "draw", "split", "metric", "value")
METRIC_TITLES = {"top1": "Top-1 (percent)",
                 "fg_share": "Share of relevance on the object (percent)"}


@dataclass(frozen=True)
class ResultRow:
    """One measured value; ``draw`` is None for a model that no draw changes (the original
    and the shortcut-free reference). Values in percent."""

    benchmark: str
    objective: str
    draw: int | None
    split: str
    metric: str
    value: float


@dataclass(frozen=True)
class Summary:
    """One objective's value of one metric on one split, over its draws."""

    values: tuple[float, ...]
    change: float | None  # mean minus the original model's value (None: no original)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


SummaryKey = tuple[str, str, str, str]  # benchmark, objective, split, metric


def summarize(rows: Iterable[ResultRow]) -> dict[SummaryKey, Summary]:
    """Mean, min and max over the draws of each (benchmark, objective, split, metric), and
    the change of the mean from the ``ORIGINAL`` objective's value on the same benchmark,
    split and metric. A key measured twice for the same draw is an error (two runs would
    be averaged as if they were two draws)."""
    grouped: dict[SummaryKey, dict[int | None, float]] = defaultdict(dict)
    for row in rows:
        key = (row.benchmark, row.objective, row.split, row.metric)
        if row.draw in grouped[key]:
            raise ValueError(f"results table: {row.objective} on {row.benchmark}/{row.split} "
                             f"({row.metric}) has two values for draw {row.draw}")
        grouped[key][row.draw] = float(row.value)
    summaries = {}
    for key, by_draw in grouped.items():
        benchmark, _objective, split, metric = key
        values = tuple(by_draw[draw] for draw in sorted(by_draw, key=lambda d: (d is None, d)))
        original = grouped.get((benchmark, ORIGINAL, split, metric))
        change = None
        if original:
            base = sum(original.values()) / len(original)
            change = sum(values) / len(values) - base
        summaries[key] = Summary(values=values, change=change)
    return summaries


def _cell(summary: Summary | None, objective: str) -> str:
    if summary is None:
        return ""
    text = f"{summary.mean:.1f}"
    if len(summary.values) > 1:
        text += f" ({summary.low:.1f}–{summary.high:.1f})"
    if objective != ORIGINAL and summary.change is not None:
        text += f" {summary.change + 0.0:+.1f}".replace("-0.0", "+0.0")  # no signed zero
    return text


def compare_markdown(summaries: Mapping[SummaryKey, Summary], *, benchmark: str,
                     objectives: Sequence[str], splits: Sequence[str],
                     draws: Sequence[int], metrics: Sequence[str] = ("top1", "fg_share"),
                     heading_level: int = 3) -> str:
    """One table per metric for ``benchmark``: a row per objective (in the order given), a
    column per split; each cell ``mean (min–max) change-from-original``."""
    hashes = "#" * heading_level
    seeds = ",".join(str(d) for d in draws)
    lines = []
    for metric in metrics:
        lines += [f"{hashes} {benchmark}: {METRIC_TITLES.get(metric, metric)}", "",
                  f"Mean over `data.seed={seeds}` (min–max), then the change of the mean "
                  f"from the {ORIGINAL} model.", "",
                  "| objective | " + " | ".join(splits) + " |",
                  "|---|" + "---:|" * len(splits)]
        for objective in objectives:
            cells = [_cell(summaries.get((benchmark, objective, split, metric)), objective)
                     for split in splits]
            if any(cells):
                lines.append(f"| {objective} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_results(rows: Iterable[ResultRow], path: str | os.PathLike[str]) -> Path:
    """The long results table as CSV (``draw`` empty for the draw-independent models)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([row.benchmark, row.objective, "" if row.draw is None else row.draw,
                             row.split, row.metric, f"{row.value:.4f}"])
    return path


def read_results(path: str | os.PathLike[str]) -> list[ResultRow]:
    """Inverse of :func:`write_results`."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected the columns {','.join(COLUMNS)}, got "
                             f"{','.join(reader.fieldnames or ())}")
        return [ResultRow(benchmark=r["benchmark"], objective=r["objective"],
                          draw=None if r["draw"] == "" else int(r["draw"]), split=r["split"],
                          metric=r["metric"], value=float(r["value"])) for r in reader]
