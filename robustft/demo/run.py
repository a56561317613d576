"""The run of ``robustft-demo`` (:func:`run_demo`): the whole method on the generated
benchmark, offline, in minutes.

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

import torch
from omegaconf import DictConfig, open_dict

from robustft.backbones import preprocessing_config
from robustft.checkpoints import load_finetuned_weights
from robustft.demo.before_after import write_before_after
from robustft.demo.relevance_stats import load_pairs, relevance_overlay_grid
from robustft.demo.split_measures import (
    generated_split,
    measure_generated_splits,
    split_pairs,
)
from robustft.demo.stand_in import chosen_checkpoint, pretrain_stand_in
from robustft.evaluation.runner import build_eval_transforms
from robustft.synth.prepare import prepare_generated_data
from robustft.training.run import build_model, check_training_config, train

log = logging.getLogger(__name__)
BEFORE, AFTER = "original", "relevance-finetuned"


def evaluate_before_after(cfg: DictConfig, checkpoint: Path, output_dir: Path) -> str:
    """Steps 4-5."""
    benchmark_root = Path(cfg.data.root).parent.resolve()
    original = build_model(cfg.model)
    finetuned = load_finetuned_weights(build_model(cfg.model), checkpoint)
    models = {BEFORE: original, AFTER: finetuned}
    ev = cfg.evaluation
    measures = measure_generated_splits(
        models, benchmark_root, ev.splits, batch_size=ev.batch_size,
        relevance_images_per_split=ev.relevance_images_per_split,
        background_fill=ev.background_fill)
    config = preprocessing_config(original)
    overlay_images, overlay_masks, overlay_labels = [], [], []
    transform = build_eval_transforms({BEFORE: original}, crop_pct=1.0)[BEFORE]
    for split in ev.splits:
        if split in ("shuffled", "anti_correlated") and ev.overlay_images > 1:
            # the same images the shares were measured on, spread over the split's classes
            pairs, labels = split_pairs(benchmark_root, split,
                                        generated_split(benchmark_root, split),
                                        ev.relevance_images_per_split)
            spread = torch.linspace(0, len(pairs) - 1, ev.overlay_images // 2).round().long()
            images, masks = load_pairs([pairs[int(i)] for i in spread], transform)
            overlay_images.append(images)
            overlay_masks.append(masks)
            overlay_labels.append(labels[spread])
    written = []
    if overlay_images:  # none when overlay_images < 2 or neither split is evaluated
        written.append(relevance_overlay_grid(
            models, torch.cat(overlay_images), torch.cat(overlay_masks),
            torch.cat(overlay_labels), output_dir / "relevance_overlays.png",
            mean=config["mean"], std=config["std"]))
    _csv, md_path, text = write_before_after(
        measures.rows, (BEFORE, AFTER), output_dir,
        title="robustft demo: relevance fine-tuning on the generated shortcut benchmark",
        foreground_share=measures.foreground_share, object_only_top1=measures.object_only_top1,
        object_only_foreground_share=measures.object_only_foreground_share,
        object_area=measures.object_area, patch_coverage_share=measures.patch_coverage_share)
    log.info("wrote %s", ", ".join(str(path) for path in (_csv, md_path, *written)))
    return text


def run_demo(cfg: DictConfig) -> None:
    """Steps 1-5 (the module's docstring), printing the before/after table and the
    phases' wall times; the run directory is ``cfg.paths.output_dir``."""
    check_training_config(cfg)  # a bad value: one line, before the benchmark and the stand-in
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
    checkpoint = chosen_checkpoint(cfg.evaluation.checkpoint, result.best_checkpoint,
                                   result.last_checkpoint, result.selected_checkpoint)
    finished("fine-tuning")
    log.info("[4/4] evaluation of %s", checkpoint)
    text = evaluate_before_after(cfg, checkpoint, output_dir)
    finished("evaluation")
    print("\n" + text)
    timing = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items())
    print(f"run directory: {output_dir}  ({sum(phases.values()):.0f} s: {timing})")
