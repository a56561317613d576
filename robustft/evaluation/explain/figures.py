"""Explain images: images x models x relevance methods x explained classes -> a PNG grid
per image, the raw maps as ``.npy`` and an ``index.md`` (the work of ``robustft-explain``,
usable from Python without Hydra).

Written to ``out_dir``:

- ``<image>.png``: one row per model x method: the image as that model sees it (its own
  resize and crop), then one overlay per explained class, titled with the class name and
  the model's probability for it;
- ``maps/<image>/<model>__<method>.npy``: float32 array of shape (T, h, w), the raw map of
  each of the T explained classes (in the order of ``maps.csv`` / ``index.md``) over the
  model's (h, w) patch grid, before upsampling and normalisation
  (:func:`robustft.relevance.upsample_and_normalize` gives what the PNG shows);
- ``maps.csv``: one row per map (image, image_path, model, method, position = the index
  along T, class_index, class_name, probability, npy);
- ``index.md``: the settings, then per image its PNG and a table linking every map.

``<image>`` is the image's file stem (``<class>_<stem>`` in class folders, made unique).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft.backbones import backbone_of, preprocessing_config
from robustft.data.image_files import load_rgb
from robustft.evaluation.explain.inputs import ExplainImage, ImageSet
from robustft.evaluation.explain.overlay_grid import (
    add_legend,
    denormalize,
    draw_grid,
    heat_overlay,
    percent,
)
from robustft.evaluation.explain.targets import (
    ClassNames,
    ExplainTarget,
    explained_classes,
    model_class_names,
)
from robustft.evaluation.runner import model_eval_transform
from robustft.relevance import RELEVANCE_METHODS, RelevanceChoice, upsample_and_normalize

__all__ = ["ExplainResult", "ExplainSettings", "MapRecord", "explain"]

MAPS_CSV = "maps.csv"
INDEX_NAME = "index.md"
MIN_CELL_WIDTH = 160  # pixels: the automatic scale enlarges smaller inputs to fit the titles
# Above this many pixels an image is refused before it is decoded: decoding takes about 3
# bytes a pixel several times over (95 megapixels took 1.6 GB), and the model sees it at
# 224 px anyway. 50 MP keeps every phone and most camera photos.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


@dataclass
class ExplainSettings:
    """What to explain: ``relevance`` (one :class:`robustft.relevance.RelevanceChoice` per
    method: its name, its own options, the backend; the shape robustft-eval uses too, built
    from the ``methods``, ``method_options`` and ``backend`` keys by
    :func:`robustft.relevance.relevance_choices`; a method run with non-default options is
    labelled ``rollout(start_layer=1)``), ``target`` (``predicted`` | ``label`` | ``topk``
    with ``k``) or named ``classes`` (which then replace ``target``), ``class_names`` (a file
    of the models' class names), the PNG's ``scale`` (None: enlarge small inputs to
    :data:`MIN_CELL_WIDTH` pixels) and ``max_image_pixels`` (a larger image is refused in
    one line before it is decoded; None: only PIL's own limit)."""

    relevance: Sequence[RelevanceChoice] = (RelevanceChoice(),)
    target: ExplainTarget | str = ExplainTarget.predicted
    k: int = 3
    classes: Sequence[str | int] = ()
    class_names: str | None = None
    scale: int | None = None
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        self.relevance = tuple(self.relevance)
        if not self.relevance:
            raise ValueError("methods: no relevance method given; known: "
                             f"{sorted(RELEVANCE_METHODS)}")
        if self.target not in tuple(ExplainTarget):
            raise ValueError(f"target must be one of {[t.value for t in ExplainTarget]}, "
                             f"got {self.target!r}")
        self.target = ExplainTarget(self.target)
        self.classes = list(self.classes or ())
        if self.classes and self.target != ExplainTarget.predicted:
            raise ValueError(f"set either classes={self.classes} or target={self.target}, not both")
        if self.target == ExplainTarget.topk and self.k < 1:
            raise ValueError(f"k must be >= 1 for target=topk, got {self.k}")
        if self.scale is not None and self.scale < 1:
            raise ValueError(f"scale must be >= 1 or null (automatic), got {self.scale}")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ValueError("max_image_pixels must be >= 1 or null (only PIL's own limit), "
                             f"got {self.max_image_pixels}")

    def legend(self) -> list[str]:
        """The lines under every PNG: which classes were explained, what the colours are."""
        if self.classes:
            what = f"the named classes (classes={list(self.classes)})"
        elif self.target == ExplainTarget.label:
            what = "the class of the image's folder (target=label)"
        elif self.target == ExplainTarget.topk:
            what = f"the top {self.k} classes of each model (target=topk, k={self.k})"
        else:
            what = "each model's predicted class (target=predicted)"
        return [f"explained: {what}",
                "colour: relevance for that class, each map scaled to its own min-max"]


@dataclass(frozen=True)
class MapRecord:
    """One explained class of one image by one model and method (a row of ``maps.csv``)."""

    image: str
    image_path: str
    model: str
    method: str
    position: int  # index along the T axis of ``npy``
    class_index: int
    class_name: str
    probability: float
    npy: str  # relative to the output folder


@dataclass
class ExplainResult:
    out_dir: Path
    index: Path
    pngs: list[Path] = field(default_factory=list)
    maps: list[MapRecord] = field(default_factory=list)


@dataclass
class _ModelView:
    """What explaining needs per model, prepared once: input transform, normalisation,
    class names, the named classes' indices."""

    label: str
    model: nn.Module
    transform: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    names: ClassNames
    classes: list[int]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _refuse_repeated_classes(given: Sequence[str | int], classes: Sequence[int],
                             names: ClassNames, key: str) -> None:
    """Two entries of ``classes=`` that name one class would draw the same overlay twice."""
    named: dict[int, list[str | int]] = {}
    for name, index in zip(given, classes):
        named.setdefault(index, []).append(name)
    repeated = {index: spellings for index, spellings in named.items() if len(spellings) > 1}
    if repeated:
        listed = "; ".join(
            f"{' and '.join(repr(s) for s in spellings)} {'both' if len(spellings) == 2 else 'all'}"
            f" name class {index} ({names.names[index]})" for index, spellings in repeated.items())
        raise ValueError(f"{key}: {listed}; name each class once")


def _prepare(models: Mapping[str, nn.Module], images: ImageSet, settings: ExplainSettings,
             device: torch.device) -> list[_ModelView]:
    views = []
    for label, model in models.items():
        backbone = backbone_of(model)
        backbone.check_explainable()
        config = preprocessing_config(model)
        names = model_class_names(backbone.num_classes, names_file=settings.class_names,
                                  dataset_classes=images.class_names)
        key = "classes" if len(models) == 1 else f"classes (model {label})"
        classes = [names.index_of(name, key=key) for name in settings.classes]
        _refuse_repeated_classes(settings.classes, classes, names, key)
        views.append(_ModelView(label, model.eval().to(device), model_eval_transform(config),
                                tuple(config["mean"]), tuple(config["std"]), names, classes))
    return views


def _explain_one(image: ExplainImage, views: Sequence[_ModelView], settings: ExplainSettings,
                 out_dir: Path, device: torch.device) -> tuple[Path, list[MapRecord]]:
    picture_rgb = load_rgb(image.path, max_pixels=settings.max_image_pixels,
                           limit_key="max_image_pixels")
    rows, titles, records = [], [], []
    for view in views:
        inputs = view.transform(picture_rgb)[None].to(device)
        with torch.no_grad():
            logits = backbone_of(view.model).class_scores(inputs)
        probabilities = logits.float().softmax(-1)[0].cpu()
        label = None
        if image.label is not None and settings.target == ExplainTarget.label:
            label = view.names.index_of(image.label, key=f"label of {image.path}")
        targets = explained_classes(probabilities, target=settings.target, k=settings.k,
                                    classes=view.classes, label=label, image=str(image.path))
        picture = denormalize(inputs[0], view.mean, view.std)
        for relevance in settings.relevance:
            batch = inputs.repeat(len(targets), 1, 1, 1)
            out = relevance.compute(view.model, batch, torch.tensor(targets, device=device))
            method = relevance.label
            raw = out.relevance.detach().float().cpu()
            npy = Path("maps") / image.name / f"{_safe(view.label)}__{_safe(method)}.npy"
            (out_dir / npy).parent.mkdir(parents=True, exist_ok=True)
            np.save(out_dir / npy, raw.numpy().astype(np.float32))
            shown = upsample_and_normalize(raw, tuple(inputs.shape[-2:]))
            rows.append([picture, *(heat_overlay(picture, shown[t]) for t in range(len(targets)))])
            row_titles = [f"{view.label}\n{method}"]
            for position, class_index in enumerate(targets):
                p = float(probabilities[class_index])
                row_titles.append(f"{view.names.short(class_index)}\n{percent(p)}")
                records.append(MapRecord(image.name, str(image.path), view.label, method, position,
                                         class_index, view.names.names[class_index], p, npy.as_posix()))
            titles.append(row_titles)
    scale = settings.scale or max(1, math.ceil(MIN_CELL_WIDTH / max(r[0].shape[1] for r in rows)))
    png = out_dir / f"{image.name}.png"
    add_legend(draw_grid(rows, cell_titles=titles, scale=scale), settings.legend()).save(png)
    return png, records


def _write_csv(path: Path, records: Sequence[MapRecord]) -> None:
    columns = [f.name for f in fields(MapRecord)]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({c: getattr(record, c) for c in columns})


def _write_index(path: Path, images: Sequence[ExplainImage], pngs: Sequence[Path],
                 records: Sequence[MapRecord], settings: ExplainSettings,
                 describe_models: Mapping[str, str]) -> None:
    what = (f"classes {list(settings.classes)}" if settings.classes else
            f"target={settings.target}" + (f", k={settings.k}" if settings.target == "topk" else ""))
    methods = ", ".join(relevance.label for relevance in settings.relevance)
    backends = ", ".join(dict.fromkeys(relevance.backend for relevance in settings.relevance))
    lines = ["# robustft-explain", "",
             f"{len(images)} image(s); methods {methods}; {what}; relevance backend {backends}.",
             "", "| model | built from |", "|---|---|"]
    lines += [f"| {label} | {text} |" for label, text in describe_models.items()]
    lines += ["", "Maps: `maps/<image>/<model>__<method>.npy`, float32 of shape (T, h, w): the "
              "raw relevance over the model's (h, w) patch grid of each of the T classes listed "
              "for that model and method, in that order (`maps.csv` has every row).", ""]
    for image, png in zip(images, pngs):
        label = f" (class folder `{image.label}`)" if image.label is not None else ""
        lines += [f"## {image.name}", "", f"`{image.path}`{label}", "",
                  f"![{image.name}]({png.name})", "",
                  "| model | method | class | index | probability | map [T] |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.model} | {r.method} | {r.class_name} | {r.class_index} | "
                  f"{percent(r.probability)} | [{r.npy}]({r.npy}) [{r.position}] |"
                  for r in records if r.image == image.name]
        lines.append("")
    path.write_text("\n".join(lines))


def explain(models: Mapping[str, nn.Module], images: ImageSet, out_dir: str | Path,
            settings: ExplainSettings | None = None, *, device: str | torch.device = "cpu",
            progress: bool = True, describe_models: Mapping[str, str] | None = None
            ) -> ExplainResult:
    """Explain every image of ``images`` with every model (label -> model) and method of
    ``settings``; writes the files of the module docstring to ``out_dir``."""
    settings = settings or ExplainSettings()
    if not models:
        raise ValueError("no models to explain with")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    views = _prepare(models, images, settings, device)
    result = ExplainResult(out_dir, out_dir / INDEX_NAME)
    for image in tqdm(images.images, desc="robustft-explain", unit="image", disable=not progress):
        png, records = _explain_one(image, views, settings, out_dir, device)
        result.pngs.append(png)
        result.maps.extend(records)
    _write_csv(out_dir / MAPS_CSV, result.maps)
    _write_index(result.index, images.images, result.pngs, result.maps, settings,
                 describe_models or {label: type(model).__name__ for label, model in models.items()})
    return result
