"""The comparison as a PNG: per metric, bars per split per objective (mean over draws) with
each draw's value as a point."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from robustft.demo.compare_results import METRIC_TITLES, Summary, SummaryKey

__all__ = ["plot_comparison"]


def plot_comparison(summaries: Mapping[SummaryKey, Summary], path: str | os.PathLike[str], *,
                    benchmark: str, objectives: Sequence[str], splits: Sequence[str],
                    metrics: Sequence[str] = ("top1", "fg_share")) -> Path:
    """One panel per metric; within it, a group of bars per split, one bar per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(metrics), 1, figsize=(max(8.0, 1.6 * len(splits)),
                                                          3.6 * len(metrics)), squeeze=False)
    width = 0.8 / max(1, len(objectives))
    colours = plt.get_cmap("tab10")
    for axis, metric in zip(axes[:, 0], metrics):
        for index, objective in enumerate(objectives):
            offset = (index - (len(objectives) - 1) / 2) * width
            for position, split in enumerate(splits):
                summary = summaries.get((benchmark, objective, split, metric))
                if summary is None:
                    continue
                x = position + offset
                axis.bar(x, summary.mean, width=width * 0.95, color=colours(index % 10),
                         label=objective if position == 0 else None)
                if len(summary.values) > 1:
                    axis.scatter([x] * len(summary.values), summary.values, s=9, color="black",
                                 zorder=3)
        axis.set_xticks(range(len(splits)), splits, rotation=20, ha="right")
        axis.set_ylabel(METRIC_TITLES.get(metric, metric))
        axis.set_ylim(0, 100)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{benchmark}: mean over draws (bars), each draw (points)")
    # above the panels, where no bar reaches
    axes[0, 0].legend(fontsize=7, ncol=min(4, len(objectives)), loc="lower center",
                      bbox_to_anchor=(0.5, 1.0))
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
