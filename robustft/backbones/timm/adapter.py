"""The timm family's :class:`~robustft.backbones.base.Backbone` adapters: a timm
``VisionTransformer`` (:class:`TimmViT`), and any other ``nn.Module`` (:class:`ImageClassifier`:
evaluated with timm's preprocessing, never explained).

Any timm ``VisionTransformer`` works: plain, distilled (DeiT), register-token and
CLIP-tagged models, and the ones without a class token that pool their tokens: by their
average (``global_pool='avg'``, the ``*_gap_*`` ViTs) or with an attention pool
(``global_pool='map'``: SigLIP, SigLIP 2, ``so150m``; its attention is captured by
:func:`robustft.backbones.timm.attention.capture_pool`); the prefix tokens never enter a
relevance map.

How attention is captured (the eager path): timm computes attention with fused
scaled-dot-product attention, which never materialises the probabilities ``A``. For the
duration of a capture the fused path is switched off in the model's blocks and a forward
hook on ``attn.attn_drop`` records its output, which is ``A`` (dropout is 0 in every ViT
recipe; with dropout active it is the dropped-out ``A`` the block really used); on exit the
hooks are removed and each block's ``fused_attn`` flag restored. timm also offers
``attn_layer=`` (an attention class passed into every block, as DINOv2 does), but only when
a model is built: the hooks work on any timm ViT a user already holds, whatever built it,
with its weights untouched. The fused path (q, k, v and the attention output, for a faster
relevance step) is captured with hooks too, in :mod:`robustft.backbones.timm.attention`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import timm
import torch
from timm.layers.attention_pool import AttentionPoolLatent
from timm.models.beit import Beit
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_relpos import VisionTransformerRelPos
from torch import Tensor, nn

from robustft.backbones.base import TOKEN_FEATURES, Backbone, BlockAttention, TokenLayout
from robustft.backbones.timm.attention import (
    attention_blocks,
    capture_hook,
    capture_pool,
    capture_qkv,
    fused_attention_blocks,
    hooked_attention,
)

__all__ = ["ADAPTERS", "ImageClassifier", "TimmViT", "readout", "timm_data_config",
           "token_layout", "weights_name"]


def readout(model: nn.Module) -> tuple[str, bool]:
    """How a timm ViT's head reads its tokens, as :class:`TokenLayout` names it: ``(readout,
    pool_prefix)``. ``global_pool='token'`` reads the class token, ``'avg'`` the mean of the
    patch tokens (of all tokens with ``pool_include_prefix``), ``'map'`` an attention pool
    with one latent query; a ``ValueError`` naming the setting for the other poolings."""
    name = type(model).__name__
    pool = getattr(model, "global_pool", "token")
    # VisionTransformer says whether its pooling sees the prefix tokens; Eva's attention
    # pool takes every token (its average the patch tokens only, as everyone's)
    include_prefix = bool(getattr(model, "pool_include_prefix", False)) or (
        isinstance(model, Eva) and getattr(model, "attn_pool", None) is not None)
    attn_pool = getattr(model, "attn_pool", None)
    if attn_pool is not None:
        if not isinstance(attn_pool, AttentionPoolLatent):
            raise ValueError(f"{name} pools with {type(attn_pool).__name__} (global_pool="
                             f"{pool!r}): its relevance read-out is not supported yet")
        if attn_pool.latent_len != 1:
            raise ValueError(f"{name}'s attention pool has {attn_pool.latent_len} latent queries: "
                             "the relevance read-out is supported for one (SigLIP's) only")
        return "map", include_prefix
    if pool == "token":
        if getattr(model, "cls_token", None) is None:
            raise ValueError(f"{name} has no class token (class_token=False) but reads its first "
                             "token (global_pool='token'): there is no class token to read out")
        return "cls", False
    if pool == "avg":
        return "avg", include_prefix
    raise ValueError(f"{name} has global_pool={pool!r}: the relevance read-out follows a class "
                     "token ('token'), average pooling ('avg') or an attention pool ('map') only")


def pixels_per_token(patch_embed: nn.Module) -> tuple[int, int]:
    """(height, width) in pixels of one patch token: the patch size, times the stride of the
    convolutional stem of a hybrid ViT (timm ``HybridEmbed``: ``feature_ratio``), whose
    patch size counts feature-map cells."""
    ph, pw = patch_embed.patch_size
    rh, rw = getattr(patch_embed, "feature_ratio", None) or (1, 1)
    return int(ph * rh), int(pw * rw)


def token_layout(model: nn.Module, image_size: tuple[int, int]) -> TokenLayout:
    """Token layout of ``model`` for inputs of spatial size ``image_size = (H, W)``.

    Works for any patch size and input size (the grid is derived from the patch size, so
    ``dynamic_img_size`` models are covered too), and any pooling :func:`readout` knows.
    """
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or not hasattr(patch_embed, "patch_size"):
        raise TypeError(f"{type(model).__name__} has no timm `patch_embed` with a patch_size")
    read, pool_prefix = readout(model)
    ph, pw = pixels_per_token(patch_embed)
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
    return TokenLayout(num_prefix_tokens=int(model.num_prefix_tokens),
                       grid_size=(height // ph, width // pw), readout=read,
                       pool_prefix=pool_prefix)


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


def weights_name(model: nn.Module) -> str:
    """The model's timm ``pretrained_cfg`` name (``architecture.tag``), else its class name."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if arch:
        return f"{arch}.{tag}" if tag else str(arch)
    return type(model).__name__


