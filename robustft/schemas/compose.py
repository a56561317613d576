"""Composing robustft's configs from Python: a run's config from a config name and
overrides, as the commands that start several runs (robustft-compare, robustft-tune) do."""

from __future__ import annotations

from collections.abc import Sequence

import hydra
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf


def compose_run(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """robustft's config ``config_name`` with ``overrides``, typed by its schemas; inside a
    Hydra app (this command) through its config search path, elsewhere (a worker process)
    through robustft's config package."""
    if GlobalHydra.instance().is_initialized():
        return hydra.compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return hydra.compose(config_name=config_name, overrides=list(overrides))


def typed_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The command line's overrides as typed. Hydra keeps them in its own config, where an
    interpolation in a value (``data.unmasked_root=${data.benchmark}/...``) resolves when
    read, against the first composition (the default benchmark); read unresolved, it
    resolves in each benchmark's own composition."""
    return [str(item) for item in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]
