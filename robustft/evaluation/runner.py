"""Multi-model, single-pass evaluation: decode every image once, run every model on it.

On the shifted-ImageNet suites decoding a JPEG (and resizing it) costs more than a ViT
forward on a GPU, so evaluating K models in K passes pays the decoding K times. Here the
DataLoader workers decode each image once, apply each *distinct* eval transform once
(models that share a preprocessing config share the tensor), and the main process runs
every model on the batch.

The dataset interface (see ``robustft.data.eval.base``): ``dataset[i]`` returns
``(PIL.Image RGB, target: int, meta: dict[str, str])``; ``dataset.name`` and
``dataset.protocol`` (a :class:`~robustft.labels.LabelProtocol`) exist.

Rows returned (one per model x dataset x metric, plus one per factor value when samples
carry meta)::

    {"model", "dataset", "protocol", "metric", "factor", "factor_value",
     "value", "num_images"}

``metric`` is ``"top1"`` / ``"top5"``, ``value`` its accuracy in percent, ``factor`` and
``factor_value`` are ``""`` on the overall rows.

An image that does not decode (corrupt bytes, a truncated PNG or JPEG: the dataset raises
``CorruptImageError``) is skipped for every model, counted in one log line per dataset and
handed back as an :class:`UnreadableImage`; accuracies are over the readable images and
``num_images`` says how many there were.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from robustft.backbones import backbone_of
from robustft.data.eval.registry import has_labels, has_masks
from robustft.data.layout import CorruptImageError
from robustft.evaluation.eval_transforms import (
    ImageTransform,
    build_eval_transforms,
    legacy_eval_transform,
    model_eval_transform,
)
from robustft.evaluation.mask_views import MaskTransform, mask_geometry, transform_normalization
from robustft.evaluation.metrics import TopKAccuracy
from robustft.evaluation.metrics.map_scoring import ExplanationScorer, ExplanationSettings
from robustft.evaluation.unreadable import UnreadableImage, report_unreadable
from robustft.labels import LabelProtocol

__all__ = [
    "RESULT_COLUMNS",
    "ImageTransform",
    "UnreadableImage",
    "build_eval_transforms",
    "evaluate_models",
    "legacy_eval_transform",
    "model_eval_transform",
]

log = logging.getLogger(__name__)

RESULT_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "protocol",
    "metric",
    "factor",
    "factor_value",
    "value",
    "num_images",
)

# --------------------------------------------------------------------------- data


class _Unreadable(NamedTuple):
    """What the decoding dataset yields in place of an image that does not decode."""

    path: str
    error: str


class _DecodeOnceDataset(Dataset):
    """Wraps an evaluation dataset: decode image ``i`` once and apply every distinct
    transform to it (in the DataLoader worker), and, when ``mask_views`` are given, its
    mask through each view's geometry; an image that does not decode becomes an
    :class:`_Unreadable` marker instead of an error that would end the whole pass."""

    def __init__(self, dataset: Dataset, views: Sequence[ImageTransform],
                 mask_views: Sequence[MaskTransform] = ()) -> None:
        self.dataset = dataset
        self.views = list(views)
        self.mask_views = list(mask_views)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(
        self, index: int
    ) -> tuple[tuple[Tensor, ...], int, dict[str, str], tuple[Tensor, ...]] | _Unreadable:
        try:
            image, target, meta = self.dataset[index]
            mask = self.dataset.load_mask(index) if self.mask_views else None  # type: ignore[attr-defined]
        except CorruptImageError as error:
            cause = error.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else error.reason
            return _Unreadable(str(error.path), " ".join(reason.split()))
        if mask is not None and mask.shape != (image.height, image.width):
            raise ValueError(f"dataset {getattr(self.dataset, 'name', '?')!r}: image {index} is "
                             f"{image.height}x{image.width} but its mask is "
                             f"{mask.shape[0]}x{mask.shape[1]}")
        masks = tuple(view(mask) for view in self.mask_views) if mask is not None else ()
        return tuple(view(image) for view in self.views), int(target), dict(meta), masks


def _collate(
    batch: Sequence[tuple[tuple[Tensor, ...], int, dict[str, str], tuple[Tensor, ...]] | _Unreadable],
) -> tuple[list[Tensor], Tensor, list[dict[str, str]], list[Tensor], list[_Unreadable]]:
    unreadable = [item for item in batch if isinstance(item, _Unreadable)]
    readable = [item for item in batch if not isinstance(item, _Unreadable)]
    num_views = len(readable[0][0]) if readable else 0
    num_masks = len(readable[0][3]) if readable else 0
    views = [torch.stack([item[0][v] for item in readable]) for v in range(num_views)]
    masks = [torch.stack([item[3][v] for item in readable]) for v in range(num_masks)]
    targets = torch.tensor([item[1] for item in readable], dtype=torch.long)
    metas = [item[2] for item in readable]
    return views, targets, metas, masks, unreadable


# --------------------------------------------------------------------------- runner


def evaluate_models(
    models: Mapping[str, nn.Module],
    dataset: Dataset,
    *,
    transforms: Mapping[str, ImageTransform],
    batch_size: int = 64,
    num_workers: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    unreadable: list[UnreadableImage] | None = None,
    explanations: ExplanationSettings | None = None,
    timings: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every model in ``models`` on ``dataset`` in ONE pass over its images.

    - ``transforms[name]`` is the eval transform of model ``name``; transforms that are
      the same object are applied once per image and their tensor is shared.
    - Models are moved to ``device`` and put in eval mode (in place).
    - Scores come from ``dataset.protocol``; top-1/top-5 via torchmetrics
      ``MulticlassAccuracy(average="micro")`` in percent (top-5 only when the protocol
      has more than 5 classes).
    - When samples carry meta (SI-Score factors), adds per-factor-value rows.
    - An image that does not decode is skipped for every model and logged (one line for
      the dataset, with the count); ``unreadable``, when given, gets an
      :class:`UnreadableImage` appended for each. ``num_images`` counts the readable
      images; a dataset none of whose images decodes is a ``ValueError``.
    - ``explanations`` picks the metrics (default: top-1/top-5 alone); the explanation
      metrics (``robustft.evaluation.metrics``, ``robustft.evaluation.metrics.map_scoring``) run
      in the same pass, on the same
      input tensors, with each mask resampled like its image (``mask_geometry``). A metric
      the dataset cannot give (masks, labels) is a ``ValueError`` before any image is read.
    - ``timings``, when given, gets each model's wall seconds per image of each part:
      ``top1`` (its forward and scoring) and the explanation parts (``forward``,
      ``relevance``: the maps, shared by the metrics that explain the same class, then
      ``perturbation``, ``segmentation``, ``share`` on their own); the same is logged.

    Returns the result rows (see module docstring), models in the order given.
    """
    if not models:
        raise ValueError("evaluate_models needs at least one model")
    missing = [name for name in models if name not in transforms]
    if missing:
        raise KeyError(f"no eval transform for model(s) {missing}; got {sorted(transforms)}")
    protocol: LabelProtocol = dataset.protocol
    dataset_name: str = dataset.name
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"dataset {dataset_name!r} is empty")
    settings = explanations or ExplanationSettings()
    settings.check_dataset(dataset_name, has_masks=has_masks(dataset),
                           has_labels=has_labels(dataset))

    views: list[ImageTransform] = []
    view_of_model: dict[str, int] = {}
    for model_name in models:
        transform = transforms[model_name]
        for index, view in enumerate(views):
            if view is transform:
                view_of_model[model_name] = index
                break
        else:
            view_of_model[model_name] = len(views)
            views.append(transform)

    device = torch.device(device)
    mask_views = [mask_geometry(view) for view in views] if settings.needs_masks else []
    loader = DataLoader(
        _DecodeOnceDataset(dataset, views, mask_views),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    samples = getattr(dataset, "samples", None)
    track_samples = bool(samples) and any(sample[2] for sample in samples)
    scorers = ({name: TopKAccuracy(protocol.num_classes, track_samples) for name in models}
               if TopKAccuracy.name in settings.metrics else {})
    explainers = {}
    for name in models if settings.explains else ():
        mean, std = transform_normalization(transforms[name])
        explainers[name] = ExplanationScorer(settings, protocol, mean=mean, std=std)
    metas: list[dict[str, str]] = []
    skipped: list[_Unreadable] = []
    top1_seconds: dict[str, float] = defaultdict(float)
    for model in models.values():
        model.to(device).eval()

    bar = tqdm(
        total=len(dataset),  # type: ignore[arg-type]
        desc=f"{dataset_name} ({len(models)} model{'s' if len(models) > 1 else ''})",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    with bar:
        for batch_views, targets, batch_metas, batch_masks, batch_unreadable in loader:
            skipped.extend(batch_unreadable)
            bar.update(len(batch_unreadable))
            if len(targets) == 0:
                continue
            # moved outside inference mode: the relevance maps need autograd on these
            inputs = [view.to(device, non_blocking=True) for view in batch_views]
            for model_name, model in models.items():
                view = view_of_model[model_name]
                if model_name in scorers:
                    begun = time.perf_counter()
                    with torch.inference_mode(), torch.autocast(
                        device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
                    ):
                        logits = backbone_of(model).class_scores(inputs[view])
                    scorers[model_name].update(protocol.scores(logits.float()), targets)
                    top1_seconds[model_name] += time.perf_counter() - begun
                if model_name in explainers:
                    with torch.autocast(device.type, dtype=autocast_dtype,
                                        enabled=autocast_dtype is not None):
                        explainers[model_name].update(
                            model, inputs[view], targets,
                            batch_masks[view].to(device) if batch_masks else None)
            if track_samples:
                metas.extend(batch_metas)
            bar.update(len(targets))
    elapsed = time.perf_counter() - started
    if progress:
        rate = len(dataset) / max(elapsed, 1e-9)  # type: ignore[arg-type]
        tqdm.write(f"{dataset_name}: {len(dataset)} images in {elapsed:.1f} s ({rate:.1f} img/s)")  # type: ignore[arg-type]
    report_unreadable(dataset_name, len(dataset), skipped)  # type: ignore[arg-type]
    if unreadable is not None:
        unreadable.extend(UnreadableImage(dataset_name, item.path, item.error) for item in skipped)

    rows: list[dict[str, Any]] = []
    for model_name in models:
        parts: dict[str, float] = {}
        if model_name in scorers:
            scorer = scorers[model_name]
            parts["top1"] = top1_seconds[model_name] / max(scorer.count, 1)
            for k, accuracy in scorer.overall().items():
                rows.append(_row(model_name, dataset_name, protocol, f"top{k}", "", "", accuracy,
                                 scorer.count))
            for factor, value, k, accuracy, count in scorer.per_factor(metas):
                rows.append(_row(model_name, dataset_name, protocol, f"top{k}", factor, value,
                                 accuracy, count))
        if model_name in explainers:
            explainer = explainers[model_name]
            for metric, factor, value, number in explainer.results():
                rows.append(_row(model_name, dataset_name, protocol, metric, factor, value, number,
                                 explainer.count))
            _report_constant_maps(model_name, dataset_name, explainer)
            parts.update(explainer.seconds_per_image())
        if explainers:
            timing = ", ".join(f"{part} {1000 * seconds:.1f} ms" for part, seconds in parts.items())
            log.info("%s on %s: time per image: %s", model_name, dataset_name, timing)
        if timings is not None:
            timings[model_name] = parts
    return rows


def _report_constant_maps(model: str, dataset: str, explainer: ExplanationScorer) -> None:
    """One warning line when some maps had one value everywhere (scored as chance)."""
    counts = {metric: count for metric, count in explainer.constant_map_counts().items() if count}
    if counts:
        log.warning("%s on %s: %s of %d %s map(s) had one value at every pixel (no information): "
                    "segmentation AP scored as chance (50 %%), foreground share as the object's "
                    "area; counted in the *_constant_maps rows", model, dataset,
                    ", ".join(f"{count} {metric}" for metric, count in counts.items()),
                    explainer.count, explainer.settings.method_label)


def _row(
    model: str,
    dataset: str,
    protocol: LabelProtocol,
    metric: str,
    factor: str,
    factor_value: str,
    accuracy: float,
    count: int,
) -> dict[str, Any]:
    return {
        "model": model,
        "dataset": dataset,
        "protocol": protocol.label,
        "metric": metric,
        "factor": factor,
        "factor_value": factor_value,
        "value": accuracy,
        "num_images": count,
    }
