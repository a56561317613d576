"""robustft-head and robustft-explain on a real pretrained ViT (the DINOv2-S-derived ViT-S/14
of the ``real`` extra) and real photos, as a user runs them, and the share of each relevance
method's map inside the quokka's outline (docs/real_backbone.md).

    python benchmarks/real_photos.py --out /tmp/real_photos [--docs docs/real_backbone]

1. The "few labelled images": ``--crops`` random crops (40-100 % of the area, flips) of each
   of the five photos (quokka, chelsea, astronaut, coffee, rocket), in class folders named
   by the photo; ``robustft-head`` fits a linear probe on their frozen features.
2. ``robustft-explain`` explains each whole photo for its own class (``target=label``) with
   every relevance method, at 224 px.
3. For the quokka, the share of each map (clamped at 0, upsampled bilinearly to the input)
   inside its outline, the outline transformed as the image (resize, centre crop); next to
   the outline's area (a map blind to the quokka) and a patch-coverage map (each patch
   weighted by how much quokka it holds).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_assets  # noqa: E402

METHODS = ("grad_rollout", "rollout", "raw_attention", "attn_gradcam", "input_x_gradient")
BIN = Path(sys.executable).parent


def write_crops(root: Path, crops: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    crop = T.Compose([T.RandomResizedCrop(224, scale=(0.4, 1.0)), T.RandomHorizontalFlip()])
    for name, image in real_assets.photos().items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(crops):
            crop(image).save(root / name / f"{name}_{i}.png")
    return root


def quokka_outline_as_input(size: int = 224) -> np.ndarray:
    """The outline through timm's eval transform of the model (crop_pct 1.0: shorter side
    to ``size``, centre crop)."""
    _, outline = real_assets.quokka()
    mask = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(size)])
    return np.asarray(mask(Image.fromarray(outline.astype(np.uint8) * 255))) > 127


def shares(run_dir: Path, outline: np.ndarray) -> dict[str, float]:
    with open(run_dir / "maps.csv") as handle:
        files = {row["method"]: run_dir / row["npy"] for row in csv.DictReader(handle)
                 if Path(row["image_path"]).stem == "quokka"}
    truth = torch.from_numpy(outline).float()
    out = {"quokka's area (blind map)": float(truth.mean())}
    grid = 224 // 14
    coverage = F.avg_pool2d(truth[None, None], 14)[0, 0]
    coverage_map = F.interpolate(coverage[None, None], size=224, mode="bilinear")[0, 0].clamp(min=0)
    out["patch coverage (a good map at 16x16)"] = float((coverage_map * truth).sum() / coverage_map.sum())
    for method in METHODS:
        raw = torch.from_numpy(np.load(files[method]))[0]
        heat = raw.clamp(min=0)[None, None].float()
        if heat.shape[-1] == grid:
            heat = F.interpolate(heat, size=224, mode="bilinear")
        heat = heat[0, 0]
        out[method] = float((heat * truth).sum() / heat.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--docs", type=Path, default=None, help="copy the quokka's PNG here")
    args = parser.parse_args()
    weights = real_assets.real_weights()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    few = write_crops(out / "few_labelled", args.crops)
    photos = out / "photos"
    for name, image in real_assets.photos().items():
        (photos / name).mkdir(parents=True)
        image.save(photos / name / f"{name}.png")
    model = [f"model.name={real_assets.TIMM_NAME}", f"model.weights_file={weights.timm_file(224)}",
             "++model.kwargs.img_size=224"]
    head = out / "probe_photos.safetensors"
    subprocess.run([str(BIN / "robustft-head"), f"images={few}", f"output={head}", *model,
                    "hydra.run.dir=" + str(out / "hydra_head")], check=True)
    run_dir = out / "explain"
    subprocess.run([str(BIN / "robustft-explain"), f"image={photos}", *model,
                    f"model.probe_head={head}", "target=label", f"methods=[{','.join(METHODS)}]",
                    f"output_dir={run_dir}", "progress=false", "device=cpu",
                    "hydra.run.dir=" + str(out / "hydra_explain")], check=True)
    table = shares(run_dir, quokka_outline_as_input())
    print("| map | share inside the quokka's outline |\n|---|---:|")
    for name, value in table.items():
        print(f"| {name} | {100 * value:.1f} % |")
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        for name in ("quokka", "chelsea"):  # explain names each PNG <image>_<class>.png
            shutil.copy(run_dir / f"{name}_{name}.png", args.docs / f"{name}.png")
        print(f"overlays copied to {args.docs}")


if __name__ == "__main__":
    main()
