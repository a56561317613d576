"""Build the models ``robustft-eval`` compares from their config entries.

An entry is a mapping with keys:

- ``name``: the architecture (for the default family, timm, with or without a pretrained tag
  ``vit_base_patch16_224.orig_in21k_ft_in1k``);
- ``pretrained`` (default true): load the tag's weights from the hub, unless
  ``weights_file`` or ``checkpoint`` is given;
- ``weights_file``: a local ``.safetensors`` / ``.pth`` for the family's loader;
- ``checkpoint``: a Lightning ``.ckpt`` of ``robustft-train``; the ``state_dict`` entries
  prefixed ``model.`` are loaded (strictly) into ``create_model(name, **kwargs)``;
- ``num_classes``, ``kwargs``: passed to the family's constructor;
- ``family``, ``tag``, ``zero_shot``: another model family (``open_clip``), its pretrained
  tag, and a zero-shot head (``robustft.backbones.ModelSpec``);
- ``family: hf`` with ``hf_id`` / ``hf_path``: a Hugging Face model instead (no ``name``).

For a checkpoint, ``name`` / ``family`` / ``num_classes`` / ``kwargs`` / ``tag`` /
``zero_shot`` (and ``hf_id`` / ``hf_path``) default to the ones the
checkpoint saved (``hyper_parameters.model_config``), but an explicit ``name`` always
wins: the architecture is the config's decision, the checkpoint only supplies weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from torch import nn

from robustft.backbones import ModelSpec, architecture_fields, names_a_model
from robustft.checkpoints import load_checkpoint

__all__ = ["MODEL_ENTRY_KEYS", "build_model_from_entry", "entry_spec"]

log = logging.getLogger(__name__)

MODEL_ENTRY_KEYS = frozenset(f.name for f in fields(ModelSpec))


def _saved_model_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    hparams = checkpoint.get("hyper_parameters") or {}
    config = hparams.get("model_config") or {}
    return dict(config) if isinstance(config, Mapping) else {}


def entry_spec(label: str, entry: Mapping[str, Any], *, key: str | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of config entry ``models.<label>`` (or of the config key
    ``key``): unset (null or empty) keys take the spec's defaults, or, with a
    ``checkpoint``, what the checkpoint saved."""
    key = key or f"models.{label}"
    unknown = sorted(set(entry) - MODEL_ENTRY_KEYS)
    if unknown:
        raise KeyError(f"{key}: unknown key(s) {unknown}; known: {sorted(MODEL_ENTRY_KEYS)}")
    values = {name: value for name, value in entry.items() if value not in (None, {}, "")}
    if values.get("checkpoint"):
        # mapped: only the saved hyper-parameters are read here, the tensors when it loads
        saved = _saved_model_config(load_checkpoint(values["checkpoint"],
                                                    key=f"{key}.checkpoint", mmap=True))
        # the architecture and, for a zero-shot model, the head's description (its tensors
        # are in the checkpoint)
        for name in architecture_fields():
            if name not in values and saved.get(name) not in (None, {}):
                values[name] = saved[name]
        if not names_a_model(values):
            raise KeyError(f"{key}: checkpoint {values['checkpoint']} saved no model_config; "
                           f"set {key}.name to its architecture")
        values["pretrained"] = False
        values.pop("weights_file", None)  # the checkpoint's weights replace any file
    return ModelSpec.from_mapping(values, key=key)  # a family that needs a name: required


def build_model_from_entry(label: str, entry: Mapping[str, Any]) -> nn.Module:
    """The model of config entry ``models.<label>`` (see module docstring), in eval mode."""
    spec = entry_spec(label, entry)
    model = spec.build(key=f"models.{label}")
    if spec.checkpoint:
        log.info("models.%s: %s with weights from %s", label, spec.name, spec.checkpoint)
    return model.eval()
