"""The caption head (robustft.backbones.heads.captions): the fine-tuning's map of each
image with its own caption as the target is the image-text relevance of that (image,
caption) pair with the full rollout, computed per pair in the test."""

from __future__ import annotations

import open_clip
import pytest
import torch

from robustft.backbones import backbone_of
from robustft.backbones.heads.captions import CaptionClassifier, distinct_captions
from robustft.backbones.open_clip.text import OpenClipImageText
from robustft.relevance.grad_rollout import relevance_map
from robustft.relevance.image_text import image_text_relevance

KWARGS = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CAPTIONS = ["a red hat on a table", "a dog / a cat", "a red hat on a table", "the sea"]


def _pair(seed: int = 0) -> OpenClipImageText:
    torch.manual_seed(seed)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **KWARGS)
    with torch.no_grad():  # OpenCLIP's init leaves these small: make attention vary
        clip.visual.class_embedding.normal_(0, 0.5)
        clip.visual.positional_embedding.normal_(0, 0.5)
        clip.token_embedding.weight.normal_(0, 0.5)
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=16)
    return OpenClipImageText(clip.double().eval(), tokenizer)


def _images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(3),
                       dtype=torch.float64)


def test_distinct_captions_index_each_image_once_per_caption():
    distinct, labels = distinct_captions(CAPTIONS)
    assert distinct == ["a red hat on a table", "a dog / a cat", "the sea"]
    assert labels.tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match=r"^captions: empty caption ' '"):
        distinct_captions(["a dog", " "])


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_training_map_with_own_caption_is_the_pair_relevance_with_the_full_rollout(backend):
    pair = _pair()
    model = CaptionClassifier(pair)
    images = _images(len(CAPTIONS))
    encoded = []
    text_embeddings = pair.text_embeddings

    def counting(ids):
        encoded.append(ids.shape[0])
        return text_embeddings(ids)

    pair.text_embeddings = counting
    labels = model.set_captions(CAPTIONS)
    assert encoded == [3]  # the batch's distinct captions, encoded once
    out = relevance_map(model, images, labels, "detached", backend=backend)
    assert out.logits.shape == (4, 3) and backbone_of(model).num_classes == 3
    assert out.target.tolist() == labels.tolist()
    pair.text_embeddings = text_embeddings
    for i, caption in enumerate(CAPTIONS):  # brute force: one (image, caption) pair at a time
        reference = image_text_relevance(pair, images[i:i + 1], [caption], start_layer=0)
        torch.testing.assert_close(out.relevance[i], reference.image[0, 0], rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(out.logits[i, labels[i]], reference.logits[0, 0])


def test_text_tower_is_frozen_unless_asked_and_the_classification_term_reaches_it():
    frozen = CaptionClassifier(_pair())
    visual = {id(p) for p in frozen.visual.parameters()}
    trained = [p for p in frozen.parameters() if p.requires_grad]
    assert trained and all(id(p) in visual for p in trained)
    assert any(not p.requires_grad for p in frozen.clip.transformer.parameters())
    both = CaptionClassifier(_pair(), train_text_tower=True)
    labels = both.set_captions(CAPTIONS)
    loss = torch.nn.functional.cross_entropy(both(_images(4)), labels)
    loss.backward()
    assert both.clip.token_embedding.weight.grad is not None
    assert both.clip.visual.conv1.weight.grad is not None


def test_scores_need_the_batchs_own_captions():
    model = CaptionClassifier(_pair())
    with pytest.raises(RuntimeError, match="no captions set"):
        model(_images(2))
    model.set_captions(["a dog", "a cat"])
    with pytest.raises(ValueError, match=r"captions were set for 2 images, got 3"):
        model(_images(3))


def test_the_frozen_copy_scores_its_own_captions_like_the_model():
    from robustft.backbones import frozen_copy

    model = CaptionClassifier(_pair())
    original = frozen_copy(model)
    images = _images(4)
    labels = model.set_captions(CAPTIONS)
    assert original.set_captions(CAPTIONS).tolist() == labels.tolist()
    torch.testing.assert_close(original(images), model(images))
    assert original.clip is not model.clip and original.pair.model is original.clip
