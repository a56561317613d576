"""RelevanceFinetuner: frozen parameters stay exactly as they were, the rest trains; the
L2-SP term measures the distance from the original weights and only in training."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import tiny_vit

from robustft.losses import LossConfig
from robustft.training.module import RelevanceFinetuner, adamw


def adamw_at(lr: float = 1e-2):
    return lambda parameters: adamw(parameters, lr=lr)


def _batch(num_classes: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 32, 32)
    masks[:, 8:24, 8:24] = 1.0
    return {"image": torch.randn(4, 3, 32, 32, generator=generator), "mask": masks,
            "ignore": torch.zeros(4, 32, 32, dtype=torch.bool),
            "label": torch.arange(4) % num_classes}


def test_frozen_prefixes_are_not_trained() -> None:
    torch.manual_seed(0)
    model = tiny_vit("plain", img_size=(32, 32))
    module = RelevanceFinetuner(model, optimizer=adamw_at(), frozen=["head"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all((id(p) in trained) != name.startswith("head")
               for name, p in model.named_parameters())
    module.log_dict = lambda *args, **kwargs: None  # no Trainer attached
    for _ in range(3):
        loss = module.training_step(_batch(), 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed != name.startswith("head"), name


def test_unknown_frozen_prefix_is_named() -> None:
    with pytest.raises(ValueError, match="'hed' matches no parameter"):
        RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32)), frozen=["hed"])


def test_l2_sp_term_is_the_distance_from_the_original_weights() -> None:
    torch.manual_seed(0)
    model = tiny_vit("plain", img_size=(32, 32))
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    plain = RelevanceFinetuner(model, optimizer=adamw_at(), frozen=["head"])
    assert plain.teacher is None  # own_argmax_ce without L2-SP needs no copy
    module = RelevanceFinetuner(model, optimizer=adamw_at(), frozen=["head"],
                                loss=LossConfig(lambda_l2sp=0.5))
    teacher_calls = []  # own_argmax_ce: the copy is only the L2-SP starting point, never run
    module.teacher.register_forward_hook(lambda *args: teacher_calls.append(1))
    logged = {}
    for m in (plain, module):
        m.log_dict = lambda values, **kwargs: logged.update(values)
    batch = _batch()
    assert torch.equal(module.training_step(batch, 0), plain.training_step(batch, 0))  # at the start
    with torch.no_grad():  # move the weights: a known distance, the frozen head excluded
        model.blocks[0].attn.qkv.weight.add_(0.1)
        model.head.weight.add_(5.0)
    distance = 0.01 * model.blocks[0].attn.qkv.weight.numel()
    expected = plain.training_step(batch, 0) + 0.5 * distance
    assert torch.allclose(module.training_step(batch, 0), expected, rtol=1e-5)
    assert torch.allclose(logged["train/l2sp"], torch.tensor(distance), rtol=1e-5)
    # validation loss is the fit to data only (it picks the best checkpoint)
    assert torch.equal(module.validation_step(batch, 0), plain.validation_step(batch, 0))
    assert "val/l2sp" not in logged
    assert not teacher_calls
    assert all(torch.equal(p, original[name]) for name, p in module.teacher.named_parameters())


def test_l2_sp_leaves_the_excluded_parameters_free() -> None:
    torch.manual_seed(0)
    model = tiny_vit("plain", img_size=(32, 32))
    module = RelevanceFinetuner(model, loss=LossConfig(lambda_l2sp=1.0,
                                                   l2sp_exclude=["blocks.*.attn.*"]))
    with torch.no_grad():  # every attention weight moves, one MLP weight moves by a known step
        for block in model.blocks:
            for p in block.attn.parameters():
                p.add_(1.0)
        model.blocks[0].mlp.fc1.bias.add_(0.5)
    expected = 0.25 * model.blocks[0].mlp.fc1.bias.numel()
    assert torch.allclose(module._l2_sp(), torch.tensor(expected), rtol=1e-6)
    # the excluded weights are still trained
    assert all(p.requires_grad for p in model.blocks[0].attn.parameters())


def test_l2_sp_exclude_pattern_that_matches_nothing_is_named() -> None:
    model = tiny_vit("plain", img_size=(32, 32))
    with pytest.raises(ValueError, match=r"loss.l2sp_exclude: 'block.\*.attn' matches no"):
        RelevanceFinetuner(model, loss=LossConfig(lambda_l2sp=1.0, l2sp_exclude=["block.*.attn"]))
    # a frozen parameter is not trained, so it cannot be left free either
    with pytest.raises(ValueError, match="loss.l2sp_exclude: 'head.weight'"):
        RelevanceFinetuner(model, frozen=["head"],
                           loss=LossConfig(lambda_l2sp=1.0, l2sp_exclude=["head.weight"]))
    with pytest.raises(ValueError, match="leaves no trained parameter for L2-SP"):
        RelevanceFinetuner(model, loss=LossConfig(lambda_l2sp=1.0, l2sp_exclude=["*"]))


def test_negative_l2_sp_weight_is_named() -> None:
    with pytest.raises(ValueError, match="lambda_l2sp must be >= 0"):
        LossConfig(lambda_l2sp=-1.0)


def test_checkpoint_hyper_parameters_are_plain_types() -> None:
    """What the module saves must load with torch.load(weights_only=True): no enums, no
    dataclasses, no partials."""
    module = RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32)),
                                loss=LossConfig(classification="kl_to_teacher"),
                                model_spec={"name": "vit_tiny_patch16_224", "kwargs": {}})

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    hparams = dict(module.hparams)
    assert plain(hparams), hparams
    assert hparams["loss"]["classification"] == "kl_to_teacher"
    assert hparams["relevance"]["gradient_mode"] == "detached"


def test_hyper_parameters_are_saved_as_plain_data(tmp_path) -> None:
    # Checkpoints are read weights-only, which refuses paths and OmegaConf containers; the
    # model spec that evaluation rebuilds the model from must survive that.
    weights = tmp_path / "w.safetensors"
    module = RelevanceFinetuner(
        tiny_vit("plain", img_size=(32, 32)),
        loss=LossConfig(lambda_l2sp=0.1, l2sp_exclude=OmegaConf.create(["blocks.0.*"])),
        frozen=("head",),
        model_spec={"name": "vit_tiny_patch16_224", "weights_file": weights,
                    "kwargs": OmegaConf.create({"img_size": [32, 32]})})
    path = tmp_path / "hparams.pt"
    torch.save(dict(module.hparams), path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["model_config"] == {"name": "vit_tiny_patch16_224", "weights_file": str(weights),
                                     "kwargs": {"img_size": [32, 32]}}
    assert saved["loss"]["l2sp_exclude"] == ["blocks.0.*"] and saved["frozen"] == ["head"]


def test_hyper_parameter_without_plain_form_is_named() -> None:
    with pytest.raises(TypeError, match=r"^model_config\.kwargs\.act_layer is a builtins\.type"):
        RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32)),
                           model_spec={"kwargs": {"act_layer": torch.nn.GELU}})


@pytest.mark.parametrize("bad_label", [5, 99, -1])
def test_selected_label_outside_the_outputs_is_named_before_training(tmp_path, bad_label) -> None:
    from types import SimpleNamespace

    from fixtures.generic_layout import make_generic_layout

    from robustft.data.datamodule import ImageMaskDataModule
    from robustft.data.generic import scan_generic_layout, select_records, write_selection

    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2)
    selection = select_records(scan_generic_layout(root), train_per_class=None, val_per_class=None,
                               class_fraction=1.0, seed=0)
    manifest = write_selection(selection, root, tmp_path / "selection.csv")
    rows = manifest.read_text().splitlines()
    rows[2] = rows[2].replace(",0,c0,", f",{bad_label},c0,")  # the second record's label
    manifest.write_text("\n".join(rows) + "\n")
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     manifest=str(manifest))
    datamodule.setup("fit")
    module = RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32), num_classes=5))
    module._trainer = SimpleNamespace(datamodule=datamodule)  # on_fit_start reads only this
    with pytest.raises(ValueError, match=rf"^data\.manifest: {manifest} gives label {bad_label} "
                                         r"\(class 'c0', .*img1\.png\) but the model has 5 outputs"):
        module.on_fit_start()
    rows[2] = rows[2].replace(f",{bad_label},c0,", ",4,c0,")  # 4 < 5 outputs: fine
    manifest.write_text("\n".join(rows) + "\n")
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     manifest=str(manifest))
    datamodule.setup("fit")
    module._trainer = SimpleNamespace(datamodule=datamodule)
    module.on_fit_start()


def test_class_index_longer_than_the_head_is_named(tmp_path) -> None:
    from types import SimpleNamespace

    from fixtures.generic_layout import make_generic_layout

    from robustft.data.datamodule import ImageMaskDataModule

    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2)
    index = tmp_path / "classes.txt"
    index.write_text("c0\nc1\nother\n")  # 3 names: labels 0 and 1 fit, the head does not
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     class_index=str(index))
    datamodule.setup("fit")
    module = RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32), num_classes=2))
    module._trainer = SimpleNamespace(datamodule=datamodule)
    with pytest.raises(ValueError, match=r"^data\.class_index lists 3 classes but the model has "
                                         r"2 outputs"):
        module.on_fit_start()


@pytest.mark.parametrize("method", ["rollout", "raw_attention", "attn_gradcam"])
def test_training_step_uses_the_configured_relevance_method(method) -> None:
    """relevance.method picks the map the loss is computed on: the step's loss is the
    paper's loss on that method's map, and it trains the attention."""
    from robustft.losses import relevance_loss
    from robustft.relevance import RelevanceConfig, get_method, upsample_and_normalize

    model = tiny_vit("plain", img_size=(32, 32), num_heads=4)
    module = RelevanceFinetuner(model, relevance=RelevanceConfig(method=method))
    module.log_dict = lambda *args, **kwargs: None  # no Trainer attached
    batch = _batch()
    loss = module.training_step(batch, 0)
    out = get_method(method).compute(model, batch["image"], batch["label"], "detached",
                                     backend="eager")
    expected = relevance_loss(upsample_and_normalize(out.relevance, (32, 32)), batch["mask"],
                              out.logits, classification=module.loss_config.classification,
                              weights=module.weights, temperature=module.loss_config.temperature,
                              labels=batch["label"], ignore=batch["ignore"]).total
    torch.testing.assert_close(loss, expected)
    default = RelevanceFinetuner(model)
    default.log_dict = module.log_dict
    assert not torch.allclose(default.training_step(batch, 0), loss)  # not grad_rollout's
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_zero_shot_class_names_that_do_not_fit_the_data_are_named(tmp_path) -> None:
    from types import SimpleNamespace

    from fixtures.generic_layout import make_generic_layout
    from tiny_models import tiny_clip, tiny_clip_tokenizer

    from robustft.backbones.open_clip import zero_shot_classifier
    from robustft.data.datamodule import ImageMaskDataModule

    root = make_generic_layout(tmp_path / "pairs", num_classes=3, per_class=2)
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    datamodule.setup("fit")
    for names, fits in ((["cat", "dog"], False), (["cat", "dog", "cow", "owl"], False),
                        (["cat", "dog", "cow"], True)):
        model = zero_shot_classifier(tiny_clip(), names, ["a {}"], tokenizer=tiny_clip_tokenizer())
        module = RelevanceFinetuner(model)
        module._trainer = SimpleNamespace(datamodule=datamodule)
        if fits:
            module.on_fit_start()
            continue
        with pytest.raises(ValueError, match=rf"^model\.zero_shot\.class_names: the zero-shot head "
                                             rf"has {len(names)} classes but the data has 3 "
                                             r"\(the class folders of data.root") as error:
            module.on_fit_start()
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("objective", ["rrr", "gradmask"])
def test_baseline_step_is_cross_entropy_plus_a_penalty_that_trains(objective) -> None:
    from robustft.backbones import backbone_of
    from robustft.baselines import background_weight, baseline_loss

    model = tiny_vit("plain", img_size=(32, 32), num_classes=3)
    batch = _batch()
    plain = RelevanceFinetuner(model, loss=LossConfig(objective="plain"))
    baseline = RelevanceFinetuner(model, loss=LossConfig(objective=objective, lambda_rrr=50.0,
                                                         lambda_gradmask=50.0))
    for m in (plain, baseline):
        m.log_dict = lambda *args, **kwargs: None
    images = batch["image"].clone().requires_grad_(True)
    with backbone_of(model).capture_attention():
        logits = backbone_of(model).class_scores(images)
    expected = baseline_loss(objective, logits, images, batch["mask"], batch["label"],
                             lambda_rrr=50.0, lambda_gradmask=50.0, ignore=batch["ignore"])
    assert expected.penalty > 0
    assert torch.allclose(plain.training_step(batch, 0), torch.nn.functional.cross_entropy(
        logits, batch["label"]), rtol=1e-5)
    step = baseline.training_step(batch, 0)
    assert torch.allclose(step, expected.total, rtol=1e-5)
    assert background_weight(batch["mask"]).sum() > 0

    def weight_gradient(module: RelevanceFinetuner) -> torch.Tensor:
        model.zero_grad()
        module.training_step(batch, 0).backward()
        return model.blocks[0].attn.qkv.weight.grad.clone()

    # the penalty's gradient reaches the weights in training: the update is not plain CE's
    assert not torch.allclose(weight_gradient(baseline), weight_gradient(plain), rtol=1e-3)
    # validation: the same loss, without the second-order graph
    assert torch.allclose(baseline.validation_step(batch, 0), expected.total.detach(), rtol=1e-5)


def _unmasked_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"image": torch.randn(3, 3, 32, 32, generator=generator),
            "label": torch.tensor([2, 0, 1])}


def _by_hand(term: str, logits: torch.Tensor, teacher_logits: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """Each classification term written out: KL(p_t || p) summed over classes, batch mean;
    cross-entropy against the labels or against the model's own argmax."""
    log_p = logits.log_softmax(-1)
    if term == "kl_to_teacher":
        log_t = teacher_logits.log_softmax(-1)
        return (log_t.exp() * (log_t - log_p)).sum(-1).mean()
    targets = labels if term == "label_ce" else logits.argmax(-1)
    return -log_p[torch.arange(len(targets)), targets].mean()


