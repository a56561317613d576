"""The demo's before/after report and the object-only images."""

from __future__ import annotations

import csv

import torch

from robustft.demo.before_after import write_before_after
from robustft.demo.relevance_stats import replace_background


def _row(model, split, accuracy, metric="top1"):
    return {"model": model, "dataset": split, "protocol": "standard:2-way", "metric": metric,
            "factor": "", "factor_value": "", "value": accuracy, "num_images": 4}


def test_tables_and_csv(tmp_path):
    rows = [_row("a", "s1", 50.0), _row("b", "s1", 75.0), _row("a", "s1", 90.0, "top5"),
            _row("a", "s2", 40.0), _row("b", "s2", 30.0)]
    csv_path, md_path, text = write_before_after(
        rows, ("a", "b"), tmp_path, title="t",
        foreground_share={("a", "s1"): 0.25, ("b", "s1"): 0.5},
        object_only_top1={("a", "s1"): 60.0, ("b", "s1"): 70.0},
        object_only_foreground_share={("a", "s1"): 0.3, ("b", "s1"): 0.4},
        object_area={"s1": 0.2}, patch_coverage_share={"s1": 0.7})
    assert "| s1 | 50.0 | 75.0 | +25.0 | 60.0 | 70.0 |" in text
    assert "| s2 | 40.0 | 30.0 | -10.0 |  |  |" in text  # values it was not given stay empty
    assert "| s1 | 20.0% | 70.0% | 25.0% | 50.0% | 30.0% | 40.0% |" in text
    assert md_path.read_text() == text
    with csv_path.open() as handle:
        metrics = {(r["model"], r["dataset"], r["metric"]): r["value"]
                   for r in csv.DictReader(handle)}
    assert metrics[("b", "s1", "fg_share")] == "50.0"
    assert metrics[("a", "s1", "top1_object_only")] == "60.0"
    assert metrics[("b", "s1", "fg_share_object_only")] == "40.0"
    assert metrics[("", "s1", "object_area")] == "20.0"
    assert metrics[("", "s1", "fg_share_patch_coverage")] == "70.0"
    assert metrics[("a", "s1", "top5")] == "90.0"


def test_replace_background_keeps_the_object_and_greys_the_rest():
    images = torch.randn(1, 3, 4, 4)
    masks = torch.zeros(1, 4, 4)
    masks[0, 1:3, 1:3] = 1
    out = replace_background(images, masks, fill=0.25, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert torch.equal(out[0, :, 1:3, 1:3], images[0, :, 1:3, 1:3])
    expected = torch.tensor([-1.0, -0.5, -0.25])  # (0.25 - 0.5) / std
    assert torch.allclose(out[0, :, 0, 0], expected)
    assert torch.allclose(out[0, :, 3, 3], expected)
