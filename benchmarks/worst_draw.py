"""The worst draw of each fine-tuned objective in one or more ``robustft-compare`` runs.

``compare.md`` gives the mean and range over the draws; a recipe that must hold on every
draw is judged by its worst one. For each objective and benchmark of each run directory:
the in-distribution change, the shuffled and anti-correlated gains of the draw with the
least of each, and the lowest share of relevance on the object (shuffled split) with its
percentage of the shortcut-free reference's (when the run has one)::

    python benchmarks/worst_draw.py logs/compare/runs/<run> [<run> ...]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from robustft.evaluation.compare import ORIGINAL, REFERENCE, read_results

SPLITS = ("in_distribution", "shuffled", "anti_correlated")


def worst_draw_table(run_dirs: list[Path]) -> str:
    lines = ["| run: objective | benchmark | in-dist change | shuffled gain | anti gain "
             "| share (shuffled) | % of reference |", "|---|---|---:|---:|---:|---:|---:|"]
    for run_dir in run_dirs:
        rows = read_results(run_dir / "compare_results.csv")
        single: dict[tuple, float] = {}
        per_draw: dict[tuple, list[float]] = defaultdict(list)
        for row in rows:
            key = (row.benchmark, row.objective, row.split, row.metric)
            if row.draw is None:
                single[key] = row.value
            else:
                per_draw[key].append(row.value)
        objectives = sorted({(r.benchmark, r.objective) for r in rows if r.draw is not None})
        for benchmark, objective in objectives:
            gains = [min(per_draw[(benchmark, objective, split, "top1")])
                     - single[(benchmark, ORIGINAL, split, "top1")] for split in SPLITS]
            share = min(per_draw[(benchmark, objective, "shuffled", "fg_share")])
            reference = single.get((benchmark, REFERENCE, "shuffled", "fg_share"))
            percent = f"{100 * share / reference:.0f} %" if reference else "-"
            lines.append(f"| {run_dir.name}: {objective} | {benchmark} | "
                         + " | ".join(f"{g:+.1f}" for g in gains) + f" | {share:.1f} | {percent} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="robustft-compare run directories")
    table = worst_draw_table(parser.parse_args(argv).runs)
    print(table)
    return table


if __name__ == "__main__":
    main()
