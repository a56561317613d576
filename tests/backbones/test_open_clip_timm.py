"""OpenCLIP models whose image tower is a timm model (``TimmModel``): SigLIP, SigLIP 2
(a timm ViT with an attention pool, ``timm_pool='map'``) and EVA-CLIP (a timm ``Eva``).

The models are built by their OpenCLIP names with ``pretrained=None`` and a tiny timm
tower of the same architecture (``fixtures/tiny_siglip.py``). The truth: OpenCLIP's own
``get_logits`` for the zero-shot scores, and for the map a float64 brute force written
here (every block's and the attention pool's attention recomputed from the weights, the
full ``R = prod (I + Abar)``, the pool's gradient-weighted head-mean row times ``R``:
docs/method.md §1.2).
"""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_siglip import TEXT_CFG, siglip_trunk_forward, tiny_open_clip

from robustft.backbones import backbone_of
from robustft.backbones.open_clip import OpenClipTimmTower, zero_shot_classifier
from robustft.relevance import relevance_map

CLASSES = ["cat", "dog", "red hat"]


def _tokenizer():
    # OpenCLIP's BPE tokenizer (shipped with the wheel): SigLIP's own is a Hugging Face
    # SentencePiece download, and the scores do not depend on which ids a word gets
    return open_clip.get_tokenizer("ViT-B-16", context_length=16)


def _classifier(clip):
    return zero_shot_classifier(clip, CLASSES, ["a photo of a {}."], tokenizer=_tokenizer()).double()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)


@pytest.mark.parametrize("kind", ["siglip", "siglip2", "eva"])
def test_zero_shot_scores_are_open_clips_own_logits_with_the_bias(kind):
    clip = tiny_open_clip(kind)
    classifier = _classifier(clip)
    assert isinstance(backbone_of(clip.visual), OpenClipTimmTower)
    images = _images()
    text = _tokenizer()([f"a photo of a {name}." for name in CLASSES])
    with torch.no_grad():
        truth, _ = clip.get_logits(images, text)  # scale * cos (+ SigLIP's bias)
        scores = backbone_of(classifier).class_scores(images)
    # the head's class embeddings are stored in float32, as OpenCLIP computes them
    torch.testing.assert_close(scores, truth, rtol=1e-5, atol=1e-5)
    if kind.startswith("siglip"):  # SigLIP's logit carries its bias
        assert float(classifier.logit_bias) == -2.5
        torch.testing.assert_close(scores - classifier.logit_bias,
                                   clip.logit_scale.exp() * F.normalize(clip.encode_image(images))
                                   @ F.normalize(clip.encode_text(text)).T, rtol=1e-5, atol=1e-5)
    else:
        assert classifier.logit_bias is None


def _brute_force_map(classifier, image, target):
    embedding, kept, pooled = siglip_trunk_forward(classifier.visual.trunk, image)
    score = (classifier.logit_scale.exp() * F.normalize(embedding, dim=-1)
             @ classifier.class_embeddings.T + classifier.logit_bias)[0, target]
    gradients = torch.autograd.grad(score, [*kept, pooled])

    def abar(a, g):
        return sum((g[0, h] * a[0, h]).clamp(min=0) for h in range(a.shape[1])) / a.shape[1]

    tokens = kept[0].shape[-1]
    rollout = torch.eye(tokens, dtype=image.dtype)
    for attention, gradient in zip(kept, gradients):
        rollout = (torch.eye(tokens, dtype=image.dtype) + abar(attention, gradient)) @ rollout
    row = abar(pooled, gradients[-1])[0] @ rollout  # the pool's row: no identity
    return row.reshape(4, 4), score


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_siglip_map_equals_the_attention_pool_rule_by_brute_force(backend):
    classifier = _classifier(tiny_open_clip("siglip"))
    images = _images()
    target = torch.tensor([2, 0])
    out = relevance_map(classifier, images, target, "detached", backend=backend)
    for b in range(2):
        expected, score = _brute_force_map(classifier, images[b:b + 1], int(target[b]))
        torch.testing.assert_close(out.logits[b, int(target[b])], score)
        torch.testing.assert_close(out.relevance[b], expected, rtol=1e-9, atol=1e-12)


class _ZeroShotLogits(torch.nn.Module):
    """The zero-shot head written out, to put after a timm model's own head."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, embedding):
        c = self.classifier
        return c.logit_scale.exp() * F.normalize(embedding, dim=-1) @ c.class_embeddings.T


def test_eva_clip_is_the_timm_eva_it_holds_with_the_zero_shot_head():
    # the timm Eva rule itself is checked by brute force in test_timm_eva_beit.py; here the
    # OpenCLIP tower must give what the same trunk gives as a plain timm model whose head
    # ends in the zero-shot logits (its projection, then scale * cos)
    classifier = _classifier(tiny_open_clip("eva"))
    assert classifier.logit_bias is None
    images = _images()
    target = torch.tensor([1, 2])
    trunk = copy.deepcopy(classifier.visual.trunk)
    trunk.head = torch.nn.Sequential(trunk.head, _ZeroShotLogits(classifier))
    layout = backbone_of(classifier).token_layout((32, 32))
    assert (layout.readout, layout.num_prefix_tokens, layout.grid_size) == ("cls", 1, (4, 4))
    for mode in ("detached", "second_order"):
        out = relevance_map(classifier, images, target, mode, backend="auto")
        truth = relevance_map(trunk, images, target, mode, backend="eager")
        torch.testing.assert_close(out.logits, truth.logits)
        torch.testing.assert_close(out.relevance, truth.relevance)
        assert out.relevance.abs().sum() > 0


def test_a_timm_tower_without_a_vit_trunk_is_refused_in_one_line():
    torch.manual_seed(0)
    clip = open_clip.create_model(
        "ViT-B-16-SigLIP", pretrained=None, embed_dim=32, text_cfg=TEXT_CFG,
        vision_cfg={"image_size": 32, "timm_model_name": "resnet18", "timm_pool": "avg",
                    "timm_proj": "linear"})
    with pytest.raises(TypeError, match=r"^timm\.models\.resnet\.ResNet is not a model robustft "
                                        r"can explain: .*$"):
        relevance_map(_classifier(clip.double().eval()), _images())
