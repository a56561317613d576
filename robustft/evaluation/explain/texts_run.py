"""``robustft-explain ... texts='[a red hat,a dog]'``: the images against free prompts with
image-text models (both towers; :func:`robustft.evaluation.explain.texts.explain_texts`
documents the files). The class-based keys (``classes``, ``target``, ``methods``) do not
apply: the explained score of each overlay is the image's similarity logit with its prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from robustft.backbones import ModelSpec
from robustft.backbones.image_text import check_texts, image_text_model
from robustft.evaluation.explain.inputs import ImageSet
from robustft.evaluation.explain.texts import TextsResult, explain_texts

__all__ = ["run_explain_texts"]

log = logging.getLogger(__name__)


def run_explain_texts(cfg: DictConfig, specs: Mapping[str, tuple[str, ModelSpec]],
                      images: ImageSet, device: torch.device,
                      describe_models: Mapping[str, str]) -> TextsResult:
    """Explain ``images`` against ``cfg.texts`` with the image-text model of every spec."""
    texts = check_texts(list(OmegaConf.to_container(cfg.texts, resolve=True)), "texts")
    if list(cfg.classes):
        raise ValueError(f"classes={list(cfg.classes)} and texts={texts}: give either classes "
                         "(a classifier's classes) or texts (free prompts), not both")
    models = {label: image_text_model(spec, key=key) for label, (key, spec) in specs.items()}
    result = explain_texts(models, images, texts, cfg.output_dir,
                           start_layer=int(cfg.image_start_layer),
                           text_start_layer=int(cfg.text_start_layer), device=device,
                           scale=cfg.scale, max_image_pixels=cfg.max_image_pixels,
                           progress=cfg.progress, describe_models=describe_models)
    log.info("explained %d image(s) against %d prompt(s) with %d model(s): %s",
             len(images.images), len(texts), len(models), result.index)
    return result
