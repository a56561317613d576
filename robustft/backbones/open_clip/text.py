"""An OpenCLIP model with both towers as an
:class:`~robustft.backbones.image_text.ImageTextModel`: the image tower through its
adapter (:class:`~robustft.backbones.open_clip.adapter.OpenClipViT`, or
:class:`~robustft.backbones.open_clip.adapter.OpenClipTimmTower` for SigLIP's timm tower),
the text tower's self-attention captured by the same explicit recomputation
(:mod:`robustft.backbones.open_clip.attention`, with the tower's additive ``attn_mask``:
causal for OpenAI-style CLIP, none for SigLIP), and the model's tokenizer: OpenCLIP's BPE
tokenizer (its vocabulary ships inside the wheel: no download) or a Hugging Face one
(OpenCLIP's ``HFTokenizer``: SigLIP's SentencePiece vocabulary, downloaded by OpenCLIP).

Two model classes: ``open_clip.CLIP`` (the OpenAI-style text tower inside the model) and
``open_clip.CustomTextCLIP`` with OpenCLIP's own ``TextTransformer`` (SigLIP, SigLIP 2,
EVA-CLIP). The pooled token is read as the tower pools it (``text_pool_type``): ``argmax``
(the end-of-text token has the highest id), ``eos`` (the first end-of-text id), ``last``
(SigLIP: the last position, a padding token that attends to every token) or ``first``.
Hugging Face text towers (``HFTextEncoder``) are refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from robustft.backbones.heads.zero_shot import ZeroShotClassifier, zero_shot_head_from_checkpoint
from robustft.backbones.image_text import ImageTextModel, TextTokens
from robustft.backbones.open_clip.attention import (
    explicit_attention,
    leaf_if_frozen,
    replaced_attention,
    vision_blocks,
)
from robustft.backbones.open_clip.load import (
    _check_name,
    _create_clip,
    _file_keys,
    open_clip_tokenizer,
)
from robustft.backbones.registry import backbone_of
from robustft.checkpoints import load_finetuned_weights

__all__ = ["OpenClipImageText", "build_open_clip_image_text"]

_POOLINGS = ("argmax", "eos", "last", "first")


def _text_tower(clip: nn.Module, key: str) -> tuple[nn.Module, str, int | None]:
    """The module holding the text transformer (``transformer.resblocks``,
    ``token_embedding``), its pooling and its end-of-text id; one line when the model has
    no text tower robustft reads."""
    if isinstance(clip, open_clip.CLIP):
        return clip, clip.text_pool_type, getattr(clip, "text_eos_id", None)
    if isinstance(clip, open_clip.CustomTextCLIP) and isinstance(clip.text, TextTransformer):
        text = clip.text
        if text.cls_emb is not None or text.use_pad_mask:
            raise ValueError(f"{key}: the text tower masks its padding or appends a class token "
                             "(a per-text attention mask): not supported by texts=")
        return text, text.pool_type, getattr(text, "eos_id", None)
    tower = type(getattr(clip, "text", clip)).__name__
    raise TypeError(f"{key}: texts= explains OpenCLIP models with OpenCLIP's own text "
                    f"transformer (open_clip.CLIP, or CustomTextCLIP as SigLIP), not "
                    f"{type(clip).__name__} with a {tower} text tower")


class OpenClipImageText(ImageTextModel):
    """An OpenCLIP ``CLIP`` or ``CustomTextCLIP`` and its tokenizer (see the module
    docstring)."""

    def __init__(self, clip: nn.Module, tokenizer: Any, *, key: str = "model") -> None:
        self.text_tower, self.text_pool_type, self.eos_id = _text_tower(clip, key)
        if self.text_pool_type not in _POOLINGS:
            raise ValueError(f"{key}: the text tower pools {self.text_pool_type!r}; the text "
                             f"relevance reads one pooled token ({_POOLINGS})")
        bpe = all(hasattr(tokenizer, name) for name in ("encode", "decode", "sot_token_id"))
        if not bpe and not isinstance(getattr(tokenizer, "tokenizer", None), _hf_tokenizer_types()):
            raise TypeError(f"{key}: {type(tokenizer).__name__} is neither OpenCLIP's BPE "
                            "SimpleTokenizer (encode, decode, sot/eot ids) nor its HFTokenizer")
        super().__init__(clip, backbone_of(clip.visual))
        self.tokenizer = tokenizer

    def tokenize(self, texts: Sequence[str]) -> TextTokens:
        length = int(self.model.context_length)
        if hasattr(self.tokenizer, "sot_token_id"):
            ids, positions, words = _bpe_tokens(self.tokenizer, texts, length)
        else:
            ids, positions, words = _hf_tokens(self.tokenizer, texts, length)
        # the pooled position, as OpenCLIP's text_global_pool reads it
        if self.text_pool_type == "argmax":
            pooled = ids.argmax(dim=-1)
        elif self.text_pool_type == "eos":
            pooled = (ids == self.eos_id).int().argmax(dim=-1)
        else:
            pooled = torch.full((len(texts),), length - 1 if self.text_pool_type == "last" else 0)
        return TextTokens(ids=ids, pooled=pooled, word_positions=positions, words=words)

    def text_embeddings(self, ids: Tensor) -> Tensor:
        return self.model.encode_text(ids.to(self.text_tower.token_embedding.weight.device))

    @contextmanager
    def capture_text_attention(self) -> Iterator[list[Tensor]]:
        captured: list[Tensor] = []

        def record(probabilities: Tensor) -> Tensor:
            probabilities = leaf_if_frozen(probabilities)
            captured.append(probabilities)
            return probabilities

        try:
            blocks = vision_blocks(self.text_tower)
        except TypeError as error:
            raise TypeError(f"the text tower: {error}") from error
        make = lambda block: explicit_attention(  # noqa: E731
            block, fused=False, record=record, masked=True)
        with replaced_attention(blocks, make):
            yield captured

    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp()

    def logit_bias(self) -> Tensor | None:
        return getattr(self.model, "logit_bias", None)


def _hf_tokenizer_types() -> tuple[type, ...]:
    from transformers import PreTrainedTokenizerBase

    return (PreTrainedTokenizerBase,)


def _bpe_tokens(tokenizer: Any, texts: Sequence[str], length: int
                ) -> tuple[Tensor, tuple[tuple[int, ...], ...], tuple[tuple[str, ...], ...]]:
    """OpenCLIP's BPE layout: [start] words [end] padding (0), words cut to fit."""
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    positions, words = [], []
    for row, text in enumerate(texts):
        word_ids = tokenizer.encode(text)[:length - 2]
        sequence = [tokenizer.sot_token_id, *word_ids, tokenizer.eot_token_id]
        ids[row, :len(sequence)] = torch.tensor(sequence)
        positions.append(tuple(range(1, len(word_ids) + 1)))
        words.append(tuple(tokenizer.decode([i]).strip() for i in word_ids))
    return ids, tuple(positions), tuple(words)


