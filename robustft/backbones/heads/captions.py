"""A caption head: an image-text model scored against the captions of the current batch
(docs/method.md §11, "Fine-tuning on free prompts").

:class:`CaptionClassifier` is the zero-shot head's counterpart for free prompts per image.
Before each batch, :meth:`CaptionClassifier.set_captions` encodes the batch's distinct
captions once with the model's text tower and returns each image's own caption index; the
forward then gives the (B, U) similarity logits of the B images with the U distinct
captions, ``s[i, u] = exp(logit_scale) * cos(image_i, caption_u) (+ bias)``, exactly the
logits of :func:`robustft.relevance.image_text.image_text_relevance`. With the own caption
indices as the explained classes (the ``label`` target), the relevance rule of §1 explains
each image's similarity to its own caption, and the classification terms of
``robustft.losses`` apply to the softmax over the batch's captions unchanged.

The text tower is frozen by default (its parameters get ``requires_grad=False``): the
prompts are the fixed targets the image tower is fitted to, and they stay in the embedding
space every other prompt and zero-shot head of the base model lives in. ``train_text_tower``
trains it too (``optim.train_text_tower``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustft.backbones.heads.zero_shot import ZeroShotBackbone
from robustft.backbones.image_text import ImageTextModel
from robustft.backbones.registry import register_backbone

__all__ = ["CaptionBackbone", "CaptionClassifier", "distinct_captions"]


def distinct_captions(captions: Sequence[str]) -> tuple[list[str], Tensor]:
    """(the distinct captions in first-seen order, (B,) each caption's index among them):
    a caption shared by several images is encoded once and is one class."""
    distinct: dict[str, int] = {}
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"captions: empty caption {caption!r}; every image needs a prompt")
        distinct.setdefault(caption.strip(), len(distinct))
    return list(distinct), torch.tensor([distinct[c.strip()] for c in captions], dtype=torch.long)


class CaptionClassifier(nn.Module):
    """Both towers of ``pair`` (an :class:`ImageTextModel`); ``clip`` (its ``nn.Module``) is
    the one registered submodule, so the state dict is the whole image-text model's."""

    def __init__(self, pair: ImageTextModel, *, train_text_tower: bool = False) -> None:
        super().__init__()
        self.clip = pair.model
        self.pair = pair
        self.train_text_tower = train_text_tower
        if not train_text_tower:
            image_tower = {id(p) for p in self.visual.parameters()}
            for parameter in self.clip.parameters():
                if id(parameter) not in image_tower:
                    parameter.requires_grad_(False)
        self.captions: tuple[str, ...] = ()
        # (U, D) text embeddings of the batch's distinct captions; None until set (and in a
        # deep copy made before the first batch: the frozen original encodes its own)
        self._text: Tensor | None = None
        self._batch_size = 0

    @property
    def visual(self) -> nn.Module:
        """The image tower (what the relevance rule reads the attention of)."""
        return self.pair.image.model

    @property
    def num_classes(self) -> int | None:
        """The batch's distinct captions; None before the first :meth:`set_captions`."""
        return len(self.captions) or None

    def set_captions(self, captions: Sequence[str]) -> Tensor:
        """Encode the distinct ``captions`` of a batch (one per image, in image order) with
        the text tower, under the caller's grad mode; returns (B,) each image's caption
        index, the class its relevance explains."""
        distinct, labels = distinct_captions(captions)
        tokens = self.pair.tokenize(distinct)
        self._text = self.pair.text_embeddings(tokens.ids)
        self.captions = tuple(distinct)
        self._batch_size = len(labels)
        return labels

    def forward(self, images: Tensor) -> Tensor:
        if self._text is None:
            raise RuntimeError("CaptionClassifier: no captions set; call set_captions(captions) "
                               "with the batch's captions first")
        if images.shape[0] != self._batch_size:
            # the captions belong to another batch: scoring against them would be silently wrong
            raise ValueError(f"CaptionClassifier: captions were set for {self._batch_size} "
                             f"images, got {images.shape[0]}; set the batch's own captions")
        image_embeddings = self.pair.image.class_scores(images)
        text = self._text.to(device=image_embeddings.device, dtype=image_embeddings.dtype)
        return self.pair.similarity(image_embeddings, text)


class CaptionBackbone(ZeroShotBackbone):
    """A :class:`CaptionClassifier` as the method sees it: the image tower's adapter for
    tokens and attention, the (B, U) logits over the batch's captions as the class
    scores."""


register_backbone(CaptionClassifier, CaptionBackbone)
