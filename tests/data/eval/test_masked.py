"""Evaluation datasets with masks: a miniature gtsegs_ijcv.mat in the real HDF5 layout read
back, the generic images+masks layout, the generated benchmark's <split>_masks/."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from fixtures.generic_layout import make_generic_layout
from fixtures.gtsegs import make_gtsegs
from PIL import Image

from robustft.data.eval.registry import build_eval_dataset, has_labels, has_masks
from robustft.data.layout import DatasetLayoutError
from robustft.synth.read import ImageFolderSplit


def _gtsegs_content(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes = [(5, 7), (6, 4), (3, 9)]  # non-square: a wrong transpose would show
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    masks = [(rng.random((h, w)) > 0.5).astype(np.uint8) for h, w in sizes]
    return images, masks


def test_gtsegs_file_reads_back_images_and_masks(tmp_path: Path) -> None:
    images, masks = _gtsegs_content()
    make_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    dataset = build_eval_dataset("imagenet-segmentation", tmp_path, name="seg")
    assert len(dataset) == 3 and has_masks(dataset) and not has_labels(dataset)
    assert dataset.protocol.num_classes == 1000
    for index in range(3):
        image, target, meta = dataset[index]
        assert target == -1 and meta == {}
        assert np.array_equal(np.asarray(image), images[index])
        assert np.array_equal(dataset.load_mask(index), masks[index])
    # DataLoader workers get a pickled copy: the open HDF5 handle must not travel
    copy = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(copy.load_mask(2), masks[2])


def test_gtsegs_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gtsegs_ijcv.mat") as error:
        build_eval_dataset("imagenet-segmentation", tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "gtsegs_ijcv.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DatasetLayoutError, match="not a MATLAB v7.3") as error:
        build_eval_dataset("imagenet-segmentation", tmp_path)
    assert "\n" not in str(error.value)


def test_generic_layout_as_an_evaluation_dataset(tmp_path: Path) -> None:
    root = make_generic_layout(tmp_path / "pairs", num_classes=3, per_class=2)
    dataset = build_eval_dataset("generic", root, name="pairs")
    assert len(dataset) == 6 and has_masks(dataset) and has_labels(dataset)
    assert [target for _, target, _ in dataset.samples] == [0, 0, 1, 1, 2, 2]
    assert dataset.protocol.num_classes == 3
    image, _, _ = dataset[3]
    expected = np.asarray(Image.open(root / "masks" / "c1" / "img1.png")) > 0
    assert np.array_equal(dataset.load_mask(3), expected.astype(np.uint8))
    assert dataset.load_mask(3).shape == (image.height, image.width)


def test_generated_split_has_masks_when_its_mask_folder_exists(tmp_path: Path) -> None:
    for kind, value in (("shuffled", 200), ("shuffled_masks", 255)):
        folder = tmp_path / kind / "a"
        folder.mkdir(parents=True)
        array = np.zeros((4, 4, 3) if kind == "shuffled" else (4, 4), np.uint8)
        array[1:3, 1:3] = value
        Image.fromarray(array).save(folder / "x.png")
    (tmp_path / "plain" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "plain" / "a" / "x.png")
    split = ImageFolderSplit(tmp_path, "shuffled")
    assert has_masks(split) and split.load_mask(0).sum() == 4
    assert not has_masks(ImageFolderSplit(tmp_path, "plain"))
    (tmp_path / "shuffled_masks" / "a" / "x.png").unlink()
    with pytest.raises(DatasetLayoutError, match="x.png") as error:
        ImageFolderSplit(tmp_path, "shuffled")
    assert "\n" not in str(error.value)


def test_gtsegs_manifest_checks_the_file(tmp_path: Path) -> None:
    from robustft.data.verify import verify_dataset

    report = verify_dataset("imagenet-segmentation", tmp_path, progress=False)
    assert not report.ok and report.missing_files == [tmp_path / "gtsegs_ijcv.mat"]
    images, masks = _gtsegs_content()
    make_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    assert verify_dataset("imagenet-segmentation", tmp_path, progress=False).ok
