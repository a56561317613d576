"""ImageNet train + ImageNet-S masks: decoding (ids > 255, ignore 1000), merged classes,
the seeded sorted split and its portable manifest."""

from __future__ import annotations

import json
from pathlib import Path

import fixtures.miniature as miniature  # noqa: E402
import numpy as np
import pytest

from robustft.data.generic import IGNORE_VALUE
from robustft.data.imagenet import (
    MERGED_CLASSES,
    decode_imagenet_s_ids,
    decode_imagenet_s_mask,
    imagenet_s_mask_decoder,
    make_paper_split,
    read_imagenet_s_split,
    scan_imagenet_s,
    write_imagenet_s_split,
)
from robustft.data.layout import DatasetLayoutError
from robustft.labels import imagenet_synsets

SYNSETS = imagenet_synsets()
FOLDED = "n04355933"  # sunglass; ImageNet-S folded n04356056 (sunglasses) into it
TRUE = "n04356056"


def _copy(tmp_path: Path, num_classes: int = 6, per_class: int = 3):
    folders = sorted([*SYNSETS[: num_classes - 1], FOLDED])
    return miniature.make_imagenet_s(tmp_path, folders, per_class=per_class, merged={FOLDED: TRUE})


def test_decoding_ids_above_255_and_ignore(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    for path, ids in copy.masks.items():
        decoded = decode_imagenet_s_ids(path)
        assert decoded.dtype == np.int32 and (decoded == ids).all()
        assert decoded.max() == 1000 and (decoded[decoded > 0] >= 300).all()
        foreground, ignore = decode_imagenet_s_mask(path)
        assert (ignore == (ids == 1000)).all()
        assert (foreground == ((ids != 0) & (ids != 1000))).all()
        assert not (foreground & ignore).any()
        mask = imagenet_s_mask_decoder(path)
        assert mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1, IGNORE_VALUE}
        assert (mask[:, 0] == IGNORE_VALUE).all()  # ignore is not background


def test_merged_class_resolved_by_file_prefix(tmp_path: Path) -> None:
    assert MERGED_CLASSES[TRUE] == FOLDED
    copy = _copy(tmp_path)
    records = scan_imagenet_s(copy.imagenet_root, copy.imagenet_s_root)
    by_stem = {r.mask_path.stem: r for r in records[FOLDED]}
    assert {stem: r.class_name for stem, r in by_stem.items()} == {
        f"{TRUE}_1000": TRUE,
        f"{FOLDED}_1001": FOLDED,
        f"{FOLDED}_1002": FOLDED,
    }
    assert by_stem[f"{TRUE}_1000"].label == SYNSETS.index(TRUE)
    assert by_stem[f"{FOLDED}_1001"].label == SYNSETS.index(FOLDED)
    assert by_stem[f"{TRUE}_1000"].image_path == (
        copy.imagenet_root / "train" / TRUE / f"{TRUE}_1000.JPEG"
    )
    for items in records.values():
        for record in items:
            assert SYNSETS[record.label] == record.class_name
            assert record.image_path.is_file() and record.mask_path.is_file()


def test_paper_split_is_seeded_sorted_and_seed_zero_counts(tmp_path: Path) -> None:
    copy = _copy(tmp_path, num_classes=8, per_class=4)
    args = (copy.imagenet_root, copy.imagenet_s_root)
    kwargs = {"num_train_classes": 4, "train_per_class": 3, "val_per_class": 1}
    split0 = make_paper_split(*args, seed=0, **kwargs)
    # merged-into folder dropped: 7 classes -> 4 train classes x 3, 3 val classes x 1
    assert len(split0.train) == 12 and len(split0.val) == 3
    assert FOLDED not in {r.class_name for r in split0.train + split0.val}
    assert not {r.class_name for r in split0.train} & {r.class_name for r in split0.val}
    assert split0 == make_paper_split(*args, seed=0, **kwargs)
    others = [make_paper_split(*args, seed=s, **kwargs) for s in (1, 2, 3)]
    assert any(o.train != split0.train for o in others)  # seed 0 is a seed like any other
    kept = make_paper_split(*args, seed=0, drop_merged=False, **kwargs)
    assert len(kept.train) + len(kept.val) == 12 + 4


def test_manifest_round_trip_is_relative_and_portable(tmp_path: Path) -> None:
    copy = _copy(tmp_path / "a", num_classes=6)
    split = make_paper_split(copy.imagenet_root, copy.imagenet_s_root, num_train_classes=3)
    manifest = write_imagenet_s_split(
        split, tmp_path / "split.json", copy.imagenet_root, copy.imagenet_s_root
    )
    payload = json.loads(manifest.read_text())
    assert all(not Path(e["image"]).is_absolute() for e in payload["train"] + payload["val"])
    # move the copy: the manifest still resolves against the new roots
    moved = tmp_path / "b"
    (tmp_path / "a").rename(moved)
    again = read_imagenet_s_split(manifest, moved / "imagenet", moved / "ImageNetS919")
    assert [r.image_path.relative_to(moved) for r in again.train] == [
        r.image_path.relative_to(tmp_path / "a") for r in split.train
    ]
    assert [r.label for r in again.val] == [r.label for r in split.val]


def test_manifest_path_outside_root_is_refused(tmp_path: Path) -> None:
    copy = _copy(tmp_path, num_classes=6)
    split = make_paper_split(copy.imagenet_root, copy.imagenet_s_root, num_train_classes=3)
    manifest = write_imagenet_s_split(
        split, tmp_path / "split.json", copy.imagenet_root, copy.imagenet_s_root
    )
    payload = json.loads(manifest.read_text())
    payload["train"][0]["image"] = "../../etc/passwd"
    manifest.write_text(json.dumps(payload))
    with pytest.raises(DatasetLayoutError, match=r"\[train\]\[0\].*outside the dataset root"):
        read_imagenet_s_split(manifest, copy.imagenet_root, copy.imagenet_s_root)


def test_missing_image_for_a_mask_is_named(tmp_path: Path) -> None:
    copy = _copy(tmp_path, num_classes=3)
    victim = next(iter(copy.masks))
    image = copy.imagenet_root / "train" / victim.stem.split("_")[0] / f"{victim.stem}.JPEG"
    image.unlink()
    with pytest.raises(DatasetLayoutError, match=f"{victim.stem}.JPEG"):
        scan_imagenet_s(copy.imagenet_root, copy.imagenet_s_root)


def test_grayscale_mask_is_a_clear_error(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "mask.png"
    Image.new("L", (4, 4)).save(path)
    with pytest.raises(DatasetLayoutError, match="expected an RGB PNG"):
        decode_imagenet_s_mask(path)


def test_hidden_files_in_mask_folders_are_skipped(tmp_path: Path) -> None:
    copy = _copy(tmp_path, num_classes=3)
    victim = next(iter(copy.masks))
    (victim.parent / f"._{victim.name}").write_bytes(b"\0\x05\x16\x07")  # macOS resource fork
    records = scan_imagenet_s(copy.imagenet_root, copy.imagenet_s_root)
    assert sorted(r.mask_path for rs in records.values() for r in rs) == sorted(copy.masks)
