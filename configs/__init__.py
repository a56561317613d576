"""robustft's Hydra configs (YAML). Importing this package registers the typed schemas the
YAML files build on (``robustft.config.store``); Hydra imports it before composing."""

from robustft.config.store import register_configs

register_configs()
