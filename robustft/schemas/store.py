"""Registers robustft's schemas in Hydra's ConfigStore.

The YAML files name them in their defaults lists (``- base_loss``), so registration must
happen before composition: ``robustft.configs`` (the YAML package Hydra searches) calls
:func:`register_configs` when it is imported, which Hydra does before it composes.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from robustft.backbones import ModelSpec
from robustft.backbones.heads import ZeroShotSpec
from robustft.losses import LossConfig
from robustft.relevance import RelevanceConfig
from robustft.schemas.inspection_schemas import EvalConfig, ExplainConfig, HeadConfig, MasksConfig
from robustft.schemas.schemas import (
    GENERIC_DATA_SCHEMA,
    IMAGENET_S_DATA_SCHEMA,
    SUITE_SCHEMA,
    TRAINER_SCHEMA,
    DemoConfig,
    OptimConfig,
    PathsConfig,
    TrainConfig,
    TuneConfig,
)

__all__ = ["register_configs", "GROUP_SCHEMAS"]

# (group, name in the store, schema); group None = a top-level (primary) config
GROUP_SCHEMAS: tuple[tuple[str | None, str, type], ...] = (
    (None, "base_train", TrainConfig),
    (None, "base_demo", DemoConfig),
    (None, "base_eval", EvalConfig),
    (None, "base_masks", MasksConfig),
    (None, "base_explain", ExplainConfig),
    (None, "base_tune", TuneConfig),
    (None, "base_head", HeadConfig),
    ("data", "base_generic", GENERIC_DATA_SCHEMA),
    ("data", "base_imagenet_s", IMAGENET_S_DATA_SCHEMA),
    ("model", "base_model", ModelSpec),
    ("relevance", "base_relevance", RelevanceConfig),
    ("loss", "base_loss", LossConfig),
    ("optim", "base_optim", OptimConfig),
    ("trainer", "base_trainer", TRAINER_SCHEMA),
    ("paths", "base_paths", PathsConfig),
    ("eval", "base_suite", SUITE_SCHEMA),
)


def _model_schema() -> DictConfig:
    """``ModelSpec`` with an open ``kwargs``: constructor arguments are the model's, so both
    ``model.kwargs={img_size: 384}`` and ``++model.kwargs.img_size=384`` must work; and a
    ``zero_shot`` node with its defaults."""
    node = OmegaConf.structured(ModelSpec)
    node.kwargs = {}
    OmegaConf.set_struct(node.kwargs, False)
    # present (with its defaults) rather than null, so that model.zero_shot.<key>=... can be
    # set on the command line (OmegaConf cannot merge into a null structured node); a timm
    # model takes the head only when zero_shot.embeddings_file is set
    node.zero_shot = OmegaConf.structured(ZeroShotSpec)
    return node


def register_configs() -> None:
    """Store every schema (idempotent: storing again replaces the entry)."""
    store = ConfigStore.instance()
    for group, name, schema in GROUP_SCHEMAS:
        store.store(group=group, name=name, node=_model_schema() if schema is ModelSpec else schema)
