"""ImageMaskDataset's decoding: an image or mask file that does not decode is one error
naming that file (PIL's own "image file is truncated" names none)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.broken_files import truncate
from fixtures.generic_layout import make_generic_layout
from PIL import Image

from robustft.data.datasets import ImageMaskDataset
from robustft.data.generic import scan_generic_layout
from robustft.data.layout import CorruptImageError
from robustft.data.transforms import joint_eval_transform


def _dataset(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=1, per_class=2, size=(64, 64))
    records = scan_generic_layout(root)["c0"]
    return ImageMaskDataset(records, joint_eval_transform(32, (0.5,) * 3, (0.5,) * 3)), records


@pytest.mark.parametrize("which", ["image_path", "mask_path"])
def test_truncated_file_is_named(tmp_path, which):
    dataset, records = _dataset(tmp_path)
    broken = truncate(getattr(records[1], which))
    dataset[0]  # the intact pair still reads
    with pytest.raises(CorruptImageError, match=rf"^cannot decode image {broken}: OSError: "
                                                "image file is truncated") as error:
        dataset[1]
    assert "\n" not in str(error.value)


def test_corrupt_image_bytes_are_named(tmp_path):
    dataset, records = _dataset(tmp_path)
    records[0].image_path.write_bytes(b"not a png at all")
    with pytest.raises(CorruptImageError, match=f"cannot decode image {records[0].image_path}"):
        dataset[0]


def test_mask_of_the_wrong_mode_keeps_its_own_message(tmp_path):
    dataset, records = _dataset(tmp_path)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(records[0].mask_path)
    with pytest.raises(ValueError, match=f"^{records[0].mask_path}: the mask has mode RGB"):
        dataset[0]
