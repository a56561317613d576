"""Benchmark: K models in ONE pass over the images vs K separate passes.

    python benchmarks/single_pass_eval.py --images 384 --repeats 3

Writes ``--images`` seeded JPEGs (ImageNet-like 500x375) as an ImageFolder split, then
times :func:`robustft.evaluation.runner.evaluate_models` with K = 1, 2, 4 models sharing
one preprocessing config (so the decoded, transformed tensor is shared):

- ``one pass``: all K models in one call;
- ``separate``: K calls with one model each (decoding paid K times).

Reports, per K: median seconds over ``--repeats`` (after a warm-up pass), the cost ratio
``one pass(K) / one pass(1)`` (goal <= 1.3 when decoding dominates), the speed-up
``separate(K) / one pass(K)``, and images/s per model. The default model is a 1-block
ViT-Tiny at 224 px so that decoding dominates on a CPU, as a ViT-B does on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustft.backbones import create_model
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.synth.read import ImageFolderSplit

PRESETS: dict[str, dict[str, int]] = {
    # decoding-dominated on a CPU: one block, narrow
    "tiny1": {"depth": 1, "embed_dim": 64, "num_heads": 2},
    # the real ViT-Tiny/16 (12 blocks, 192 wide): compute-dominated on a CPU
    "vit_tiny": {},
}


def write_jpegs(
    root: Path, count: int, *, classes: int = 4, size: tuple[int, int] = (500, 375)
) -> None:
    rng = np.random.default_rng(0)
    # smooth-ish content so the JPEGs have realistic sizes (noise compresses badly)
    base = rng.integers(0, 256, size=(size[1] // 25 + 1, size[0] // 25 + 1, 3), dtype=np.uint8)
    for index in range(count):
        folder = root / "bench" / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        shifted = np.roll(base, index, axis=1)
        image = Image.fromarray(shifted, "RGB").resize(size, Image.BICUBIC)
        noise = rng.integers(-12, 12, size=(size[1], size[0], 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=90)


def make_models(count: int, preset: str, num_classes: int) -> dict[str, torch.nn.Module]:
    models = {}
    for seed in range(count):
        torch.manual_seed(seed)
        models[f"m{seed}"] = create_model(
            "vit_tiny_patch16_224", num_classes=num_classes, **PRESETS[preset]
        ).eval()
    return models


def timed(models, dataset, transforms, args) -> float:
    started = time.perf_counter()
    evaluate_models(
        models, dataset, transforms=transforms, batch_size=args.batch_size,
        num_workers=args.num_workers, device=args.device, progress=False,
    )  # fmt: skip
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny1")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images)
        dataset = ImageFolderSplit(root, "bench")
        all_models = make_models(max(args.ks), args.preset, dataset.protocol.num_classes)
        transforms = build_eval_transforms(all_models)
        # warm-up: worker start, allocator, first-call overheads
        timed({"m0": all_models["m0"]}, dataset, transforms, args)

        one_pass: dict[int, float] = {}
        separate: dict[int, float] = {}
        for k in args.ks:
            models = {name: all_models[name] for name in list(all_models)[:k]}
            one_pass[k] = statistics.median(
                timed(models, dataset, transforms, args) for _ in range(args.repeats)
            )
            separate[k] = statistics.median(
                sum(
                    timed({name: model}, dataset, transforms, args)
                    for name, model in models.items()
                )
                for _ in range(args.repeats)
            )
        print(
            f"{args.images} JPEGs 500x375, preset={args.preset}, batch={args.batch_size}, "
            f"workers={args.num_workers}, device={args.device}, torch threads={torch.get_num_threads()}, "
            f"median of {args.repeats}"
        )
        print(
            f"{'K':>2} {'one pass s':>11} {'separate s':>11} {'cost vs K=1':>12} "
            f"{'speed-up':>9} {'img/s/model':>12}"
        )
        for k in args.ks:
            print(
                f"{k:>2} {one_pass[k]:>11.2f} {separate[k]:>11.2f} "
                f"{one_pass[k] / one_pass[args.ks[0]]:>11.2f}x {separate[k] / one_pass[k]:>8.2f}x "
                f"{args.images * k / one_pass[k]:>12.1f}"
            )


if __name__ == "__main__":
    main()
