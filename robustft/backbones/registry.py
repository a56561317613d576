"""Model families by name, and the adapter of any model.

A model family is one subpackage of ``backbones/`` and one :class:`Family` record,
registered with :func:`register_family` (the built-in ones in their subpackage's
``__init__``, which ``robustft.backbones`` imports). The record is everything the rest of
robustft knows about the family:

- ``build``: ``(ModelSpec, config key) -> nn.Module``, the model with the family's own
  weights (random, hub or file; a robustft ``checkpoint`` is loaded on top by
  :meth:`robustft.backbones.spec.ModelSpec.build`);
- ``adapters``: the model types it adapts and their :class:`Backbone` adapter, loaded the
  first time :func:`backbone_of` runs once the family's ``library`` is imported (so that
  ``open_clip`` or ``transformers`` is imported only when one of its models exists). The
  adapter is what evaluation and the masks read from a model: its preprocessing, its class
  scores, its name (:meth:`Backbone.describe`);
- ``fields``: the :class:`ModelSpec` fields it owns (``tag``, ``hf_path``...): another
  family's spec that sets one is refused in one line, and ``source_fields``, those of its
  fields that say which model to build instead of ``name`` (a family without any requires
  ``name``); ``check``: its own rules for a spec, run before ``build``;
- ``weights_identity``: what identifies its weights in an evaluation fingerprint beyond
  the entry's common keys (a library version, the files of a model folder);
- ``image_text``: for a family with a text tower (CLIP), ``(ModelSpec, config key) ->``
  :class:`~robustft.backbones.image_text.ImageTextModel`, both towers and the tokenizer
  (None: no text tower).

Nothing outside ``backbones/`` branches on a family's name: it asks the record.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from robustft.backbones.base import Backbone

if TYPE_CHECKING:
    from robustft.backbones.spec import ModelSpec

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "AdapterFactory", "Family", "backbone_of", "get_family",
           "lazy", "preprocessing_config", "register_backbone", "register_family"]

DEFAULT_FAMILY = "timm"  # ModelSpec.family when a config names none

AdapterFactory = Callable[[nn.Module], Backbone]
# (spec, config key of the spec) -> model with its family's weights; the key names errors
ModelBuilder = Callable[["ModelSpec", str], nn.Module]
# a file's hex sha256, the config key naming the file going into errors
FileDigest = Callable[[str, str], str]
# (the model's config entry, its config key, FileDigest) -> (fingerprint inputs, source paths)
WeightsIdentity = Callable[[Mapping[str, Any], str, FileDigest],
                           tuple[dict[str, Any], dict[str, str]]]


def _no_adapters() -> Iterable[tuple[type[nn.Module], AdapterFactory]]:
    return ()


def _no_check(_spec: ModelSpec, _key: str) -> None:
    return None


def _no_identity(_entry: Mapping[str, Any], _key: str, _digest: FileDigest
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    return {}, {}


@dataclass(frozen=True)
class Family:
    """One model family (see the module docstring for each part)."""

    name: str
    build: ModelBuilder
    adapters: Callable[[], Iterable[tuple[type[nn.Module], AdapterFactory]]] = _no_adapters
    library: str | None = None  # adapters load once this top-level package is imported
    fields: tuple[str, ...] = ()
    source_fields: tuple[str, ...] = ()
    check: Callable[[ModelSpec, str], None] = _no_check
    weights_identity: WeightsIdentity = _no_identity
    image_text: Callable[[ModelSpec, str], Any] | None = None

    def describe(self, spec: ModelSpec) -> str:
        """The spec's model in errors: its name, else the first source field set."""
        for name in ("name", *self.source_fields):
            if getattr(spec, name, None):
                return str(getattr(spec, name))
        return ""


FAMILIES: dict[str, Family] = {}


def register_family(family: Family | str, build: ModelBuilder | None = None) -> Family:
    """Make ``ModelSpec(family=family.name)`` build through ``family`` (a later
    registration of the same name replaces it). ``register_family(name, builder)`` is the
    short form of a family with a builder only."""
    if isinstance(family, str):
        if build is None:
            raise TypeError(f"register_family({family!r}, ...): a builder is needed")
        family = Family(name=family, build=build)
    FAMILIES[family.name] = family
    _LOADED.discard(family.name)
    return family


def get_family(name: str, *, key: str = "model.family") -> Family:
    """The family called ``name``; a one-line ``ValueError`` naming ``key`` and the known
    families when there is none."""
    if name not in FAMILIES:
        raise ValueError(f"{key}: unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def lazy(module: str, attribute: str) -> Callable[..., Any]:
    """A function that imports ``module`` on its first call and calls its ``attribute``:
    a family record names its builder and adapters without importing its library."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"lazy({module}.{attribute})"
    return call


# ------------------------------------------------------------------ model -> adapter

_ADAPTERS: list[tuple[type[nn.Module], AdapterFactory]] = []
_LOADED: set[str] = set()  # families whose adapters are registered


def register_backbone(model_type: type[nn.Module], adapter: AdapterFactory) -> None:
    """Make :func:`backbone_of` wrap models of ``model_type`` (and subclasses) in
    ``adapter``. A more specific type wins over a more general one (a family refines
    ``nn.Module``'s fallback); for the same type, the later registration wins."""
    _ADAPTERS.insert(0, (model_type, adapter))


def _adapters() -> list[tuple[type[nn.Module], AdapterFactory]]:
    """Every registered adapter, after loading those of each family whose library is
    imported (a model of the family can exist only then)."""
    for family in list(FAMILIES.values()):
        if family.name not in _LOADED and (family.library is None
                                           or family.library in sys.modules):
            for model_type, adapter in family.adapters():
                register_backbone(model_type, adapter)
            _LOADED.add(family.name)
    return list(_ADAPTERS)


def backbone_of(model: nn.Module | Backbone) -> Backbone:
    """The backbone adapter of ``model``: the registered adapter of its most specific type
    (the latest registration among equals). Any ``nn.Module`` has one (``ImageClassifier``:
    class scores and preprocessing, for evaluation); only a ViT family's explains it. A
    non-module is a ``TypeError``."""
    if isinstance(model, Backbone):
        return model
    # The most specific registered type wins (the nearest in the model's MRO), whatever the
    # order the families were loaded in; among equals, the latest registration.
    mro = type(model).__mro__
    matches = [(mro.index(model_type), order, adapter)
               for order, (model_type, adapter) in enumerate(_adapters()) if model_type in mro]
    if matches:
        return min(matches, key=lambda match: match[:2])[2](model)
    raise TypeError(f"{type(model).__module__}.{type(model).__qualname__} is not a model robustft "
                    "can explain: it needs a ViT with one token sequence (CLS + patches) through "
                    "every block, such as a timm VisionTransformer")


def preprocessing_config(model: nn.Module | Backbone, **overrides: Any) -> dict[str, Any]:
    """The model's own preprocessing (:meth:`Backbone.preprocessing`); keys given in
    ``overrides`` with a value other than None replace the model's."""
    config = dict(backbone_of(model).preprocessing())
    for key, value in overrides.items():
        if value is not None:
            if key not in config:
                raise KeyError(f"unknown preprocessing key {key!r}; known: {sorted(config)}")
            config[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return config
