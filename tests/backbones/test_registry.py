"""The family registry: each family owns its spec fields (another family's spec that sets
one is refused in one line, a node holding only defaults is not "set"), an unknown family
names the key, a family's adapters load only once its library is imported (and registering
the families imports neither OpenCLIP nor transformers), and what the rest of robustft reads
from a family (the weights' name for the mask settings, a checkpoint-only entry's model)
comes from the record."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch
from fixtures.hand_vit import HandViT
from tiny_models import tiny_vit

from robustft.backbones import (
    FAMILIES,
    Family,
    ModelSpec,
    architecture_fields,
    backbone_of,
    names_a_model,
    register_family,
)
from robustft.backbones.heads import ZeroShotSpec
from robustft.backbones.timm import ImageClassifier
from robustft.masks.settings import model_identity


def test_registering_the_families_imports_neither_open_clip_nor_transformers():
    # (torchmetrics, which evaluation uses, imports transformers itself)
    code = ("import sys, robustft.backbones, robustft.relevance, robustft.masks.tokencut\n"
            "print(sorted(n for n in ('open_clip', 'transformers') if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("spec, message", [
    (ModelSpec(family="open_clip", name="ViT-B-16", hf_id="google/vit-base-patch16-224"),
     r"^model\.hf_id is for family=hf; this spec's family is open_clip \(set model\.family=hf\)$"),
    (ModelSpec(family="hf", hf_path="/models/vit", tag="openai"),
     r"^model\.tag is for family=open_clip; this spec's family is hf"),
    (ModelSpec(family="hf", hf_path="/models/vit", zero_shot={"embeddings_file": "head.st"}),
     r"^model\.zero_shot is for family=open_clip or family=timm; this spec's family is hf"),
])
def test_a_field_of_another_family_is_one_line_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        spec.build()


def test_a_zero_shot_node_of_defaults_is_not_set(tmp_path):
    # the Hydra schema always holds one; for family=hf the build goes on to its source
    spec = ModelSpec(family="hf", hf_path=str(tmp_path / "missing"), zero_shot=ZeroShotSpec())
    with pytest.raises(FileNotFoundError, match=r"^model\.hf_path: .*missing is not a folder"):
        spec.build()


def test_an_unknown_family_names_the_key_and_the_families():
    with pytest.raises(ValueError, match=r"^models\.a\.family: unknown model family 'nope'; "
                                         r"known: \['hf', 'open_clip', 'timm'\]$"):
        ModelSpec(family="nope", name="x").build(key="models.a")


def test_a_family_that_needs_a_name_refuses_a_mapping_without_one():
    with pytest.raises(KeyError, match=r"models\.a\.name: a timm model name is required"):
        ModelSpec.from_mapping({"pretrained": False}, key="models.a")
    # hf names its model by hf_path / hf_id (its source_fields), so no name is needed
    assert ModelSpec.from_mapping({"family": "hf", "hf_path": "/m"}).hf_path == "/m"
    assert names_a_model({"family": "hf", "hf_path": "/m"})
    assert not names_a_model({"family": "timm", "hf_path": "/m"})
    assert not names_a_model({"family": "hf", "name": ""})


def test_architecture_fields_are_all_but_the_weights_source():
    assert architecture_fields() == ("name", "family", "num_classes", "kwargs", "tag",
                                     "zero_shot", "hf_id", "hf_path", "probe_head")


def test_adapters_load_once_the_family_library_is_imported():
    class Unseen(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3))

    class UnseenBackbone(ImageClassifier):
        pass

    library = "robustft_test_library_unseen"
    register_family(Family(name="unseen_toy", build=lambda spec, key: Unseen(),
                           adapters=lambda: [(Unseen, UnseenBackbone)], library=library))
    try:
        assert type(backbone_of(Unseen())) is ImageClassifier  # the nn.Module fallback
        sys.modules[library] = types.ModuleType(library)
        assert type(backbone_of(Unseen())) is UnseenBackbone
    finally:
        FAMILIES.pop("unseen_toy")
        sys.modules.pop(library, None)


def test_register_family_short_form_builds():
    register_family("short_toy", lambda spec, key: HandViT(num_classes=spec.num_classes))
    try:
        model = ModelSpec(family="short_toy", name="hand", num_classes=3).build()
        assert isinstance(model, HandViT) and model.num_classes == 3
    finally:
        FAMILIES.pop("short_toy")


def test_the_mask_settings_name_a_model_as_its_family_does():
    assert model_identity(tiny_vit("plain")) == "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert model_identity(tiny_vit("distilled")).startswith("deit_tiny_distilled_patch16_224.")
    assert model_identity(HandViT()) == "HandViT"  # a family that knows no weights' name
