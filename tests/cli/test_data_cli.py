"""robustft-data: synth generates (and reuses) the benchmark, verify reports problems."""

from __future__ import annotations

import json

from robustft.cli.data import main


def test_synth_generates_and_reuses(tmp_path, capsys):
    args = ["synth", str(tmp_path / "b"), "--num-classes", "3", "--train-per-class", "2",
            "--pretrain-per-class", "3", "--eval-per-class", "1", "--plain-prob", "0.5"]
    assert main(args) == 0
    info = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert info["config"]["num_classes"] == 3 and info["splits"]["train"]["count"] == 6
    assert info["splits"]["pretrain"]["count"] == 9 and info["config"]["plain_prob"] == 0.5
    assert "train 6" in capsys.readouterr().out
    stamp = (tmp_path / "b" / "benchmark.json").stat().st_mtime_ns
    assert main(args) == 0  # same settings: reused, not rewritten
    assert (tmp_path / "b" / "benchmark.json").stat().st_mtime_ns == stamp


def test_verify_reports_missing_folders_with_exit_code(tmp_path, capsys):
    (tmp_path / "imagenet-a").mkdir()
    assert main(["verify", "imagenet-a", str(tmp_path / "imagenet-a")]) == 1
    out = capsys.readouterr().out
    assert "missing folders" in out and "n01498041" in out


def test_list_names_the_manifests(capsys):
    assert main(["list"]) == 0
    assert "objectnet" in capsys.readouterr().out.split()
