"""Image-text relevance for CLIP (docs/method.md §11): the rule of §1 with the score of an
(image, text) pair, their similarity logit, read on both towers.

For B images and T texts, one forward of each tower gives the (B, T) logits
``s[b, t] = scale * cos(image_b, text_t) (+ bias)``. Per pair (b, t):

- image map: per image block ``l >= start_layer``, ``G = ds[b, t]/dA_l`` (image b's own
  attention), ``Abar_l = mean_heads(clamp(G * A_l, min=0))``,
  ``R = (I + Abar_L) ... (I + Abar_start)``; the map is the read-out row over the patch
  grid, exactly as :func:`robustft.relevance.grad_rollout.relevance_map`: the CLS row, or
  for an attention-pooled tower (SigLIP) the pool's own gradient-weighted head-mean row
  ``abar_pool`` (its ``G = ds[b, t]/dO_pool V^T``) times ``R``;
- text relevance: the same on the text blocks (``l >= text_start_layer``: causal attention
  for OpenAI-style CLIP, bidirectional for SigLIP), read at the row of the token the text
  tower pools (the end-of-text token for OpenAI-style CLIP, the last position for SigLIP)
  over the text's word tokens: no start, end or padding token.

Images are independent in the image tower and texts in the text tower, so
``d sum_b s[b, t]`` gives every image its gradient for text t (T autograd calls), and
``d sum_t s[b, t]`` every text its gradient for image b (B calls): all pairs from one
forward of each tower. The gradients ``G`` are detached (docs/method.md §1, "detached"), as
in the public CLIP notebook; the maps stay differentiable in both towers' weights through
``A_l``.

``start_layer`` / ``text_start_layer`` are block indices, negative ones counted from the
end as in Python. The default ``-1`` (the last block only) is the public CLIP notebook's, so
that a CLIP checkpoint explained here shows what that notebook shows (its reason: CLIP's
early blocks are noisy; not measured here, docs/method.md §11); ``0`` is the full rollout
of §1, what a ViT classifier in this package is explained with and what fine-tuning trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from robustft.backbones.image_text import ImageTextModel, TextTokens, check_texts
from robustft.relevance.capture import (
    Subject,
    captured_pool,
    check_token_count,
    pool_capture,
    require_autograd,
)
from robustft.relevance.grad_rollout import head_weighted_attention, rollout_row
from robustft.relevance.readout import patch_grid, pool_relevance, readout_row
from robustft.relevance.settings import GradientMode, widen

__all__ = ["DEFAULT_START_LAYER", "ImageTextRelevance", "block_slice", "image_text_relevance"]

DEFAULT_START_LAYER = -1  # the last block: the public CLIP notebook's default (see above)


@dataclass
class ImageTextRelevance:
    """Relevance of every (image, text) pair.

    - ``logits`` (B, T): the explained scores, the pairs' similarity logits;
    - ``image`` (B, T, h, w): the raw image map of each pair over the patch grid;
    - ``text_rows`` (B, T, L): the pooled token's row over all L token positions (zero at
      the padding: the causal attention never reads it);
    - ``text`` (T tensors of (B, n_t)): per text, the relevance of its n_t word tokens
      (``text_rows`` at ``tokens.word_positions``);
    - ``tokens``: the tokenised texts (``tokens.words[t]`` are text t's tokens as strings);
    - ``sigmoid``: the model scores each pair on its own (SigLIP's sigmoid loss), so a
      pair's probability is ``sigmoid(logit)``, not a softmax over the given texts.
    """

    logits: Tensor
    image: Tensor
    text_rows: Tensor
    text: tuple[Tensor, ...]
    tokens: TextTokens
    sigmoid: bool = False

    def probabilities(self) -> Tensor:
        """(B, T): each pair's sigmoid (a SigLIP model: every pair is a yes/no of its own),
        else each image's softmax over the given texts."""
        if self.sigmoid:
            return self.logits.float().sigmoid()
        return self.logits.float().softmax(dim=-1)


def block_slice(start_layer: int, num_blocks: int, key: str = "start_layer") -> slice:
    """The blocks a rollout runs over, from ``start_layer`` (negative: from the end) to the
    last; a ``ValueError`` naming ``key`` unless it is a block index."""
    if (isinstance(start_layer, bool) or not isinstance(start_layer, int)
            or not -num_blocks <= start_layer < num_blocks):
        raise ValueError(f"{key} must be a block index in [{-num_blocks}, {num_blocks - 1}] "
                         f"(negative: from the last block) for {num_blocks} blocks, "
                         f"got {start_layer!r}")
    return slice(start_layer % num_blocks, None)


def _block_maps(attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> list[Tensor]:
    """Step 4 per block with the gradient detached: (N, H, L, L) -> (N, L, L)."""
    return [head_weighted_attention(widen(a), widen(g).detach())
            for a, g in zip(attentions, gradients)]


def _pooled_row(pooled: Tensor, num_tokens: int, *, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    """(T, 1, L): per text, the indicator of its pooled token (the text read-out row)."""
    row = torch.zeros(len(pooled), 1, num_tokens, dtype=dtype, device=device)
    row[torch.arange(len(pooled)), 0, pooled.to(device)] = 1.0
    return row


def image_text_relevance(model: ImageTextModel, images: Tensor, texts: Sequence[str], *,
                         start_layer: int = DEFAULT_START_LAYER,
                         text_start_layer: int = DEFAULT_START_LAYER) -> ImageTextRelevance:
    """Relevance of every pair of ``images`` (B, 3, H, W), normalised as the image tower
    expects, and ``texts`` (T distinct non-empty prompts) under ``model``: see the module
    docstring. The model is not modified (attention is captured for the forward only)."""
    require_autograd("image-text relevance")
    texts = check_texts(texts)
    layout = model.image.token_layout((images.shape[-2], images.shape[-1]))
    tokens = model.tokenize(texts)
    subject = Subject(model.image, layout, GradientMode.detached)
    with torch.enable_grad():
        # 1. one forward of each tower, every block's attention kept (and an attention
        # pool's q, k, v and output for the 'map' read-out)
        with model.image.capture_attention() as image_attentions, \
                pool_capture(subject) as pools:
            image_embeddings = model.image.class_scores(images)
        pool = captured_pool(pools, subject)
        with model.capture_text_attention() as text_attentions:
            text_embeddings = model.text_embeddings(tokens.ids)
        check_token_count(image_attentions[0].shape[-1], layout, model.image)
        logits = model.similarity(image_embeddings, text_embeddings)  # (B, T)
        image_blocks = image_attentions[block_slice(start_layer, len(image_attentions),
                                                    "start_layer")]
        text_blocks = text_attentions[block_slice(text_start_layer, len(text_attentions),
                                                  "text_start_layer")]
        with torch.autocast(device_type=images.device.type, enabled=False):
            image_maps = []
            for t in range(len(texts)):
                # 2-3. d sum_b s[b, t] / dA: image b's gradient for text t
                gradients = torch.autograd.grad(
                    logits[:, t].sum(), [*image_blocks, *([pool.output] if pool else [])],
                    retain_graph=True)
                block_maps = _block_maps(image_blocks, gradients[:len(image_blocks)])
                pool_row = None if pool is None else pool_relevance(pool, gradients[-1],
                                                                    second_order=False)
                start = readout_row(layout, len(images), dtype=block_maps[0].dtype,
                                    device=block_maps[0].device, pool=pool_row)
                image_maps.append(patch_grid(rollout_row(block_maps, start), layout))
            text_rows = []
            for b in range(len(images)):
                # d sum_t s[b, t] / dA: text t's gradient for image b
                gradients = torch.autograd.grad(logits[b].sum(), text_blocks, retain_graph=True)
                block_maps = _block_maps(text_blocks, gradients)
                start = _pooled_row(tokens.pooled, block_maps[0].shape[-1],
                                    dtype=block_maps[0].dtype, device=block_maps[0].device)
                text_rows.append(rollout_row(block_maps, start))
    rows = torch.stack(text_rows, dim=0)  # (B, T, L)
    words = tuple(rows[:, t, list(positions)] for t, positions in enumerate(tokens.word_positions))
    return ImageTextRelevance(logits=logits, image=torch.stack(image_maps, dim=1),
                              text_rows=rows, text=words, tokens=tokens,
                              sigmoid=model.sigmoid_scores())
