"""results.csv append/read/resume, results.md tables with changes, plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustft.evaluation.report import (
    append_results_csv,
    finished_pairs,
    plot_results,
    read_results_csv,
    results_markdown,
)


def _row(model, dataset, metric, accuracy, factor="", value="", protocol="standard:1000-way"):
    return {
        "model": model, "dataset": dataset, "protocol": protocol, "metric": metric,
        "factor": factor, "factor_value": value, "accuracy": accuracy, "num_images": 10,
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


def test_csv_round_trip_append_and_finished_pairs(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    assert finished_pairs(path) == set()
    append_results_csv(ROWS[:4], path)
    assert finished_pairs(path) == {("base", "imagenet-val"), ("ft", "imagenet-val")}
    append_results_csv(ROWS[4:], path)
    rows = read_results_csv(path)
    assert len(rows) == len(ROWS) and rows[1]["accuracy"] == pytest.approx(80.5)
    assert ("ft", "si-score-area") in finished_pairs(path)
    # a factor row alone does not mark a pair finished
    append_results_csv([_row("x", "d", "top1", 1.0, "area", "0.1")], path)
    assert ("x", "d") not in finished_pairs(path)


def test_foreign_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="has columns"):
        append_results_csv(ROWS, path)


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
