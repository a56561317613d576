"""Whether a file's weights fit a model, said in one line.

``torch.nn.Module.load_state_dict`` reports a checkpoint of another architecture as one
line per differing tensor (dozens for a ViT of another width). :class:`StateDictMismatch`
holds the same facts and :meth:`StateDictMismatch.describe` says them in one line: how
many tensors differ, the first one with both shapes, and the missing / unexpected keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["StateDictMismatch", "compare_state_dicts", "mismatch_from_load_error"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class StateDictMismatch:
    """How a file's weights differ from a model's: ``shapes`` lists (key, file shape, model
    shape) of the tensors both have, in the model's order; ``missing`` the model's keys
    the file lacks; ``unexpected`` the file's keys the model lacks."""

    shapes: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.shapes or self.missing or self.unexpected)

    def describe(self, source: str = "checkpoint") -> str:
        """One line, e.g. ``31 tensors differ, e.g. blocks.0.attn.qkv.weight: checkpoint
        (576, 192) vs model (96, 32)``; ``source`` names the file's side."""
        parts = []
        if self.shapes:
            key, file_shape, model_shape = self.shapes[0]
            parts.append(f"{_count(len(self.shapes), 'tensor')} differ, e.g. {key}: {source} "
                         f"{_shape(file_shape)} vs model {_shape(model_shape)}")
        if self.missing:
            parts.append(f"{_count(len(self.missing), 'model tensor')} missing from the "
                         f"{source} (e.g. {self.missing[0]})")
        if self.unexpected:
            parts.append(f"{_count(len(self.unexpected), 'tensor')} of the {source} not in "
                         f"the model (e.g. {self.unexpected[0]})")
        return "; ".join(parts)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _shape(shape: Shape) -> str:
    return "(" + ", ".join(str(size) for size in shape) + (",)" if len(shape) == 1 else ")")


def compare_state_dicts(model_state: Mapping[str, torch.Tensor],
                        weights: Mapping[str, torch.Tensor]) -> StateDictMismatch:
    """What a strict ``load_state_dict(weights)`` into a model with ``model_state`` would
    refuse (empty when it would load)."""
    shapes = [(key, tuple(weights[key].shape), tuple(tensor.shape))
              for key, tensor in model_state.items()
              if key in weights and tuple(weights[key].shape) != tuple(tensor.shape)]
    missing = [key for key in model_state if key not in weights]
    unexpected = [key for key in weights if key not in model_state]
    return StateDictMismatch(shapes, missing, unexpected)


# The lines of torch's load_state_dict error (torch/nn/modules/module.py).
_SIZE_LINE = re.compile(r"size mismatch for (?P<key>\S+): copying a param with shape "
                        r"torch\.Size\(\[(?P<file>[^\]]*)\]\) from checkpoint, the shape in "
                        r"current model is torch\.Size\(\[(?P<model>[^\]]*)\]\)")
_KEYS_LINE = re.compile(r"(?P<kind>Missing|Unexpected) key\(s\) in state_dict: (?P<keys>.*)")


def _parse_shape(text: str) -> Shape:
    return tuple(int(size) for size in text.split(",") if size.strip())


def mismatch_from_load_error(error: BaseException) -> StateDictMismatch | None:
    """The mismatch a ``load_state_dict`` RuntimeError reports, or None when ``error`` is
    not one (for loaders such as timm's that load the file and the model in one call)."""
    text = str(error)
    if not isinstance(error, RuntimeError) or "Error(s) in loading state_dict" not in text:
        return None
    shapes, missing, unexpected = [], [], []
    for line in text.splitlines():
        size = _SIZE_LINE.search(line)
        if size:
            shapes.append((size["key"], _parse_shape(size["file"]), _parse_shape(size["model"])))
        keys = _KEYS_LINE.search(line)
        if keys:
            names = re.findall(r'"([^"]+)"', keys["keys"])
            (missing if keys["kind"] == "Missing" else unexpected).extend(names)
    return StateDictMismatch(shapes, missing, unexpected)
