"""results.csv write/read/replace and fingerprints, results.md tables with changes, plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustft.evaluation.report import (
    CSV_COLUMNS,
    plot_results,
    read_results_csv,
    recorded_fingerprints,
    replace_results,
    results_have_fingerprints,
    results_markdown,
)
from robustft.evaluation.runner import RESULT_COLUMNS


def _row(model, dataset, metric, accuracy, factor="", value="", protocol="standard:1000-way"):
    return {
        "model": model, "dataset": dataset, "protocol": protocol, "metric": metric,
        "factor": factor, "factor_value": value, "value": accuracy, "num_images": 10,
    }  # fmt: skip


ROWS = [
    _row("base", "imagenet-val", "top1", 81.0),
    _row("ft", "imagenet-val", "top1", 80.5),
    _row("base", "imagenet-val", "top5", 95.0),
    _row("ft", "imagenet-val", "top5", 95.25),
    _row("base", "si-score-area", "top1", 40.0),
    _row("ft", "si-score-area", "top1", 50.0),
    _row("base", "si-score-area", "top1", 20.0, "area", "0.1"),
    _row("ft", "si-score-area", "top1", 30.0, "area", "0.1"),
    _row("base", "si-score-area", "top1", 60.0, "area", "0.5"),
    _row("ft", "si-score-area", "top1", 70.0, "area", "0.5"),
]


def test_csv_round_trip_and_recorded_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    assert read_results_csv(path) == [] and not results_have_fingerprints(path)
    replace_results([dict(r, fingerprint="f1") for r in ROWS[:4]], path)
    assert recorded_fingerprints(read_results_csv(path)) == {
        ("base", "imagenet-val"): "f1", ("ft", "imagenet-val"): "f1",
    }  # fmt: skip
    replace_results([dict(r, fingerprint="f2") for r in ROWS[4:]], path)
    rows = read_results_csv(path)
    assert len(rows) == len(ROWS) and rows[1]["value"] == pytest.approx(80.5)
    assert recorded_fingerprints(rows)[("ft", "si-score-area")] == "f2"
    assert results_have_fingerprints(path)
    # a factor row alone does not mark a pair finished
    replace_results([_row("x", "d", "top1", 1.0, "area", "0.1")], path)
    assert ("x", "d") not in recorded_fingerprints(read_results_csv(path))


def test_replacing_a_pair_swaps_its_rows_in_place(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    replace_results([dict(r, fingerprint="old") for r in ROWS], path)
    new_base = [dict(r, value=r["value"] - 1, fingerprint="new")
                for r in ROWS if r["model"] == "base" and r["dataset"] == "si-score-area"]  # fmt: skip
    replace_results(new_base, path)
    rows = read_results_csv(path)
    assert len(rows) == len(ROWS)  # replaced, not appended
    assert [(r["model"], r["dataset"]) for r in rows] == [
        (r["model"], r["dataset"]) for r in ROWS[:4]
    ] + [("base", "si-score-area")] * 3 + [("ft", "si-score-area")] * 3
    base = [r for r in rows if r["model"] == "base" and r["dataset"] == "si-score-area"]
    assert [r["value"] for r in base] == [39.0, 19.0, 59.0]
    assert {r["fingerprint"] for r in base} == {"new"}
    assert {r["fingerprint"] for r in rows if r not in base} == {"old"}
    # the model order results.md follows is unchanged: base is still the first column
    assert "| dataset | protocol | `base` | `ft` |" in results_markdown(rows)


def test_csv_without_fingerprint_column_reads_as_unfingerprinted(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    header = ",".join(RESULT_COLUMNS)
    path.write_text(f"{header}\nbase,imagenet-val,standard:1000-way,top1,,,81.000000,10\n")
    rows = read_results_csv(path)
    assert not results_have_fingerprints(path)
    assert recorded_fingerprints(rows) == {("base", "imagenet-val"): ""}
    replace_results([dict(ROWS[1], fingerprint="f")], path)  # ft's row joins, base's stays
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert recorded_fingerprints(read_results_csv(path)) == {
        ("base", "imagenet-val"): "", ("ft", "imagenet-val"): "f",
    }  # fmt: skip


def test_foreign_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a robustft results.csv") as error:
        replace_results(ROWS, path)
    assert "\n" not in str(error.value)
    assert path.read_text() == "a,b\n1,2\n"


def test_markdown_rows_datasets_columns_models_with_change() -> None:
    text = results_markdown(ROWS)
    assert "| dataset | protocol | `base` | `ft` |" in text
    assert "| imagenet-val | standard:1000-way | 81.00 | 80.50 (-0.50) |" in text
    assert "| imagenet-val | standard:1000-way | 95.00 | 95.25 (+0.25) |" in text
    assert "| si-score-area | area | 0.1 | 10 | 20.00 | 30.00 |" in text
    assert "Legacy" not in text


def test_markdown_labels_legacy_protocol() -> None:
    legacy = [dict(row, protocol="legacy:1000-way") for row in ROWS]
    assert "**Legacy protocol**" in results_markdown(legacy)


def test_plots_are_written(tmp_path: Path) -> None:
    files = plot_results(ROWS, tmp_path)
    assert {f.name for f in files} == {"accuracy_per_dataset.png", "factors_si-score-area.png"}
    assert all(f.stat().st_size > 1000 for f in files)


def test_a_results_file_with_the_old_accuracy_column_is_read_and_rewritten_as_value(tmp_path):
    """results.csv files written before the column was named ``value`` (then ``accuracy``)
    still resume: their rows are read, and the next write renames the column."""
    import csv

    path = tmp_path / "results.csv"
    old = [{**{k: str(v) for k, v in r.items()}, "fingerprint": "old"} for r in ROWS]
    header = [("accuracy" if c == "value" else c) for c in (*RESULT_COLUMNS, "fingerprint")]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows({("accuracy" if k == "value" else k): v for k, v in r.items()}
                         for r in old)
    rows = read_results_csv(path)
    assert [r["value"] for r in rows] == [float(r["value"]) for r in ROWS]
    replace_results([dict(ROWS[0], value=1.5)], path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert "value" in reader.fieldnames and "accuracy" not in reader.fieldnames
        kept = list(reader)
    assert len(kept) == len(ROWS) - sum(
        (r["model"], r["dataset"]) == (ROWS[0]["model"], ROWS[0]["dataset"]) for r in ROWS) + 1
