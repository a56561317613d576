"""The explanation settings: the schema's defaults are the library's, the fingerprint part,
and the explained logit under a max-over-group protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import tiny_vit

from robustft.evaluation.metrics.map_scoring import ExplanationScorer, ExplanationSettings, explained_logits
from robustft.labels import LabelProtocol, identity_protocol
from robustft.relevance import RELEVANCE_METHODS, RelevanceChoice, RelevanceOutput
from robustft.relevance.methods import RelevanceMethod
from robustft.schemas.inspection_schemas import EvalConfig


def test_schema_defaults_are_the_library_defaults() -> None:
    schema, settings = EvalConfig(data_root="", run_name="", output_dir=""), ExplanationSettings()
    assert list(schema.metrics) == list(settings.metrics)
    assert schema.relevance_method == settings.relevance.method
    assert tuple(schema.perturbation.fractions) == settings.fractions
    assert schema.perturbation.removal_value == settings.removal_value
    assert schema.perturbation.target == settings.perturbation_target
    assert schema.share.target == settings.share_target
    assert {f.name for f in dataclasses.fields(schema.perturbation)} == {
        "fractions", "removal_value", "target"}


def test_fingerprint_part_only_with_explanation_metrics() -> None:
    assert ExplanationSettings().fingerprint_inputs() is None
    inputs = ExplanationSettings(metrics=("top1", "perturbation")).fingerprint_inputs()
    assert inputs["perturbation"]["removal_value"] == 0.0 and "share" not in inputs
    assert ExplanationSettings(metrics=("share",)).fingerprint_inputs()["share"] == {
        "target": "label"}
    with pytest.raises(ValueError, match="metrics: expected a list of") as error:
        ExplanationSettings(metrics=("top2",))
    assert "\n" not in str(error.value)


def test_explained_logit_is_the_one_that_scores_the_class() -> None:
    protocol = LabelProtocol(name="grouped", kind="standard", num_inputs=4,
                             groups=((0, 2), (1,), (3,)))
    logits = torch.tensor([[0.1, 0.0, 0.9, 0.0], [0.8, 0.0, 0.3, 0.0]])
    assert explained_logits(protocol, torch.tensor([0, 0]), logits).tolist() == [2, 0]
    assert explained_logits(protocol, torch.tensor([2, 1]), logits).tolist() == [3, 1]


def _zero_map(model, images, target, gradient_mode, *, backend):
    """All zeros, as attn_gradcam gives when every head weight is negative."""
    logits = model(images).detach()
    target = logits.argmax(1) if target is None else target
    return RelevanceOutput(relevance=torch.zeros(len(images), 4, 4), logits=logits, target=target)


def test_maps_without_information_score_chance_and_are_counted(monkeypatch) -> None:
    monkeypatch.setitem(RELEVANCE_METHODS, "zeros", RelevanceMethod(_zero_map, False))
    settings = ExplanationSettings(metrics=("perturbation", "segmentation", "share"),
                                   relevance=RelevanceChoice("zeros"), fractions=(0.0, 0.5))
    scorer = ExplanationScorer(settings, identity_protocol(5), mean=(0.5,) * 3, std=(0.5,) * 3)
    masks = torch.zeros(2, 32, 32, dtype=torch.uint8)
    masks[0, :8, :8] = 1  # 64 of 1024 pixels
    masks[1, :16, :16] = 1  # 256 of 1024, of which 768 labelled:
    masks[1, 16:, :] = 255  # the bottom half is not labelled
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scorer.update(tiny_vit(), images, torch.tensor([0, 1]), masks)
    rows = {metric: value for metric, factor, _, value in scorer.results() if not factor}
    assert rows["zeros:segmentation_map"] == pytest.approx(50.0)
    # a uniform map's share: the object's share of the labelled pixels, not 0 %
    assert rows["zeros:foreground_share"] == pytest.approx(100 * (64 / 1024 + 256 / 512) / 2)
    for quantity in ("perturbation", "segmentation", "foreground_share"):
        assert rows[f"zeros:{quantity}_constant_maps"] == 100.0
    assert scorer.constant_map_counts() == {"perturbation": 2, "segmentation": 2, "share": 2}


def test_method_options_enter_the_label_and_the_fingerprint_only_when_not_the_default() -> None:
    default = ExplanationSettings(metrics=("segmentation",),
                                  relevance=RelevanceChoice("rollout", {"start_layer": 0}))
    assert default.method_label == "rollout" and default.relevance.options == {}
    assert "relevance_options" not in default.fingerprint_inputs()  # earlier rows stay valid
    public = ExplanationSettings(metrics=("segmentation",),
                                 relevance=RelevanceChoice("rollout", {"start_layer": 1}))
    assert public.method_label == "rollout(start_layer=1)"
    assert public.fingerprint_inputs()["relevance_options"] == {"start_layer": 1}
    with pytest.raises(ValueError, match=r"^method_options.grad_rollout: unknown option\(s\) "
                                         r"\['start_layer'\]; grad_rollout takes none$"):
        RelevanceChoice("grad_rollout", {"start_layer": 1})
    with pytest.raises(ValueError, match=r"^rollout: start_layer \(method_options.rollout."
                                         r"start_layer\) must be a block index >= 0, got -1$"):
        RelevanceChoice("rollout", {"start_layer": -1})


def test_eval_and_explain_turn_the_same_relevance_keys_into_the_same_choice() -> None:
    from omegaconf import OmegaConf

    from robustft.evaluation.run import explanation_settings
    from robustft.relevance import relevance_choices
    from robustft.schemas.inspection_schemas import ExplainConfig

    options = {"rollout": {"start_layer": 1}}
    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig(data_root="", run_name="", output_dir="")),
                          {"metrics": ["share"], "relevance_method": "rollout",
                           "method_options": options})
    explain_cfg = OmegaConf.merge(OmegaConf.structured(ExplainConfig), {
        "methods": ["rollout"], "method_options": options})
    (explained,) = relevance_choices(list(explain_cfg.methods),
                                     OmegaConf.to_container(explain_cfg.method_options),
                                     str(explain_cfg.backend))
    assert explanation_settings(cfg).relevance == explained == RelevanceChoice("rollout", options["rollout"])
