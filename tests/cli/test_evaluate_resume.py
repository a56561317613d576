"""robustft-eval resume: a (model, dataset) pair's rows are reused only when the
fingerprint of what produced them matches (robustft.evaluation.fingerprint); otherwise the
pair is re-evaluated, its rows replaced, with one log line naming what changed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from fixtures.eval_workspace import TINY, make_eval_workspace, models_cfg
from safetensors.torch import save_file

import robustft.evaluation.run as evaluation_run
from robustft.backbones import create_model
from robustft.evaluation.report import read_results_csv
from robustft.evaluation.runner import RESULT_COLUMNS


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_eval_workspace(tmp_path_factory.mktemp("eval_resume"))


def _cfg(workspace, out_dir: Path, *extra: str):
    """The baseline from the seed-0 weights file, the fine-tuned model from the checkpoint."""
    models = {
        "baseline": {"weights_file": str(workspace["weights"])},
        "finetuned": {"checkpoint": str(workspace["checkpoint"])},
    }
    return models_cfg(workspace, out_dir, models, *extra)


def test_resume_skips_finished_pairs(workspace, tmp_path: Path, monkeypatch) -> None:
    out_dir = tmp_path / "run"
    cfg = _cfg(workspace, out_dir, "only=[imagenet-val,imagenet-a]")
    evaluation_run.run_evaluation(cfg)
    results = out_dir / "results.csv"
    first = results.read_text()
    # Drop one (model, dataset) pair as if the run had been interrupted before it.
    lines = first.splitlines()
    kept = [ln for ln in lines if not ln.startswith("finetuned,imagenet-a,")]
    results.write_text("\n".join(kept) + "\n")
    calls = []
    real = evaluation_run.evaluate_models

    def recording(models, dataset, **kwargs):
        calls.append((sorted(models), dataset.name))
        return real(models, dataset, **kwargs)

    monkeypatch.setattr(evaluation_run, "evaluate_models", recording)
    evaluation_run.run_evaluation(cfg)
    assert calls == [(["finetuned"], "imagenet-a")]
    assert sorted(results.read_text().splitlines()) == sorted(first.splitlines())
    evaluation_run.run_evaluation(cfg)  # everything finished: nothing runs, no model built
    assert calls == [(["finetuned"], "imagenet-a")]


# --------------------------------------------------------------------------- fingerprinted resume
#
# Models whose head ignores the image (zero weights, a ranked bias) have accuracies known
# in advance: PREDICTS_0 ranks ImageNet classes 0, 11, 1, 2, 3 first, so on the miniature
# ImageNet val (classes 0, 1, 2; two images each) its top-1 is 1/3 and its top-5 is 1; on
# ImageNet-A it is right on a_wnids[1] (class 11) under the 200-class standard protocol and
# never under the 1000-way legacy one (class 0 is not an ImageNet-A class).
# PREDICTS_999 ranks 999..995 first: 0 % everywhere.
PREDICTS_0 = (0, 11, 1, 2, 3)
PREDICTS_999 = (999, 998, 997, 996, 995)


def _constant_state(ranked: tuple[int, ...]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = create_model("vit_tiny_patch16_224", **TINY).state_dict()
    state["head.weight"] = torch.zeros_like(state["head.weight"])
    bias = torch.zeros_like(state["head.bias"])
    for rank, index in enumerate(ranked):
        bias[index] = 10.0 - rank
    state["head.bias"] = bias
    return state


def _write_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "hyper_parameters": {"model_config": {"name": "vit_tiny_patch16_224", "kwargs": TINY}},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def constant_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("constant")
    files = {"0": root / "predicts_0.safetensors", "999": root / "predicts_999.safetensors"}
    save_file(_constant_state(PREDICTS_0), str(files["0"]))
    save_file(_constant_state(PREDICTS_999), str(files["999"]))
    return files


def _accuracies(rows, model: str, dataset: str) -> dict[tuple[str, str, str], float]:
    return {
        (r["metric"], r["factor"], r["factor_value"]): round(float(r["value"]), 4)
        for r in rows
        if r["model"] == model and r["dataset"] == dataset
    }


def _direct(entry: dict, kind: str, root: Path, protocol: str = "standard"):
    """Accuracies of ``entry`` on ``kind``, evaluated without the CLI or its resume."""
    from robustft.data.eval.registry import build_eval_dataset
    from robustft.evaluation.model_loading import build_model_from_entry
    from robustft.evaluation.runner import build_eval_transforms, evaluate_models

    model = build_model_from_entry("direct", {"kwargs": TINY, "pretrained": False, **entry})
    dataset = build_eval_dataset(kind, root, protocol=protocol, name=kind)
    transforms = build_eval_transforms({"direct": model}, protocol=protocol)
    rows = evaluate_models({"direct": model}, dataset, transforms=transforms, batch_size=4,
                           num_workers=0, progress=False)  # fmt: skip
    return _accuracies(rows, "direct", kind)


def _record_calls(monkeypatch) -> list[tuple[list[str], str]]:
    calls: list[tuple[list[str], str]] = []
    real = evaluation_run.evaluate_models

    def recording(models, dataset, **kwargs):
        calls.append((sorted(models), dataset.name))
        return real(models, dataset, **kwargs)

    monkeypatch.setattr(evaluation_run, "evaluate_models", recording)
    return calls


def _stale_lines(caplog, label: str, dataset: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith(f"models.{label} on {dataset}:")
    ]


def test_checkpoint_overwritten_in_place_is_re_evaluated(
    workspace, constant_weights, tmp_path: Path, monkeypatch, caplog
) -> None:
    # The reported bug: same run_name, same label, the checkpoint file now holds another
    # model (best.ckpt rewritten by a new training run): the old numbers were kept.
    import hashlib

    checkpoint = _write_checkpoint(tmp_path / "best.ckpt", _constant_state(PREDICTS_0))
    before_sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    models = {
        "baseline": {"weights_file": str(constant_weights["0"])},
        "finetuned": {"checkpoint": str(checkpoint)},
    }
    out = tmp_path / "run"
    evaluation_run.run_evaluation(models_cfg(workspace, out, models, "only=imagenet-val"))
    first = read_results_csv(out / "results.csv")
    assert _accuracies(first, "finetuned", "imagenet-val") == {
        ("top1", "", ""): 33.3333, ("top5", "", ""): 100.0,
    }  # fmt: skip

    _write_checkpoint(checkpoint, _constant_state(PREDICTS_999))
    after_sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    calls = _record_calls(monkeypatch)
    caplog.set_level(logging.INFO, logger="robustft.evaluation.run")
    evaluation_run.run_evaluation(models_cfg(workspace, out, models, "only=imagenet-val"))

    assert calls == [(["finetuned"], "imagenet-val")]  # the baseline's rows are reused
    rows = read_results_csv(out / "results.csv")
    val_root = workspace["data"] / "imagenet" / "val"
    expected = _direct({"checkpoint": str(checkpoint)}, "imagenet-val", val_root)
    assert _accuracies(rows, "finetuned", "imagenet-val") == expected
    assert expected == {("top1", "", ""): 0.0, ("top5", "", ""): 0.0}
    assert _accuracies(rows, "baseline", "imagenet-val") == _accuracies(first, "baseline", "imagenet-val")
    assert len(rows) == len(first)  # replaced, not duplicated
    [line] = _stale_lines(caplog, "finetuned", "imagenet-val")
    assert f"model.checkpoint changed (sha256:{before_sha[:8]}.. -> sha256:{after_sha[:8]}..)" in line
    assert line.endswith("re-evaluating") and "\n" not in line
    assert not _stale_lines(caplog, "baseline", "imagenet-val")


def test_other_weights_file_is_re_evaluated(workspace, constant_weights, tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    data = workspace["data"] / "imagenet" / "val"
    first = {"baseline": {"weights_file": str(constant_weights["0"])}}
    evaluation_run.run_evaluation(models_cfg(workspace, out, first, "only=imagenet-val"))
    assert _accuracies(read_results_csv(out / "results.csv"), "baseline", "imagenet-val")[
        ("top1", "", "")
    ] == 33.3333
    second = {"baseline": {"weights_file": str(constant_weights["999"])}}
    caplog.set_level(logging.INFO, logger="robustft.evaluation.run")
    evaluation_run.run_evaluation(models_cfg(workspace, out, second, "only=imagenet-val"))
    rows = read_results_csv(out / "results.csv")
    assert _accuracies(rows, "baseline", "imagenet-val") == _direct(
        {"name": "vit_tiny_patch16_224", "weights_file": str(constant_weights["999"])},
        "imagenet-val", data,
    ) == {("top1", "", ""): 0.0, ("top5", "", ""): 0.0}  # fmt: skip
    [line] = _stale_lines(caplog, "baseline", "imagenet-val")
    assert "model.weights_file changed (sha256:" in line


def test_other_timm_name_is_re_evaluated(workspace, tmp_path: Path, monkeypatch, caplog) -> None:
    # Same weights, another architecture name: DeiT's own preprocessing (ImageNet mean/std,
    # crop 0.875) replaces the ViT tag's, so the model that produced the rows differs.
    out = tmp_path / "run"
    weights = str(workspace["weights"])
    vit = {"baseline": {"weights_file": weights}}
    evaluation_run.run_evaluation(models_cfg(workspace, out, vit, "only=imagenet-a"))
    deit = {"baseline": {"name": "deit_tiny_patch16_224", "weights_file": weights}}
    calls = _record_calls(monkeypatch)
    caplog.set_level(logging.INFO, logger="robustft.evaluation.run")
    evaluation_run.run_evaluation(models_cfg(workspace, out, deit, "only=imagenet-a"))
    assert calls == [(["baseline"], "imagenet-a")]
    rows = read_results_csv(out / "results.csv")
    assert _accuracies(rows, "baseline", "imagenet-a") == _direct(
        {"name": "deit_tiny_patch16_224", "weights_file": weights}, "imagenet-a",
        workspace["data"] / "imagenet-a",
    )  # fmt: skip
    [line] = _stale_lines(caplog, "baseline", "imagenet-a")
    assert 'model.name changed ("vit_tiny_patch16_224" -> "deit_tiny_patch16_224")' in line


def test_other_protocol_is_re_evaluated(workspace, constant_weights, tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"  # the same directory for both protocols, as with run_name=...
    models = {"baseline": {"weights_file": str(constant_weights["0"])}}
    evaluation_run.run_evaluation(models_cfg(workspace, out, models, "only=imagenet-a"))
    standard = _accuracies(read_results_csv(out / "results.csv"), "baseline", "imagenet-a")
    assert standard[("top1", "", "")] == 33.3333
    caplog.set_level(logging.INFO, logger="robustft.evaluation.run")
    evaluation_run.run_evaluation(
        models_cfg(workspace, out, models, "only=imagenet-a", "protocol=legacy")
    )
    rows = read_results_csv(out / "results.csv")
    assert {r["protocol"] for r in rows} == {"legacy:1000-way"}
    legacy = _accuracies(rows, "baseline", "imagenet-a")
    assert legacy == _direct(
        {"name": "vit_tiny_patch16_224", "weights_file": str(constant_weights["0"])},
        "imagenet-a", workspace["data"] / "imagenet-a", protocol="legacy",
    )  # fmt: skip
    assert legacy[("top1", "", "")] == 0.0
    [line] = _stale_lines(caplog, "baseline", "imagenet-a")
    assert 'protocol changed ("standard" -> "legacy")' in line


def test_rerun_with_nothing_changed_builds_no_model_and_reads_no_image(
    workspace, tmp_path: Path, monkeypatch, caplog
) -> None:
    out = tmp_path / "run"
    cfg = _cfg(workspace, out, "only=[imagenet-val,si-score-area]")
    evaluation_run.run_evaluation(cfg)
    before = (out / "results.csv").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a rerun with nothing changed must not get here")

    for name in ("build_model_from_entry", "build_eval_dataset", "evaluate_models"):
        monkeypatch.setattr(evaluation_run, name, refuse)
    monkeypatch.setattr("robustft.data.layout.load_rgb", refuse)
    caplog.set_level(logging.INFO, logger="robustft.evaluation.run")
    evaluation_run.run_evaluation(cfg)
    assert (out / "results.csv").read_bytes() == before
    assert any("nothing to evaluate" in r.getMessage() for r in caplog.records)


def test_results_csv_without_fingerprints_is_re_evaluated(workspace, tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    cfg = _cfg(workspace, out, "only=[imagenet-val,si-score-area]")
    evaluation_run.run_evaluation(cfg)
    fresh = read_results_csv(out / "results.csv")
    # What the code before fingerprints wrote: no fingerprint column, no sidecar; the
    # numbers here are wrong on purpose (as if another model had produced them).
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "value": "12.500000"} for row in fresh)
    (out / "fingerprints.json").unlink()
    caplog.set_level(logging.INFO, logger="robustft.evaluation.run")
    evaluation_run.run_evaluation(cfg)
    rows = read_results_csv(out / "results.csv")
    key = lambda r: (r["model"], r["dataset"], r["metric"], r["factor"], r["factor_value"])  # noqa: E731
    assert sorted((key(r), r["value"], r["fingerprint"]) for r in rows) == sorted(
        (key(r), r["value"], r["fingerprint"]) for r in fresh
    )
    warnings = [r.getMessage() for r in caplog.records if "without fingerprints" in r.getMessage()]
    assert len(warnings) == 1 and "4 (model, dataset) pair(s)" in warnings[0]
    assert not [r for r in caplog.records if "re-evaluating" in r.getMessage()]  # one line only


def test_fingerprints_json_explains_each_row(workspace, tmp_path: Path) -> None:
    import hashlib
    import json

    out = evaluation_run.run_evaluation(_cfg(workspace, tmp_path / "run", "only=si-score-area"))
    rows = read_results_csv(out / "results.csv")
    records = json.loads((out / "fingerprints.json").read_text())
    assert set(records) == {r["fingerprint"] for r in rows} and len(records) == 2
    by_model = {r["model"]: records[r["fingerprint"]] for r in rows}
    checkpoint = by_model["finetuned"]["inputs"]["model"]
    assert checkpoint["checkpoint"] == "sha256:" + hashlib.sha256(
        workspace["checkpoint"].read_bytes()).hexdigest()  # fmt: skip
    assert by_model["finetuned"]["sources"]["checkpoint"] == str(workspace["checkpoint"].resolve())
    dataset = by_model["baseline"]["inputs"]["dataset"]
    subset = workspace["data"] / "si-score" / "area"
    assert dataset["type"] == "si-score-area"
    assert dataset["root"] == str((workspace["data"] / "si-score").resolve())
    assert dataset["files"] == sum(1 for p in subset.rglob("*") if p.is_file())
