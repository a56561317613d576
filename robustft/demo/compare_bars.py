"""The bars a recipe must meet on every draw (docs/method.md §10), read off a comparison's
results table: per benchmark, objective and draw,

- the share of the gap closed on a shifted split: ``(top1 - top1_original) /
  (object_only_top1_original - top1_original)``, the gap being what the original model
  knows of the objects (its top-1 with the background greyed out) and does not use;
- the gain over a control objective (plain fine-tuning) of the same draw, in points;
- the in-distribution change from the original, in points;
- the share of relevance on the object on shuffled images, in percent of the
  shortcut-free reference's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from robustft.demo.compare_results import ORIGINAL, REFERENCE, ResultRow

__all__ = ["DrawBars", "draw_bars", "bars_markdown"]
SHIFTED = ("shuffled", "anti_correlated")


@dataclass(frozen=True)
class DrawBars:
    benchmark: str
    objective: str
    draw: int
    gap_closed: dict[str, float]  # split -> fraction of the gap closed
    over_control: dict[str, float]  # split -> top-1 minus the control's, points
    in_distribution_change: float
    share_of_reference: float | None  # percent


def draw_bars(rows: Iterable[ResultRow], control: str = "plain") -> list[DrawBars]:
    """One :class:`DrawBars` per (benchmark, objective, draw) of every fine-tuned objective
    (the control's own rows included; its gain over itself is 0)."""
    value = {(r.benchmark, r.objective, r.draw, r.split, r.metric): r.value for r in rows}
    found = sorted({(r.benchmark, r.objective, r.draw) for r in rows if r.draw is not None})
    bars = []
    for benchmark, objective, draw in found:
        def of(split: str, metric: str = "top1", who: str = objective, at: int | None = draw,
               bench: str = benchmark) -> float | None:
            return value.get((bench, who, at, split, metric))

        gap, over = {}, {}
        for split in SHIFTED:
            top1, original = of(split), of(split, who=ORIGINAL, at=None)
            known = of(split, "top1_object_only", who=ORIGINAL, at=None)
            if None not in (top1, original, known) and known > original:
                gap[split] = (top1 - original) / (known - original)
            control_top1 = of(split, who=control)
            if top1 is not None and control_top1 is not None:
                over[split] = top1 - control_top1
        in_dist, in_dist_original = of("in_distribution"), of("in_distribution", who=ORIGINAL, at=None)
        share = of("shuffled", "fg_share")
        reference = of("shuffled", "fg_share", who=REFERENCE, at=None)
        bars.append(DrawBars(
            benchmark, objective, draw, gap, over,
            in_dist - in_dist_original if None not in (in_dist, in_dist_original) else float("nan"),
            100 * share / reference if share is not None and reference else None))
    return bars


def bars_markdown(bars: Sequence[DrawBars], *, objectives: Sequence[str], control: str = "plain",
                  heading_level: int = 4) -> str:
    """Per benchmark, a row per objective and draw: gap closed on shuffled / anti-correlated,
    the gain over ``control`` there, the in-distribution change and the share's percent of
    the shortcut-free reference."""
    hashes = "#" * heading_level
    lines = []
    for benchmark in sorted({b.benchmark for b in bars}):
        lines += [f"{hashes} {benchmark}: the bars, draw by draw", "",
                  "| objective | draw | gap closed: shuffled | anti-correlated | over "
                  f"{control}: shuffled | anti-correlated | in-dist change | share, % of reference |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for objective in objectives:
            for bar in (b for b in bars if b.benchmark == benchmark and b.objective == objective):
                gap = [f"{100 * bar.gap_closed[s]:.0f} %" if s in bar.gap_closed else "-"
                       for s in SHIFTED]
                over = [f"{bar.over_control[s]:+.1f}" if s in bar.over_control else "-"
                        for s in SHIFTED]
                share = "-" if bar.share_of_reference is None else f"{bar.share_of_reference:.0f} %"
                lines.append(f"| {objective} | {bar.draw} | {' | '.join(gap)} | {' | '.join(over)} "
                             f"| {bar.in_distribution_change:+.1f} | {share} |")
        lines.append("")
    return "\n".join(lines)
