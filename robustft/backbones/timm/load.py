"""The timm family's models: creating a timm model by name (tag included) with hub or
local-file weights (:func:`create_model`), and the family's builder for
``ModelSpec(family="timm")`` (:func:`build_timm`), which puts a zero-shot head on a CLIP
ViT when the spec gives one (``zero_shot.embeddings_file``).

The spec's fields for timm: ``name`` (``vit_base_patch16_224.orig_in21k_ft_in1k``: the tag
is part of the name), ``pretrained`` (the tag's weights from the Hugging Face hub),
``weights_file`` (a local ``.safetensors`` / ``.pth`` / JAX ``.npz`` through timm's own
loader), ``num_classes``, ``kwargs`` (the timm constructor's, e.g. ``img_size``) and
``zero_shot`` (a head file of class embeddings; the Hydra schema always holds a
``zero_shot`` node with its defaults, and without that file it does nothing).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
from torch import nn

from robustft.backbones.heads.zero_shot import (
    ZeroShotClassifier,
    ZeroShotSpec,
    check_class_count,
    read_zero_shot_head,
    zero_shot_head_from_checkpoint,
)
from robustft.state_dict_fit import mismatch_from_load_error

if TYPE_CHECKING:
    from robustft.backbones.spec import ModelSpec

__all__ = ["build_timm", "check_timm_spec", "create_model", "timm_zero_shot_classifier"]


def _check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    arch = name.split(".")[0]
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean one of {close}?" if close else ""
    raise ValueError(f"unknown timm model name {name!r} (model.name){hint}")


def _weights_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    return "numpy .npz" if suffix == ".npz" else "PyTorch (torch.save)"


def _check_weights_file_format(path: Path, weights_key: str = "model.weights_file") -> None:
    """``ValueError`` naming ``weights_key`` and ``path`` when the file is not a complete
    file of its format, checked cheaply before timm reads it (the readers' own errors,
    e.g. "[Errno 22] Invalid argument" for a truncated .pth, name no file): a safetensors
    header must cover the file, a ``.pth``/``.npz`` must be a zip archive with its
    central directory (torch.save's format since torch 1.6; a legacy pickle is let
    through)."""
    kind = _weights_format(path)
    unreadable = f"{weights_key}: {path} is not a readable {kind} file (truncated?)"
    if kind == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 - SafetensorError derives from Exception
            raise ValueError(f"{unreadable}: {error}") from error
        return
    if zipfile.is_zipfile(path):
        return
    with path.open("rb") as handle:
        legacy_pickle = handle.read(1) == b"\x80"  # pickle protocol >= 2
    if kind == "numpy .npz" or not legacy_pickle:
        raise ValueError(f"{unreadable}: not a zip archive")


def _check_npz_head(path: Path, weights_key: str, num_classes: int | None) -> None:
    """An ``.npz``'s classifier must have ``num_classes`` outputs: timm's npz reader keeps
    the model's random head, silently, when the sizes differ (its state-dict reader
    raises). ``num_classes`` None (the tag's default) is checked by the model afterwards."""
    import numpy as np

    if num_classes is None:
        return
    with np.load(path) as archive:
        heads = [key for key in archive.files if key.endswith("head/bias")]
        if heads and archive[heads[0]].shape[-1] != num_classes:
            raise ValueError(f"{weights_key}: {path} has a {archive[heads[0]].shape[-1]}-class "
                             f"head ({heads[0]}) but model.num_classes is {num_classes}: set "
                             "model.num_classes to the file's, or fine-tune from a file whose "
                             "head fits")


def _raised_while_loading_weights(error: BaseException) -> bool:
    """Whether ``error`` passed through timm's ``load_pretrained`` (reading the file and
    loading it into the built model), as opposed to the model's construction."""
    frame = error.__traceback__
    while frame is not None:
        code, module = frame.tb_frame.f_code, frame.tb_frame.f_globals.get("__name__", "")
        if code.co_name == "load_pretrained" and module.startswith("timm."):
            return True
        frame = frame.tb_next
    return False


@contextlib.contextmanager
def _weights_file_errors(path: Path, weights_key: str, name: str,
                         model_kwargs: dict[str, Any]) -> Iterator[None]:
    """timm's errors while it loads ``path`` into ``name``, said in one line naming the key
    and the file: weights of another architecture (torch lists every differing tensor on a
    line of its own), or a file that fails to read past :func:`_check_weights_file_format`.
    Errors of the model's construction pass unchanged."""
    model = f"model.name={name}" + (f" (kwargs {model_kwargs})" if model_kwargs else "")
    try:
        yield
    except Exception as error:
        if not _raised_while_loading_weights(error):
            raise
        mismatch = mismatch_from_load_error(error)
        if mismatch:
            raise ValueError(f"{weights_key}: {path} does not fit {model}: "
                             f"{mismatch.describe('file')}") from error
        reason = " ".join(str(error).split()) or "no message"
        raise ValueError(f"{weights_key}: {path} is not a readable {_weights_format(path)} file "
                         f"or does not fit {model}: {type(error).__name__}: {reason}") from error


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    weights_file: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    weights_key: str = "model.weights_file",
    **model_kwargs: Any,
) -> nn.Module:
    """Create a timm model by name, e.g. ``vit_base_patch16_224.orig_in21k_ft_in1k``.

    - ``pretrained=True`` loads the tag's weights from the Hugging Face hub (needs network).
    - ``weights_file`` loads a local ``.safetensors``/``.pth`` file, or an original JAX/Flax
      ``.npz`` (Google's ViT/AugReg releases), through timm's own pretrained loader
      (``pretrained_cfg_overlay=dict(file=...)``, ``custom_load`` for ``.npz``), so timm's
      checkpoint filters (pos-embed resampling, npz conversion) apply exactly as for hub
      weights. The file's classifier must have ``num_classes`` outputs (timm's default for
      the tag when ``num_classes`` is None).
      A file that is missing, truncated or not of its format, or whose weights do not fit
      the architecture, is a one-line error naming ``weights_key`` (the config key that
      gave the file) and the file.
    - ``model_kwargs`` go to the timm constructor (``img_size``, ``patch_size``, ``depth``...).
    """
    _check_model_name(name)
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"{weights_key}: model weights file not found: {path}")
        _check_weights_file_format(path, weights_key)
        overlay: dict[str, Any] = {"file": str(path)}
        if _weights_format(path) == "numpy .npz":
            # the original JAX/Flax checkpoints (Google's ViT and AugReg releases): timm reads
            # them with the model's own load_pretrained only when told the file is foreign;
            # otherwise it hands the archive to torch.load
            overlay["custom_load"] = True
            _check_npz_head(path, weights_key, num_classes)
        if num_classes is not None:
            # Tell timm the file's head has this size, so it keeps the head instead of
            # dropping it as a mismatched classifier.
            overlay["num_classes"] = num_classes
        kwargs["pretrained_cfg_overlay"] = overlay
        with _weights_file_errors(path, weights_key, name, model_kwargs):
            return timm.create_model(name, pretrained=True, **kwargs)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as error:
        if not pretrained:
            raise
        # huggingface_hub's offline / unreachable-hub errors are OSErrors that name no key
        raise OSError(f"could not download the pretrained weights of {name!r} from the Hugging "
                      f"Face hub ({type(error).__name__}). Without network, point "
                      "model.weights_file at a local .safetensors/.pth file (or set "
                      "model.pretrained=false for random weights).") from error


