"""An image-text model (CLIP) as the image-text relevance rule sees it: both towers, the
tokenizer and the similarity logit, with the text tower's attention captured as the image
tower's is (:mod:`robustft.relevance.image_text` is the rule; a family implements
:class:`ImageTextModel` in its own subpackage and builds it through
``Family.image_text``).

Nothing here knows a family: :func:`image_text_model` builds the model of a
:class:`~robustft.backbones.spec.ModelSpec` through its family's record, or says in one line
that the family has no text tower.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from robustft.backbones.base import Backbone
from robustft.backbones.registry import get_family
from robustft.backbones.spec import ModelSpec

__all__ = ["ImageTextModel", "TextTokens", "check_texts", "image_text_model"]


@dataclass(frozen=True)
class TextTokens:
    """T tokenised texts: ``ids`` (T, L) as the text tower reads them (padded);
    ``pooled`` (T,) the position of the token whose output the tower pools into the text
    embedding (the end-of-text token for OpenAI-style CLIP); per text, the positions of its
    word tokens (``word_positions``: no start, end or padding token) and those tokens as
    strings (``words``), in order."""

    ids: Tensor
    pooled: Tensor
    word_positions: tuple[tuple[int, ...], ...]
    words: tuple[tuple[str, ...], ...]


class ImageTextModel(ABC):
    """Both towers of an image-text model. ``image`` is the image tower's
    :class:`Backbone` (its token layout and attention capture; its ``class_scores`` are
    the (B, D) image embeddings); the text side is the methods below."""

    def __init__(self, model: nn.Module, image: Backbone) -> None:
        self.model = model
        self.image = image

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> TextTokens:
        """The texts as the text tower reads them."""

    @abstractmethod
    def text_embeddings(self, ids: Tensor) -> Tensor:
        """(T, L) token ids -> (T, D) text embeddings (before normalisation)."""

    @abstractmethod
    def capture_text_attention(self) -> AbstractContextManager[list[Tensor]]:
        """A forward of :meth:`text_embeddings` inside it fills the list with each text
        block's (T, heads, L, L) post-softmax attention (masked as the tower masks it),
        first block first, in the autograd graph."""

    @abstractmethod
    def logit_scale(self) -> Tensor:
        """The multiplier of the cosine similarity (``exp`` of CLIP's stored log-scale)."""

    def logit_bias(self) -> Tensor | None:
        """The bias added to the scaled similarity (SigLIP); None for CLIP."""
        return None

    def sigmoid_scores(self) -> bool:
        """Whether the model was trained to score each pair on its own with a sigmoid
        (SigLIP), rather than with a softmax over the texts (CLIP): a model with a logit
        bias is (only the sigmoid loss has one)."""
        return self.logit_bias() is not None

    def similarity(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        """(B, D), (T, D) -> (B, T) logits ``scale * cos(image, text) (+ bias)``."""
        logits = self.logit_scale() * (F.normalize(image_embeddings, dim=-1)
                                       @ F.normalize(text_embeddings, dim=-1).T)
        bias = self.logit_bias()
        return logits if bias is None else logits + bias

    def eval(self) -> ImageTextModel:
        self.model.eval()
        return self

    def to(self, device) -> ImageTextModel:  # noqa: ANN001 - as nn.Module.to
        self.model.to(device)
        return self


def check_texts(texts: Sequence[str], key: str = "texts") -> list[str]:
    """``texts`` as a list of non-empty, distinct prompts; a ``ValueError`` naming ``key``
    and the first empty or repeated one."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError(f"{key}: no text given; expected a list of prompts, e.g. "
                         "texts='[a red hat,a dog]'")
    seen: set[str] = set()
    for position, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{key}[{position}]: empty prompt {text!r}; every prompt needs a word")
        if text.strip() in seen:
            raise ValueError(f"{key}[{position}]: {text!r} is given twice; give each prompt once")
        seen.add(text.strip())
    return [text.strip() for text in texts]


def image_text_model(spec: ModelSpec, *, key: str = "model") -> ImageTextModel:
    """The image-text model of ``spec`` (both towers and the tokenizer), built by its
    family's ``image_text`` builder; a one-line ``ValueError`` when it has none."""
    family = get_family(spec.family, key=f"{key}.family")
    if family.image_text is None:
        raise ValueError(f"{key}.family: texts= needs a model with a text tower; the "
                         f"{family.name!r} family has none here (an OpenCLIP model has)")
    family.check(spec, key)
    return family.image_text(spec, key)
