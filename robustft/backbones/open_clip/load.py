"""Building an OpenCLIP model (``ModelSpec(family="open_clip")``: name, tag or local
weights file) into a :class:`~robustft.backbones.heads.zero_shot.ZeroShotClassifier`: its
image tower scored against the class embeddings of its text tower, or of a head file.

The spec's fields for open_clip: ``name`` (an OpenCLIP model name, ``ViT-B-16``), ``tag``
(its pretrained tag, ``laion2b_s34b_b88k``), ``weights_file`` (a local OpenCLIP checkpoint,
or a saved zero-shot classifier), ``pretrained``, ``kwargs`` (``open_clip.create_model``'s)
and ``zero_shot`` (the class names and prompt templates of the head, or its
``embeddings_file``); ``num_classes`` is refused (the head's classes are the model's).
"""

from __future__ import annotations

import difflib
import logging
import time
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from robustft.backbones.heads.zero_shot import (
    ZeroShotClassifier,
    ZeroShotHead,
    ZeroShotSpec,
    check_class_count,
    read_zero_shot_head,
    resolve_class_names,
    resolve_templates,
    zero_shot_head_from_checkpoint,
)
from robustft.state_dict_fit import compare_state_dicts, mismatch_from_load_error

__all__ = ["build_open_clip", "open_clip_tokenizer", "open_clip_weights_identity",
           "zero_shot_classifier"]

log = logging.getLogger(__name__)


def _check_name(name: str, key: str) -> None:
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if name.replace("/", "-") in known:
        return
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; did you mean one of {close}?" if close else " (open_clip.list_models() lists them)"
    raise ValueError(f"{key}.name: unknown OpenCLIP model name {name!r}{hint}")


def _image_tower_dim(visual: nn.Module) -> int | None:
    width = getattr(visual, "output_dim", None)
    return int(width) if width is not None else None


def zero_shot_classifier(clip: nn.Module, class_names: Any = None,
                         templates: Any = "openai_imagenet", *, tokenizer: Any = None,
                         key: str = "model.zero_shot") -> ZeroShotClassifier:
    """``clip``'s image tower with the zero-shot head of ``class_names`` x ``templates``
    (:func:`robustft.backbones.zero_shot.resolve_class_names` / ``resolve_templates``),
    computed once with its text tower (OpenCLIP's ``build_zero_shot_classifier``, on the
    GPU when there is one). The result holds no part of the text tower."""
    names = resolve_class_names(class_names, f"{key}.class_names")
    prompts = resolve_templates(templates, f"{key}.templates")
    if tokenizer is None:
        raise TypeError(f"{key}: a tokenizer is needed to compute the head")
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    started = time.perf_counter()
    was_training, home = clip.training, next(clip.parameters()).device
    clip.eval().to(device)
    try:
        with torch.no_grad():
            weights = open_clip.build_zero_shot_classifier(
                clip, tokenizer, names, prompts, num_classes_per_batch=10, device=device)
    finally:
        clip.to(home).train(was_training)
    log.info("zero-shot head: %d classes x %d templates in %.1f s", len(names), len(prompts),
             time.perf_counter() - started)
    bias = getattr(clip, "logit_bias", None)
    head = ZeroShotHead(weights.T.float().cpu(), clip.logit_scale.detach().cpu(),
                        None if bias is None else bias.detach().cpu(), tuple(names))
    return ZeroShotClassifier(clip.visual, head, embedding_dim=_image_tower_dim(clip.visual), key=key)


def open_clip_tokenizer(name: str, context_length: int, key: str = "model") -> Any:
    """OpenCLIP's tokenizer of model ``name``; one line when it cannot be loaded (SigLIP's
    and other Hugging Face tokenizers are downloaded once into the Hugging Face cache)."""
    try:
        return open_clip.get_tokenizer(name, context_length=context_length)
    except Exception as error:  # noqa: BLE001 - e.g. a Hugging Face tokenizer not cached
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise OSError(f"{key}.name: could not load OpenCLIP {name}'s tokenizer (a Hugging Face "
                      f"tokenizer is downloaded once into the Hugging Face cache; offline, "
                      f"give {key}.zero_shot.embeddings_file for a zero-shot head): "
                      f"{type(error).__name__}: {reason}") from error


def _file_keys(path: Path, key: str) -> set[str]:
    """Tensor names of a weights file (a safetensors header, or a mapped torch file)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return set(handle.keys())
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any reader error is a bad file here
        raise ValueError(f"{key}: {path} is not a readable weights file: {type(error).__name__}: "
                         f"{' '.join(str(error).split())}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return set(state) if isinstance(state, dict) else set()


def _load_saved_classifier(model: ZeroShotClassifier, path: Path, key: str, name: str) -> None:
    """Load a saved classifier's state (``visual.*`` and the head) strictly."""
    from safetensors.torch import load_file

    state = load_file(str(path)) if path.suffix.lower() == ".safetensors" else torch.load(
        path, map_location="cpu", weights_only=True)
    mismatch = compare_state_dicts(model.state_dict(), state)
    if mismatch:
        raise ValueError(f"{key}: {path} does not fit OpenCLIP {name}: {mismatch.describe('file')}")
    model.load_state_dict(state, strict=True)