def check_timm_spec(spec: ModelSpec, key: str) -> None:
    """The timm family's own rule: a timm tag is part of the name."""
    if spec.tag:
        raise ValueError(f"{key}.tag: a timm model's tag is part of its name "
                         f"({spec.name}.<tag>); tag is for family=open_clip")


def build_timm(spec: ModelSpec, key: str) -> nn.Module:
    """The ``ModelSpec(family="timm")`` builder (module docstring)."""
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
    return timm_zero_shot_classifier(model, spec.zero_shot, checkpoint=spec.checkpoint, key=key)


def timm_zero_shot_classifier(model: nn.Module, spec: ZeroShotSpec, *, checkpoint: str | None,
                              key: str = "model") -> ZeroShotClassifier:
    """A timm model (a CLIP ViT with its projection head) with the zero-shot head of a head
    file (``spec.embeddings_file``), or of ``checkpoint`` when it is loaded afterwards."""
    zs_key = f"{key}.zero_shot"
    if checkpoint:
        head = zero_shot_head_from_checkpoint(checkpoint, f"{key}.checkpoint")
    elif spec.embeddings_file:
        head = read_zero_shot_head(spec.embeddings_file, f"{zs_key}.embeddings_file")
    else:
        raise ValueError(f"{zs_key}.embeddings_file: a timm model's zero-shot head needs its class "
                         "embeddings from a head file (robustft.backbones.zero_shot."
                         "save_zero_shot_head writes one from an OpenCLIP model's text tower)")
    head = check_class_count(head, spec.class_names, f"{zs_key}.class_names")
    width = getattr(model, "num_classes", 0) or getattr(model, "num_features", None)
    return ZeroShotClassifier(model, head, embedding_dim=width, key=zs_key)
