"""The demo's fine-tuning as a plain PyTorch loop over robustft's library functions.

``docs/demo_measurements.md`` calls this "the library loop": the same stand-in, the same
fine-tuning images (``experiment=demo``'s selection), the same loss and optimiser as
``robustft-demo``, but no Lightning: ``relevance_map`` -> ``upsample_and_normalize`` ->
``relevance_loss`` (+ L2-SP, + ``classification_loss`` on the images without masks) ->
AdamW with the step decay, one batch at a time. It skips the demo's validation,
checkpointing and full evaluation, so a recipe is quicker to compare; then it reports
top-1 and the share of relevance on the object, before and after, on evenly spaced
images of three splits.

Run ``robustft-demo`` once first (it generates the benchmark and caches the stand-in), then
from the repository root, with any override of the demo's config::

    python benchmarks/demo_library_loop.py
    python benchmarks/demo_library_loop.py loss.lambda_l2sp=0 optim.optimizer.lr=1e-4 optim.scheduler.every=2
    python benchmarks/demo_library_loop.py --images 100 data.seed=1 seed=2

``seed`` orders the batches (as in the demo), ``data.seed`` draws the images. The records
in ``docs/demo_measurements.md`` before "A recipe that holds" were measured on the earlier
recipe's 15 images (``data.class_fraction=0.5 data.train_per_class=3``).
``ROBUSTFT_ROOT`` is honoured as in the demo.
"""

from __future__ import annotations

import argparse
import fnmatch
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from pytorch_lightning.utilities import CombinedLoader

from robustft.backbones import frozen_copy
from robustft.data.datamodule import pairs_and_unmasked
from robustft.demo.relevance_stats import foreground_share_and_top1, load_pairs
from robustft.evaluation.runner import build_eval_transforms
from robustft.losses import LossWeights, classification_loss, l2_sp_penalty, relevance_loss
from robustft.relevance import relevance_map, upsample_and_normalize
from robustft.synth.read import ImageFolderSplit
from robustft.training.module import step_decay
from robustft.training.run import build_datamodule, build_model

SPLITS = ("in_distribution", "shuffled", "anti_correlated")


def demo_config(overrides: list[str]):
    """The demo's composed config; outside a Hydra run, so the run directory is a temp dir
    and no selection manifest is written."""
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("demo", overrides=[f"paths.output_dir={tempfile.mkdtemp()}",
                                          "data.manifest_out=null", *overrides])


def evaluate(model, benchmark: Path, class_names: list[str], images_per_split: int):
    """{split: (top-1 %, share of relevance on the object)} on evenly spaced images."""
    transform = build_eval_transforms({"model": model}, crop_pct=1.0)["model"]
    results = {}
    for split in SPLITS:
        samples = ImageFolderSplit(benchmark, split, class_names=class_names).samples
        split_dir = benchmark / split
        picks = np.unique(np.linspace(0, len(samples) - 1, min(images_per_split, len(samples)))
                          .round().astype(int))
        chosen = [samples[i] for i in picks]
        pairs = [(Path(p), benchmark / f"{split}_masks" / Path(p).resolve().relative_to(split_dir))
                 for p, _target, _meta in chosen]
        images, masks = load_pairs(pairs, transform)
        labels = torch.tensor([target for _p, target, _meta in chosen])
        share, top1 = foreground_share_and_top1(model, images, masks, labels)
        results[split] = (top1, share)
    return results


