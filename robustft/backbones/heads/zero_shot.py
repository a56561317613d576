"""A zero-shot head: an image tower scored against frozen class embeddings.

CLIP classifies an image by comparing its embedding with the text embedding of each class
name: ``scores = logit_scale * cos(image embedding, class embedding)`` (``+ logit_bias``
for SigLIP-style models). The class embeddings are computed once (per class, the mean of
the normalised text embeddings of the class name in every prompt template, normalised
again: OpenCLIP's ``build_zero_shot_classifier``) and kept as buffers, so
:class:`ZeroShotClassifier` holds the image tower and nothing trainable besides it: the
text tower is not part of the trained module, gets no gradient and is never in the
optimiser. Its ``state_dict`` (``visual.*``, ``class_embeddings``, ``logit_scale``) is what
robustft checkpoints and ``ModelSpec(checkpoint=...)`` carry.

The same head fits a timm CLIP ViT (``vit_base_patch16_clip_224.openai``): its output (the
tag's 512-wide projection head; ``num_classes=0`` would leave the 768-wide pooled features,
outside the text space) is the image embedding, and the class embeddings come from a head
file written by :func:`save_zero_shot_head` (e.g. from an OpenCLIP model's text tower);
``robustft.backbones.timm.load.timm_zero_shot_classifier`` puts them together.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from robustft.backbones.base import Backbone, BlockAttention, TokenLayout
from robustft.backbones.registry import backbone_of, register_backbone
from robustft.labels import check_unique_class_names

__all__ = ["ZeroShotBackbone", "ZeroShotClassifier", "ZeroShotHead", "ZeroShotSpec",
           "check_class_count", "read_zero_shot_head", "resolve_class_names", "resolve_templates",
           "save_zero_shot_head", "zero_shot_head_from_checkpoint"]

HEAD_KEYS = ("class_embeddings", "logit_scale", "logit_bias")
log = logging.getLogger(__name__)


@dataclass
class ZeroShotSpec:
    """The zero-shot head of a model spec (``model.zero_shot``).

    - ``class_names``: ``imagenet`` (OpenCLIP's 1000 ImageNet names, in ImageNet index
      order), a list of names, a text file (one name per line, in label order) or a folder
      (its sorted sub-folder names, e.g. ``<data.root>/images``; folders named by an
      ImageNet wnid get that class's name). None: ``imagenet`` when the head is computed
      with a text tower, the head file's or checkpoint's classes otherwise.
    - ``templates``: ``openai_imagenet`` (the 80 OpenAI ImageNet prompts), ``simple``
      (OpenCLIP's 7 short ones), a list of strings with ``{}`` for the class name, or a
      text file of them, one per line.
    - ``embeddings_file``: a head file (:func:`save_zero_shot_head`) used instead of a text
      tower (the only source for a timm model).
    """

    class_names: Any = None
    templates: Any = "openai_imagenet"
    embeddings_file: str | None = None

    @classmethod
    def from_value(cls, value: Any, key: str) -> ZeroShotSpec | None:
        if value is None or isinstance(value, ZeroShotSpec):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{key}: expected a mapping with keys {[f.name for f in fields(cls)]}, "
                            f"got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise KeyError(f"{key}: unknown key(s) {unknown}; a zero-shot head takes {sorted(known)}")
        return cls(**dict(value))


@dataclass
class ZeroShotHead:
    """The frozen tensors of a head: ``class_embeddings`` (C, D), unit rows; ``logit_scale``
    (the log of the scale, as CLIP stores it); ``logit_bias`` (None for CLIP)."""

    class_embeddings: Tensor
    logit_scale: Tensor
    logit_bias: Tensor | None = None
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])


class ZeroShotClassifier(nn.Module):
    """``visual`` (an image tower: images -> (B, D) embeddings) scored against a frozen
    :class:`ZeroShotHead`: ``exp(logit_scale) * normalize(visual(x)) @ class_embeddings.T
    (+ logit_bias)``. Only ``visual`` has parameters."""

    def __init__(self, visual: nn.Module, head: ZeroShotHead, *, embedding_dim: int | None = None,
                 key: str = "model.zero_shot") -> None:
        super().__init__()
        embeddings = head.class_embeddings.detach().float()
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"{key}: class embeddings must be (classes, dim), got "
                             f"{tuple(embeddings.shape)}")
        if embedding_dim is not None and embeddings.shape[1] != embedding_dim:
            raise ValueError(f"{key}: the class embeddings are {embeddings.shape[1]}-wide but the "
                             f"image tower outputs {embedding_dim} features (for a timm CLIP ViT "
                             "keep the tag's projection head: leave model.num_classes unset)")
        self.visual = visual
        self.register_buffer("class_embeddings", F.normalize(embeddings, dim=-1).clone())
        self.register_buffer("logit_scale", head.logit_scale.detach().float().reshape(()).clone())
        bias = head.logit_bias
        self.register_buffer("logit_bias", None if bias is None
                             else bias.detach().float().reshape(()).clone())
        self.class_names = tuple(head.class_names)

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def head(self) -> ZeroShotHead:
        return ZeroShotHead(self.class_embeddings, self.logit_scale, self.logit_bias,
                            self.class_names)

    def forward(self, images: Tensor) -> Tensor:
        features = self.visual(images)
        if isinstance(features, (tuple, list)):  # an OpenCLIP tower with output_tokens=True
            features = features[0]
        features = F.normalize(features, dim=-1)
        logits = self.logit_scale.exp() * features @ self.class_embeddings.to(features.dtype).T
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return logits


class ZeroShotBackbone(Backbone):
    """A :class:`ZeroShotClassifier` as the method sees it: the image tower's adapter for
    everything about tokens and attention, the zero-shot logits as the class scores."""

    def __init__(self, model: ZeroShotClassifier) -> None:
        super().__init__(model)
        self.tower = backbone_of(model.visual)

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.tower.patch_size

    @property
    def num_classes(self) -> int | None:
        return self.model.num_classes

    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        return self.tower.token_layout(image_size)

    def preprocessing(self) -> dict[str, Any]:
        return self.tower.preprocessing()

    def class_scores(self, images: Tensor) -> Tensor:
        return self.model(images)

    def capture_attention(self) -> AbstractContextManager[list[Tensor]]:
        return self.tower.capture_attention()

    def capture_pool(self) -> AbstractContextManager[list[BlockAttention]]:
        return self.tower.capture_pool()

    def fused_capture_refusal(self) -> str:
        return self.tower.fused_capture_refusal()

    def capture_qkv(self) -> AbstractContextManager[list[BlockAttention]]:
        return self.tower.capture_qkv()

    def last_block_keys(self, images: Tensor) -> Tensor:
        return self.tower.last_block_keys(images)

    def token_features(self, images: Tensor, kind: str = "keys", block: int = -1) -> Tensor:
        return self.tower.token_features(images, kind, block)

    def check_explainable(self) -> None:
        self.tower.check_explainable()

    def explain_token_count_mismatch(self, num_tokens: int, layout: TokenLayout) -> str:
        return self.tower.explain_token_count_mismatch(num_tokens, layout)


register_backbone(ZeroShotClassifier, ZeroShotBackbone)


# ----------------------------------------------------------------- class names, templates


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the file's non-blank lines, stripped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def _lines(path: Path, key: str) -> list[str]:
    numbered = _numbered_lines(path)
    if not numbered:
        raise ValueError(f"{key}: {path} lists no names")
    return [text for _, text in numbered]


def _folder_names(folder: Path, key: str) -> list[str]:
    from robustft.labels import imagenet_synsets

    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"{key}: {folder} has no class folders")
    synsets = {wnid: index for index, wnid in enumerate(imagenet_synsets())}
    if all(name in synsets for name in names):
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        named = [IMAGENET_CLASSNAMES[synsets[name]] for name in names]
        check_unique_class_names(named, f"{key}: the ImageNet names OpenCLIP gives the wnid "
                                        f"folders of {folder} (give a file of names instead)")
        return named
    check_unique_class_names(names, f"{key}: the class folders of {folder}")
    return names


def _imagenet_names(key: str) -> list[str]:
    """OpenCLIP's 1000 ImageNet names, as its published zero-shot numbers use them: they
    repeat two names (``missile`` and ``sunglasses``), so two pairs of classes get identical
    head rows. Kept for comparability, and said in one warning line."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(IMAGENET_CLASSNAMES)
    try:
        check_unique_class_names(names, f"{key}=imagenet (OpenCLIP's names)")
    except ValueError as repeated:
        log.warning("%s: those classes get identical head rows, as in OpenCLIP's own zero-shot "
                    "evaluation; give a file of 1000 distinct names to tell them apart", repeated)
    return names


def resolve_class_names(value: Any, key: str = "model.zero_shot.class_names") -> list[str]:
    """The class names ``value`` describes (see :class:`ZeroShotSpec`). Two names that are
    the same up to case and spaces are a ``ValueError`` naming ``key`` and the repeated
    names (their head rows would be identical), except in OpenCLIP's own ImageNet list."""
    if value is None or value == "imagenet":
        return _imagenet_names(key)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if path.is_dir():
            return _folder_names(path, key)
        if path.is_file():
            names = _lines(path, key)
            check_unique_class_names(names, f"{key}: {path}",
                                     line_numbers=[n for n, _ in _numbered_lines(path)])
            return names
        raise FileNotFoundError(f"{key}: {value!r} is neither 'imagenet' nor an existing file or "
                                "folder of class names")
    if isinstance(value, Sequence) and value and all(isinstance(n, str) and n for n in value):
        check_unique_class_names(list(value), key)
        return list(value)
    raise TypeError(f"{key}: expected 'imagenet', a non-empty list of names, a file or a folder, "
                    f"got {value!r}")


def resolve_templates(value: Any, key: str = "model.zero_shot.templates"
                      ) -> list[Callable[[str], str]] | list[str]:
    """The prompt templates ``value`` describes (see :class:`ZeroShotSpec`): OpenCLIP's
    callables for the named sets, ``{}``-format strings otherwise."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    named = {"openai_imagenet": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
    if isinstance(value, str) and value in named:
        return list(named[value])
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: {value!r} is neither one of {sorted(named)} nor a file "
                                    "of templates")
        templates = _lines(path, key)
    elif isinstance(value, Sequence) and value and all(isinstance(t, str) for t in value):
        templates = list(value)
    else:
        raise TypeError(f"{key}: expected one of {sorted(named)}, a non-empty list of strings or "
                        f"a file, got {value!r}")
    missing = [t for t in templates if "{}" not in t]
    if missing:
        raise ValueError(f"{key}: template {missing[0]!r} has no '{{}}' for the class name")
    return templates


# ----------------------------------------------------------------- head files, checkpoints


def save_zero_shot_head(model: ZeroShotClassifier | ZeroShotHead, path: str | os.PathLike[str]
                        ) -> Path:
    """Write a head (``class_embeddings``, ``logit_scale``, ``logit_bias``; class names in
    the metadata) to a safetensors file, for ``model.zero_shot.embeddings_file``."""
    from safetensors.torch import save_file

    head = model.head() if isinstance(model, ZeroShotClassifier) else model
    tensors = {"class_embeddings": head.class_embeddings, "logit_scale": head.logit_scale}
    if head.logit_bias is not None:
        tensors["logit_bias"] = head.logit_bias
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"class_names": json.dumps(list(head.class_names))})
    return path


def _head_from_tensors(tensors: Mapping[str, Tensor], source: str,
                       class_names: Sequence[str] = ()) -> ZeroShotHead:
    missing = [name for name in ("class_embeddings", "logit_scale") if name not in tensors]
    if missing:
        raise ValueError(f"{source} holds no zero-shot head: {missing} missing (expected "
                         "class_embeddings (classes, dim) and logit_scale)")
    return ZeroShotHead(tensors["class_embeddings"], tensors["logit_scale"],
                        tensors.get("logit_bias"), tuple(class_names))


def read_zero_shot_head(path: str | os.PathLike[str], key: str = "model.zero_shot.embeddings_file"
                        ) -> ZeroShotHead:
    """A head written by :func:`save_zero_shot_head`, or the head inside a saved
    :class:`ZeroShotClassifier` state dict (safetensors); errors name ``key``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: zero-shot head file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in HEAD_KEYS if name in handle.keys()}
            metadata = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - SafetensorError derives from Exception
        raise ValueError(f"{key}: {path} is not a readable safetensors file: "
                         f"{' '.join(str(error).split())}") from error
    names = json.loads(metadata.get("class_names", "[]"))
    return _head_from_tensors(tensors, f"{key}: {path}", names)


def zero_shot_head_from_checkpoint(checkpoint: str | os.PathLike[str], key: str) -> ZeroShotHead:
    """The head a robustft checkpoint of a zero-shot model saved (its frozen buffers)."""
    from robustft.checkpoints import finetuned_state_dict, load_checkpoint

    source = f"{key}: checkpoint {checkpoint}"
    weights = finetuned_state_dict(load_checkpoint(checkpoint, key=key, mmap=True), source)
    return _head_from_tensors(weights, source)


def check_class_count(head: ZeroShotHead, class_names: Any, key: str) -> ZeroShotHead:
    """``head`` with the names ``class_names`` gives; a ``ValueError`` naming ``key`` when
    they are not one per class of the head."""
    if class_names is None:
        return head
    names = resolve_class_names(class_names, key)
    if len(names) != head.num_classes:
        raise ValueError(f"{key}: {len(names)} class names for a zero-shot head of "
                         f"{head.num_classes} classes")
    return ZeroShotHead(head.class_embeddings, head.logit_scale, head.logit_bias, tuple(names))
