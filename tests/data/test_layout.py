"""File-layout primitives: what they list, refuse and name."""

from pathlib import Path

import pytest

from robustft.data.layout import (
    DatasetLayoutError,
    check_known_folders,
    first_stem_clash,
    list_class_folders,
    list_images,
    resolve_inside,
)


def test_list_images_keeps_image_files_sorted_and_skips_hidden_and_others(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", ".c.jpg", "notes.txt", "d.JpEg"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "e.png").mkdir()  # a folder named like an image is not an image
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "d.JpEg"]


def test_list_class_folders_sorted_without_hidden_and_missing_root_named(tmp_path: Path) -> None:
    for name in ["n02", "n01", ".cache"]:
        (tmp_path / name).mkdir()
    (tmp_path / "n00").write_bytes(b"")  # a file is not a class folder
    assert list_class_folders(tmp_path) == ["n01", "n02"]
    with pytest.raises(DatasetLayoutError, match="dataset folder not found"):
        list_class_folders(tmp_path / "missing")


def test_first_stem_clash_names_the_first_two_images_that_would_share_a_mask() -> None:
    images = [Path("c/a.jpg"), Path("c/b.jpg"), Path("c/b.png"), Path("c/a.webp")]
    assert first_stem_clash(images) == (Path("c/b.jpg"), Path("c/b.png"))
    assert first_stem_clash([Path("c/a.jpg"), Path("c/a.jpg.png")]) is None  # stems a, a.jpg
    assert first_stem_clash([]) is None


def test_resolve_inside_refuses_paths_that_leave_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve_inside(root, "a/x.png", source="meta.csv") == (root / "a" / "x.png").resolve()
    for escaping in ["../x.png", "a/../../x.png", str(tmp_path / "x.png")]:
        with pytest.raises(DatasetLayoutError, match="meta.csv.*outside the dataset root"):
            resolve_inside(root, escaping, source="meta.csv")
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(DatasetLayoutError, match="outside"):
        resolve_inside(root, "link/x.png", source="meta.csv")


def test_check_known_folders_names_the_first_unknown_folder(tmp_path: Path) -> None:
    check_known_folders(tmp_path, ["n01"], {"n01", "n02"}, dataset="toy", known_as="a synset")
    with pytest.raises(DatasetLayoutError, match=r"toy: folder .*zebra is not a synset \(2 unknown"):
        check_known_folders(tmp_path, ["n01", "zebra", "okapi"], {"n01"}, dataset="toy",
                            known_as="a synset")
