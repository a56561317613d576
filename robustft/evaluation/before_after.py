"""The demo's before/after report: top-1 per split for the original and the fine-tuned
model, and the share of relevance on the foreground, as CSV and Markdown."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["write_before_after"]


def write_before_after(
    rows: Sequence[Mapping[str, object]],
    foreground_shares: Mapping[tuple[str, str], float],
    model_names: tuple[str, str],
    output_dir: str | os.PathLike[str],
    *,
    title: str,
    object_only: Mapping[tuple[str, str], float] | None = None,
) -> tuple[Path, Path, str]:
    """``rows``: the evaluation runner's result rows; ``foreground_shares[(model, split)]``
    (fractions); ``object_only[(model, split)]``: top-1 in percent with the background
    removed (optional). Writes ``results.csv`` (the runner's rows plus ``fg_share`` and
    ``top1_object_only`` rows) and ``results.md`` (one line per split: top-1
    before/after/change, foreground share before/after, object-only top-1 before/after).
    Returns both paths and the Markdown text."""
    object_only = object_only or {}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    all_rows = [dict(r) for r in rows]
    extra = [("fg_share", (m, s), 100 * v) for (m, s), v in foreground_shares.items()]
    extra += [("top1_object_only", (m, s), v) for (m, s), v in object_only.items()]
    for metric, (model, split), value in extra:
        all_rows.append({"model": model, "dataset": split, "protocol": "", "metric": metric,
                         "factor": "", "factor_value": "", "accuracy": round(value, 2),
                         "num_images": ""})
    csv_path = output_dir / "results.csv"
    columns = list(all_rows[0].keys())
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(all_rows)

    before, after = model_names
    top1 = {(r["model"], r["dataset"]): float(r["accuracy"]) for r in rows
            if r["metric"] == "top1" and not r.get("factor")}
    splits = list(dict.fromkeys(r["dataset"] for r in rows))
    lines = [f"# {title}", "",
             f"| split | top-1 {before} | top-1 {after} | change | fg share {before} | "
             f"fg share {after} | object-only top-1 {before} | object-only top-1 {after} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for split in splits:
        b, a = top1.get((before, split)), top1.get((after, split))
        sb, sa = foreground_shares.get((before, split)), foreground_shares.get((after, split))
        fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
        pct = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        change = "" if a is None or b is None else f"{a - b:+.1f}"
        ob, oa = object_only.get((before, split)), object_only.get((after, split))
        lines.append(f"| {split} | {fmt(b)} | {fmt(a)} | {change} | {pct(sb)} | {pct(sa)} | "
                     f"{fmt(ob)} | {fmt(oa)} |")
    lines += ["", "top-1 in percent; fg share = mean share of the (min-max normalised) relevance "
              "of the ground-truth class that lies on the object's mask; object-only top-1 = "
              "top-1 with the background replaced by flat grey (the most that looking only at "
              "the object can give this model); fg share and object-only top-1 use a subset "
              "of each split spread over its classes."]
    text = "\n".join(lines) + "\n"
    md_path = output_dir / "results.md"
    md_path.write_text(text)
    return csv_path, md_path, text
