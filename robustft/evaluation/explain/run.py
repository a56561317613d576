"""The run of ``robustft-explain`` (:func:`run_explain`): the models, methods and images of
its config (``configs/explain.yaml``) handed to
:func:`robustft.evaluation.explain.figures.explain`, which documents the files."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robustft.backbones import ModelSpec
from robustft.evaluation.explain.figures import ExplainResult, ExplainSettings, explain
from robustft.evaluation.explain.inputs import collect_images
from robustft.evaluation.explain.texts import TextsResult
from robustft.evaluation.explain.texts_run import run_explain_texts
from robustft.evaluation.model_loading import entry_spec
from robustft.relevance import relevance_choices
from robustft.resources import resolve_device
from robustft.schemas.checks import check_config

__all__ = ["model_specs", "run_explain"]

log = logging.getLogger(__name__)


def model_specs(cfg: DictConfig) -> dict[str, tuple[str, ModelSpec]]:
    """label -> (config key, spec): the ``model`` shorthand first (labelled by its name),
    when its name, checkpoint or weights file is set, then the ``models.<label>`` entries in order."""
    specs: dict[str, tuple[str, ModelSpec]] = {}
    shorthand: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    if OmegaConf.is_missing(cfg.model, "name"):
        del shorthand["name"]  # a checkpoint names its own architecture
    if shorthand.get("name") or shorthand.get("checkpoint") or shorthand.get("weights_file"):
        spec = entry_spec("model", shorthand, key="model")
        specs[spec.name] = ("model", spec)
    entries: Mapping[str, Any] = OmegaConf.to_container(cfg.models, resolve=True) or {}  # type: ignore[assignment]
    for label, entry in entries.items():
        if entry is None:
            continue
        if label in specs:
            raise ValueError(f"models.{label}: the label is already taken by model.name={label}")
        specs[label] = (f"models.{label}", entry_spec(label, entry))
    if not specs:
        raise ValueError("no model: set model.name=<timm name> (or +models.<label>.name=..., "
                         "+models.<label>.checkpoint=...)")
    return specs


def _describe(spec: ModelSpec) -> str:
    weights = (f"checkpoint `{spec.checkpoint}`" if spec.checkpoint else
               f"weights file `{spec.weights_file}`" if spec.weights_file else
               "hub weights" if spec.pretrained else "random weights")
    kwargs = f", kwargs {spec.kwargs}" if spec.kwargs else ""
    return f"`{spec.name}` ({spec.family}), {weights}{kwargs}"


def run_explain(cfg: DictConfig) -> ExplainResult | TextsResult:
    """Explain ``cfg.image`` with ``cfg``'s models and methods; returns what was written."""
    check_config(cfg)
    if OmegaConf.is_missing(cfg, "image"):
        raise ValueError("image: missing; set image=<file>, image=[a.jpg,b.jpg] or image=<folder>")
    relevance = relevance_choices(
        list(cfg.methods), OmegaConf.to_container(cfg.method_options, resolve=True),  # type: ignore[arg-type]
        str(cfg.backend))
    settings = ExplainSettings(
        relevance=relevance, target=str(cfg.target), k=int(cfg.k),
        classes=list(OmegaConf.to_container(cfg.classes, resolve=True) or []),
        class_names=cfg.class_names, scale=cfg.scale, max_image_pixels=cfg.max_image_pixels)
    image = OmegaConf.to_container(cfg.image, resolve=True) if OmegaConf.is_config(cfg.image) else cfg.image
    images = collect_images(image, max_images=cfg.max_images)  # type: ignore[arg-type]
    device = resolve_device(cfg.device)
    specs = model_specs(cfg)
    if cfg.texts:  # free prompts: both towers of an image-text model (explain/texts_run.py)
        return run_explain_texts(cfg, specs, images, device,
                                 {label: _describe(spec) for label, (_, spec) in specs.items()})
    models = {label: spec.build(key=key) for label, (key, spec) in specs.items()}
    result = explain(models, images, Path(cfg.output_dir), settings, device=device,
                     progress=cfg.progress,
                     describe_models={label: _describe(spec) for label, (_, spec) in specs.items()})
    log.info("explained %d image(s) with %d model(s): %s", len(images.images), len(models),
             result.index)
    return result
