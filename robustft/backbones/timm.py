"""The timm family: creating a timm ViT (by name, tag, local weights file) and its
:class:`~robustft.backbones.base.Backbone` adapter.

Any timm ``VisionTransformer`` works: plain, distilled (DeiT), register-token and
CLIP-tagged models; the prefix tokens never enter a relevance map.

How attention is captured (the eager path): timm computes attention with fused
scaled-dot-product attention, which never materialises the probabilities ``A``. For the
duration of a capture the fused path is switched off in the model's blocks and a forward
hook on ``attn.attn_drop`` records its output, which is ``A`` (dropout is 0 in every ViT
recipe; with dropout active it is the dropped-out ``A`` the block really used); on exit the
hooks are removed and each block's ``fused_attn`` flag restored. timm also offers
``attn_layer=`` (an attention class passed into every block, as DINOv2 does), but only when
a model is built: the hooks work on any timm ViT a user already holds, whatever built it,
with its weights untouched. The fused path (q, k, v and the attention output, for a faster
relevance step) is captured with hooks too, in :mod:`robustft.backbones.timm_qkv`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from robustft.backbones.base import (
    TOKEN_FEATURES,
    Backbone,
    BlockAttention,
    TokenLayout,
    register_backbone,
)
from robustft.backbones.timm_qkv import (
    attention_blocks,
    capture_hook,
    capture_qkv,
    fused_attention_blocks,
    hooked_attention,
)
from robustft.state_dict_fit import mismatch_from_load_error

__all__ = ["ImageClassifier", "TimmViT", "attention_blocks", "create_model", "timm_data_config",
           "token_layout"]


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
    elif height % ph or width % pw:
        # timm's patch embedding refuses it in the forward (or, with dynamic_img_pad, pads
        # it, and the map would not cover the image it is compared with)
        raise ValueError(f"input size {(height, width)} is not a multiple of the model's patch "
                         f"size {(ph, pw)}")
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


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    """The model's own preprocessing from its timm ``pretrained_cfg``: ``input_size``,
    ``mean``, ``std``, ``crop_pct``, ``interpolation``."""
    config = timm.data.resolve_data_config({}, model=model)
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None) is not None:
        # A model built with img_size=... keeps its tag's pretrained_cfg input_size; the
        # size it was built for is the truth.
        config["input_size"] = (config["input_size"][0], *patch_embed.img_size)
    return config


class TimmViT(Backbone):
    """A timm ``VisionTransformer`` as the method sees it."""

    @property
    def patch_size(self) -> tuple[int, int]:
        height, width = self.model.patch_embed.patch_size
        return int(height), int(width)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.model, "num_classes", None)

    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        return token_layout(self.model, image_size)

    def preprocessing(self) -> dict[str, Any]:
        return timm_data_config(self.model)

    @contextmanager
    def capture_attention(self) -> Iterator[list[Tensor]]:
        attns = attention_blocks(self.model)
        captured: list[Tensor] = []

        def record(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            if torch.is_grad_enabled() and not output.requires_grad:
                # A frozen model (no parameter requires grad) still needs d(score)/dA: make A
                # a leaf of the graph so everything downstream of it is differentiable.
                output = output.detach().requires_grad_()
            captured.append(output)
            return output

        hook = capture_hook(record)
        with hooked_attention(attns, fused=False,
                              register=lambda attn: [attn.attn_drop.register_forward_hook(hook)]):
            yield captured

    def fused_capture_refusal(self) -> str:
        try:
            attns = fused_attention_blocks(self.model)
        except TypeError as error:
            return str(error)
        if self.model.training and any(attn.attn_drop.p > 0 for attn in attns):
            # the fused kernel's dropout mask cannot be recomputed from q, k
            return "attention dropout is active (attn_drop_rate > 0 in training mode)"
        return ""

    def capture_qkv(self) -> contextlib.AbstractContextManager[list[BlockAttention]]:
        return capture_qkv(self.model)

    def last_block_keys(self, images: Tensor) -> Tensor:
        return self.token_features(images, "keys", -1)

    @torch.no_grad()
    def token_features(self, images: Tensor, kind: str = "keys", block: int = -1) -> Tensor:
        """q, k or v from a forward hook on the block's fused ``attn.qkv``, split with timm's
        layout ``reshape(B, N, 3, heads, head_dim)``; ``output`` from a hook on the block."""
        if kind not in TOKEN_FEATURES:
            raise ValueError(f"unknown token feature {kind!r}; known: {list(TOKEN_FEATURES)}")
        blocks = attention_blocks(self.model)
        if not -len(blocks) <= block < len(blocks):
            raise ValueError(f"block {block} does not exist: {type(self.model).__name__} has "
                             f"{len(blocks)} blocks")
        attn = blocks[block]
        qkv_layer, num_heads = getattr(attn, "qkv", None), getattr(attn, "num_heads", None)
        if kind == "output":
            hooked = self.model.blocks[block]
        elif isinstance(qkv_layer, nn.Module) and num_heads is not None:
            hooked = qkv_layer
        else:
            raise TypeError(f"{type(self.model).__name__}.blocks[{block}].attn has no fused `qkv` "
                            "projection with `num_heads` (timm's Attention layout)")
        captured: list[Tensor] = []
        handle = hooked.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            self.model.forward_features(images)  # the head plays no part in the features
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected one call of block {block}'s {kind} layer, got "
                               f"{len(captured)}")
        if kind == "output":
            return captured[0]
        batch, num_tokens, three_dim = captured[0].shape
        head_dim = three_dim // (3 * int(num_heads))
        index = {"queries": 0, "keys": 1, "values": 2}[kind]
        features = captured[0].reshape(batch, num_tokens, 3, int(num_heads), head_dim)[:, :, index]
        return features.reshape(batch, num_tokens, int(num_heads) * head_dim)

    def explain_token_count_mismatch(self, num_tokens: int, layout: TokenLayout) -> str:
        if self.model.training and not isinstance(getattr(self.model, "patch_drop", None),
                                                  nn.Identity):
            return (" The model drops patch tokens in training mode (timm patch_drop_rate > 0):"
                    " create it with patch_drop_rate=0 for relevance fine-tuning.")
        return ""


class ImageClassifier(Backbone):
    """Any other image classifier (a timm ResNet, a hand-made model): its class scores and
    its timm preprocessing (timm's defaults when it has no ``pretrained_cfg``), so that
    ``robustft-eval`` scores it; it has no token sequence to explain, so every relevance
    step refuses it with one line naming its class."""

    def _refuse(self) -> TypeError:
        kind = type(self.model)
        return TypeError(f"{kind.__module__}.{kind.__qualname__} is not a model robustft can "
                         "explain: the rollout needs one token sequence (CLS + patches) "
                         "through every block, as in a timm VisionTransformer (a hierarchical "
                         "model such as a Swin has none)")

    def check_explainable(self) -> None:
        raise self._refuse()

    @property
    def patch_size(self) -> tuple[int, int]:
        raise self._refuse()

    @property
    def num_classes(self) -> int | None:
        return getattr(self.model, "num_classes", None)

    def token_layout(self, image_size: tuple[int, int]) -> TokenLayout:
        raise self._refuse()

    def preprocessing(self) -> dict[str, Any]:
        return timm_data_config(self.model)

    def capture_attention(self):
        raise self._refuse()

    def capture_qkv(self):
        raise self._refuse()

    def last_block_keys(self, images: Tensor) -> Tensor:
        raise self._refuse()


# The general fallback, and the timm ViT (the more specific type wins: register_backbone).
register_backbone(nn.Module, ImageClassifier)
register_backbone(VisionTransformer, TimmViT)
