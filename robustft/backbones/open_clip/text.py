"""An OpenCLIP ``CLIP`` model with both towers as an
:class:`~robustft.backbones.image_text.ImageTextModel`: the image tower through its
adapter (:class:`~robustft.backbones.open_clip.adapter.OpenClipViT`), the text tower's
causal self-attention captured by the same explicit recomputation
(:mod:`robustft.backbones.open_clip.attention`, with the tower's additive ``attn_mask``),
and OpenCLIP's BPE tokenizer (its vocabulary ships inside the wheel: no download).

Only ``open_clip.CLIP`` (the OpenAI-style text tower inside the model, pooled at the
end-of-text token: ``text_pool_type`` ``argmax`` or ``eos``) is built here; the
``CustomTextCLIP`` models (SigLIP and Hugging Face text towers) are refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import Tensor

from robustft.backbones.heads.zero_shot import ZeroShotClassifier, zero_shot_head_from_checkpoint
from robustft.backbones.image_text import ImageTextModel, TextTokens
from robustft.backbones.open_clip.attention import (
    explicit_attention,
    leaf_if_frozen,
    replaced_attention,
    vision_blocks,
)
from robustft.backbones.open_clip.load import _check_name, _create_clip, _file_keys
from robustft.backbones.registry import backbone_of
from robustft.checkpoints import load_finetuned_weights

__all__ = ["OpenClipImageText", "build_open_clip_image_text"]

_POOLED_AT_END = ("argmax", "eos")


class OpenClipImageText(ImageTextModel):
    """An ``open_clip.CLIP`` and its tokenizer (see the module docstring)."""

    def __init__(self, clip: open_clip.CLIP, tokenizer: Any, *, key: str = "model") -> None:
        if not isinstance(clip, open_clip.CLIP):
            raise TypeError(f"{key}: texts= explains open_clip.CLIP models (the text tower "
                            f"inside the model), not {type(clip).__name__}")
        if clip.text_pool_type not in _POOLED_AT_END:
            raise ValueError(f"{key}: the text tower pools {clip.text_pool_type!r}; the text "
                             f"relevance reads the end-of-text token ({_POOLED_AT_END})")
        if not all(hasattr(tokenizer, name) for name in ("encode", "decode", "sot_token_id")):
            raise TypeError(f"{key}: {type(tokenizer).__name__} is not OpenCLIP's BPE "
                            "SimpleTokenizer (encode, decode, sot/eot ids)")
        super().__init__(clip, backbone_of(clip.visual))
        self.tokenizer = tokenizer

    def tokenize(self, texts: Sequence[str]) -> TextTokens:
        clip, tokenizer = self.model, self.tokenizer
        length = int(clip.context_length)
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        positions, words = [], []
        for row, text in enumerate(texts):
            # the tokenizer's own layout: [start] words [end] padding, words cut to fit
            word_ids = tokenizer.encode(text)[:length - 2]
            sequence = [tokenizer.sot_token_id, *word_ids, tokenizer.eot_token_id]
            ids[row, :len(sequence)] = torch.tensor(sequence)
            positions.append(tuple(range(1, len(word_ids) + 1)))
            words.append(tuple(tokenizer.decode([i]).strip() for i in word_ids))
        if clip.text_pool_type == "argmax":  # as OpenCLIP's text_global_pool reads it
            pooled = ids.argmax(dim=-1)
        else:
            pooled = (ids == clip.text_eos_id).int().argmax(dim=-1)
        return TextTokens(ids=ids, pooled=pooled, word_positions=tuple(positions),
                          words=tuple(words))

    def text_embeddings(self, ids: Tensor) -> Tensor:
        return self.model.encode_text(ids.to(self.model.token_embedding.weight.device))

    @contextmanager
    def capture_text_attention(self) -> Iterator[list[Tensor]]:
        captured: list[Tensor] = []

        def record(probabilities: Tensor) -> Tensor:
            probabilities = leaf_if_frozen(probabilities)
            captured.append(probabilities)
            return probabilities

        try:
            blocks = vision_blocks(self.model)
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
    tokenizer = open_clip.get_tokenizer(spec.name, context_length=clip.context_length)
    return OpenClipImageText(clip, tokenizer, key=key)
