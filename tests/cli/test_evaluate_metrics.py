"""robustft-eval with the explanation metrics end to end on a miniature images+masks folder:
rows beside top-1, the report's tables and the perturbation plot; a rerun with another
perturbation setting recomputes; a metric a dataset cannot give is one line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fixtures.eval_workspace import make_eval_workspace, models_cfg
from fixtures.generic_layout import make_generic_layout
from fixtures.gtsegs import make_gtsegs

import robustft.evaluation.run as evaluation_run
from robustft.evaluation.report import read_results_csv

ALL = "metrics=[top1,perturbation,segmentation,share]"
WIDE = "{img_size:32,patch_size:8,embed_dim:48,depth:1,num_heads:2}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_metrics")
    workspace = make_eval_workspace(root)
    workspace["pairs"] = make_generic_layout(root / "pairs", num_classes=4, per_class=3)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 30, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.pad(np.ones((10, 12), np.uint8), ((7, 7), (9, 9))) for _ in range(3)]
    # where eval=segmentation expects it under data_root
    workspace["seg_root"] = root / "segdata"
    workspace["seg"] = make_gtsegs(
        workspace["seg_root"] / "imagenet-segmentation" / "gtsegs_ijcv.mat", images, masks).parent
    return workspace


def _cfg(workspace, out_dir: Path, *extra: str):
    models = {"baseline": {"num_classes": "4"},
              "wide": {"num_classes": "4", "pretrained": "false", "kwargs": WIDE}}
    return models_cfg(workspace, out_dir, models,
                      f"+eval.datasets.pairs={{type:generic,root:{workspace['pairs']}}}",
                      "only=pairs", *extra)


def test_all_metrics_write_rows_tables_and_plot(workspace, tmp_path: Path) -> None:
    cfg = _cfg(workspace, tmp_path / "run", ALL, "perturbation.fractions=[0.0,0.25,0.5]")
    cfg.plots = True
    out = evaluation_run.run_evaluation(cfg)
    rows = read_results_csv(out / "results.csv")
    metrics = {(r["model"], r["metric"], r["factor_value"]) for r in rows}
    for model in ("baseline", "wide"):
        assert (model, "top1", "") in metrics  # (4 classes: no top-5)
        for quantity in ("perturbation_positive_auc", "perturbation_negative_auc",
                         "segmentation_pixel_accuracy", "segmentation_miou", "segmentation_map",
                         "foreground_share"):
            assert (model, f"grad_rollout:{quantity}", "") in metrics
        for fraction in ("0", "0.25", "0.5"):
            assert (model, "grad_rollout:perturbation_positive", fraction) in metrics
    by_key = {(r["model"], r["metric"], r["factor_value"]): r["value"] for r in rows}
    # p = 0 removes nothing: the perturbation curve starts at the model's top-1
    assert by_key[("wide", "grad_rollout:perturbation_negative", "0")] == pytest.approx(
        by_key[("wide", "top1", "")])
    assert all(0.0 <= r["value"] <= 100.0 for r in rows)
    assert {r["num_images"] for r in rows} == {12}
    markdown = (out / "results.md").read_text()
    assert "x-grid 0, 0.25, 0.5" in markdown
    assert "segmentation test: mIoU" in markdown and "| pairs |" in markdown
    assert "removed pixels set to 0 in every channel before normalisation" in markdown
    assert (out / "perturbation_pairs.png").stat().st_size > 0


def test_changed_perturbation_setting_recomputes(workspace, tmp_path: Path, caplog,
                                                 monkeypatch) -> None:
    out_dir = tmp_path / "run"
    evaluation_run.run_evaluation(_cfg(workspace, out_dir, ALL))
    first = {r["fingerprint"] for r in read_results_csv(out_dir / "results.csv")}
    with caplog.at_level(logging.WARNING):
        evaluation_run.run_evaluation(_cfg(workspace, out_dir, ALL,
                                         "perturbation.removal_value=0.5"))
    assert "explanations.perturbation.removal_value changed (0.0 -> 0.5)" in caplog.text
    second = {r["fingerprint"] for r in read_results_csv(out_dir / "results.csv")}
    assert len(second) == 2 and not first & second

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built although every pair is up to date")

    monkeypatch.setattr(evaluation_run, "build_model_from_entry", no_model)
    evaluation_run.run_evaluation(_cfg(workspace, out_dir, ALL, "perturbation.removal_value=0.5"))
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(AssertionError, match="a model was built"):
        evaluation_run.run_evaluation(_cfg(workspace, out_dir, ALL, "relevance_method=grad_rollout",
                                         "perturbation.target=label"))
    assert "explanations.perturbation.target changed" in caplog.text


def test_metric_a_dataset_cannot_give_is_one_line(workspace, tmp_path: Path) -> None:
    models = {"baseline": {"weights_file": str(workspace["weights"])}}
    cfg = models_cfg(workspace, tmp_path / "run", models, "only=imagenet-val",
                     "metrics=[top1,segmentation]")
    with pytest.raises(ValueError, match="segmentation needs segmentation masks, and dataset "
                                         "'imagenet-val' has none") as error:
        evaluation_run.run_evaluation(cfg)
    assert "\n" not in str(error.value)
    seg = f"+eval.datasets.seg={{type:imagenet-segmentation,root:{workspace['seg']}}}"
    cfg = models_cfg(workspace, tmp_path / "run", models, seg, "only=seg", "metrics=[top1]")
    with pytest.raises(ValueError, match="top1 needs ground-truth classes") as error:
        evaluation_run.run_evaluation(cfg)
    assert "\n" not in str(error.value)
    cfg = models_cfg(workspace, tmp_path / "run", models, "metrics=[perturbation]",
                     "relevance_method=no_such_method")
    with pytest.raises(ValueError, match="^relevance_method: unknown relevance method "
                                         "'no_such_method'; known: \\[") as error:
        evaluation_run.run_evaluation(cfg)
    assert "\n" not in str(error.value)


def test_segmentation_on_the_gtsegs_file(workspace, tmp_path: Path) -> None:
    models = {"baseline": {"weights_file": str(workspace["weights"])}}
    out = evaluation_run.run_evaluation(models_cfg(
        workspace, tmp_path / "run", models, "eval=segmentation", "only=imagenet-segmentation",
        "metrics=[segmentation]", "preprocessing.crop_mode=squash", "preprocessing.crop_pct=1.0",
        data_root=workspace["seg_root"]))
    rows = read_results_csv(out / "results.csv")
    assert {r["metric"] for r in rows} == {"grad_rollout:segmentation_pixel_accuracy",
                                           "grad_rollout:segmentation_miou",
                                           "grad_rollout:segmentation_map",
                                           "grad_rollout:segmentation_constant_maps"}
    assert {r["num_images"] for r in rows} == {3}
    (constant,) = [r for r in rows if r["metric"] == "grad_rollout:segmentation_constant_maps"]
    assert float(constant["value"]) == 0.0  # grad_rollout's maps vary


def test_rollout_from_block_1_is_named_and_recomputed(workspace, tmp_path: Path) -> None:
    """``method_options.rollout.start_layer=1`` (the public scripts' rollout) gives rows
    named ``rollout(start_layer=1)``; back at the default the rows are ``rollout``'s and are
    computed again (the option is in the fingerprint)."""
    from safetensors.torch import save_file
    from tiny_models import tiny_vit

    weights = tmp_path / "two_blocks.safetensors"  # 1000 classes, attention that varies
    save_file(tiny_vit(depth=2, num_classes=1000).state_dict(), str(weights))
    models = {"baseline": {"weights_file": str(weights),
                           "kwargs": "{img_size:32,patch_size:8,embed_dim:32,depth:2,num_heads:2}"}}
    common = ("eval=segmentation", "only=imagenet-segmentation", "metrics=[segmentation]",
              "relevance_method=rollout", "preprocessing.crop_mode=squash",
              "preprocessing.crop_pct=1.0")
    out = evaluation_run.run_evaluation(models_cfg(
        workspace, tmp_path / "run", models, *common, "method_options.rollout.start_layer=1",
        data_root=workspace["seg_root"]))
    rows = read_results_csv(out / "results.csv")
    assert {r["metric"].partition(":")[0] for r in rows} == {"rollout(start_layer=1)"}
    later = {r["metric"].partition(":")[2]: float(r["value"]) for r in rows}
    out = evaluation_run.run_evaluation(models_cfg(
        workspace, tmp_path / "run", models, *common, data_root=workspace["seg_root"]))
    rows = read_results_csv(out / "results.csv")
    assert {r["metric"].partition(":")[0] for r in rows} == {"rollout"}
    every = {r["metric"].partition(":")[2]: float(r["value"]) for r in rows}
    assert later.keys() == every.keys() and later != every
    with pytest.raises(ValueError, match=r"^rollout: start_layer \(method_options.rollout."
                                         r"start_layer\) must be a block index >= 0 of a model "
                                         r"with 2 blocks \(0..1\), got 2$"):
        evaluation_run.run_evaluation(models_cfg(
            workspace, tmp_path / "run2", models, *common, "method_options.rollout.start_layer=2",
            data_root=workspace["seg_root"]))
