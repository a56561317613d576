"""The demo's before/after report as CSV and Markdown: top-1 per split for the original and
the fine-tuned model, and where each model's relevance lies (the foreground share), each
next to the reference that makes it readable (object-only top-1, the object's area)."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["write_before_after"]

PerModelSplit = Mapping[tuple[str, str], float]


def write_before_after(
    rows: Sequence[Mapping[str, object]],
    model_names: tuple[str, str],
    output_dir: str | os.PathLike[str],
    *,
    title: str,
    foreground_share: PerModelSplit,
    object_only_top1: PerModelSplit | None = None,
    object_only_foreground_share: PerModelSplit | None = None,
    object_area: Mapping[str, float] | None = None,
    patch_coverage_share: Mapping[str, float] | None = None,
) -> tuple[Path, Path, str]:
    """Write ``results.csv`` and ``results.md``; return both paths and the Markdown text.

    ``rows``: the evaluation runner's result rows (top-1 per model and split).
    ``foreground_share[(model, split)]``: mean share of relevance on the mask (fraction).
    ``object_only_top1[(model, split)]``: top-1 in percent with the background replaced by
    grey; ``object_only_foreground_share``: the foreground share on those images.
    ``object_area[split]``: mean mask area (fraction), the share of a map blind to the object;
    ``patch_coverage_share[split]``: the share of the patch-coverage reference map
    (:func:`robustft.demo.relevance_stats.patch_coverage_share`).
    The CSV holds the runner's rows plus one row per extra value (metrics ``fg_share``,
    ``fg_share_object_only``, ``top1_object_only``, ``object_area`` and
    ``fg_share_patch_coverage``, in percent)."""
    object_only_top1 = object_only_top1 or {}
    object_only_foreground_share = object_only_foreground_share or {}
    object_area = object_area or {}
    patch_coverage_share = patch_coverage_share or {}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = _write_csv(rows, output_dir / "results.csv", [
        ("fg_share", {k: 100 * v for k, v in foreground_share.items()}),
        ("fg_share_object_only", {k: 100 * v for k, v in object_only_foreground_share.items()}),
        ("top1_object_only", dict(object_only_top1)),
        ("object_area", {("", split): 100 * v for split, v in object_area.items()}),
        ("fg_share_patch_coverage",
         {("", split): 100 * v for split, v in patch_coverage_share.items()}),
    ])

    before, after = model_names
    top1 = {(r["model"], r["dataset"]): float(r["value"]) for r in rows
            if r["metric"] == "top1" and not r.get("factor")}
    splits = list(dict.fromkeys(r["dataset"] for r in rows))

    def cells(values: Mapping, form: Callable[[float], str], split: str) -> list[str]:
        return ["" if values.get((m, split)) is None else form(values[(m, split)])
                for m in model_names]

    def number(v: float) -> str:
        return f"{v:.1f}"

    def percent(v: float) -> str:
        return f"{100 * v:.1f}%"

    lines = [f"# {title}", "", "Top-1 (percent)", "",
             f"| split | {before} | {after} | change | object only: {before} | "
             f"object only: {after} |",
             "|---|---:|---:|---:|---:|---:|"]
    for split in splits:
        b, a = top1.get((before, split)), top1.get((after, split))
        change = "" if a is None or b is None else f"{a - b:+.1f}"
        lines.append("| " + " | ".join([split, *cells(top1, number, split), change,
                                        *cells(object_only_top1, number, split)]) + " |")
    lines += ["", "Relevance on the object (share of relevance mass on the mask)", "",
              f"| split | object area | patch-coverage map | {before} | {after} | "
              f"object only: {before} | object only: {after} |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for split in splits:
        references = [object_area.get(split), patch_coverage_share.get(split)]
        lines.append("| " + " | ".join([split, *("" if v is None else percent(v)
                                                 for v in references),
                                        *cells(foreground_share, percent, split),
                                        *cells(object_only_foreground_share, percent, split)])
                     + " |")
    lines += ["", "Relevance is the raw rollout map of the ground-truth class, upsampled and "
              "min-max normalised per image; the share is sum(S*M)/sum(S). \"object only\": "
              "the same images with the background replaced by flat grey, so that only the "
              "object carries information: its top-1 is the most that looking only at the "
              "object gives this model, its share is where this model's relevance lies when "
              "the object is all it can use. \"object area\": the share of a map that ignores "
              "the object. \"patch-coverage map\": the share of a reference map equal to each "
              "patch's object coverage: what a map at the model's patch grid gets when it "
              "weighs each patch by how much object it holds (only a map that lights interior "
              "patches alone scores higher). Shares and "
              "object-only top-1 use a subset of each split spread over its classes."]
    text = "\n".join(lines) + "\n"
    md_path = output_dir / "results.md"
    md_path.write_text(text)
    return csv_path, md_path, text


def _write_csv(rows: Sequence[Mapping[str, object]], path: Path,
               extra: Sequence[tuple[str, PerModelSplit]]) -> Path:
    all_rows = [dict(r) for r in rows]
    for metric, values in extra:
        for (model, split), value in values.items():
            all_rows.append({"model": model, "dataset": split, "protocol": "", "metric": metric,
                             "factor": "", "factor_value": "", "value": round(value, 2),
                             "num_images": ""})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(all_rows[0].keys()))
        writer.writeheader()
        writer.writerows(all_rows)
    return path
