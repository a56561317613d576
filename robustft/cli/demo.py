"""``robustft-demo``: the whole method on the generated benchmark, offline, in minutes.

1. generate the spurious-background benchmark (reused when already there);
2. pre-train a small ViT from scratch on its `pretrain` split (cached);
3. relevance-fine-tune it with 3 masks per class on half of the classes (experiment=demo);
4. evaluate the original and the fine-tuned model on every split in one pass per split;
5. write results.csv, results.md and relevance_overlays.png to the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from robustft.backbones import backbone_of, preprocessing_config
from robustft.benchmark.read import ImageFolderSplit
from robustft.benchmark.write import read_benchmark
from robustft.checkpoints import load_finetuned_weights
from robustft.cli.common import prepare_environment, prepare_generated_data
from robustft.cli.errors import one_line_errors
from robustft.evaluation.before_after import write_before_after
from robustft.evaluation.relevance_stats import (
    foreground_share_and_top1,
    load_pairs,
    mean_foreground_share,
    patch_coverage_share,
    relevance_overlay_grid,
    replace_background,
)
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.training.pretrain import pretrain_cached
from robustft.training.run import build_datamodule, build_model, train

log = logging.getLogger(__name__)
BEFORE, AFTER = "original", "relevance-finetuned"


def pretrain_stand_in(cfg: DictConfig) -> None:
    """Step 2: the weights file named by ``cfg.model.weights_file``, trained if missing."""
    scratch_cfg = OmegaConf.merge(cfg.model, {"weights_file": None, "pretrained": False})
    pl.seed_everything(cfg.seed, workers=True)  # before the model's random initialisation
    model = build_model(scratch_cfg)
    data_cfg = OmegaConf.merge(cfg.data, {
        "root": cfg.pretrain.data_root, "train_per_class": None, "class_fraction": 1.0,
        "manifest": None, "manifest_out": None, "batch_size": cfg.pretrain.batch_size,
        "num_workers": cfg.pretrain.num_workers, "resize_ratio": cfg.pretrain.resize_ratio,
        # 16 epochs over the same 4,000 small PNGs: decode each once
        "cache_decoded": True})
    datamodule = build_datamodule(data_cfg, model)
    settings = {"model": OmegaConf.to_container(scratch_cfg, resolve=True),
                "pretrain": OmegaConf.to_container(cfg.pretrain, resolve=True),
                "benchmark": read_benchmark(Path(cfg.data.root).parent), "seed": cfg.seed,
                # the batch order is part of what the weights are: a cache written with
                # another order (before EpochSeededSampler) must not be reused
                "batch_order": "epoch_seeded"}
    pretrain_cached(model, datamodule, cfg.model.weights_file, settings=settings,
                    max_epochs=cfg.pretrain.max_epochs, lr=cfg.pretrain.lr,
                    weight_decay=cfg.pretrain.weight_decay,
                    warmup_epochs=cfg.pretrain.warmup_epochs,
                    trainer_kwargs={"accelerator": cfg.trainer.accelerator, "devices": 1})


def _split_pairs(benchmark_root: Path, split: str, dataset: ImageFolderSplit, limit: int):
    """(image, mask) paths and labels of ``limit`` images of a split, evenly spaced over its
    sorted samples (so every class is represented)."""
    samples = dataset.samples
    positions = np.unique(np.linspace(0, len(samples) - 1, min(limit, len(samples))).round())
    chosen = [samples[int(i)] for i in positions]
    pairs = []
    for path, _target, _meta in chosen:
        relative = Path(path).resolve().relative_to(benchmark_root / split)
        pairs.append((Path(path), benchmark_root / f"{split}_masks" / relative.with_suffix(".png")))
    return pairs, torch.tensor([target for _path, target, _meta in chosen])


def evaluate_before_after(cfg: DictConfig, checkpoint: Path, output_dir: Path) -> str:
    """Steps 4-5."""
    benchmark_root = Path(cfg.data.root).parent.resolve()
    original = build_model(cfg.model)
    finetuned = load_finetuned_weights(build_model(cfg.model), checkpoint)
    models = {BEFORE: original, AFTER: finetuned}
    # The benchmark's images are exactly the model's input size: no crop.
    transforms = build_eval_transforms(models, crop_pct=1.0)
    class_names = (benchmark_root / "classes.txt").read_text().split()
    config = preprocessing_config(original)
    rows, shares, object_only_shares, object_only, areas, coverage = [], {}, {}, {}, {}, {}
    overlay_images, overlay_masks, overlay_labels = [], [], []
    ev = cfg.evaluation
    for split in ev.splits:
        dataset = ImageFolderSplit(benchmark_root, split, class_names=class_names, name=split)
        rows += evaluate_models(models, dataset, transforms=transforms, batch_size=ev.batch_size,
                                num_workers=0, device="cpu")
        pairs, labels = _split_pairs(benchmark_root, split, dataset, ev.relevance_images_per_split)
        images, masks = load_pairs(pairs, transforms[BEFORE])
        objects_only = replace_background(images, masks, fill=ev.background_fill,
                                          mean=config["mean"], std=config["std"])
        areas[split] = float(masks.mean())
        coverage[split] = patch_coverage_share(masks, backbone_of(original).patch_size)
        for name, model in models.items():
            shares[(name, split)] = mean_foreground_share(model, images, masks, labels)
            object_only_shares[(name, split)], object_only[(name, split)] = (
                foreground_share_and_top1(model, objects_only, masks, labels))
        if split in ("shuffled", "anti_correlated") and ev.overlay_images > 1:
            spread = torch.linspace(0, len(images) - 1, ev.overlay_images // 2).round().long()
            overlay_images.append(images[spread])
            overlay_masks.append(masks[spread])
            overlay_labels.append(labels[spread])
    written = []
    if overlay_images:  # none when overlay_images < 2 or neither split is evaluated
        written.append(relevance_overlay_grid(
            models, torch.cat(overlay_images), torch.cat(overlay_masks),
            torch.cat(overlay_labels), output_dir / "relevance_overlays.png",
            mean=config["mean"], std=config["std"]))
    _csv, md_path, text = write_before_after(
        rows, (BEFORE, AFTER), output_dir,
        title="robustft demo: relevance fine-tuning on the generated shortcut benchmark",
        foreground_share=shares, object_only_top1=object_only,
        object_only_foreground_share=object_only_shares, object_area=areas,
        patch_coverage_share=coverage)
    log.info("wrote %s", ", ".join(str(path) for path in (_csv, md_path, *written)))
    return text


def _chosen_checkpoint(which: str, best: Path | None, last: Path | None) -> Path:
    """``evaluation.checkpoint``: ``last`` (the end of the fixed-length recipe) or ``best``
    (lowest validation loss)."""
    if which not in ("last", "best"):
        raise ValueError(f"evaluation.checkpoint must be 'last' or 'best', got {which!r}")
    chosen = last if which == "last" else best
    if chosen is None:
        raise FileNotFoundError(f"the fine-tuning run wrote no {which!r} checkpoint "
                                "(callbacks.model_checkpoint disabled?)")
    return chosen


@one_line_errors("robustft-demo")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    prepare_environment()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    output_dir = Path(cfg.paths.output_dir)
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def finished(phase: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[phase], mark = now - mark, now

    log.info("[1/4] benchmark")
    prepare_generated_data(cfg.data)
    finished("benchmark")
    log.info("[2/4] pre-training the stand-in model (cached)")
    pretrain_stand_in(cfg)
    finished("pre-training")
    log.info("[3/4] relevance fine-tuning")
    with open_dict(cfg):
        cfg.validate_best = False
    result = train(cfg)
    checkpoint = _chosen_checkpoint(cfg.evaluation.checkpoint, result.best_checkpoint,
                                    result.last_checkpoint)
    finished("fine-tuning")
    log.info("[4/4] evaluation of %s", checkpoint)
    text = evaluate_before_after(cfg, checkpoint, output_dir)
    finished("evaluation")
    print("\n" + text)
    timing = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items())
    print(f"run directory: {output_dir}  ({sum(phases.values()):.0f} s: {timing})")


if __name__ == "__main__":
    main()
