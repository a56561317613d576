"""How image files become pixels: the one image reader (:func:`load_rgb`) and the one
binary-mask reader (:func:`decode_binary_mask`) every part of robustft uses (training
pairs, evaluation datasets, ``robustft-explain``, TokenCut, ``robustft-data verify``).

What each PIL mode gives is decided here, per mode, and documented in
``docs/image_modes.md``:

- images: 8-bit modes (RGB, L, P, 1, CMYK, YCbCr, ...) through PIL's own conversion to
  RGB, alpha dropped; 16-bit grey (``I;16`` and its byte orders) scaled by the 16-bit
  range, ``round(v * 255 / 65535)``, because PIL's conversion clips every value above
  255 to white; 32-bit integer (``I``) and float (``F``) grey refused: their files do not
  say what value range is black and white;
- masks: single-channel integer modes, by value (0 = background, anything else =
  foreground); a palette (``P``) mask by palette index, not by colour, as VOC-style
  label PNGs are written; everything else refused.

Both decode in full (``Image.open`` is lazy, and a truncated file only fails when its
pixels are read) and raise :class:`CorruptImageError` (or a subclass) naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "MASK_MODES",
    "SIXTEEN_BIT_MODES",
    "CorruptImageError",
    "ImageModeError",
    "ImageTooLargeError",
    "decode_binary_mask",
    "load_rgb",
]

# PIL's 16-bit unsigned grey modes: native, little- and big-endian byte order
SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# grey modes whose value range a file does not define: refused as images
UNDEFINED_RANGE_MODES: dict[str, str] = {"I": "32-bit integer grey", "F": "32-bit float grey"}
# single-channel modes a binary mask may have (value != 0 = foreground; P: palette index)
MASK_MODES: frozenset[str] = frozenset({"1", "L", "P", "I", *SIXTEEN_BIT_MODES})
SIXTEEN_BIT_MAX = 65535
# PIL's DecompressionBombError is raised above twice its MAX_IMAGE_PIXELS
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CorruptImageError(OSError):
    """An image file exists but cannot be read (corrupt, truncated, refused)."""

    def __init__(self, path: Path, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"cannot decode image {path}: {reason}")
        self.path = path
        self.reason = reason  # what is wrong, without the path


class ImageModeError(CorruptImageError):
    """The file decodes, but its PIL mode is one robustft does not read (see module
    docstring): the message names the file, the mode and what to do."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason, f"image {path}: {reason}")


class ImageTooLargeError(CorruptImageError):
    """The image has more pixels than the reader was allowed to decode."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason, f"image {path}: {reason}")


def _check_size(image: Image.Image, path: Path, max_pixels: int | None, limit_key: str) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(path, (
            f"{width}x{height} = {width * height:,} pixels is above {limit_key}="
            f"{max_pixels}; downscale it or raise {limit_key}"))


def _rgb_of_sixteen_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image as 8-bit RGB, scaled by the 16-bit range (exact for 8-bit values
    stored as ``v * 257``)."""
    values = np.asarray(image).astype(np.uint32)  # any byte order -> native integers
    grey = ((values * 255 + SIXTEEN_BIT_MAX // 2) // SIXTEEN_BIT_MAX).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        return _rgb_of_sixteen_bit(image)
    if mode in UNDEFINED_RANGE_MODES:
        low, high = image.getextrema()
        raise ImageModeError(path, (
            f"mode {mode} ({UNDEFINED_RANGE_MODES[mode]}, values {low:g} to {high:g}) is not "
            "read: the file does not say which values are black and white; save it as an "
            "8-bit or 16-bit image with the contrast you want (docs/image_modes.md)"))
    try:
        return image.convert("RGB")
    except ValueError as error:  # PIL has no conversion from this mode (e.g. La)
        raise ImageModeError(path, f"mode {mode} cannot be converted to RGB ({error}); save "
                                   "it as RGB (docs/image_modes.md)") from error


def load_rgb(path: str | os.PathLike[str], *, max_pixels: int | None = None,
             limit_key: str = "max_image_pixels") -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image, each mode as the module docstring says.

    ``max_pixels``: refuse (:class:`ImageTooLargeError`, naming ``limit_key``, the option
    that sets it) an image with more pixels, from its header, before decoding; None leaves
    only PIL's own decompression-bomb limit. A file that cannot be decoded is a
    :class:`CorruptImageError`, a mode that is not read an :class:`ImageModeError`."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            _check_size(image, path, max_pixels, limit_key)
            image.load()
            return _to_rgb(image, path)
    except (FileNotFoundError, CorruptImageError):
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(path, f"{error}") from error
    except _DECODE_ERRORS as error:
        raise CorruptImageError(path, f"{type(error).__name__}: {error}") from error


def decode_binary_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask file -> uint8 (H, W), 1 = foreground, 0 = background, decoded fully.

    Modes ``1``, ``L``, ``I`` and 16-bit grey by value (0 = background, any other value =
    foreground, so 0/255, 0/1 and 0/65535 masks all work); ``P`` by palette index (0 =
    background), never by the palette's colours. Any other mode (RGB, an alpha channel,
    float) is a ``ValueError`` naming the file; a file that cannot be decoded (corrupt,
    truncated) a :class:`CorruptImageError`."""
    path = Path(path)
    try:
        with Image.open(path) as mask:
            if mask.mode not in MASK_MODES:
                raise ValueError(
                    f"{path}: the mask has mode {mask.mode}; expected a single-channel integer "
                    "PNG (0 = background, nonzero = foreground; docs/image_modes.md)"
                )
            mask.load()  # Image.open is lazy: a truncated file only fails here
            return (np.asarray(mask) != 0).astype(np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorruptImageError(path, f"{type(error).__name__}: {error}") from error
