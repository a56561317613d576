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
from pathlib import Path

from robustft.demo.compare_results import ORIGINAL, REFERENCE, read_results, summarize

SPLITS = ("in_distribution", "shuffled", "anti_correlated")


def worst_draw_table(run_dirs: list[Path]) -> str:
    lines = ["| run: objective | benchmark | in-dist change | shuffled gain | anti gain "
             "| share (shuffled) | % of reference |", "|---|---|---:|---:|---:|---:|---:|"]
    for run_dir in run_dirs:
        rows = read_results(run_dir / "compare_results.csv")
        summaries = summarize(rows)  # the values of each key over the draws, as compare.md
        objectives = sorted({(r.benchmark, r.objective) for r in rows if r.draw is not None})
        for benchmark, objective in objectives:
            gains = [summaries[(benchmark, objective, split, "top1")].low
                     - summaries[(benchmark, ORIGINAL, split, "top1")].mean for split in SPLITS]
            share = summaries[(benchmark, objective, "shuffled", "fg_share")].low
            reference = summaries.get((benchmark, REFERENCE, "shuffled", "fg_share"))
            percent = f"{100 * share / reference.mean:.0f} %" if reference else "-"
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