def finetune(cfg, model, loader) -> None:
    """The demo's recipe, one optimiser step per batch of the demo's loader."""
    loss_cfg, optim_cfg = cfg.loss, cfg.optim
    if optim_cfg.frozen:
        raise ValueError(f"optim.frozen={list(optim_cfg.frozen)}: the library loop trains every "
                         "parameter; use robustft-demo for frozen ones")
    teacher = frozen_copy(model)
    pulled = [name for name, _p in model.named_parameters()
              if not any(fnmatch.fnmatchcase(name, pattern) for pattern in loss_cfg.l2sp_exclude)]
    start = dict(teacher.named_parameters())
    weights = LossWeights(background=loss_cfg.lambda_bg, foreground=loss_cfg.lambda_fg,
                          segmentation=loss_cfg.lambda_seg, classification=loss_cfg.lambda_cls)
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim_cfg.optimizer.lr,
                                  weight_decay=optim_cfg.optimizer.weight_decay)
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, step_decay(optim_cfg.scheduler.gamma, optim_cfg.scheduler.every))
    model.train()
    # with images without masks (data.unmasked_root) the loader is a CombinedLoader of the
    # pairs and those images, as in the demo; set_epoch as Lightning does at each epoch
    samplers = [dl.sampler for dl in (loader.flattened if isinstance(loader, CombinedLoader)
                                      else [loader])]
    for epoch in range(cfg.trainer.max_epochs):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        for item in loader:
            pairs, unmasked = pairs_and_unmasked(item)
            images, masks, labels = pairs["image"], pairs["mask"], pairs["label"]
            out = relevance_map(model, images, labels, gradient_mode=cfg.relevance.gradient_mode)
            relevance = upsample_and_normalize(out.relevance, masks.shape[-2:])
            teacher_logits = None
            if loss_cfg.classification == "kl_to_teacher":
                with torch.no_grad():
                    teacher_logits = teacher(images)
            loss = relevance_loss(relevance, masks, out.logits, weights=weights,
                                  classification=loss_cfg.classification,
                                  temperature=loss_cfg.temperature, labels=labels,
                                  teacher_logits=teacher_logits, ignore=pairs["ignore"]).total
            if unmasked is not None:
                with torch.no_grad():
                    unmasked_teacher = teacher(unmasked["image"])
                loss = loss + loss_cfg.lambda_unmasked * classification_loss(
                    loss_cfg.classification, model(unmasked["image"]),
                    temperature=loss_cfg.temperature, labels=unmasked["label"],
                    teacher_logits=unmasked_teacher)
            if loss_cfg.lambda_l2sp > 0:
                named = dict(model.named_parameters())
                loss = loss + loss_cfg.lambda_l2sp * l2_sp_penalty(
                    [named[n] for n in pulled], [start[n] for n in pulled])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        decay.step()  # per epoch, as the demo's scheduler
    model.eval()


def main(argv: list[str] | None = None) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="evaluated images per split")
    parser.add_argument("overrides", nargs="*", help="overrides of the demo's Hydra config")
    args = parser.parse_args(argv)
    cfg = demo_config(args.overrides)
    weights_file = Path(cfg.model.weights_file)
    if not weights_file.is_file():
        raise FileNotFoundError(f"no pre-trained stand-in at {weights_file} (model.weights_file): "
                                "run robustft-demo once first, with the same ROBUSTFT_ROOT")
    benchmark = Path(cfg.data.root).parent.resolve()
    class_names = (benchmark / "classes.txt").read_text().split()
    torch.manual_seed(cfg.seed)  # the batch order, as pl.seed_everything(seed) in the demo
    model = build_model(cfg.model)
    datamodule = build_datamodule(cfg.data, model)
    datamodule.setup("fit")
    before = evaluate(model, benchmark, class_names, args.images)
    began = time.perf_counter()
    finetune(cfg, model, datamodule.train_dataloader())
    seconds = time.perf_counter() - began
    after = evaluate(model, benchmark, class_names, args.images)
    print(f"{len(datamodule.selection.train)} images, {cfg.trainer.max_epochs} epochs, "
          f"{seconds:.0f} s; overrides: {' '.join(args.overrides) or '(none)'}")
    for split in SPLITS:
        (top1_0, share_0), (top1_1, share_1) = before[split], after[split]
        print(f"{split:16s} top-1 {top1_0:5.1f} -> {top1_1:5.1f} ({top1_1 - top1_0:+5.1f})"
              f"   share {100 * share_0:4.1f} % -> {100 * share_1:4.1f} %")
    return {split: (before[split], after[split]) for split in SPLITS}


if __name__ == "__main__":
    main()
