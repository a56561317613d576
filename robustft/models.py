"""timm models for robustft: creation from a name or a local weights file, the token
layout the relevance rule needs, per-model preprocessing, and the frozen teacher.

Nothing here holds global state: a model is a plain ``nn.Module`` that DDP, checkpoint
resume and ``copy.deepcopy`` handle as usual.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
from torch import nn

from robustft.state_dict_fit import mismatch_from_load_error

__all__ = [
    "TokenLayout",
    "create_model",
    "token_layout",
    "preprocessing_config",
    "frozen_copy",
]


@dataclass(frozen=True)
class TokenLayout:
    """Where things sit in a ViT's token sequence: ``num_prefix_tokens`` tokens (CLS first,
    then a DeiT distillation token or register tokens) followed by the patch tokens of a
    ``grid_size = (h, w)`` patch grid in row-major order."""

    num_prefix_tokens: int
    grid_size: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches


def token_layout(model: nn.Module, image_size: tuple[int, int]) -> TokenLayout:
    """Token layout of ``model`` for inputs of spatial size ``image_size = (H, W)``.

    Works for any patch size and input size (the grid is derived from the patch size, so
    ``dynamic_img_size`` models are covered too). Raises ``ValueError`` for models without
    a class token: the relevance read-out is the CLS row.
    """
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or not hasattr(patch_embed, "patch_size"):
        raise TypeError(f"{type(model).__name__} has no timm `patch_embed` with a patch_size")
    if getattr(model, "cls_token", None) is None:
        raise ValueError(
            f"{type(model).__name__} has no class token (class_token=False): the relevance "
            "read-out is the CLS row of the rollout"
        )
    ph, pw = patch_embed.patch_size
    height, width = image_size
    if not getattr(model, "dynamic_img_size", False):
        expected = tuple(patch_embed.img_size)
        if (height, width) != expected:
            raise ValueError(
                f"input size {(height, width)} does not match the model's img_size {expected}; "
                "create the model with img_size=... or dynamic_img_size=True"
            )
    return TokenLayout(
        num_prefix_tokens=int(model.num_prefix_tokens), grid_size=(height // ph, width // pw)
    )


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
    - ``weights_file`` loads a local ``.safetensors``/``.pth``/``.npz`` file through timm's
      own pretrained loader (``pretrained_cfg_overlay=dict(file=...)``), so timm's
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
                      "model.weights_file at a local .safetensors/.pth/.npz file (or set "
                      "model.pretrained=false for random weights).") from error


def preprocessing_config(model: nn.Module, **overrides: Any) -> dict[str, Any]:
    """The model's own preprocessing from its timm ``pretrained_cfg``: ``input_size``,
    ``mean``, ``std``, ``crop_pct``, ``interpolation``. Keys given in ``overrides`` with a
    value other than None replace the model's."""
    config = timm.data.resolve_data_config({}, model=model)
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None) is not None:
        # A model built with img_size=... keeps its tag's pretrained_cfg input_size; the
        # size it was built for is the truth.
        config["input_size"] = (config["input_size"][0], *patch_embed.img_size)
    for key, value in overrides.items():
        if value is not None:
            if key not in config:
                raise KeyError(f"unknown preprocessing key {key!r}; known: {sorted(config)}")
            config[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return config


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter frozen: the teacher of
    the ``kl_to_teacher`` classification term."""
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher
