"""TokenCut mask quality (IoU against exact masks) and speed on robustft's generated
benchmark, for a random ViT and a small ViT self-trained on the benchmark's train split.

    python benchmarks/tokencut_masks.py --device cuda --out /tmp/tcbench
    python benchmarks/tokencut_masks.py --device cpu --quick --workers 0
    python benchmarks/tokencut_masks.py --smoke --workers 0   # seconds: the test that it runs

Prints one JSON line per measurement and a summary table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from robustft.backbones import create_model
from robustft.data.mask_manifest import read_tokencut_manifest
from robustft.masks.compare import compare_with_true_masks
from robustft.masks.generate import generate_masks
from robustft.masks.settings import TokenCutSettings
from robustft.masks.tokencut import upsample_nearest
from robustft.resources import usable_cpus
from robustft.synth import SynthConfig, generate_benchmark

RESULTS: list[dict] = []


def report(**row) -> None:
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def subset(split_dir: Path, dest: Path, per_class: int, scale: int = 1) -> None:
    """Copy the first ``per_class`` images (+ true masks) per class into a generic-layout
    folder; ``scale`` > 1 upsamples both (bicubic / nearest) to time larger images."""
    if dest.exists():
        shutil.rmtree(dest)
    for class_dir in sorted((split_dir / "images").iterdir()):
        for path in sorted(class_dir.iterdir())[:per_class]:
            for kind, resample in (("images", Image.BICUBIC), ("masks", Image.NEAREST)):
                src = split_dir / kind / class_dir.name / path.name
                out = dest / kind / class_dir.name / path.name
                out.parent.mkdir(parents=True, exist_ok=True)
                image = Image.open(src)
                if scale > 1:
                    image = image.resize((image.width * scale, int(image.height * scale * 0.75)),
                                         resample)
                image.save(out)


def prior_baselines(root: Path, grids: list[int]) -> None:
    """IoU of trivial masks and of the best mask any patch grid can express."""
    all_fg, centre, oracle = [], [], {g: [] for g in grids}
    for mask_path in sorted((root / "masks").rglob("*.png")):
        truth = np.asarray(Image.open(mask_path).convert("L")) > 0
        h, w = truth.shape
        all_fg.append(truth.mean())
        box = np.zeros_like(truth)
        box[int(h * 0.3) : int(h * 0.7), int(w * 0.3) : int(w * 0.7)] = True
        centre.append((truth & box).sum() / (truth | box).sum())
        for g in grids:
            cells = F.adaptive_avg_pool2d(torch.from_numpy(truth).float()[None, None], g)[0, 0]
            best = upsample_nearest(cells.numpy() > 0.5, (h, w))
            union = (best | truth).sum()
            oracle[g].append((best & truth).sum() / union if union else 1.0)
    report(kind="baseline", name="all foreground", miou=float(np.mean(all_fg)))
    report(kind="baseline", name="centre box 40%", miou=float(np.mean(centre)))
    for g in grids:
        report(kind="baseline", name=f"best {g}x{g} patch-grid mask", miou=float(np.mean(oracle[g])))


def measure(model, name: str, root: Path, out: Path, device: str, batch_size: int,
            workers: int, refine: bool, repeat: int | None = None) -> None:
    """TokenCut on every image of ``root`` (generic layout with true masks); the first
    pass warms up (CUDA init, caches), the last is timed. The refined run follows a coarse
    one on the same model, so it is already warm."""
    for _ in range(repeat or (1 if refine else 2)):
        summary = generate_masks(model, root, out, TokenCutSettings(refine=refine),
                                 batch_size=batch_size, num_workers=workers, device=device,
                                 overwrite=True, progress=False)
    scores = compare_with_true_masks(out, root)
    rows = read_tokencut_manifest(out / "tokencut_manifest.csv")
    values = np.array(list(scores.values()))
    report(kind="tokencut", name=name, refine=refine, images=len(values),
           miou=float(values.mean()), median_iou=float(np.median(values)),
           iou_above_0_5=float((values > 0.5).mean()),
           mean_fg_fraction=float(np.mean([r.foreground_fraction for r in rows])),
           kept=sum(bool(r.kept) for r in rows), images_per_s=summary.images_per_second,
           device=device, batch_size=batch_size, workers=workers)


def load_split(split_dir: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    with open(split_dir / "metadata.csv", newline="") as handle:
        for record in csv.DictReader(handle):
            path = split_dir / record["path"]
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(int(record["label"]))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5, torch.tensor(labels)


def train_tiny_vit(root: Path, classes: list[str], epochs: int, device: str):
    """A small ViT (64 px, patch 8) trained from scratch by cross-entropy on the
    pretrain split: the demo's kind of 'pretrained' stand-in."""
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", img_size=64, patch_size=8,
                         num_classes=len(classes)).to(device)
    x, y = load_split(root / "pretrain", classes)
    xs, ys = load_split(root / "shuffled", classes)
    x, y = x.to(device), y.to(device)
    steps_per_epoch = (len(x) + 127) // 128
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.1)
    start = time.perf_counter()
    for _epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * 128 : (i + 1) * 128]
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x).argmax(1) == y).float().mean().item()
        shuffled_acc = (model(xs.to(device)).argmax(1).cpu() == ys).float().mean().item()
    report(kind="pretrain", epochs=epochs, seconds=time.perf_counter() - start,
           train_acc=train_acc, shuffled_acc=shuffled_acc, chance=1 / len(classes))
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="/tmp/tcbench")
    parser.add_argument("--quick", action="store_true", help="few images, short training")
    parser.add_argument("--smoke", action="store_true",
                        help="a handful of images and the tiny models only: checks that it runs")
    parser.add_argument("--workers", type=int, default=min(8, usable_cpus()))
    args = parser.parse_args()
    out = Path(args.out)
    per_class = 2 if args.smoke else 10 if args.quick else 40
    epochs = 1 if args.smoke else 2 if args.quick else 40
    config = SynthConfig(num_classes=3 if args.smoke else 10,
                         pretrain_per_class=4 if args.smoke else 100 if args.quick else 400,
                         eval_per_class=2 if args.smoke else 20 if args.quick else 50)
    info = generate_benchmark(out / "bench", config, progress=False,
                              splits=["pretrain", "shuffled"], num_workers=args.workers)
    classes = info["classes"]
    masks_set = out / "maskset"
    subset(out / "bench" / "pretrain", masks_set, per_class)
    prior_baselines(masks_set, grids=[8, 14])

    torch.manual_seed(0)
    tiny_random = create_model("vit_tiny_patch16_224", img_size=64, patch_size=8).eval()
    for refine in (False, True):
        measure(tiny_random, "random ViT-Ti/8 @64", masks_set, out / "m_rand_tiny", args.device,
                64, args.workers, refine)

    # The default architecture (weights random: same cost as DINO ViT-S/16, no quality).
    vit_s = create_model("vit_small_patch16_224.dino", pretrained=False).eval()
    for refine in (False, True) if not args.smoke else ():
        measure(vit_s, "random ViT-S/16 @224 (dino cfg)", masks_set, out / "m_rand_s", args.device,
                64, args.workers, refine)

    trained = train_tiny_vit(out / "bench", classes, epochs, args.device)
    if args.smoke:  # the ViT-S/16 measurements below take minutes on a CPU
        for refine in (False, True):
            measure(trained, "smoke", masks_set, out / "m_trained", args.device, 64, args.workers,
                    refine)
        return
    for refine in (False, True):
        measure(trained, f"self-trained ViT-Ti/8 @64 ({epochs} ep)", masks_set, out / "m_trained",
                args.device, 64, args.workers, refine)

    # Speed on ImageNet-like image sizes (upsampled benchmark images, 512x384).
    large = out / "large"
    subset(out / "bench" / "pretrain", large, 4 if args.quick else 10, scale=8)
    for refine in (False, True):
        measure(vit_s, "random ViT-S/16 @224, 512x384 images", large, out / "m_large", args.device,
                64, args.workers, refine)

    print(f"device: {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, "
          f"workers {args.workers}, torch {torch.__version__}")
    print("\n| what | refine | mIoU | median IoU | IoU>0.5 | images/s |")
    print("|---|---|---|---|---|---|")
    for row in RESULTS:
        if row["kind"] == "tokencut":
            print(f"| {row['name']} | {row['refine']} | {row['miou']:.3f} | {row['median_iou']:.3f} "
                  f"| {row['iou_above_0_5']:.2f} | {row['images_per_s']:.1f} |")
        elif row["kind"] == "baseline":
            print(f"| {row['name']} | - | {row['miou']:.3f} | | | |")
    (out / "results.json").write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
