"""``robustft-explain``: relevance maps of your images, for several models, methods and
explained classes, as PNG grids, ``.npy`` maps and an ``index.md``.

Examples::

    robustft-explain image=cat.jpg model.name=vit_base_patch16_224.augreg_in21k_ft_in1k
    robustft-explain image=cat.jpg model.name=... 'classes=[tabby,"Egyptian cat"]'
    robustft-explain image=data/synth/shuffled max_images=8 target=topk k=2 \\
        +models.before.checkpoint=a.ckpt +models.after.checkpoint=b.ckpt

Config: ``configs/explain.yaml``; the work: :func:`robustft.evaluation.explain.explain`
(which documents the files). Everything goes to the Hydra run directory
(``logs/explain/runs/<date>_<time>/`` by default, ``output_dir=...`` elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from robustft.backbones import ModelSpec
from robustft.cli.errors import one_line_errors
from robustft.cli.explain_texts import run_explain_texts
from robustft.config.checks import check_config
from robustft.evaluation.explain import ExplainResult, ExplainSettings, explain
from robustft.evaluation.explain_inputs import collect_images
from robustft.evaluation.explain_texts import TextsResult
from robustft.evaluation.model_loading import entry_spec
from robustft.resources import resolve_device

__all__ = ["main", "model_specs", "run_explain"]

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
    settings = ExplainSettings(
        methods=list(cfg.methods), target=str(cfg.target), k=int(cfg.k),
        method_options=OmegaConf.to_container(cfg.method_options, resolve=True),  # type: ignore[arg-type]
        classes=list(OmegaConf.to_container(cfg.classes, resolve=True) or []),
        class_names=cfg.class_names, backend=str(cfg.backend), scale=cfg.scale,
        max_image_pixels=cfg.max_image_pixels)
    image = OmegaConf.to_container(cfg.image, resolve=True) if OmegaConf.is_config(cfg.image) else cfg.image
    images = collect_images(image, max_images=cfg.max_images)  # type: ignore[arg-type]
    device = resolve_device(cfg.device)
    specs = model_specs(cfg)
    if cfg.texts:  # free prompts: both towers of an image-text model (cli/explain_texts.py)
        return run_explain_texts(cfg, specs, images, device,
                                 {label: _describe(spec) for label, (_, spec) in specs.items()})
    models = {label: spec.build(key=key) for label, (key, spec) in specs.items()}
    result = explain(models, images, Path(cfg.output_dir), settings, device=device,
                     progress=cfg.progress,
                     describe_models={label: _describe(spec) for label, (_, spec) in specs.items()})
    log.info("explained %d image(s) with %d model(s): %s", len(images.images), len(models),
             result.index)
    return result


@one_line_errors("robustft-explain")
@hydra.main(version_base="1.3", config_path="pkg://robustft.configs", config_name="explain")
def main(cfg: DictConfig) -> None:
    """Console entry point (see module docstring)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    run_explain(cfg)


if __name__ == "__main__":  # pragma: no cover
    main()
