"""Image-text relevance of CLIP (robustft.relevance.image_text) against a reference written
here: a float64 forward of both towers from the model's own weights (checked against
OpenCLIP's logits), each block's attention kept, and the loop of the public CLIP notebook
per (image, text) pair (per block: the gradient of the pair's logit w.r.t. the attention,
relu(grad * A) head mean, R = R + cam @ R from the start layer; the image CLS row over the
patches, the text end-of-text row over the words)."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from robustft.backbones.open_clip.text import OpenClipImageText
from robustft.relevance.image_text import block_slice, image_text_relevance

TEXTS = ["a red hat", "a dog on the grass", "tree"]
KWARGS = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}


def _clip(seed: int = 0, **extra) -> open_clip.CLIP:
    torch.manual_seed(seed)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **KWARGS, **extra)
    with torch.no_grad():  # OpenCLIP's init leaves these small: make attention vary
        clip.visual.class_embedding.normal_(0, 0.5)
        clip.visual.positional_embedding.normal_(0, 0.5)
        clip.positional_embedding.normal_(0, 0.5)
        clip.token_embedding.weight.normal_(0, 0.5)
    return clip.double().eval()


def _model(clip) -> OpenClipImageText:
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=clip.context_length)
    return OpenClipImageText(clip, tokenizer)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)


def _attend(block, x: torch.Tensor, mask: torch.Tensor | None, kept: list) -> torch.Tensor:
    """One block written out; the attention probabilities kept with their gradient."""
    attn = block.attn
    heads = attn.num_heads
    batch, tokens, width = x.shape
    h = block.ln_1(x)
    q, k, v = (h @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, -1).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / (width // heads) ** 0.5
    if mask is not None:
        scores = scores + mask
    probabilities = scores.softmax(dim=-1)
    probabilities.retain_grad()
    kept.append(probabilities)
    out = (probabilities @ v).transpose(1, 2).reshape(batch, tokens, width)
    x = x + attn.out_proj(out)
    return x + block.mlp(block.ln_2(x))


def _reference_logit(clip, image, ids):
    """The logit of one image (1, 3, H, W) and one text (1, L), every attention kept."""
    visual, image_kept, text_kept = clip.visual, [], []
    x = visual.conv1(image).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], dim=1)
    x = visual.ln_pre(x + visual.positional_embedding)
    for block in visual.transformer.resblocks:
        x = _attend(block, x, None, image_kept)
    image_embedding = visual.ln_post(x)[:, 0] @ visual.proj
    t = clip.token_embedding(ids) + clip.positional_embedding
    causal = torch.full((ids.shape[1], ids.shape[1]), float("-inf"), dtype=t.dtype).triu(1)
    for block in clip.transformer.resblocks:
        t = _attend(block, t, causal, text_kept)
    eot = int(ids.argmax())
    text_embedding = clip.ln_final(t)[:, eot] @ clip.text_projection
    cosine = F.cosine_similarity(image_embedding, text_embedding)[0]
    logit = clip.logit_scale.exp() * cosine
    if clip.logit_bias is not None:
        logit = logit + clip.logit_bias
    return logit, image_kept, text_kept, eot


def _notebook_rollout(logit, kept, start_layer):
    """The public notebook's loop for one pair (batch 1)."""
    tokens = kept[0].shape[-1]
    R = torch.eye(tokens, dtype=kept[0].dtype)
    first = start_layer % len(kept)
    for i, probabilities in enumerate(kept):
        if i < first:
            continue
        grad = torch.autograd.grad(logit, [probabilities], retain_graph=True)[0].detach()
        cam = (grad * probabilities.detach())[0].clamp(min=0).mean(dim=0)
        R = R + cam @ R
    return R


@pytest.mark.parametrize(("start_layer", "text_start_layer"),
                         [(-1, -1), (0, 0), (1, -2), (-3, 2)])
def test_batched_pairs_equal_the_notebook_loop_per_pair(start_layer, text_start_layer):
    clip = _clip(init_logit_bias=-2.5)  # a SigLIP-style bias on the logit
    model = _model(clip)
    images = _images()
    out = image_text_relevance(model, images, TEXTS, start_layer=start_layer,
                               text_start_layer=text_start_layer)
    assert out.image.shape == (2, 3, 4, 4) and out.logits.shape == (2, 3)
    with torch.no_grad():  # the explained scores are OpenCLIP's own logits
        torch.testing.assert_close(out.logits, clip.get_logits(images, out.tokens.ids)[0])
    for b in range(2):
        for t in range(len(TEXTS)):
            logit, image_kept, text_kept, eot = _reference_logit(
                clip, images[b:b + 1], out.tokens.ids[t:t + 1])
            torch.testing.assert_close(out.logits[b, t], logit)
            R = _notebook_rollout(logit, image_kept, start_layer)
            torch.testing.assert_close(out.image[b, t].flatten(), R[0, 1:])
            R_text = _notebook_rollout(logit, text_kept, text_start_layer)
            torch.testing.assert_close(out.text[t][b], R_text[eot, 1:eot])
            assert len(out.tokens.words[t]) == eot - 1
    # one pair alone gives what the batch gave it
    alone = image_text_relevance(model, images[1:], [TEXTS[2]], start_layer=start_layer,
                                 text_start_layer=text_start_layer)
    torch.testing.assert_close(alone.image[0, 0], out.image[1, 2])
    torch.testing.assert_close(alone.text[0][0], out.text[2][1])


