"""No robustft loader runs code from a checkpoint: a real robustft-train checkpoint with a
planted pickle payload is refused with one line naming the file by every loader (train
resume, robustft-eval, the demo), without the payload running, even when the environment
asks torch for unsafe loads; a truncated checkpoint is one line naming the file too; a clean
checkpoint is plain data and loads. robustft-masks reads no checkpoint (only timm weights
files, weights-only): a payload there does not run either."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from fixtures.miniature import make_wnid_folders
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import robustft.evaluation.run as evaluation_run
import robustft.training.run as run_module
from robustft.backbones import create_model
from robustft.checkpoints import (
    load_checkpoint,
    load_finetuned_weights,
    plain_data,
)
from robustft.demo.run import evaluate_before_after
from robustft.evaluation.model_loading import build_model_from_entry
from robustft.labels import imagenet_synsets
from robustft.masks.run import run_masks
from robustft.training.run import train

TINY_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
TINY_MODEL = ["model.name=vit_tiny_patch16_224", "model.pretrained=false",
              "model.weights_file=null", "model.num_classes=4",
              *(f"++model.kwargs.{key}={value}" for key, value in TINY_KWARGS.items())]


class CodeRunner:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _compose(config: str, overrides: list[str]):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose(config, overrides=overrides)


def _train_config(root: Path, *overrides: str):
    pairs = make_generic_layout(root / "pairs", num_classes=4, per_class=3, size=(36, 36))
    return _compose("train", [f"data.root={pairs}", "data.num_workers=0",
                              f"paths.output_dir={root / 'run'}", "trainer=cpu",
                              "validate_best=false", "loss.classification=kl_to_teacher",
                              *overrides, *TINY_MODEL])


@pytest.fixture(scope="module")
def clean_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of a real one-epoch robustft-train run of a tiny ViT."""
    root = tmp_path_factory.mktemp("clean")
    result = train(_train_config(root, "trainer.max_epochs=1"))
    return result.last_checkpoint


@pytest.fixture(params=["hyper_parameters", "callbacks"])
def planted(request, clean_checkpoint, tmp_path) -> tuple[Path, Path]:
    """(checkpoint with a payload in one of its entries, the marker the payload creates)."""
    marker = tmp_path / "payload_ran"
    checkpoint = load_checkpoint(clean_checkpoint)
    if request.param == "hyper_parameters":
        checkpoint["hyper_parameters"]["model_config"]["kwargs"]["depth"] = CodeRunner(marker)
    else:
        checkpoint["callbacks"]["planted"] = {"state": CodeRunner(marker)}
    path = tmp_path / f"planted_in_{request.param}.ckpt"
    torch.save(checkpoint, path)
    return path, marker


@pytest.fixture
def truncated(clean_checkpoint, tmp_path) -> Path:
    data = clean_checkpoint.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(autouse=True)
