"""robustft's Hydra configs (YAML). Importing this package registers the typed schemas the
YAML files build on (``robustft.schemas.store``) and the resolvers that name run directories
(``robustft.cli.common``); Hydra imports it before composing."""

from robustft.cli.common import register_resolvers
from robustft.schemas.store import register_configs

register_configs()
register_resolvers()
