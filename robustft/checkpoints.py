"""Loading robustft Lightning checkpoints without ever running code from them.

A ``.ckpt`` is a pickle, and unpickling arbitrary objects runs whatever their
``__reduce__`` says. Every checkpoint robustft reads (eval, the demo, the check before a
train resume) goes through :func:`load_checkpoint`, which only uses PyTorch's weights-only
unpickler: tensors, containers and plain scalars, plus :data:`LIGHTNING_SAFE_GLOBALS`.
Anything else is refused with one line naming the file, and so is a truncated or corrupt
file. What robustft itself writes into a checkpoint (the hyper-parameters, among them the
model spec that evaluation rebuilds the architecture from) is made plain data by
:func:`plain_data` when it is saved.

This module sits below training/evaluation/masks/cli: it imports torch only.
"""

from __future__ import annotations

import numbers
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft.state_dict_fit import compare_state_dicts

__all__ = [
    "FINETUNED_PREFIX",
    "PREPROCESSING_KEY",
    "training_preprocessing_of",
    "LIGHTNING_SAFE_GLOBALS",
    "finetuned_state_dict",
    "lightning_load_context",
    "load_checkpoint",
    "load_finetuned_weights",
    "plain_data",
]

FINETUNED_PREFIX = "model."  # the LightningModules keep the timm model as `self.model`
#: how the training run prepared its validation images (timm data-config keys), in a checkpoint
PREPROCESSING_KEY = "robustft_preprocessing"

# Types beyond torch's weights-only defaults (tensors, storages, OrderedDict, dict, list,
# tuple, set, str, int, float, bool, None) that Lightning 2.6 writes into a robustft
# checkpoint. Measured on checkpoints of robustft-train (32-true, bf16-mixed, a
# kl_to_teacher + L2-SP run with EarlyStopping): none; the loops, callbacks, optimizer,
# scheduler and GradScaler states are all plain. Lightning writes a class only when a
# module's hparams are an OmegaConf container (`hparams_type`), which robustft never saves.
# A type added here must be one whose unpickling only builds data.
LIGHTNING_SAFE_GLOBALS: tuple[type, ...] = ()


def lightning_load_context() -> torch.serialization.safe_globals:
    """The allow-list as a context, for the loads Lightning does itself (``Trainer.fit``
    or ``Trainer.validate`` with ``ckpt_path=...`` and ``weights_only=True``)."""
    return torch.serialization.safe_globals(list(LIGHTNING_SAFE_GLOBALS))


def _refused_globals(path: Path, error: Exception) -> list[str]:
    """The globals that made the weights-only unpickler refuse ``path``: read statically
    from the pickle (never executed), else from torch's error message."""
    try:
        with lightning_load_context():
            found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint; fall back to the message
        found = []
    if not found:
        found = re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))
    return sorted(set(found))


def _error_summary(error: Exception) -> str:
    """One line of torch's (often multi-line) error: the unpickler's own reason when the
    weights-only unpickler gave one, else the first line, each cut at its first sentence."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("WeightsUnpickler error")),
                  lines[0] if lines else "(no message)")
    return f"{type(error).__name__}: {reason.split('. ')[0]}"


def load_checkpoint(path: str | os.PathLike[str], *, key: str | None = None,
                    mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict of a robustft/Lightning ``.ckpt`` (CPU tensors).

    Raises ``FileNotFoundError`` when ``path`` is not a file and ``ValueError`` (one line
    naming the file, and ``key``, the config key it came from, when given) when the file
    holds anything but plain data (e.g. a pickled object that would run code), is
    truncated or corrupt, or has no ``state_dict``. ``mmap=True`` maps the tensors of a
    zip-format file (what torch and Lightning write) instead of reading them: a cheap check
    of everything but the tensor bytes.
    """
    path = Path(path)
    where = f"{key}: " if key else ""
    if not path.is_file():
        raise FileNotFoundError(f"{where}checkpoint not found: {path}")
    # torch maps only zip-format files; any other file gets the plain load and its error
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with lightning_load_context():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        refused = _refused_globals(path, error)
        if refused:
            raise ValueError(
                f"{where}refusing to load checkpoint {path}: it holds {', '.join(refused)}, which "
                "could run code when unpickled; a robustft checkpoint holds only tensors and "
                "dict/list/str/int/float/bool/None") from error
        raise ValueError(
            f"{where}{path} is not a readable checkpoint (truncated or corrupt?): expected a "
            f".ckpt written by robustft-train (torch.save); torch says {_error_summary(error)}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{where}{path} is not a Lightning checkpoint (no 'state_dict' key)")
    return checkpoint


def finetuned_state_dict(checkpoint: Mapping[str, Any], source: str,
                         prefix: str = FINETUNED_PREFIX) -> dict[str, torch.Tensor]:
    """The timm model's weights inside a robustft checkpoint dict (the entries under
    ``prefix``, prefix removed); ``source`` names the checkpoint in errors."""
    weights = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
               if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{source} has no state_dict entries prefixed {prefix!r}")
    return weights


def load_finetuned_weights(model: nn.Module, checkpoint: str | os.PathLike[str], *,
                           key: str | None = None, model_description: str | None = None
                           ) -> nn.Module:
    """Load the fine-tuned weights of a robustft checkpoint into ``model``, strictly. A
    checkpoint of another architecture is one line naming ``key``, the file,
    ``model_description`` and the first differing tensor (compared before loading: torch
    would raise one line per differing tensor, naming neither)."""
    source = f"{key}: checkpoint {checkpoint}" if key else str(checkpoint)
    weights = finetuned_state_dict(load_checkpoint(checkpoint, key=key), source)
    mismatch = compare_state_dicts(model.state_dict(), weights)
    if mismatch:
        prefix = f"{key}: " if key else ""
        described = model_description or type(model).__name__
        raise ValueError(f"{prefix}{checkpoint} does not fit {described}: "
                         f"{mismatch.describe('checkpoint')}")
    model.load_state_dict(weights, strict=True)
    return model


def plain_data(value: Any, name: str) -> Any:
    """``value`` as the plain types a weights-only load accepts: mappings become dicts
    (str/int keys), other sequences lists, paths strings, numbers (numpy's too) int/float.
    Anything else is a ``TypeError`` naming ``name`` (e.g. ``model_config.kwargs.x``):
    saved, it would make the checkpoint unloadable."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):  # a str subclass (a str Enum) would pickle as its class
        return str.__str__(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{name}: key {key!r} is a {type(key).__name__}; a checkpoint "
                                "stores only str or int keys")
            plain[key] = plain_data(item, f"{name}.{key}")
        return plain
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [plain_data(item, f"{name}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"{name} is a {type(value).__module__}.{type(value).__qualname__}; a "
                    "checkpoint stores only dict/list/str/int/float/bool/None")


def training_preprocessing_of(path: str | os.PathLike[str], *, key: str = "checkpoint"
                              ) -> dict[str, Any] | None:
    """The validation preprocessing a robustft checkpoint recorded (``PREPROCESSING_KEY``:
    timm data-config keys), or None for a checkpoint written before it was recorded."""
    return load_checkpoint(path, key=key, mmap=True).get(PREPROCESSING_KEY)