def _hf_tokens(tokenizer: Any, texts: Sequence[str], length: int
               ) -> tuple[Tensor, tuple[tuple[int, ...], ...], tuple[tuple[str, ...], ...]]:
    """An OpenCLIP ``HFTokenizer``: the ids are the wrapper's own (its text cleaning, padding
    to the context length, its sep-token stripping); the word tokens are those the Hugging
    Face tokenizer does not mark special (no start, end or padding token)."""
    ids = tokenizer(list(texts), context_length=length)
    marked = tokenizer.tokenizer([tokenizer.clean_fn(text) for text in texts],
                                 max_length=length, padding="max_length", truncation=True,
                                 return_special_tokens_mask=True)
    positions, words = [], []
    for row, mask in enumerate(marked["special_tokens_mask"]):
        kept = tuple(i for i, special in enumerate(mask) if not special)
        positions.append(kept)
        words.append(tuple(tokenizer.tokenizer.decode([int(ids[row, i])]).strip() for i in kept))
    return ids, tuple(positions), tuple(words)


def build_open_clip_image_text(spec: Any, key: str = "model") -> OpenClipImageText:
    """The ``Family.image_text`` builder of ``ModelSpec(family="open_clip")``: the whole
    CLIP model from its ``tag`` (downloaded by OpenCLIP), an OpenCLIP ``weights_file`` or
    random weights (``pretrained=false``), with a robustft ``checkpoint``'s fine-tuned
    image tower loaded on top (the text tower stays the base model's)."""
    _check_name(spec.name, key)
    if spec.weights_file and "class_embeddings" in _file_keys(Path(spec.weights_file),
                                                              f"{key}.weights_file"):
        raise ValueError(f"{key}.weights_file: {spec.weights_file} is a saved zero-shot "
                         "classifier (an image tower and class embeddings): texts= needs the "
                         "text tower too; give the OpenCLIP checkpoint it came from")
    if spec.weights_file and not Path(spec.weights_file).is_file():
        raise FileNotFoundError(f"{key}.weights_file: model weights file not found: "
                                f"{spec.weights_file}")
    pretrained = spec.weights_file or (spec.tag if spec.pretrained else None)
    if spec.pretrained and not pretrained:
        raise ValueError(f"{key}.tag: OpenCLIP {spec.name} needs a pretrained tag, or "
                         f"{key}.weights_file, or {key}.pretrained=false for random weights")
    clip = _create_clip(spec, key, pretrained)
    if spec.checkpoint:
        # the checkpoint holds a ZeroShotClassifier's state: load it into one that shares
        # this model's image tower
        head = zero_shot_head_from_checkpoint(spec.checkpoint, f"{key}.checkpoint")
        load_finetuned_weights(ZeroShotClassifier(clip.visual, head), spec.checkpoint,
                               key=f"{key}.checkpoint", model_description=f"OpenCLIP {spec.name}")
    tokenizer = open_clip_tokenizer(spec.name, clip.context_length, key)
    return OpenClipImageText(clip, tokenizer, key=key)
