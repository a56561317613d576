"""Models of robustft-eval from config entries: a checkpoint or weights file that does not
fit the entry's architecture is one line naming models.<label>, the file, the model and
the first differing tensor with both shapes."""

from __future__ import annotations

import pytest
import torch
from fixtures.broken_files import truncate

from robustft.backbones import create_model
from robustft.evaluation.model_loading import build_model_from_entry

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def _checkpoint(path, **kwargs):
    model = create_model("vit_tiny_patch16_224", **kwargs)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_config": {"name": "vit_tiny_patch16_224",
                                                      "kwargs": kwargs}}}, path)
    return model


def test_checkpoint_of_another_architecture_is_one_line(tmp_path):
    path = tmp_path / "wide.ckpt"
    wide = _checkpoint(path, **{**TINY, "embed_dim": 64})
    model = create_model("vit_tiny_patch16_224", **TINY)
    differ = [k for k, v in model.state_dict().items() if wide.state_dict()[k].shape != v.shape]
    assert len(differ) > 10
    with pytest.raises(ValueError) as error:
        build_model_from_entry("ft", {"name": "vit_tiny_patch16_224", "checkpoint": str(path),
                                      "kwargs": TINY})
    message = str(error.value)
    assert message.startswith(f"models.ft.checkpoint: {path} does not fit vit_tiny_patch16_224")
    assert (f": {len(differ)} tensors differ, e.g. {differ[0]}: checkpoint "
            f"{tuple(wide.state_dict()[differ[0]].shape)} vs model "
            f"{tuple(model.state_dict()[differ[0]].shape)}") in message
    assert "\n" not in message


def test_checkpoint_that_fits_loads_exactly(tmp_path):
    path = tmp_path / "fits.ckpt"
    saved = _checkpoint(path, **TINY)
    loaded = build_model_from_entry("ft", {"checkpoint": str(path)})
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_truncated_weights_file_names_the_label(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(create_model("vit_tiny_patch16_224", **TINY).state_dict(), path)
    truncate(path)
    with pytest.raises(ValueError, match=rf"^models\.baseline\.weights_file: {path} is not a "
                                         r"readable PyTorch \(torch\.save\) file \(truncated\?\)"):
        build_model_from_entry("baseline", {"name": "vit_tiny_patch16_224",
                                            "weights_file": str(path), "kwargs": TINY})


def test_checkpoint_of_a_hugging_face_model_rebuilds_from_its_saved_spec(tmp_path):
    from fixtures.tiny_hf import save_tiny_hf

    saved = save_tiny_hf(tmp_path / "hf", "vit")
    finetuned = {f"model.{k}": v * 2 for k, v in saved.state_dict().items()}
    spec = {"name": "", "family": "hf", "hf_id": None, "hf_path": str(tmp_path / "hf"),
            "pretrained": True, "weights_file": None, "checkpoint": None, "num_classes": None,
            "kwargs": {}}
    torch.save({"state_dict": finetuned, "hyper_parameters": {"model_config": spec}},
               tmp_path / "ft.ckpt")
    loaded = build_model_from_entry("ft", {"checkpoint": str(tmp_path / "ft.ckpt")})
    assert type(loaded) is type(saved)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, finetuned[f"model.{key}"]), key
    direct = build_model_from_entry("hf", {"family": "hf", "hf_path": str(tmp_path / "hf")})
    assert torch.equal(direct.classifier.weight, saved.classifier.weight)