def test_tokens_are_the_words_and_padding_gets_nothing():
    clip = _clip()
    model = _model(clip)
    images = _images()
    out = image_text_relevance(model, images, TEXTS, text_start_layer=0)
    assert out.tokens.words == (("a", "red", "hat"), ("a", "dog", "on", "the", "grass"), ("tree",))
    assert out.tokens.pooled.tolist() == [4, 6, 2]  # the end-of-text token after the words
    for t, words in enumerate(out.tokens.words):
        assert out.text[t].shape == (2, len(words))
        padding = out.text_rows[:, t, len(words) + 2:]
        assert padding.numel() > 0 and torch.count_nonzero(padding) == 0
    # a changed word changes its own relevance and its pair's image map; the other texts'
    # relevance and maps stay exactly the same, and the padding still gets nothing
    changed = image_text_relevance(model, images, ["a blue hat", *TEXTS[1:]], text_start_layer=0)
    assert changed.tokens.words[0] == ("a", "blue", "hat")
    assert not torch.allclose(changed.text[0][:, 1], out.text[0][:, 1])
    assert not torch.allclose(changed.image[:, 0], out.image[:, 0])
    torch.testing.assert_close(changed.image[:, 1:], out.image[:, 1:])
    torch.testing.assert_close(changed.text[1], out.text[1])
    assert torch.count_nonzero(changed.text_rows[:, 0, 5:]) == 0


def test_last_block_relevance_scales_with_the_logit_scale_and_ignores_the_bias():
    """Hand-derived: from the last block alone the row is e + e cam, cam = mean relu(G * A),
    and G = ds/dA is linear in exp(logit_scale) and blind to the bias: scaling exp(scale)
    by 2 doubles every word's and patch's relevance; a bias shifts only the logits."""
    clip = _clip()
    images = _images()
    out = image_text_relevance(_model(clip), images, TEXTS)
    with torch.no_grad():
        clip.logit_scale += torch.log(torch.tensor(2.0, dtype=torch.float64))
    clip.logit_bias = torch.nn.Parameter(torch.tensor(-7.0, dtype=torch.float64))
    doubled = image_text_relevance(_model(clip), images, TEXTS)
    torch.testing.assert_close(doubled.logits, 2 * out.logits - 7.0)
    torch.testing.assert_close(doubled.image, 2 * out.image)
    for t in range(len(TEXTS)):
        torch.testing.assert_close(doubled.text[t], 2 * out.text[t])


def test_a_loss_on_the_maps_reaches_both_towers():
    clip = _clip().float().train()
    clip.visual.patch_dropout = torch.nn.Identity()
    out = image_text_relevance(_model(clip), _images().float(), TEXTS[:2], start_layer=0,
                               text_start_layer=0)
    (out.image.square().sum() + sum(words.square().sum() for words in out.text)).backward()
    for tower in (clip.visual.transformer.resblocks[0], clip.transformer.resblocks[0]):
        gradient = tower.attn.in_proj_weight.grad
        assert gradient is not None and gradient.abs().sum() > 0


def test_frozen_towers_are_explained_and_bad_input_is_one_line():
    clip = _clip()
    clip.requires_grad_(False)
    out = image_text_relevance(_model(clip), _images(1), ["a cat"])
    assert out.image.abs().sum() > 0 and out.text[0].abs().sum() > 0
    with pytest.raises(ValueError, match=r"texts\[1\]: ' a cat' is given twice"):
        image_text_relevance(_model(clip), _images(1), ["a cat", " a cat"])
    with pytest.raises(ValueError, match=r"texts\[0\]: empty prompt"):
        image_text_relevance(_model(clip), _images(1), ["  "])
    with pytest.raises(ValueError, match=r"text_start_layer must be a block index in \[-3, 2\]"):
        image_text_relevance(_model(clip), _images(1), ["a cat"], text_start_layer=3)
    assert block_slice(-1, 12) == slice(11, None) and block_slice(0, 12) == slice(0, None)


def test_prompt_folders_make_the_zero_shot_score_each_images_similarity_to_its_prompt(tmp_path):
    """Free prompts per image through today's training path: class folders named by the
    prompts and the template "{}" build a zero-shot head whose logit for an image's label
    is that image's similarity logit with its own prompt, and whose grad_rollout map (what
    fine-tuning trains) is the full-rollout image map of this module."""
    from robustft.backbones.open_clip import zero_shot_classifier
    from robustft.relevance import relevance_map

    prompts = ["a dog on the grass", "a red hat"]
    for prompt in prompts:
        (tmp_path / "images" / prompt).mkdir(parents=True)
    clip = _clip()
    model = _model(clip)
    head = zero_shot_classifier(clip, tmp_path / "images", ["{}"], tokenizer=model.tokenizer)
    assert head.class_names == tuple(prompts)  # label order: the sorted folders
    images, labels = _images(), torch.tensor([1, 0])
    classified = relevance_map(head, images, labels)
    out = image_text_relevance(model, images, prompts, start_layer=0)
    pairs = torch.arange(2)
    torch.testing.assert_close(classified.logits[pairs, labels], out.logits[pairs, labels])
    torch.testing.assert_close(classified.relevance, out.image[pairs, labels])
