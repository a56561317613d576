"""benchmarks/worst_draw.py on a hand-made results table whose worst draws are known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from robustft.demo.compare_results import ORIGINAL, REFERENCE, ResultRow, write_results

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "worst_draw.py"


def _script():
    spec = importlib.util.spec_from_file_location("worst_draw", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_column_is_the_draw_with_the_least_of_it(tmp_path):
    rows = [ResultRow("synth", ORIGINAL, None, "in_distribution", "top1", 99.0),
            ResultRow("synth", ORIGINAL, None, "shuffled", "top1", 30.0),
            ResultRow("synth", ORIGINAL, None, "anti_correlated", "top1", 20.0),
            ResultRow("synth", REFERENCE, None, "shuffled", "fg_share", 80.0)]
    # three draws; a different draw is the worst in each column
    for draw, (in_dist, shuffled, anti, share) in enumerate(
            [(98.0, 60.0, 50.0, 72.0), (99.5, 45.0, 55.0, 70.0), (98.5, 70.0, 41.0, 60.0)]):
        rows += [ResultRow("synth", "relevance", draw, "in_distribution", "top1", in_dist),
                 ResultRow("synth", "relevance", draw, "shuffled", "top1", shuffled),
                 ResultRow("synth", "relevance", draw, "anti_correlated", "top1", anti),
                 ResultRow("synth", "relevance", draw, "shuffled", "fg_share", share)]
    run = tmp_path / "run1"
    run.mkdir()
    write_results(rows, run / "compare_results.csv")
    table = _script().worst_draw_table([run]).splitlines()
    assert len(table) == 3
    # in-dist 98.0 - 99.0, shuffled 45 - 30, anti 41 - 20, share 60 = 75 % of 80
    assert table[2] == "| run1: relevance | synth | -1.0 | +15.0 | +21.0 | 60.0 | 75 % |"