class TimmViT(Backbone):
    """A timm ``VisionTransformer`` as the method sees it."""

    @property
    def patch_size(self) -> tuple[int, int]:
        return pixels_per_token(self.model.patch_embed)

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

    def capture_pool(self) -> contextlib.AbstractContextManager[list[BlockAttention]]:
        attn_pool = getattr(self.model, "attn_pool", None)
        if isinstance(attn_pool, AttentionPoolLatent):
            return capture_pool(attn_pool)
        return contextlib.nullcontext([])

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

    def describe(self) -> str:
        return weights_name(self.model)


class ImageClassifier(Backbone):
    """Any other image classifier (a timm ResNet, a hand-made model): its class scores and
    its timm preprocessing (timm's defaults when it has no ``pretrained_cfg``), so that
    ``robustft-eval`` scores it; it has no token sequence to explain, so every relevance
    step refuses it with one line naming its class."""

    def _refuse(self) -> TypeError:
        kind = type(self.model)
        why = REFUSALS.get(kind.__name__, "the rollout needs one token sequence (prefix tokens + "
                                          "patches) through every block, as in a timm "
                                          "VisionTransformer")
        return TypeError(f"{kind.__module__}.{kind.__qualname__} is not a model robustft can "
                         f"explain: {why}")

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

    def describe(self) -> str:
        return weights_name(self.model)


# Why a timm model with attention is not explained, by class name (ImageClassifier's
# refusal; any other model gets the general line).
_WINDOWS = ("attends within (shifted) windows and merges patches between stages: no one token "
            "sequence runs through every block")
_NOT_YET = "its {} is not supported yet"
REFUSALS = {
    "Xcit": "XCiT's cross-covariance attention mixes channels, not tokens: there is no "
            "token-to-token attention to roll out",
    "SwinTransformer": f"Swin {_WINDOWS}",
    "SwinTransformerV2": f"Swin V2 {_WINDOWS}",
    "SwinTransformerV2Cr": f"Swin V2 {_WINDOWS}",
    "VisionTransformerSAM": "SAM's image encoder attends within windows in most blocks: its "
                            "attention is not token-to-token over the whole image",
    "NaFlexVit": _NOT_YET.format("variable-resolution patch sequence (NaFlexViT)"),
}

# The general fallback, and the timm ViTs (the more specific type wins: register_backbone):
# Eva (EVA-02, DINOv3, PE, rope ViTs: rotary embeddings), Beit and VisionTransformerRelPos
# (relative position biases) compute their attention otherwise, but record it at the same
# place (attn.attn_drop), so the eager capture takes the probabilities each block really
# used; their attention is not timm's Attention, so the fused backend refuses them
# (relevance.backend=auto runs eager). Cait's adapter (class attention) is in
# robustft.backbones.timm.cait, which builds on TimmViT.
ADAPTERS: tuple[tuple[type[nn.Module], type[Backbone]], ...] = (
    (nn.Module, ImageClassifier), (VisionTransformer, TimmViT), (Eva, TimmViT), (Beit, TimmViT),
    (VisionTransformerRelPos, TimmViT))
