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


def test_verify_generic_prints_each_kind_and_exits_1_on_errors(tmp_path, capsys):
    from fixtures.generic_layout import add_one_defect_of_each_kind, make_generic_layout

    root = make_generic_layout(tmp_path / "pairs", num_classes=3, per_class=4)
    assert main(["verify", "generic", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"generic layout at {root}: OK"
    add_one_defect_of_each_kind(root)
    assert main(["verify", "generic", str(root), "--examples", "1"]) == 1
    out = capsys.readouterr().out
    for line in ["error: 1 missing mask: masks/c0/img0.png",
                 "error: 1 orphan mask folder: masks/zebra",
                 "error: 1 mask of another size: masks/c0/img1.png",
                 "error: 1 mask with a wrong mode: masks/c1/img0.png",
                 "error: 1 unreadable image: images/c1/img2.png",
                 "error: 1 unreadable mask: masks/c2/img0.png",
                 "warning: 1 mask without foreground: masks/c1/img1.png",
                 "warning: 1 mask file without an image: masks/c2/leftover.png",
                 "skipped: 1 hidden file: images/c2/._img1.jpg"]:
        assert line in out, out
