"""The explanation settings: the schema's defaults are the library's, the fingerprint part,
and the explained logit under a max-over-group protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustft.config.schemas import EvalConfig
from robustft.evaluation.explanation import ExplanationSettings, explained_logits
from robustft.labels import LabelProtocol


def test_schema_defaults_are_the_library_defaults() -> None:
    schema, settings = EvalConfig(data_root="", run_name="", output_dir=""), ExplanationSettings()
    assert [m.value for m in schema.metrics] == [m.value for m in settings.metrics]
    assert schema.relevance_method == settings.relevance_method
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
