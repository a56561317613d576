"""The one image and mask reader: what each PIL mode gives (docs/image_modes.md), with the
values computed here from the pixels written, and the same reading everywhere (training
pairs, verify, the demo's pairs, TokenCut's truth masks)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fixtures.generic_layout import make_generic_layout
from PIL import Image
from torchvision.transforms import v2

from robustft.cli.data import main as data_main
from robustft.data.datasets import ImageMaskDataset
from robustft.data.generic import ImageMaskRecord
from robustft.data.image_files import (
    CorruptImageError,
    ImageModeError,
    ImageTooLargeError,
    decode_binary_mask,
    load_rgb,
)
from robustft.data.pair_checks import inspect_pair
from robustft.demo.relevance_stats import load_pairs

RAMP = np.arange(64 * 1024, dtype=np.uint32).reshape(64, 1024).astype(np.uint16)  # 0..65535


def _eight_bit(values: np.ndarray) -> np.ndarray:
    """The 8-bit value of each 16-bit value: round(v * 255 / 65535), in float64."""
    return np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("I;16", ".tif"),
                                          ("I;16B", ".tif")])
def test_a_16_bit_ramp_keeps_its_contrast(tmp_path, mode, suffix):
    path = tmp_path / f"ramp{suffix}"
    image = Image.fromarray(RAMP.astype(">u2" if mode == "I;16B" else "<u2"))
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode  # the file really holds 16-bit grey
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (64, 1024, 3) and pixels.dtype == np.uint8
    expected = _eight_bit(RAMP)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)
    # PIL's own conversion clips everything above 255: 99.6 % of this ramp turns white
    assert (np.asarray(Image.fromarray(RAMP).convert("RGB")) == 255).mean() > 0.99
    assert (pixels == 255).mean() < 0.01
    # every 8-bit level appears, each about equally often (the ramp is uniform)
    counts = np.bincount(pixels[..., 0].ravel(), minlength=256)
    assert counts.min() > 0 and counts.max() <= 2 * counts[1:-1].min()


def test_8_bit_values_stored_in_16_bits_come_back_exactly(tmp_path):
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(levels * 257).save(tmp_path / "x257.png")  # 8-bit -> 16-bit, as PIL scales up
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "x257.png"))[..., 1], levels)


@pytest.mark.parametrize("array, mode_name", [
    (np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8), "F (32-bit float grey"),
    (np.arange(64, dtype=np.int32).reshape(8, 8) * 1000, "I (32-bit integer grey"),
])
def test_32_bit_grey_is_refused_in_one_line_naming_the_file(tmp_path, array, mode_name):
    path = tmp_path / "deep.tif"
    Image.fromarray(array).save(path)
    with pytest.raises(ImageModeError) as caught:
        load_rgb(path)
    message = str(caught.value)
    assert message.startswith(f"image {path}: mode {mode_name}, values ")
    assert "\n" not in message and "8-bit or 16-bit" in message
    assert f"{array.min():g} to {array.max():g}" in message


def test_a_mode_pil_cannot_convert_is_refused_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr(Image.Image, "convert", lambda self, mode: (_ for _ in ()).throw(
        ValueError("conversion from La to L not supported")))
    with pytest.raises(ImageModeError, match=r"^image .*x\.png: mode RGB cannot be converted"):
        load_rgb(path)


@pytest.mark.parametrize("mode, value, rgb", [
    ("L", 77, (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, colour as stored
    ("LA", (90, 0), (90, 90, 90)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
])
def test_8_bit_modes_read_as_pil_converts_them(tmp_path, mode, value, rgb):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.new(mode, (3, 2), value).save(path)
    assert np.asarray(load_rgb(path)).reshape(-1, 3).tolist() == [list(rgb)] * 6


def test_a_palette_image_shows_its_colours(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 255, 255, 200, 10, 10] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png")
    assert np.asarray(load_rgb(tmp_path / "p.png")).tolist() == [[[255, 255, 255], [200, 10, 10]]]


def test_the_pixel_cap_refuses_from_the_header_naming_the_file_and_the_option(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100)).save(path)
    assert load_rgb(path, max_pixels=20_000).size == (200, 100)  # at the cap: read
    with pytest.raises(ImageTooLargeError) as caught:
        load_rgb(path, max_pixels=19_999, limit_key="max_image_pixels")
    assert str(caught.value) == (f"image {path}: 200x100 = 20,000 pixels is above "
                                 "max_image_pixels=19999; downscale it or raise max_image_pixels")


def test_pils_bomb_limit_is_a_too_large_error_not_a_decode_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this
    with pytest.raises(ImageTooLargeError, match=r"^image .*bomb\.png: Image size \(10000 pixels\)"):
        load_rgb(path)


def test_corrupt_bytes_are_still_a_decode_error(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(CorruptImageError, match=r"^cannot decode image .*x\.png: "):
        load_rgb(path)


# ------------------------------------------------------------------------ masks


def _palette_mask(path: Path, indices: np.ndarray) -> Path:
    """A VOC-style label PNG whose index 0 is WHITE and index 1 black: read by colour it
    would be the inverse of what it labels."""
    mask = Image.fromarray(indices.astype(np.uint8), mode="P")
    mask.putpalette([255, 255, 255, 0, 0, 0] + [128, 0, 0] * 254)
    mask.save(path)
    return path


def test_palette_masks_are_read_by_index_not_colour(tmp_path):
    indices = np.zeros((6, 8), np.uint8)
    indices[1:4, 2:5] = 1
    indices[5, 7] = 255  # VOC's "void" border index: not 0, so foreground
    path = _palette_mask(tmp_path / "m.png", indices)
    np.testing.assert_array_equal(decode_binary_mask(path), (indices != 0).astype(np.uint8))


@pytest.mark.parametrize("dtype, mode", [("<u2", "I;16"), (">u2", "I;16B")])
@pytest.mark.parametrize("foreground", [1, 255, 256, 65535])
def test_16_bit_masks_are_read_by_value(tmp_path, dtype, mode, foreground):
    values = np.zeros((5, 7), np.uint16)
    values[2:4, 1:6] = foreground
    path = tmp_path / "m.tif"
    Image.fromarray(values.astype(dtype)).save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    np.testing.assert_array_equal(decode_binary_mask(path), (values != 0).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "LA", "F"])
def test_other_mask_modes_are_refused_naming_the_file_and_mode(tmp_path, mode):
    path = tmp_path / "m.tif"
    Image.new(mode, (4, 4)).save(path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: the mask has mode {mode}; "):
        decode_binary_mask(path)


def test_the_demo_pairs_read_image_and_palette_mask_as_training_does(tmp_path):
    """``load_pairs`` (the demo's measures) read masks with PIL's grey conversion and
    images with PIL's RGB conversion: a white-index-0 palette mask came out all foreground
    and a 16-bit image white; now both are read like training reads them."""
    indices = np.zeros((16, 16), np.uint8)
    indices[4:12, 4:12] = 1
    mask = _palette_mask(tmp_path / "m.png", indices)
    Image.fromarray(RAMP[:16, ::64].copy()).save(tmp_path / "i.png")  # 16 x 16, 16-bit
    images, masks = load_pairs([(tmp_path / "i.png", mask)], v2.Compose([
        v2.PILToTensor()]))
    np.testing.assert_array_equal(masks[0].numpy(), indices.astype(np.float32))
    np.testing.assert_array_equal(images[0, 0].numpy(), _eight_bit(RAMP[:16, ::64]))


def test_training_reads_a_16_bit_pair_with_its_contrast_and_verify_agrees(tmp_path, capsys):
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2, size=(64, 64))
    image = root / "images" / "c0" / "img0.png"
    values = (RAMP[:, :64] * 16).astype(np.uint16)  # 64 x 64, the 16-bit range used
    Image.fromarray(values).save(image)
    record = ImageMaskRecord(image, root / "masks" / "c0" / "img0.png", 0, "c0")
    item = ImageMaskDataset([record], v2.Identity())[0]
    np.testing.assert_array_equal(item["image"][0].numpy(), _eight_bit(values))
    assert inspect_pair(record, decode_binary_mask).problems == ()
    assert data_main(["verify", "generic", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"generic layout at {root}: OK"
    # a 32-bit float image is refused by both, in the same words
    Image.fromarray(values.astype(np.float32)).save(root / "images" / "c1" / "img1.tif")
    (root / "images" / "c1" / "img1.png").unlink()
    float_record = ImageMaskRecord(root / "images" / "c1" / "img1.tif",
                                   root / "masks" / "c1" / "img1.png", 1, "c1")
    (problem,) = inspect_pair(float_record, decode_binary_mask).problems
    assert problem.kind == "image_mode" and problem.message.startswith(
        f"image {float_record.image_path}: mode F (32-bit float grey, values 0 to ")
    with pytest.raises(ImageModeError, match=re.escape(problem.message)):
        ImageMaskDataset([float_record], v2.Identity())[0]
    assert data_main(["verify", "generic", str(root)]) == 1
    out = capsys.readouterr().out
    assert "  error: 1 image in a mode that is not read: images/c1/img1.tif (mode F" in out


def test_images_are_decoded_in_one_module():
    """``Image.open`` appears only in the reader, and in the two readers of other formats:
    ImageNet-S's RGB id masks and TokenCut's own 0/255 masks."""
    package = Path(__file__).resolve().parents[2] / "robustft"
    allowed = {"data/image_files.py", "data/imagenet.py", "masks/compare.py", "masks/generate.py"}
    opening = {path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if "Image.open(" in path.read_text()}
    assert opening <= allowed, opening - allowed
