"""robustft-explain with texts=: a tiny OpenCLIP weights file x a miniature folder -> the
PNG, the raw maps (.npy, equal to the library's), texts.csv, tokens.csv and index.md; a
duplicate or empty prompt, and a model without a text tower, are one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from hydra import compose, initialize_config_module
from PIL import Image

from robustft.backbones.open_clip.text import OpenClipImageText
from robustft.cli.explain import run_explain
from robustft.evaluation.runner import model_eval_transform
from robustft.relevance.image_text import image_text_relevance

KWARGS = {"embed_dim": 16,
          "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
                         "head_width": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 2}}
KWARGS_OVERRIDE = ("{embed_dim:16,vision_cfg:{image_size:32,patch_size:8,width:32,layers:2,"
                   "head_width:16},text_cfg:{context_length:16,vocab_size:49408,width:32,"
                   "heads:2,layers:2}}")
TEXTS = ["a red hat", "a dog"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain_texts")
    pairs = make_generic_layout(root / "pairs", num_classes=2, per_class=1, size=(32, 32))
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **KWARGS)
    with torch.no_grad():
        clip.visual.class_embedding.normal_(0, 0.5)
        clip.visual.positional_embedding.normal_(0, 0.5)
    weights = root / "clip.pt"
    torch.save(clip.state_dict(), weights)
    return {"pairs": pairs, "weights": weights}


def _cfg(workspace, out: Path, *overrides: str):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose("explain", overrides=[
            f"image={workspace['pairs']}", f"output_dir={out}", "device=cpu", "progress=false",
            "model.family=open_clip", "model.name=ViT-B-16", "model.pretrained=false",
            f"model.weights_file={workspace['weights']}", f"model.kwargs={KWARGS_OVERRIDE}",
            *overrides])


def test_texts_write_the_grid_maps_and_token_scores(workspace, tmp_path):
    out = tmp_path / "run"
    result = run_explain(_cfg(workspace, out, "texts=[a red hat,a dog]", "text_start_layer=0"))
    names = ["c0_img0", "c1_img0"]
    assert sorted(p.name for p in result.pngs) == [f"{n}.png" for n in names]
    for name in names:
        with Image.open(out / f"{name}.png") as png:
            assert png.width >= 3 * 160  # the image and one overlay per prompt
    rows = list(csv.DictReader((out / "texts.csv").open()))
    assert [(r["image"], r["text"]) for r in rows] == [(n, t) for n in names for t in TEXTS]
    for name in names:
        probabilities = [float(r["probability"]) for r in rows if r["image"] == name]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    tokens = list(csv.DictReader((out / "tokens.csv").open()))
    assert [r["token"] for r in tokens if r["image"] == "c0_img0"] == ["a", "red", "hat", "a", "dog"]
    index = (out / "index.md").read_text()
    assert "prompts ['a red hat', 'a dog']" in index and "c1_img0.png" in index
    # the saved maps and scores are the library's on the model's own view of the image
    clip = open_clip.create_model("ViT-B-16", pretrained=str(workspace["weights"]), **KWARGS)
    model = OpenClipImageText(clip.eval(), open_clip.get_tokenizer("ViT-B-16", context_length=16))
    picture = next((workspace["pairs"] / "images" / "c1").iterdir())
    with Image.open(picture) as image:
        inputs = model_eval_transform(model.image.preprocessing())(image.convert("RGB"))[None]
    expected = image_text_relevance(model, inputs, TEXTS, text_start_layer=0)
    saved = np.load(out / "maps" / "c1_img0" / "ViT-B-16__texts.npy")
    assert saved.shape == (2, 4, 4)
    np.testing.assert_allclose(saved, expected.image[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    saved_words = [float(r["relevance"]) for r in tokens
                   if r["image"] == "c1_img0" and r["text"] == "a red hat"]
    np.testing.assert_allclose(saved_words, expected.text[0][0].detach().numpy(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize(("override", "message"), [
    ("texts=[a dog,a dog]", r"^texts\[1\]: 'a dog' is given twice; give each prompt once$"),
    ("texts=[a dog,'']", r"^texts\[1\]: empty prompt ''; every prompt needs a word$"),
    ("text_start_layer=5", r"^text_start_layer must be a block index in \[-2, 1\]"),
])
def test_bad_prompts_are_one_line(workspace, tmp_path, override, message):
    overrides = [override] if override.startswith("texts") else [override, "texts=[a dog]"]
    with pytest.raises(ValueError, match=message):
        run_explain(_cfg(workspace, tmp_path / "run", *overrides))


def test_a_model_without_a_text_tower_is_one_line(workspace, tmp_path):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("explain", overrides=[
            f"image={workspace['pairs']}", f"output_dir={tmp_path}", "device=cpu",
            "progress=false", "model.name=vit_tiny_patch16_224", "model.pretrained=false",
            "texts=[a dog]"])
    with pytest.raises(ValueError, match=r"^model\.family: texts= needs a model with a text "
                                         r"tower; the 'timm' family has none here"):
        run_explain(cfg)


def test_a_checkpoint_puts_its_fine_tuned_image_tower_in_the_clip_model(tmp_path):
    from robustft.backbones import ModelSpec
    from robustft.backbones.image_text import image_text_model

    torch.manual_seed(3)
    spec = ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False, kwargs=KWARGS,
                     zero_shot={"class_names": ["cat", "dog"], "templates": ["a {}"]})
    finetuned = spec.build()
    checkpoint = tmp_path / "clip.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in finetuned.state_dict().items()},
                "hyper_parameters": {"model_config": spec.to_dict()}}, checkpoint)
    torch.manual_seed(4)  # another random base: only the image tower comes from the checkpoint
    model = image_text_model(ModelSpec(name="ViT-B-16", family="open_clip", pretrained=False,
                                       kwargs=KWARGS, checkpoint=str(checkpoint)))
    for name, tensor in finetuned.visual.state_dict().items():
        torch.testing.assert_close(model.model.visual.state_dict()[name], tensor)
