"""The zero-shot head on a timm tower: a head file written from an OpenCLIP model's text
tower scores a timm ViT's outputs by cosine similarity; class names resolve from lists,
files and folders; bad input is one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from safetensors.torch import load_file
from tiny_models import tiny_clip, tiny_clip_tokenizer

from robustft.backbones import ModelSpec, backbone_of, create_model
from robustft.backbones.open_clip import zero_shot_classifier
from robustft.backbones.zero_shot import (
    ZeroShotClassifier,
    resolve_class_names,
    save_zero_shot_head,
)
from robustft.relevance import relevance_map
from robustft.training.run import model_spec

TIMM_TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture
def head_file(tmp_path):
    head = zero_shot_classifier(tiny_clip(), ["cat", "dog", "cow"], ["a {}"],
                                tokenizer=tiny_clip_tokenizer())
    return save_zero_shot_head(head, tmp_path / "head.safetensors")


def test_timm_tower_with_a_head_file_scores_cosine_similarities(head_file) -> None:
    torch.manual_seed(3)
    # a timm CLIP ViT keeps its projection head: 16 outputs = the text embedding width
    spec = ModelSpec(name="vit_tiny_patch16_224", pretrained=False, num_classes=16,
                     kwargs=TIMM_TINY, zero_shot={"embeddings_file": str(head_file)})
    model = spec.build().eval()
    torch.manual_seed(3)
    tower = create_model("vit_tiny_patch16_224", num_classes=16, **TIMM_TINY).eval()
    saved = load_file(str(head_file))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = saved["logit_scale"].exp() * F.normalize(tower(images), dim=-1) \
            @ saved["class_embeddings"].T
        torch.testing.assert_close(model(images), expected)
    assert isinstance(model, ZeroShotClassifier) and model.class_names == ("cat", "dog", "cow")
    assert backbone_of(model).num_classes == 3
    assert backbone_of(model).preprocessing()["input_size"] == (3, 32, 32)
    out = relevance_map(model, images)
    assert out.relevance.shape == (2, 4, 4) and torch.equal(out.logits.argmax(1), out.target)


def test_head_file_from_the_command_line(head_file, tmp_path) -> None:
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            "model.name=vit_tiny_patch16_224", "model.pretrained=false", "model.num_classes=16",
            *[f"++model.kwargs.{k}={v}" for k, v in TIMM_TINY.items()],
            f"model.zero_shot.embeddings_file={head_file}"])
    assert isinstance(model_spec(cfg.model).build(), ZeroShotClassifier)
    with initialize_config_module("robustft.configs", version_base="1.3"):
        plain = compose("train", overrides=["model.name=vit_tiny_patch16_224",
                                            "model.pretrained=false"])
    assert not isinstance(model_spec(plain.model).build(), ZeroShotClassifier)


def test_pooled_features_outside_the_text_space_are_one_line(head_file) -> None:
    spec = ModelSpec(name="vit_tiny_patch16_224", pretrained=False, num_classes=0,
                     kwargs=TIMM_TINY, zero_shot={"embeddings_file": str(head_file)})
    with pytest.raises(ValueError, match=r"model.zero_shot: the class embeddings are 16-wide but "
                                         r"the image tower outputs 32 features") as error:
        spec.build()
    assert "\n" not in str(error.value)


def test_timm_class_names_without_a_head_file_are_one_line() -> None:
    spec = ModelSpec(name="vit_tiny_patch16_224", pretrained=False, kwargs=TIMM_TINY,
                     zero_shot={"class_names": ["cat"]})
    with pytest.raises(ValueError, match=r"model.zero_shot.class_names is set, but a timm model "
                                         r"takes a zero-shot head only from"):
        spec.build()


def test_class_names_from_a_list_a_file_and_a_folder(tmp_path) -> None:
    assert resolve_class_names(["b", "a"]) == ["b", "a"]
    names = tmp_path / "classes.txt"
    names.write_text("zebra\n\nant\n")
    assert resolve_class_names(str(names)) == ["zebra", "ant"]
    folder = tmp_path / "images"
    for name in ("owl", "cat", ".hidden"):
        (folder / name).mkdir(parents=True)
    assert resolve_class_names(str(folder)) == ["cat", "owl"]
    wnids = tmp_path / "wnids"
    for wnid in ("n01443537", "n01440764"):  # goldfish (index 1), tench (index 0)
        (wnids / wnid).mkdir(parents=True)
    assert resolve_class_names(str(wnids)) == ["tench", "goldfish"]
    assert len(resolve_class_names("imagenet")) == 1000
    with pytest.raises(FileNotFoundError, match=r"model.zero_shot.class_names: 'imagenett' is "
                                                r"neither 'imagenet' nor"):
        resolve_class_names("imagenett")


def test_repeated_class_names_are_refused_naming_the_key_and_the_repeats(tmp_path) -> None:
    # what a repeat costs: case and spaces do not reach the text tower, so "Cat " and "cat"
    # get the same head row, and the two classes can never be told apart
    tokenizer, clip = tiny_clip_tokenizer(), tiny_clip()
    lower = zero_shot_classifier(clip, ["cat", "dog"], ["a photo of a {}"], tokenizer=tokenizer)
    upper = zero_shot_classifier(clip, ["Cat  ", "dog"], ["a photo of a {}"], tokenizer=tokenizer)
    torch.testing.assert_close(lower.class_embeddings, upper.class_embeddings, rtol=0, atol=0)
    with pytest.raises(ValueError) as caught:
        zero_shot_classifier(clip, ["cat", "dog", "Cat "], ["a {}"], tokenizer=tokenizer)
    assert str(caught.value) == (
        "model.zero_shot.class_names: 1 class name(s) repeated: 'cat' and 'Cat ' (positions 0, 2); "
        "each class needs a name of its own (names compare ignoring case and spaces)")
    names = tmp_path / "classes.txt"
    names.write_text("zebra\nant\n\nzebra\nowl\nANT\n")
    with pytest.raises(ValueError, match=rf"^model.zero_shot.class_names: {names}: 2 class "
                                         r"name\(s\) repeated: 'zebra' \(lines 1, 4\); 'ant' and "
                                         r"'ANT' \(lines 2, 6\); each class"):
        resolve_class_names(str(names))
    wnids = tmp_path / "wnids"
    for wnid in ("n03773504", "n04008634", "n01440764"):  # missile, projectile (missile), tench
        (wnids / wnid).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"^model.zero_shot.class_names: the ImageNet names "
                                         r"OpenCLIP gives the wnid folders of .*wnids \(give a "
                                         r"file of names instead\): 1 class name\(s\) repeated: "
                                         r"'missile' \(positions 1, 2\)"):
        resolve_class_names(str(wnids))


def test_openclips_own_imagenet_names_are_kept_with_one_warning(caplog) -> None:
    with caplog.at_level("WARNING", logger="robustft.backbones.zero_shot"):
        names = resolve_class_names("imagenet")
    assert len(names) == 1000 and names[657] == names[744] == "missile"
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "model.zero_shot.class_names=imagenet (OpenCLIP's names): 2 class name(s) repeated: "
        "'missile' (positions 657, 744); 'sunglasses' (positions 836, 837)")