def _create_clip(spec: Any, key: str, pretrained: str | None) -> nn.Module:
    """``open_clip.create_model`` with errors said in one line naming ``key``."""
    kwargs = dict(spec.kwargs)
    try:
        return open_clip.create_model(spec.name, pretrained=pretrained, **kwargs)
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        if pretrained and pretrained == spec.tag:
            raise OSError(f"{key}.tag: could not load the OpenCLIP weights {spec.name}/{spec.tag} "
                          f"({reason}). Without network, point {key}.weights_file at a local file "
                          f"(or set {key}.pretrained=false for random weights).") from error
        if pretrained:
            mismatch = mismatch_from_load_error(error)
            detail = mismatch.describe("file") if mismatch else f"{type(error).__name__}: {reason}"
            raise ValueError(f"{key}.weights_file: {pretrained} does not fit OpenCLIP "
                             f"{spec.name}: {detail}") from error
        raise ValueError(f"{key}: cannot create OpenCLIP {spec.name} with kwargs {kwargs}: "
                         f"{type(error).__name__}: {reason}") from error


def build_open_clip(spec: Any, key: str = "model") -> ZeroShotClassifier:
    """The ``ModelSpec(family="open_clip")`` builder (see ``robustft.backbones.spec``).

    Weights: ``checkpoint`` (loaded by ``ModelSpec.build``: a random tower here, the head
    from the checkpoint) > ``weights_file`` (an OpenCLIP checkpoint, or a saved
    :class:`ZeroShotClassifier` state such as ``robustft-demo``'s cache, used as is) >
    ``pretrained`` with ``tag`` (downloaded by OpenCLIP) > random. The head comes from the
    checkpoint or the saved classifier, else ``zero_shot.embeddings_file``, else the text
    tower (then dropped)."""
    _check_name(spec.name, key)
    zero_shot = spec.zero_shot or ZeroShotSpec()
    zs_key = f"{key}.zero_shot"
    if spec.num_classes is not None:
        raise ValueError(f"{key}.num_classes: an OpenCLIP model's classes are its zero-shot "
                         f"head's ({zs_key}.class_names); leave num_classes unset")
    weights_file = None if spec.checkpoint else spec.weights_file
    saved_classifier = False
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"{key}.weights_file: model weights file not found: {path}")
        saved_classifier = "class_embeddings" in _file_keys(path, f"{key}.weights_file")
    if spec.pretrained and spec.tag and not (spec.checkpoint or weights_file):
        known = open_clip.list_pretrained_tags_by_model(spec.name)
        if spec.tag not in known and not spec.name.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(f"{key}.tag: {spec.tag!r} is not a pretrained tag of OpenCLIP "
                             f"{spec.name}; known: {known}")
        pretrained: str | None = spec.tag
    elif spec.pretrained and not (spec.checkpoint or weights_file or
                                  spec.name.startswith(("hf-hub:", "local-dir:"))):
        raise ValueError(f"{key}.tag: OpenCLIP {spec.name} needs a pretrained tag (one of "
                         f"{open_clip.list_pretrained_tags_by_model(spec.name)}), or "
                         f"{key}.weights_file, or {key}.pretrained=false for random weights")
    else:
        pretrained = weights_file if weights_file and not saved_classifier else None
    clip = _create_clip(spec, key, pretrained)
    if spec.checkpoint:
        head = zero_shot_head_from_checkpoint(spec.checkpoint, f"{key}.checkpoint")
    elif saved_classifier:
        head = read_zero_shot_head(weights_file, f"{key}.weights_file")
    elif zero_shot.embeddings_file:
        head = read_zero_shot_head(zero_shot.embeddings_file, f"{zs_key}.embeddings_file")
    else:
        tokenizer = open_clip_tokenizer(spec.name, clip.context_length, key)
        return zero_shot_classifier(clip, zero_shot.class_names, zero_shot.templates,
                                    tokenizer=tokenizer, key=zs_key)
    head = check_class_count(head, zero_shot.class_names, f"{zs_key}.class_names")
    model = ZeroShotClassifier(clip.visual, head, embedding_dim=_image_tower_dim(clip.visual),
                               key=zs_key)
    if saved_classifier:
        _load_saved_classifier(model, Path(weights_file), f"{key}.weights_file", spec.name)
    return model


def open_clip_weights_identity(entry: Any, key: str, sha256: Any
                               ) -> tuple[dict[str, Any], dict[str, str]]:
    """What an OpenCLIP entry adds to a fingerprint: the OpenCLIP version (its model
    configs, tags and tokenizer decide the model)."""
    return {"open_clip": open_clip.__version__}, {}
