"""Typed configs: a wrong type, an unknown key or a value the method refuses is rejected
when the config is composed (or by check_config, before anything is built), with the key's
full name; every option of every group is typed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import robustft.configs
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from robustft.losses import LossConfig
from robustft.relevance import RelevanceConfig
from robustft.schemas.checks import check_config, typed_group

CONFIG_DIR = Path(robustft.configs.__file__).parent
GROUPS = ("data", "model", "relevance", "loss", "optim", "trainer", "paths")
REQUIRED = ["data.root=/nowhere"]


def _compose(overrides: list[str], config: str = "train"):
    with initialize_config_module("robustft.configs", version_base="1.3"):
        return compose(config, overrides=overrides)


def _composition_error(overrides: list[str], config: str = "train") -> str:
    with pytest.raises(ConfigCompositionException) as caught:
        _compose(overrides, config)
    # Hydra's message names the override; its cause, OmegaConf's error, the full key
    return f"{caught.value} {caught.value.__cause__}"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_is_typed(group):
    options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg = _compose([f"{group}={option}"])
        schema = OmegaConf.get_type(cfg[group])
        assert dataclasses.is_dataclass(schema), f"{group}={option} has no schema"


@pytest.mark.parametrize("config, override, key", [
    ("train", "trainer.max_epochs=abc", "trainer.max_epochs"),
    ("train", "loss.lambda_bg=abc", "loss.lambda_bg"),
    ("train", "loss.classification=own_ce", "loss.classification"),
    ("train", "relevance.gradient_mode=third_order", "relevance.gradient_mode"),
    ("train", "relevance.backend=triton", "relevance.backend"),
    ("train", "optim.optimizer.lr=fast", "optim.optimizer.lr"),
    ("train", "data.batch_size=eight", "data.batch_size"),
    ("train", "model.pretrained=maybe", "model.pretrained"),
    ("train", "seed=abc", "seed"),
    ("eval", "batch_size=abc", "batch_size"),
    ("eval", "protocol=official", "protocol"),
    ("masks", "block=last", "block"),
    ("masks", "features=patches", "features"),
    ("demo", "pretrain.max_epochs=ten", "pretrain.max_epochs"),
    ("demo", "evaluation.checkpoint=first", "evaluation.checkpoint"),
])
def test_wrong_type_is_rejected_at_composition_naming_the_key(config, override, key):
    message = _composition_error([override, *REQUIRED] if config == "train" else [override],
                                 config)
    assert f"full_key: {key}" in message


def test_unknown_key_without_plus_is_rejected_at_composition():
    assert "full_key: loss.bogus" in _composition_error(["loss.bogus=1", *REQUIRED])


def test_key_added_with_plus_is_named_with_only_its_groups_keys():
    cfg = _compose(["+loss.bogus=1", *REQUIRED])
    with pytest.raises(KeyError) as caught:
        check_config(cfg)
    message = str(caught.value)
    assert "unknown config key loss.bogus" in message
    loss_keys = [f.name for f in dataclasses.fields(LossConfig)]
    assert all(key in message for key in loss_keys)
    assert "gradient_mode" not in message and "lr" not in message.split("takes:")[1]


def test_target_nodes_take_what_their_target_takes():
    check_config(_compose(["+optim.optimizer.betas=[0.9,0.95]", *REQUIRED]))
    for override, target in (("+optim.optimizer.momentum=0.9", "torch.optim.AdamW"),
                             ("+callbacks.model_checkpoint.every=3", "ModelCheckpoint")):
        with pytest.raises(KeyError, match=f"{override[1:].split('=')[0]}: .*{target}"):
            check_config(_compose([override, *REQUIRED]))


def test_top_level_key_added_with_plus_is_named():
    with pytest.raises(KeyError, match="unknown config key max_epochs; the top level takes"):
        check_config(_compose(["+max_epochs=3", *REQUIRED]))


def test_values_the_method_refuses_name_their_key():
    with pytest.raises(ValueError, match=r"^loss.lambda_l2sp must be >= 0"):
        typed_group(_compose(["loss.lambda_l2sp=-1", *REQUIRED]), "loss")
    with pytest.raises(ValueError, match=r"^relevance.method must be one of \['attn_gradcam', "
                                         r"'grad_rollout', 'input_x_gradient'"):
        typed_group(_compose(["relevance.method=lrp", *REQUIRED]), "relevance")
    with pytest.raises(ValueError, match=r"^relevance.method=input_x_gradient is not "
                                         r"differentiable.*\['attn_gradcam', 'grad_rollout', "
                                         r"'raw_attention', 'rollout'\] for training$"):
        typed_group(_compose(["relevance.method=input_x_gradient", *REQUIRED]), "relevance")


def test_groups_become_the_methods_own_objects():
    cfg = _compose(["experiment=demo", "relevance.gradient_mode=second_order"])
    loss, relevance = typed_group(cfg, "loss"), typed_group(cfg, "relevance")
    assert isinstance(loss, LossConfig) and loss.classification == "kl_to_teacher"
    assert loss.lambda_l2sp == 100.0 and loss.weights.background == 2.0
    assert isinstance(relevance, RelevanceConfig) and relevance.gradient_mode == "second_order"
    assert str(relevance.gradient_mode) == "second_order"  # a StrEnum prints its value


@pytest.mark.parametrize("overrides, expected", [
    (["model.kwargs={img_size:64,depth:2}"], {"img_size": 64, "depth": 2}),
    (["++model.kwargs.img_size=32"], {"img_size": 32}),
    (["model=demo_vit", "model.kwargs.depth=2"],
     {"img_size": 64, "patch_size": 8, "embed_dim": 128, "depth": 2, "num_heads": 4}),
])
def test_model_kwargs_take_any_constructor_argument(overrides, expected):
    cfg = _compose([*overrides, *REQUIRED])
    check_config(cfg)
    assert OmegaConf.to_container(cfg.model.kwargs) == expected


def test_every_model_file_sets_only_what_differs():
    for path in (CONFIG_DIR / "model").glob("*.yaml"):
        cfg = _compose([f"model={path.stem}", *REQUIRED])
        # a timm file names its architecture; model=hf leaves hf_id / hf_path to the user
        assert (cfg.model.name or cfg.model.family == "hf") and cfg.model.checkpoint is None


def test_the_demo_keeps_the_train_configs_loggers_and_callbacks():
    # demo.yaml merges its schema after train.yaml: its defaults must not erase these
    cfg = _compose([], "demo")
    assert {"model_checkpoint", "last_checkpoint"} <= set(cfg.callbacks)
    assert "csv" in cfg.logger


def test_imagenet_s_takes_no_key_it_would_ignore():
    cfg = _compose(["data=imagenet_s", "+data.mask_manifest=/m.csv"])
    with pytest.raises(KeyError, match="unknown config key data.mask_manifest"):
        check_config(cfg)


def test_masks_config_takes_tokencut_defaults_from_the_settings():
    """robustft-masks composes TokenCut's parameters with TokenCutSettings' own defaults (one
    source): the composed config builds exactly the default settings."""
    from robustft.masks.settings import DEFAULT_SETTINGS

    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose(config_name="masks", overrides=["input_dir=a", "output_dir=b"])
    for name in ("tau", "eps", "features", "block", "refine", "refine_low_iou",
                 "min_foreground_fraction"):
        assert cfg[name] == getattr(DEFAULT_SETTINGS, name), name
    assert cfg.min_foreground_fraction * 224 * 224 == 520  # the official filter, not a rounding


def test_loss_weights_default_to_the_loss_config():
    from robustft.losses import LossWeights

    defaults = LossConfig()
    assert LossWeights() == defaults.weights
    assert LossWeights().classification == defaults.lambda_cls
