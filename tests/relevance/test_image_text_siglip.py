"""Image-text relevance of an OpenCLIP SigLIP model (robustft.relevance.image_text)
against a reference loop per (image, text) pair written here, in float64.

SigLIP differs from CLIP on both sides: the image tower (a timm ViT) reads its tokens
through an attention pool, so the image map is the pool's gradient-weighted head-mean row
times the rollout (docs/method.md §1.2); the text tower attends both ways (no causal mask)
and pools its last position, so the text relevance is that row of the text rollout over
the words; the pair's score is its sigmoid logit ``exp(scale) * cos + bias``. The
reference runs both towers by hand from the weights (checked against OpenCLIP's logits).
"""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_siglip import siglip_style_tokenizer, siglip_trunk_forward, tiny_open_clip
from PIL import Image

from robustft.backbones.open_clip.text import OpenClipImageText
from robustft.evaluation.explain.inputs import collect_images
from robustft.relevance.image_text import image_text_relevance

TEXTS = ["a red hat", "a dog on the grass", "tree"]


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    clip = tiny_open_clip("siglip")
    tokenizer = siglip_style_tokenizer(tmp_path_factory.mktemp("siglip_tokenizer"))
    return clip, OpenClipImageText(clip, tokenizer)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)


def _text_forward(text_tower, ids):
    """SigLIP's text tower written out for one text (1, L): its embedding and each block's
    (1, heads, L, L) attention (no mask: every token attends to every token)."""
    x = text_tower.token_embedding(ids) + text_tower.positional_embedding
    kept = []
    for block in text_tower.transformer.resblocks:
        attn = block.attn
        h = block.ln_1(x)
        q, k, v = (h @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(1, ids.shape[1], attn.num_heads, -1).transpose(1, 2)
                   for t in (q, k, v))
        probabilities = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1)
        kept.append(probabilities)
        x = x + attn.out_proj((probabilities @ v).transpose(1, 2).reshape(1, ids.shape[1], -1))
        x = x + block.mlp(block.ln_2(x))
    return text_tower.text_projection(text_tower.ln_final(x)[:, -1]), kept


def _abar(attention, gradient):
    return (gradient * attention)[0].clamp(min=0).mean(dim=0)


def _reference(clip, image, ids, start_layer, text_start_layer):
    """The pair's logit, its image map (4, 4) and its text row (L,), per pair."""
    image_embedding, image_kept, pooled = siglip_trunk_forward(clip.visual.trunk, image)
    text_embedding, text_kept = _text_forward(clip.text, ids)
    logit = (clip.logit_scale.exp() * F.cosine_similarity(image_embedding, text_embedding)[0]
             + clip.logit_bias.reshape(()))
    gradients = torch.autograd.grad(logit, [*image_kept, pooled, *text_kept])
    image_grads, pool_grad = gradients[:len(image_kept)], gradients[len(image_kept)]
    text_grads = gradients[len(image_kept) + 1:]

    def rollout(kept, grads, start):
        R = torch.eye(kept[0].shape[-1], dtype=kept[0].dtype)
        for i, (attention, gradient) in enumerate(zip(kept, grads)):
            if i >= start % len(kept):
                R = R + _abar(attention, gradient) @ R
        return R

    image_row = _abar(pooled, pool_grad)[0] @ rollout(image_kept, image_grads, start_layer)
    text_row = rollout(text_kept, text_grads, text_start_layer)[-1]
    return logit, image_row.reshape(4, 4), text_row


@pytest.mark.parametrize(("start_layer", "text_start_layer"), [(-1, -1), (0, 0), (1, 0)])
def test_siglip_pairs_equal_the_reference_loop(siglip, start_layer, text_start_layer):
    clip, model = siglip
    images = _images()
    out = image_text_relevance(model, images, TEXTS, start_layer=start_layer,
                               text_start_layer=text_start_layer)
    assert out.sigmoid and out.image.shape == (2, 3, 4, 4)
    with torch.no_grad():  # the explained scores are OpenCLIP's own sigmoid logits
        torch.testing.assert_close(out.logits, clip.get_logits(images, out.tokens.ids)[0])
    torch.testing.assert_close(out.probabilities(), out.logits.float().sigmoid())
    assert out.tokens.words == (("a", "red", "hat"), ("a", "dog", "on", "the", "grass"),
                                ("tree",))
    assert out.tokens.pooled.tolist() == [15, 15, 15]  # SigLIP pools the last position
    for b in range(2):
        for t in range(len(TEXTS)):
            logit, image_map, text_row = _reference(clip, images[b:b + 1],
                                                    out.tokens.ids[t:t + 1], start_layer,
                                                    text_start_layer)
            torch.testing.assert_close(out.logits[b, t], logit)
            torch.testing.assert_close(out.image[b, t], image_map, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(out.text_rows[b, t], text_row, rtol=1e-9, atol=1e-12)
            words = len(out.tokens.words[t])
            # the words are the first tokens; the end token and the padding are left out
            torch.testing.assert_close(out.text[t][b], text_row[:words])
    alone = image_text_relevance(model, images[1:], [TEXTS[2]], start_layer=start_layer,
                                 text_start_layer=text_start_layer)
    torch.testing.assert_close(alone.image[0, 0], out.image[1, 2])
    torch.testing.assert_close(alone.text[0][0], out.text[2][1])


def test_explain_texts_shows_each_pairs_sigmoid(siglip, tmp_path):
    from robustft.evaluation.explain.texts import explain_texts

    _, model = siglip
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255)
                    .byte().numpy()).save(folder / "noise.png")
    model.model.float()
    try:
        result = explain_texts({"siglip": model}, collect_images(str(folder)),
                               ["a red hat", "a dog"], out_dir=tmp_path / "run", progress=False)
    finally:
        model.model.double()
    rows = list(csv.DictReader((tmp_path / "run" / "texts.csv").open()))
    assert [r["text"] for r in rows] == ["a red hat", "a dog"]
    for row in rows:  # each pair's own sigmoid, not a softmax over the prompts
        assert float(row["probability"]) == pytest.approx(
            torch.tensor(float(row["logit"])).sigmoid().item(), abs=1e-6)
    assert (tmp_path / "run" / "maps" / "noise" / "siglip__texts.npy").is_file()
    assert "sigmoid" in result.index.read_text()
