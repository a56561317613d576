"""robustft-data verify generic: a user's own images+masks layout, every defect by kind."""

from __future__ import annotations

from pathlib import Path

from fixtures.generic_layout import add_one_defect_of_each_kind, make_generic_layout

from robustft.data.verify_generic import (
    exit_code,
    format_generic_report,
    verify_generic_layout,
)


def test_one_defect_of_each_kind_is_reported_exactly_once(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=3, per_class=4)
    defects = add_one_defect_of_each_kind(root)
    report = verify_generic_layout(root, progress=False)
    assert report.paths_by_kind() == {kind: [path] for kind, path in defects.items()}
    # the hidden ._img1.jpg is skipped like every reader skips it: not an image, not a problem
    assert report.num_class_folders == 3 and report.num_images == 12
    assert report.num_errors == 6 and report.num_warnings == 2 and exit_code(report) == 1


def test_report_has_one_summary_line_per_kind_with_examples(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=3, per_class=4)
    add_one_defect_of_each_kind(root)
    for index in range(3):  # two more missing masks: 3 in that kind, 2 shown
        (root / "masks" / "c2" / f"img{index + 1}.png").unlink()
    lines = format_generic_report(verify_generic_layout(root, progress=False),
                                  examples=2).splitlines()
    assert lines[0] == f"generic layout at {root}: 9 error(s), 2 warning(s)"
    missing = [line for line in lines if "missing mask" in line]
    assert missing == ["  error: 4 missing masks: masks/c0/img0.png, masks/c2/img1.png, "
                       "... and 2 more"]
    assert "  warning: 1 mask without foreground: masks/c1/img1.png" in lines
    assert any(line.startswith("  error: 1 unreadable mask: masks/c2/img0.png (") for line in lines)
    assert "  skipped: 1 hidden file: images/c2/._img1.jpg" in lines


def test_a_clean_layout_passes_and_warnings_alone_pass(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=2, per_class=2)
    report = verify_generic_layout(root, progress=False)
    assert report.paths_by_kind() == {} and exit_code(report) == 0
    assert format_generic_report(report).splitlines()[0] == f"generic layout at {root}: OK"
    (root / "masks" / "c0" / "spare.png").write_bytes((root / "masks" / "c0" / "img0.png")
                                                       .read_bytes())
    report = verify_generic_layout(root, progress=False)
    assert list(report.paths_by_kind()) == ["orphan_mask_file"] and exit_code(report) == 0


def test_missing_masks_folder_and_empty_class_folder(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=2, per_class=1)
    (root / "images" / "c9").mkdir()
    assert verify_generic_layout(root, progress=False).paths_by_kind() == {
        "empty_class_folder": [root / "images" / "c9"]}
    for mask in (root / "masks").rglob("*.png"):
        mask.unlink()
    for folder in (root / "masks").iterdir():
        folder.rmdir()
    (root / "masks").rmdir()
    report = verify_generic_layout(root, progress=False)
    assert report.paths_by_kind()["missing_folder"] == [root / "masks"]


def test_two_images_sharing_a_mask_and_no_decode(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path, num_classes=1, per_class=2)
    (root / "images" / "c0" / "img0.jpg").write_bytes(b"not decoded")
    report = verify_generic_layout(root, decode_images=False, progress=False)
    assert report.paths_by_kind() == {"stem_clash": [root / "images" / "c0" / "img0.png"]}
