"""robustft-data verify's engine: dataset descriptors load, a good miniature copy passes, and a bad
one reports missing files/folders, count mismatches and unreadable images by path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import fixtures.miniature as miniature  # noqa: E402
import pytest

from robustft.data.descriptors import list_descriptors, load_descriptor
from robustft.data.eval.registry import EVAL_DATASETS
from robustft.data.verify import exit_code, format_report, verify_dataset
from robustft.labels import imagenet_synsets, timm_subset_info


def test_every_descriptor_loads_and_names_a_known_reader() -> None:
    names = list_descriptors()
    assert {"imagenet-val", "imagenet-a", "imagenet-r", "objectnet", "si-score",
            "imagenet-v2-matched-frequency", "imagenet-s919"} <= set(names)  # fmt: skip
    for name in names:
        descriptor = load_descriptor(name)
        assert descriptor.name == name
        assert descriptor.dataset_type is None or descriptor.dataset_type in EVAL_DATASETS
    with pytest.raises(KeyError, match="no data manifest 'imagenet-q'"):
        load_descriptor("imagenet-q")


def test_complete_a_copy_passes_with_its_counts(tmp_path: Path) -> None:
    _, wnids = timm_subset_info("a")
    miniature.make_wnid_folders(tmp_path / "a", wnids, per_class=1, suffix=".jpg")
    descriptor = replace(load_descriptor("imagenet-a"), num_classes=200, num_images=200)
    report = verify_dataset("imagenet-a", tmp_path / "a", descriptor=descriptor, progress=False)
    assert report.ok, format_report(report)
    assert exit_code(report) == 0 and "OK" in format_report(report)


def test_bad_copy_reports_every_problem_with_paths(tmp_path: Path) -> None:
    synsets = imagenet_synsets()
    miniature.make_wnid_folders(tmp_path / "val", synsets[:3])
    bad = miniature.write_corrupt_image(tmp_path / "val" / synsets[0] / "broken.JPEG")
    miniature.write_image(tmp_path / "val" / "n99999999" / "x.JPEG", seed=1)
    report = verify_dataset("imagenet-val", tmp_path / "val", progress=False)
    assert not report.ok and exit_code(report) == 1
    assert [p for p, _ in report.unreadable_images] == [bad]
    assert tmp_path / "val" / "n99999999" in report.unknown_folders
    assert len(report.missing_folders) == 997
    assert any("images, expected 50000" in m for m in report.count_mismatches)
    text = format_report(report)
    assert "broken.JPEG" in text and "n99999999" in text and "... and 977 more" in text


def test_objectnet_missing_mapping_file_is_reported(tmp_path: Path) -> None:
    copy = miniature.make_objectnet(tmp_path / "objectnet-1.0")
    (copy.root / "mappings" / "objectnet_to_imagenet_1k.json").unlink()
    report = verify_dataset("objectnet", copy.root, check_counts=False, progress=False)
    assert report.missing_files == [copy.root / "mappings" / "objectnet_to_imagenet_1k.json"]
    assert report.unknown_folders == [] and report.missing_folders == []


def test_si_score_subsets_checked(tmp_path: Path) -> None:
    miniature.make_si_score(tmp_path / "si")
    descriptor = replace(load_descriptor("si-score"), num_classes=3, num_images=None)
    report = verify_dataset("si-score", tmp_path / "si", descriptor=descriptor, progress=False)
    assert report.ok, format_report(report)
    (tmp_path / "si" / "rotation" / "metadata.csv").unlink()
    report = verify_dataset("si-score", tmp_path / "si", descriptor=descriptor, progress=False)
    assert report.missing_files == [tmp_path / "si" / "rotation" / "metadata.csv"]


def test_missing_root_is_reported(tmp_path: Path) -> None:
    report = verify_dataset("imagenet-r", tmp_path / "nope", progress=False)
    assert report.missing_folders == [tmp_path / "nope"] and exit_code(report) == 1


def test_hidden_files_are_not_images_and_every_reader_extension_is(tmp_path: Path) -> None:
    """verify lists images exactly as the readers do (layout.list_images)."""
    _, wnids = timm_subset_info("a")
    miniature.make_wnid_folders(tmp_path / "a", wnids, per_class=1, suffix=".jpg")
    (tmp_path / "a" / wnids[0] / "._x.jpg").write_bytes(b"\0\x05\x16\x07")  # macOS fork
    descriptor = replace(load_descriptor("imagenet-a"), num_classes=200, num_images=200)
    report = verify_dataset("imagenet-a", tmp_path / "a", descriptor=descriptor, progress=False)
    assert report.ok, format_report(report)
    miniature.write_image(tmp_path / "a" / wnids[1] / "extra.webp", seed=3)
    report = verify_dataset("imagenet-a", tmp_path / "a", descriptor=descriptor, progress=False)
    assert report.num_images == 201 and report.count_mismatches == [
        f"{tmp_path / 'a'}: 201 images, expected 200"]
