"""Does a generated benchmark's stand-in know the objects yet fail the anti-correlated
split? Checked before any fine-tuning on the benchmark (issue 18, part 3).

Generates the benchmark of the demo's data config (reused when there), pre-trains the
demo's stand-in on its ``pretrain`` split with the demo's pre-training settings (cached,
the same file ``robustft-demo`` uses), and reports the stand-in alone: top-1, top-1 with
the background replaced by the demo's grey ("object only") and the share of relevance on
the object, per split, on every image of the split (or ``--images N`` evenly spaced)::

    python benchmarks/stand_in_check.py data=synth_b
    python benchmarks/stand_in_check.py data=synth_b ++data.synth.tie=0.0   # shortcut-free
    python benchmarks/stand_in_check.py data=synth_c   # the third benchmark (8 classes)

``ROBUSTFT_ROOT`` is honoured as in the demo.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from robustft.backbones import preprocessing_config
from robustft.demo.relevance_stats import (
    foreground_share_and_top1,
    load_pairs,
    replace_background,
)
from robustft.demo.stand_in import pretrain_stand_in
from robustft.evaluation.runner import build_eval_transforms
from robustft.synth.prepare import prepare_generated_data
from robustft.synth.read import ImageFolderSplit
from robustft.training.run import build_model

SPLITS = ("in_distribution", "shuffled", "anti_correlated", "rendition")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=0, help="images per split (0 = all)")
    parser.add_argument("overrides", nargs="*", help="overrides of the demo's config")
    args = parser.parse_args()
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tempfile.mkdtemp()}",
                                         "data.manifest_out=null", *args.overrides])
    torch.manual_seed(0)
    start = time.perf_counter()
    prepare_generated_data(cfg.data)
    pretrain_stand_in(cfg)
    print(f"benchmark + stand-in: {time.perf_counter() - start:.0f} s "
          f"({cfg.model.weights_file})")
    model = build_model(cfg.model).eval()
    transform = build_eval_transforms({"model": model}, crop_pct=1.0)["model"]
    config = preprocessing_config(model)
    benchmark = Path(cfg.data.root).parent.resolve()
    class_names = (benchmark / "classes.txt").read_text().split()
    print("| split | top-1 | object-only top-1 | share on the object | object area |")
    print("|---|---|---|---|---|")
    for split in SPLITS:
        samples = ImageFolderSplit(benchmark, split, class_names=class_names).samples
        count = len(samples) if args.images <= 0 else min(args.images, len(samples))
        picks = np.unique(np.linspace(0, len(samples) - 1, count).round().astype(int))
        chosen = [samples[i] for i in picks]
        pairs = [(Path(p), benchmark / f"{split}_masks" / Path(p).resolve().relative_to(
            benchmark / split)) for p, _target, _meta in chosen]
        images, masks = load_pairs(pairs, transform)
        labels = torch.tensor([target for _p, target, _meta in chosen])
        share, top1 = foreground_share_and_top1(model, images, masks, labels)
        objects = replace_background(images, masks, fill=cfg.evaluation.background_fill,
                                     mean=config["mean"], std=config["std"])
        _share, object_top1 = foreground_share_and_top1(model, objects, masks, labels)
        print(f"| {split} | {top1:.1f} | {object_top1:.1f} | {100 * share:.1f} % | "
              f"{100 * float(masks.mean()):.1f} % |")


if __name__ == "__main__":
    main()
