"""One typed description of a model, and the one way to build it.

A :class:`ModelSpec` is what training, evaluation, the TokenCut masks and the demo are told
about a model: a timm name (tag included), where its weights come from, and constructor
arguments. It is the schema of the ``model`` config group and of each ``models.<label>``
entry of ``robustft-eval``, and it is stored in a robustft checkpoint as a plain dict
(:meth:`ModelSpec.to_dict`), so that evaluation can rebuild the architecture without
unpickling anything.

Weights, in order of precedence: ``checkpoint`` (a robustft Lightning ``.ckpt``: the
entries of its ``model.`` submodule, loaded strictly), ``weights_file`` (a local
``.safetensors`` / ``.pth`` through timm's own loader), ``pretrained`` (the
tag's weights from the Hugging Face hub; ``false`` = random initialisation).

``family="open_clip"`` (:mod:`robustft.backbones.open_clip`): ``name`` is an OpenCLIP model
name (``ViT-B-16``), ``tag`` its pretrained tag (``laion2b_s34b_b88k``), ``weights_file`` a
local OpenCLIP checkpoint, and ``zero_shot`` (:class:`ZeroShotSpec`) the class names and
prompt templates of the zero-shot head that makes the image tower a classifier. A timm model
takes a zero-shot head too, when ``zero_shot.embeddings_file`` is given (the Hydra schema
always holds a ``zero_shot`` node with its defaults; without that file it does nothing).

``probe_head`` (:mod:`robustft.backbones.probe_head`): a linear probe file fitted on the
backbone's frozen features (``robustft-head``), the classifier of a backbone that has none
(a DINOv2); a timm model is then built with ``num_classes=0`` unless it is given.

``family="hf"`` builds a Hugging Face transformers classifier instead
(:mod:`robustft.backbones.hf_load`): from ``hf_id`` (a hub id) or ``hf_path`` (a local
``from_pretrained`` folder), exactly one; ``name`` is not needed there, ``weights_file`` is
refused, ``kwargs`` replace config values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from robustft.backbones.zero_shot import ZeroShotSpec
from robustft.checkpoints import load_finetuned_weights

__all__ = ["ModelSpec", "register_family"]

# (spec, config key of the spec) -> model with its family's weights; the key names errors
ModelBuilder = Callable[["ModelSpec", str], nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_family(name: str, builder: ModelBuilder) -> None:
    """Let ``ModelSpec(family=name)`` build its model (random or hub/file weights; a
    ``checkpoint`` is loaded on top by :meth:`ModelSpec.build`) with ``builder``."""
    _BUILDERS[name] = builder


def _build_timm(spec: ModelSpec, key: str) -> nn.Module:
    from robustft.backbones.timm import create_model

    for field_name in ("hf_id", "hf_path"):
        if getattr(spec, field_name):
            raise ValueError(f"{key}.{field_name} is for family=hf (model=hf); this spec's family "
                             f"is timm (set {key}.family=hf)")
    if spec.tag:
        raise ValueError(f"{key}.tag: a timm model's tag is part of its name "
                         f"({spec.name}.<tag>); tag is for family=open_clip")
    # a probe head reads the pooled feature: no classifier of the model's own by default
    num_classes = 0 if spec.probe_head and spec.num_classes is None else spec.num_classes
    model = create_model(spec.name, pretrained=spec.pretrained and not spec.weights_file
                         and not spec.checkpoint, weights_file=None if spec.checkpoint
                         else spec.weights_file, num_classes=num_classes,
                         weights_key=f"{key}.weights_file", **spec.kwargs)
    zero_shot = spec.zero_shot
    if zero_shot is None or not zero_shot.embeddings_file:
        if zero_shot is not None and zero_shot.class_names is not None:
            raise ValueError(f"{key}.zero_shot.class_names is set, but a timm model takes a "
                             f"zero-shot head only from {key}.zero_shot.embeddings_file")
        return model
    from robustft.backbones.zero_shot import timm_zero_shot_classifier

    return timm_zero_shot_classifier(model, spec.zero_shot, checkpoint=spec.checkpoint, key=key)


def _build_open_clip(spec: ModelSpec, key: str) -> nn.Module:
    from robustft.backbones.open_clip import build_open_clip

    return build_open_clip(spec, key)


def _build_hf(spec: ModelSpec, key: str) -> nn.Module:
    from robustft.backbones.hf_load import create_hf_model

    if spec.weights_file:
        raise ValueError(f"{key}.weights_file is timm's; a Hugging Face model (family=hf) reads "
                         f"its weights from {key}.hf_path or {key}.hf_id")
    num_classes = spec.num_classes
    if spec.probe_head and num_classes is None:  # the classifier the probe is written into
        from robustft.backbones.probe_head import read_probe_head

        num_classes = read_probe_head(spec.probe_head, f"{key}.probe_head").num_classes
    return create_hf_model(hf_id=spec.hf_id, hf_path=spec.hf_path, key=key,
                           pretrained=spec.pretrained and not spec.checkpoint,
                           num_classes=num_classes, **spec.kwargs)


register_family("timm", _build_timm)
register_family("open_clip", _build_open_clip)
register_family("hf", _build_hf)


@dataclass
class ModelSpec:
    """A model: ``name`` (timm, e.g. ``vit_base_patch16_224.orig_in21k_ft_in1k``),
    ``pretrained`` (hub weights of the tag when no file is given), ``weights_file`` (local
    weights for timm's loader), ``checkpoint`` (a robustft ``.ckpt`` whose fine-tuned
    weights replace them), ``num_classes`` (None = the tag's) and ``kwargs`` (passed to
    ``timm.create_model``, e.g. ``img_size``); ``family`` picks the builder. ``tag``
    (OpenCLIP's pretrained tag), ``zero_shot`` (the zero-shot head) and ``hf_id`` /
    ``hf_path`` (the source of a ``family="hf"`` model) are described in the module
    docstring."""

    name: str = ""  # required by the timm family (from_mapping checks it)
    family: str = "timm"  # which builder (register_family); the timm family by default
    pretrained: bool = True
    weights_file: str | None = None
    checkpoint: str | None = None
    num_classes: int | None = None
    # None = no arguments; the Hydra schema (robustft.config.store) makes it an open dict
    kwargs: dict[str, Any] | None = None
    tag: str | None = None  # family=open_clip: the pretrained tag (e.g. laion2b_s34b_b88k)
    zero_shot: ZeroShotSpec | None = None  # a zero-shot head (class names x templates)
    hf_id: str | None = None  # a Hugging Face hub id (family=hf)
    hf_path: str | None = None  # a local from_pretrained folder (family=hf)
    probe_head: str | None = None  # a linear probe file (robustft.backbones.probe_head)

    def __post_init__(self) -> None:
        self.kwargs = dict(self.kwargs or {})
        self.zero_shot = ZeroShotSpec.from_value(self.zero_shot, "model.zero_shot")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, key: str = "model") -> ModelSpec:
        """A spec from a plain mapping (a config node, a checkpoint's saved dict); an
        unknown key is an error naming ``key``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"{key}: unknown key(s) {unknown}; a model takes {sorted(known)}")
        if not values.get("name") and values.get("family", "timm") == "timm":
            raise KeyError(f"{key}.name: a timm model name is required")
        values = dict(values)
        values["zero_shot"] = ZeroShotSpec.from_value(values.get("zero_shot"), f"{key}.zero_shot")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, bool, int, None, dict): safe to store in a checkpoint."""
        return asdict(self)

    def build(self, *, key: str = "model") -> nn.Module:
        """The model, with its weights as described in the module docstring; ``key`` (the
        config key of this spec) names it in errors."""
        if self.family not in _BUILDERS:
            raise ValueError(f"{key}.family: unknown model family {self.family!r}; known: "
                             f"{sorted(_BUILDERS)}")
        model = _BUILDERS[self.family](self, key)
        if self.probe_head:
            from robustft.backbones.probe_head import attach_probe_head

            model = attach_probe_head(model, self.probe_head, key=key)
        if self.checkpoint:
            described = (self.name or self.hf_path or self.hf_id or "") + (
                f" (kwargs {self.kwargs})" if self.kwargs else "")
            load_finetuned_weights(model, self.checkpoint, key=f"{key}.checkpoint",
                                   model_description=described)
        return model