@pytest.mark.parametrize(("objective", "classification", "term"), [
    ("relevance", "kl_to_teacher", "kl_to_teacher"),
    ("relevance", "label_ce", "label_ce"),
    ("relevance", "own_argmax_ce", "own_argmax_ce"),
    ("plain", "kl_to_teacher", "label_ce"),  # a baseline's own term: CE on the labels
])
def test_images_without_masks_add_the_objective_s_classification_term(objective, classification,
                                                                      term) -> None:
    from robustft.backbones import backbone_of

    torch.manual_seed(0)
    model = tiny_vit("plain", img_size=(32, 32), num_classes=3)
    module = RelevanceFinetuner(model, loss=LossConfig(objective=objective,
                                                       classification=classification,
                                                       lambda_unmasked=0.5))
    module.log_dict = lambda *args, **kwargs: None
    with torch.no_grad():  # move off the teacher, so that the KL is not zero
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    pairs, unmasked = _batch(), _unmasked_batch()
    alone = module.training_step(pairs, 0)
    together = module.training_step({"pairs": pairs, "unmasked": unmasked}, 0)
    with torch.no_grad():
        logits = backbone_of(model).class_scores(unmasked["image"])
        teacher_logits = (None if module.teacher is None
                          else backbone_of(module.teacher).class_scores(unmasked["image"]))
    expected = 0.5 * _by_hand(term, logits, teacher_logits, unmasked["label"])
    assert expected > 1e-4
    assert torch.allclose(together - alone, expected, rtol=1e-4, atol=1e-6)
    # a step whose unmasked batch ran out (the shorter loader of the epoch) is the pairs' alone
    assert torch.allclose(module.training_step({"pairs": pairs, "unmasked": None}, 0), alone)
    # the term trains the weights: its gradient is that of the unmasked loss alone
    model.zero_grad()
    (together - alone).backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_images_without_masks_and_a_zero_weight_is_one_line(tmp_path) -> None:
    from types import SimpleNamespace

    from fixtures.generic_layout import make_generic_layout

    from robustft.data.datamodule import ImageMaskDataModule

    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=4)
    datamodule = ImageMaskDataModule(str(root), crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     class_fraction=1.0, train_per_class=2,
                                     unmasked_root=str(root / "images"))
    datamodule.setup("fit")
    module = RelevanceFinetuner(tiny_vit("plain", img_size=(32, 32), num_classes=2),
                                loss=LossConfig(lambda_unmasked=0.0))
    module._trainer = SimpleNamespace(datamodule=datamodule)
    with pytest.raises(ValueError, match=r"^data\.unmasked_root is set \(.*images\) but "
                                         r"loss\.lambda_unmasked is 0") as error:
        module.on_fit_start()
    assert "\n" not in str(error.value)
