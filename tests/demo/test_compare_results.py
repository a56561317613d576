"""The comparison's aggregation over draws (mean, min, max, change from the original) on a
hand-made results table, its Markdown and CSV round trip, and the README block rewrite."""

from __future__ import annotations

import pytest

from robustft.demo.compare_plot import plot_comparison
from robustft.demo.compare_results import (
    ORIGINAL,
    REFERENCE,
    ResultRow,
    compare_markdown,
    read_results,
    summarize,
    write_results,
)
from robustft.demo.marked_block import replace_marked_block, replace_marked_block_in_file


def _table() -> list[ResultRow]:
    rows = [ResultRow("synth", ORIGINAL, None, "shuffled", "top1", 30.0),
            ResultRow("synth", ORIGINAL, None, "in_distribution", "top1", 99.0),
            ResultRow("synth", REFERENCE, None, "shuffled", "top1", 98.0),
            ResultRow("synth", ORIGINAL, None, "shuffled", "fg_share", 55.0)]
    for draw, shuffled, in_dist, share in ((0, 50.0, 98.0, 60.0), (1, 35.0, 99.0, 57.0),
                                           (2, 44.0, 97.0, 63.0)):
        rows += [ResultRow("synth", "relevance", draw, "shuffled", "top1", shuffled),
                 ResultRow("synth", "relevance", draw, "in_distribution", "top1", in_dist),
                 ResultRow("synth", "relevance", draw, "shuffled", "fg_share", share)]
    # another benchmark with its own original: changes are per benchmark
    rows += [ResultRow("other", ORIGINAL, None, "shuffled", "top1", 10.0),
             ResultRow("other", "relevance", 0, "shuffled", "top1", 20.0),
             ResultRow("other", "relevance", 1, "shuffled", "top1", 40.0)]
    return rows


def test_summary_is_mean_min_max_over_draws_and_change_from_the_original():
    summaries = summarize(_table())
    shuffled = summaries[("synth", "relevance", "shuffled", "top1")]
    assert shuffled.values == (50.0, 35.0, 44.0)
    assert shuffled.mean == pytest.approx(43.0)
    assert (shuffled.low, shuffled.high) == (35.0, 50.0)
    assert shuffled.change == pytest.approx(13.0)
    assert summaries[("synth", "relevance", "in_distribution", "top1")].change == pytest.approx(-1.0)
    assert summaries[("synth", "relevance", "shuffled", "fg_share")].change == pytest.approx(5.0)
    assert summaries[("synth", REFERENCE, "shuffled", "top1")].change == pytest.approx(68.0)
    assert summaries[("synth", ORIGINAL, "shuffled", "top1")].change == 0.0
    assert summaries[("other", "relevance", "shuffled", "top1")].change == pytest.approx(20.0)


def test_a_draw_measured_twice_is_refused():
    rows = _table() + [ResultRow("synth", "relevance", 1, "shuffled", "top1", 1.0)]
    with pytest.raises(ValueError, match="relevance on synth/shuffled .* draw 1") as error:
        summarize(rows)
    assert "\n" not in str(error.value)


def test_markdown_cells_and_csv_round_trip(tmp_path):
    rows = _table()
    assert read_results(write_results(rows, tmp_path / "r.csv")) == rows
    text = compare_markdown(summarize(rows), benchmark="synth",
                            objectives=[ORIGINAL, REFERENCE, "relevance", "rrr"],
                            splits=["in_distribution", "shuffled"], draws=[0, 1, 2])
    lines = text.splitlines()
    assert "| original | 99.0 | 30.0 |" in lines
    assert "| shortcut-free |  | 98.0 +68.0 |" in lines
    assert "| relevance | 98.0 (97.0–99.0) -1.0 | 43.0 (35.0–50.0) +13.0 |" in lines
    assert not any(line.startswith("| rrr ") for line in lines)  # not measured: no row
    share_table = text[text.index("Share of relevance"):]
    assert "| relevance |  | 60.0 (57.0–63.0) +5.0 |" in share_table
    assert "`data.seed=0,1,2`" in text
    png = plot_comparison(summarize(rows), tmp_path / "c.png", benchmark="synth",
                          objectives=[ORIGINAL, "relevance"], splits=["in_distribution", "shuffled"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


README = """# title

intro
<!-- compare:begin -->
old table
more old
<!-- compare:end -->
after the block
"""


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path):
    updated = replace_marked_block(README, "| new | table |\n", name="compare")
    assert updated == ("# title\n\nintro\n<!-- compare:begin -->\n| new | table |\n"
                       "<!-- compare:end -->\nafter the block\n")
    assert replace_marked_block(updated, "| new | table |", name="compare") == updated
    path = tmp_path / "README.md"
    path.write_text(README)
    replace_marked_block_in_file(path, "x", name="compare")
    assert path.read_text() == README.replace("old table\nmore old", "x")


@pytest.mark.parametrize("text", ["no markers\n", README + "<!-- compare:begin -->\n",
                                  "<!-- compare:end -->\n<!-- compare:begin -->\n"])
def test_readme_without_one_ordered_block_is_named(text, tmp_path):
    with pytest.raises(ValueError, match="compare:") as error:
        replace_marked_block(text, "x", name="compare", source="README.md")
    assert "README.md" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.md"):
        replace_marked_block_in_file(tmp_path / "missing.md", "x", name="compare")
