"""Build the models ``robustft-eval`` compares from their config entries.

An entry is a mapping with keys:

- ``name``: timm architecture, with or without a pretrained tag
  (``vit_base_patch16_224.orig_in21k_ft_in1k``);
- ``pretrained`` (default true): load the tag's weights from the hub, unless
  ``weights_file`` or ``checkpoint`` is given;
- ``weights_file``: a local ``.safetensors`` / ``.pth`` / ``.npz`` for timm's loader;
- ``checkpoint``: a Lightning ``.ckpt`` of ``robustft-train``; the ``state_dict`` entries
  prefixed ``model.`` are loaded (strictly) into ``create_model(name, **kwargs)``;
- ``num_classes``, ``kwargs``: passed to the timm constructor.

For a checkpoint, ``name`` / ``num_classes`` / ``kwargs`` default to the ones the
checkpoint saved (``hyper_parameters.model_config``), but an explicit ``name`` always
wins: the architecture is the config's decision, the checkpoint only supplies weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from robustft.backbones import create_model
from robustft.checkpoints import finetuned_state_dict, load_checkpoint
from robustft.state_dict_fit import compare_state_dicts

__all__ = ["MODEL_ENTRY_KEYS", "build_model_from_entry"]

log = logging.getLogger(__name__)

MODEL_ENTRY_KEYS = frozenset(
    {"name", "pretrained", "weights_file", "checkpoint", "num_classes", "kwargs"}
)


def _saved_model_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    hparams = checkpoint.get("hyper_parameters") or {}
    config = hparams.get("model_config") or {}
    return dict(config) if isinstance(config, Mapping) else {}


def build_model_from_entry(label: str, entry: Mapping[str, Any]) -> nn.Module:
    """The model of config entry ``models.<label>`` (see module docstring), in eval mode."""
    unknown = set(entry) - MODEL_ENTRY_KEYS
    if unknown:
        raise KeyError(
            f"models.{label}: unknown key(s) {sorted(unknown)}; known: {sorted(MODEL_ENTRY_KEYS)}"
        )
    checkpoint_path = entry.get("checkpoint")
    kwargs = dict(entry.get("kwargs") or {})
    if checkpoint_path:
        checkpoint = load_checkpoint(checkpoint_path, key=f"models.{label}.checkpoint")
        saved = _saved_model_config(checkpoint)
        name = entry.get("name") or saved.get("name")
        if not name:
            raise KeyError(
                f"models.{label}: checkpoint {checkpoint_path} saved no model_config; "
                "set models.<label>.name to its timm architecture"
            )
        if not entry.get("kwargs") and saved.get("kwargs"):
            kwargs = dict(saved["kwargs"])
        num_classes = entry.get("num_classes") or saved.get("num_classes")
        model = create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        weights = finetuned_state_dict(checkpoint, f"models.{label}: checkpoint {checkpoint_path}")
        # compared before loading: torch raises on the first size mismatch with one line
        # per differing tensor, and names neither the label nor the file
        mismatch = compare_state_dicts(model.state_dict(), weights)
        if mismatch:
            raise ValueError(
                f"models.{label}.checkpoint: {checkpoint_path} does not fit {name}"
                + (f" (kwargs {kwargs})" if kwargs else "") + f": {mismatch.describe('checkpoint')}"
            )
        model.load_state_dict(weights, strict=True)
        log.info("models.%s: %s with weights from %s", label, name, checkpoint_path)
    else:
        name = entry.get("name")
        if not name:
            raise KeyError(f"models.{label}: 'name' (a timm model name) is required")
        weights_file = entry.get("weights_file")
        model = create_model(
            name,
            pretrained=bool(entry.get("pretrained", True)) and not weights_file,
            weights_file=weights_file,
            num_classes=entry.get("num_classes"),
            weights_key=f"models.{label}.weights_file",
            **kwargs,
        )
    return model.eval()
