"""What the demo and the comparison measure on each split of a generated benchmark, for any
number of models in one pass per split: top-1 (the evaluation runner), the share of
relevance on the object, object-only top-1 and share (background replaced by grey), and
the two yardsticks of the share (the object's area, the patch-coverage map)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustft.backbones import backbone_of, preprocessing_config
from robustft.demo.relevance_stats import (
    foreground_share_and_top1,
    load_pairs,
    mean_foreground_share,
    patch_coverage_share,
    replace_background,
)
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.synth.read import ImageFolderSplit

__all__ = ["SplitMeasures", "split_pairs", "measure_generated_splits", "generated_split"]

PerModelSplit = dict[tuple[str, str], float]


@dataclass
class SplitMeasures:
    """``rows``: the runner's result rows (top-1 per model and split); the shares are
    fractions, object-only top-1 in percent, keyed by (model, split); ``object_area`` and
    ``patch_coverage_share`` by split (see ``write_before_after``)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    foreground_share: PerModelSplit = field(default_factory=dict)
    object_only_foreground_share: PerModelSplit = field(default_factory=dict)
    object_only_top1: PerModelSplit = field(default_factory=dict)
    object_area: dict[str, float] = field(default_factory=dict)
    patch_coverage_share: dict[str, float] = field(default_factory=dict)


def generated_split(benchmark_root: Path, split: str) -> ImageFolderSplit:
    """One evaluation split of a generated benchmark, labels in ``classes.txt`` order."""
    class_names = (benchmark_root / "classes.txt").read_text().split()
    return ImageFolderSplit(benchmark_root, split, class_names=class_names, name=split)


def split_pairs(benchmark_root: Path, split: str, dataset: ImageFolderSplit, limit: int
                ) -> tuple[list[tuple[Path, Path]], Tensor]:
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


def measure_generated_splits(
    models: Mapping[str, nn.Module],
    benchmark_root: str | Path,
    splits: Sequence[str],
    *,
    batch_size: int,
    relevance_images_per_split: int,
    background_fill: float,
    progress: bool = True,
) -> SplitMeasures:
    """Every measure of every model on every split; all models share the first model's
    preprocessing (they are one architecture: the stand-in and its fine-tunes). The
    benchmark's images are exactly the model's input size: no crop."""
    benchmark_root = Path(benchmark_root).resolve()
    first = next(iter(models.values()))
    transforms = build_eval_transforms(models, crop_pct=1.0)
    config = preprocessing_config(first)
    measures = SplitMeasures()
    for split in splits:
        dataset = generated_split(benchmark_root, split)
        measures.rows += evaluate_models(models, dataset, transforms=transforms,
                                         batch_size=batch_size, num_workers=0, device="cpu",
                                         progress=progress)
        pairs, labels = split_pairs(benchmark_root, split, dataset, relevance_images_per_split)
        images, masks = load_pairs(pairs, next(iter(transforms.values())))
        objects_only = replace_background(images, masks, fill=background_fill,
                                          mean=config["mean"], std=config["std"])
        measures.object_area[split] = float(masks.mean())
        measures.patch_coverage_share[split] = patch_coverage_share(
            masks, backbone_of(first).patch_size)
        for name, model in models.items():
            measures.foreground_share[(name, split)] = mean_foreground_share(
                model, images, masks, labels)
            share, top1 = foreground_share_and_top1(model, objects_only, masks, labels)
            measures.object_only_foreground_share[(name, split)] = share
            measures.object_only_top1[(name, split)] = top1
    return measures
