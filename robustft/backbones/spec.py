"""One typed description of a model, and the one way to build it.

A :class:`ModelSpec` is what training, evaluation, the TokenCut masks and the demo are told
about a model: its ``family`` (a :class:`~robustft.backbones.registry.Family` by name, timm
by default), its ``name``, where its weights come from, and constructor arguments. It is
the schema of the ``model`` config group and of each ``models.<label>`` entry of
``robustft-eval``, and it is stored in a robustft checkpoint as a plain dict
(:meth:`ModelSpec.to_dict`), so that evaluation can rebuild the architecture without
unpickling anything.

Weights, in order of precedence: ``checkpoint`` (a robustft Lightning ``.ckpt``: the
entries of its ``model.`` submodule, loaded strictly), ``weights_file`` (a local file the
family's loader reads), ``pretrained`` (the family's published weights, e.g. a timm tag's
from the Hugging Face hub; ``false`` = random initialisation).

Some fields belong to one family or two (``tag`` and ``zero_shot``: OpenCLIP's pretrained
tag and the zero-shot head; ``hf_id`` / ``hf_path``: a Hugging Face model's source): the
family's record declares them (``Family.fields``), and a spec of another family that sets
one is refused in one line. Each family's subpackage documents what its fields mean
(``robustft.backbones.timm``, ``.open_clip``, ``.hf``).

``probe_head`` (:mod:`robustft.backbones.heads.probe_head`): a linear probe file fitted on the
backbone's frozen features (``robustft-head``), the classifier of a backbone that has none
(a DINOv2); the family then builds the model without a classifier of its own (timm) or with
one of the probe's width (Hugging Face), and the probe is attached after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

from torch import nn

from robustft.backbones.heads.zero_shot import ZeroShotSpec
from robustft.backbones.registry import DEFAULT_FAMILY, FAMILIES, Family, get_family
from robustft.checkpoints import load_finetuned_weights

__all__ = ["ModelSpec", "architecture_fields", "names_a_model"]

# the fields that say where the weights come from; every other field describes the
# architecture (a checkpoint's saved config supplies those)
WEIGHTS_FIELDS = ("pretrained", "weights_file", "checkpoint")


@dataclass
class ModelSpec:
    """A model: ``name`` (e.g. timm's ``vit_base_patch16_224.orig_in21k_ft_in1k``),
    ``family`` (which :class:`~robustft.backbones.registry.Family` builds it),
    ``pretrained`` (the family's published weights when no file is given),
    ``weights_file`` (local weights for the family's loader), ``checkpoint`` (a robustft
    ``.ckpt`` whose fine-tuned weights replace them), ``num_classes`` (None = the
    model's own) and ``kwargs`` (constructor arguments, e.g. ``img_size``). ``tag``,
    ``zero_shot``, ``hf_id`` and ``hf_path`` belong to families (module docstring)."""

    name: str = ""  # required by a family without source_fields (from_mapping checks it)
    family: str = DEFAULT_FAMILY  # which Family builds it (robustft.backbones.registry)
    pretrained: bool = True
    weights_file: str | None = None
    checkpoint: str | None = None
    num_classes: int | None = None
    # None = no arguments; the Hydra schema (robustft.schemas.store) makes it an open dict
    kwargs: dict[str, Any] | None = None
    tag: str | None = None  # family=open_clip: the pretrained tag (e.g. laion2b_s34b_b88k)
    zero_shot: ZeroShotSpec | None = None  # a zero-shot head (class names x templates)
    hf_id: str | None = None  # a Hugging Face hub id (family=hf)
    hf_path: str | None = None  # a local from_pretrained folder (family=hf)
    probe_head: str | None = None  # a linear probe file (robustft.backbones.heads.probe_head)

    def __post_init__(self) -> None:
        self.kwargs = dict(self.kwargs or {})
        self.zero_shot = ZeroShotSpec.from_value(self.zero_shot, "model.zero_shot")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, key: str = "model") -> ModelSpec:
        """A spec from a plain mapping (a config node, a checkpoint's saved dict); an
        unknown key, or no name for a family that needs one, is an error naming ``key``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"{key}: unknown key(s) {unknown}; a model takes {sorted(known)}")
        family = FAMILIES.get(values.get("family") or DEFAULT_FAMILY)
        if family is not None and not family.source_fields and not values.get("name"):
            raise KeyError(f"{key}.name: a {family.name} model name is required")
        values = dict(values)
        values["zero_shot"] = ZeroShotSpec.from_value(values.get("zero_shot"), f"{key}.zero_shot")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, bool, int, None, dict): safe to store in a checkpoint."""
        return asdict(self)

    def build(self, *, key: str = "model") -> nn.Module:
        """The model, with its weights as described in the module docstring; ``key`` (the
        config key of this spec) names it in errors."""
        family = get_family(self.family, key=f"{key}.family")
        family.check(self, key)
        _check_family_fields(self, family, key)
        model = family.build(self, key)
        if self.probe_head:
            from robustft.backbones.heads.probe_head import attach_probe_head

            model = attach_probe_head(model, self.probe_head, key=key)
        if self.checkpoint:
            described = family.describe(self) + (f" (kwargs {self.kwargs})" if self.kwargs else "")
            load_finetuned_weights(model, self.checkpoint, key=f"{key}.checkpoint",
                                   model_description=described)
        return model


def _is_set(value: Any) -> bool:
    """Whether a spec field holds more than its empty default (a ``zero_shot`` node with
    only its defaults, as the Hydra schema always has one, is not set)."""
    if value in (None, "", {}, []):
        return False
    return not (is_dataclass(value) and value == type(value)())


def _check_family_fields(spec: ModelSpec, family: Family, key: str) -> None:
    """A field another family owns and ``family`` does not is refused when it is set."""
    for name in (f.name for f in fields(ModelSpec)):
        owners = sorted(other.name for other in FAMILIES.values() if name in other.fields)
        if owners and name not in family.fields and _is_set(getattr(spec, name)):
            raise ValueError(f"{key}.{name} is for family={' or family='.join(owners)}; this "
                             f"spec's family is {family.name} (set {key}.family={owners[0]})")


def architecture_fields() -> tuple[str, ...]:
    """The spec fields that describe the architecture (all but where the weights come
    from): what a robustft checkpoint's saved ``model_config`` supplies."""
    return tuple(f.name for f in fields(ModelSpec) if f.name not in WEIGHTS_FIELDS)


def names_a_model(values: Mapping[str, Any]) -> bool:
    """Whether a model config entry says which model to build: its ``name``, or one of
    its family's ``source_fields`` (an unknown family: its name; building it says more)."""
    family = FAMILIES.get(values.get("family") or DEFAULT_FAMILY)
    sources = family.source_fields if family is not None else ()
    return any(values.get(name) for name in ("name", *sources))