def unsafe_torch_default(monkeypatch):
    """Users set this to load old pickles; with it, torch.load(weights_only=None) unpickles
    anything. No robustft loader may depend on torch's default."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _one_line_naming(error: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def _resume(root: Path, checkpoint: Path) -> None:
    train(_train_config(root, "trainer.max_epochs=2", f"ckpt_path={checkpoint}"))


def _evaluate(root: Path, checkpoint: Path) -> None:
    # a real val folder: the datasets are checked before any model is built
    make_wnid_folders(root / "eval_data" / "imagenet" / "val", imagenet_synsets()[:2], per_class=1)
    cfg = _compose("eval", [f"data_root={root / 'eval_data'}", "only=imagenet-val",
                            f"output_dir={root / 'eval'}",
                            "models.baseline.name=vit_tiny_patch16_224",
                            "models.baseline.pretrained=false",
                            f"models.baseline.checkpoint={checkpoint}", "device=cpu",
                            "num_workers=0", "progress=false"])
    evaluation_run.run_evaluation(cfg)


def _demo(root: Path, checkpoint: Path) -> None:
    cfg = _compose("demo", [f"paths.root_dir={root}", f"paths.output_dir={root / 'demo'}",
                            *TINY_MODEL])
    evaluate_before_after(cfg, checkpoint, root / "demo")


LOADERS = {"train_resume": _resume, "eval": _evaluate, "demo": _demo}


def test_the_payload_is_live(tmp_path):
    # Independent check that CodeRunner is a real payload: a plain unpickle runs it.
    marker = tmp_path / "payload_ran"
    pickle.loads(pickle.dumps(CodeRunner(marker)))
    assert marker.is_file()


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_planted_payload_is_refused_and_never_runs(loader, planted, tmp_path):
    path, marker = planted
    with pytest.raises(ValueError) as error:
        LOADERS[loader](tmp_path, path)
    assert not marker.exists()
    _one_line_naming(error, path, "refusing", "builtins.exec")


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_truncated_checkpoint_is_one_line_naming_the_file(loader, truncated, tmp_path):
    with pytest.raises(ValueError) as error:
        LOADERS[loader](tmp_path, truncated)
    _one_line_naming(error, truncated, "truncated or corrupt")


def test_resume_loads_weights_only_even_without_robustft_s_check(planted, tmp_path,
                                                                 monkeypatch):
    # Lightning's own load of ckpt_path must be weights-only too, not torch's default.
    path, marker = planted
    monkeypatch.setattr(run_module, "load_checkpoint", lambda *args, **kwargs: None)
    with pytest.raises(pickle.UnpicklingError):
        _resume(tmp_path, path)
    assert not marker.exists()


def test_error_names_the_config_key(planted):
    path, _marker = planted
    with pytest.raises(ValueError, match=r"^models\.finetuned\.checkpoint: refusing"):
        build_model_from_entry("finetuned", {"checkpoint": str(path)})


def test_robustft_checkpoint_is_plain_data(clean_checkpoint):
    # Nothing outside torch's weights-only defaults: no allow-list is needed today.
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(clean_checkpoint)) == []
    checkpoint = load_checkpoint(clean_checkpoint)
    assert checkpoint["hyper_parameters"]["model_config"] == {
        "name": "vit_tiny_patch16_224", "family": "timm", "pretrained": False, "weights_file": None,
        "checkpoint": None,
        "num_classes": 4, "kwargs": TINY_KWARGS, "tag": None,
        # the config schema's zero-shot node, inactive for timm without an embeddings file
        "zero_shot": {"class_names": None, "templates": "openai_imagenet",
                      "embeddings_file": None},
        "hf_id": None, "hf_path": None, "probe_head": None}
    assert any(key.startswith("teacher.") for key in checkpoint["state_dict"])


def test_clean_checkpoint_loads_for_eval_and_demo(clean_checkpoint):
    saved = load_checkpoint(clean_checkpoint)["state_dict"]
    evaluated = build_model_from_entry("finetuned", {"checkpoint": str(clean_checkpoint)})
    demo = load_finetuned_weights(create_model("vit_tiny_patch16_224", num_classes=4,
                                               **TINY_KWARGS), clean_checkpoint)
    for model in (evaluated, demo):
        weights = model.state_dict()
        assert weights.keys() == {k[len("model."):] for k in saved if k.startswith("model.")}
        for name, value in weights.items():
            assert torch.equal(value, saved[f"model.{name}"]), name


def test_masks_weights_file_is_loaded_weights_only(tmp_path):
    # robustft-masks reads no checkpoint, only model.weights_file through timm's loader:
    # a payload in a .pth weights file must not run either.
    torch.manual_seed(0)
    weights = create_model("vit_tiny_patch16_224", **TINY_KWARGS).state_dict()
    marker = tmp_path / "payload_ran"
    clean, planted = tmp_path / "clean.pth", tmp_path / "planted.pth"
    torch.save(weights, clean)
    torch.save({**weights, "planted": CodeRunner(marker)}, planted)
    images = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=1)
    kwargs = ",".join(f"{key}:{value}" for key, value in TINY_KWARGS.items())

    def masks_config(weights_file: Path, output_dir: Path):
        return _compose("masks", [f"input_dir={images}", f"output_dir={output_dir}",
                                  "model.name=vit_tiny_patch16_224",
                                  f"model.weights_file={weights_file}",
                                  f"model.kwargs={{{kwargs}}}", "min_foreground_fraction=0",
                                  "device=cpu", "num_workers=0", "progress=false"])

    run_masks(masks_config(clean, tmp_path / "from_clean"))  # the setup itself works
    assert len(list((tmp_path / "from_clean" / "masks").rglob("*.png"))) == 2
    with pytest.raises(Exception, match="builtins.exec"):  # the wording is create_model's
        run_masks(masks_config(planted, tmp_path / "from_planted"))
    assert not marker.exists()
    assert not (tmp_path / "from_planted" / "masks").exists()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^ckpt_path: checkpoint not found: .*nope"):
        load_checkpoint(tmp_path / "nope.ckpt", key="ckpt_path")


def test_plain_data_converts_what_has_a_plain_form():
    config = OmegaConf.create({"kwargs": {"img_size": [32, 48]}, "exclude": ["blocks.*"]})
    converted = plain_data({"path": Path("/w/x.safetensors"), "config": config,
                            "tuple": (1, 2.5), "numpy": torch.tensor(3).numpy()[()]}, "hp")
    assert converted == {"path": "/w/x.safetensors", "tuple": [1, 2.5], "numpy": 3,
                         "config": {"kwargs": {"img_size": [32, 48]}, "exclude": ["blocks.*"]}}
    assert type(converted["numpy"]) is int
    assert type(converted["config"]["kwargs"]) is dict


def test_plain_data_names_a_value_without_plain_form():
    with pytest.raises(TypeError, match=r"^hp\.kwargs\.act_layer is a builtins\.type; "):
        plain_data({"kwargs": {"act_layer": torch.nn.GELU}}, "hp")
