"""The seams are one place each (docs/extending.md): a model family, a relevance method, an
evaluation metric and an evaluation dataset type defined and registered here, in the test
module, run through ``robustft-explain`` and ``robustft-eval`` with no change to the
package.

The family builds the hand-written ViT of ``fixtures/hand_vit.py`` (its adapter there) from
a weights file; its fingerprint adds one identity key. The method is the read-out row of
the last block's attention, its heads' maximum, over the patches. Both are checked against
values computed here without them: the maps against attention written out from the block
weights, top-1 against a direct count. The metric is the share of each map's relevance in
the image's top half; robustft-eval's value is checked against the same share computed
here from the hand-written attention, upsampled and normalised as docs/method.md says.
The dataset type reads one flat folder whose file names start with the class; top-1 on it
is checked against a direct count, and its folder rule decides what ``skip_missing`` skips.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.eval_workspace import models_cfg
from fixtures.hand_vit import HandViT, HandViTBackbone
from fixtures.miniature import make_generated_benchmark
from hydra import compose, initialize_config_module
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor

import robustft.evaluation.run as evaluation_run
from robustft.backbones import FAMILIES, Family, ModelSpec, register_family
from robustft.data.eval.base import EvalDatasetType, EvalImageDataset
from robustft.data.eval.registry import EVAL_DATASETS, register_dataset
from robustft.evaluation.explain.run import run_explain
from robustft.evaluation.metrics import EVAL_METRICS, MapBatch, MapMetric, register_metric
from robustft.evaluation.report import read_results_csv
from robustft.evaluation.runner import model_eval_transform
from robustft.labels import identity_protocol
from robustft.relevance import RELEVANCE_METHODS, RelevanceOutput, register_method
from robustft.relevance.capture import capture, subject_of
from robustft.relevance.readout import read_out, read_row

FAMILY, METHOD, METRIC, DATASET = "toy_vit", "toy_head_max", "toy_top_half", "toy_flat"
HAND_VIT_ARGS = {"dim": 16, "depth": 2, "heads": 2, "patch": 8, "image": 32}


# ---------------------------------------------------------------- the family: one record


def build_hand_vit(spec: ModelSpec, key: str) -> HandViT:
    """``ModelSpec(family="toy_vit", name="hand_vit")``: the hand ViT, its weights from
    ``weights_file`` (random without one)."""
    if spec.name != "hand_vit":
        raise ValueError(f"{key}.name: the toy family has one model, hand_vit; got {spec.name!r}")
    model = HandViT(num_classes=spec.num_classes or 4, **{**HAND_VIT_ARGS, **spec.kwargs})
    if spec.weights_file:
        model.load_state_dict(load_file(spec.weights_file))
    return model


def toy_identity(entry, key, sha256):
    return {"toy_vit": "hand-written, v1"}, {}


TOY_FAMILY = Family(name=FAMILY, build=build_hand_vit,
                    adapters=lambda: [(HandViT, HandViTBackbone)], weights_identity=toy_identity)


# ---------------------------------------------------------------- the method: one function


def head_max_attention(model, images: Tensor, target: Tensor | None = None,
                       gradient_mode: str = "detached", *, backend: str = "eager"
                       ) -> RelevanceOutput:
    """The last block's attention from the read-out token, the maximum over heads."""
    del backend
    subject = subject_of(METHOD, model, images, gradient_mode, autograd=False)
    captured = capture(subject, images, target)
    row = read_row(captured.attentions[-1].detach(), subject.layout).amax(dim=1)
    return read_out(row, subject.layout, captured.logits.detach(), captured.target)


# ---------------------------------------------------------------- the metric: one class


class TopHalfShare(MapMetric):
    """The share of each map's relevance in the image's top half (%), mean over images, of
    the predicted class's map; needs neither masks nor labels."""

    name = METRIC
    quantity = "top_half_share"
    label = "top-half share"
    titles = {"top_half_share": "relevance in the top half of the image (%), mean over images"}
    constant_maps_scoring = "a zero map scores 0 %"

    def __init__(self, settings, *, mean, std) -> None:
        super().__init__(settings, mean=mean, std=std)
        self.shares: list[Tensor] = []

    @classmethod
    def fingerprint_inputs(cls, settings):
        return {"rows": "top half"}

    def update(self, batch: MapBatch) -> None:
        relevance = batch.relevance
        top = relevance[:, : relevance.shape[1] // 2].flatten(1).sum(1)
        self.shares.append((top / relevance.flatten(1).sum(1).clamp_min(1e-12)).cpu())
        self.constant_maps += int((relevance.flatten(1).amax(1) == 0).sum())

    def results(self):
        return [(self.quantity, "", "", 100.0 * float(torch.cat(self.shares).mean()))]


# ---------------------------------------------------------------- the dataset: one record


def flat_folder(root, *, protocol: str = "standard", name: str | None = None,
                classes: list[str]) -> EvalImageDataset:
    """``<root>/images/<class>__<anything>.png``: the class is the file name's prefix, its
    label the class's position in ``classes``."""
    del protocol  # the folder's own classes
    images = Path(root) / "images"
    samples = [(path, classes.index(path.name.split("__")[0]), {})
               for path in sorted(images.glob("*.png"))]
    return EvalImageDataset(name or DATASET, identity_protocol(len(classes)), samples,
                            root=images)


TOY_DATASET = EvalDatasetType(DATASET, flat_folder, folder=lambda root, options: root / "images")


@pytest.fixture
def registered():
    """Register both for the test only (a registration at import would reach every test
    of the session: the method lists, the families a layering test knows)."""
    register_family(TOY_FAMILY)
    register_method(METHOD, differentiable=False)(head_max_attention)
    register_metric(TopHalfShare)
    register_dataset(TOY_DATASET)
    yield
    FAMILIES.pop(FAMILY)
    RELEVANCE_METHODS.pop(METHOD)
    EVAL_METRICS.pop(METRIC)
    EVAL_DATASETS.pop(DATASET)


# ---------------------------------------------------------------- independent truth


def attention_by_hand(model: HandViT, image: Tensor) -> list[Tensor]:
    """Each block's (heads, N, N) attention for one image (3, H, W), written out from the
    block weights (no capture, no adapter)."""
    x = model.embed(image[None]).flatten(2).transpose(1, 2)
    x = torch.cat([model.cls.expand(1, -1, -1), x], dim=1) + model.pos
    attentions = []
    for block in model.blocks:
        tokens, dim = x.shape[1], x.shape[2]
        qkv = block.qkv(block.norm1(x))[0].reshape(tokens, 3, block.heads, dim // block.heads)
        heads = []
        for head in range(block.heads):
            q, k = qkv[:, 0, head], qkv[:, 1, head]
            heads.append(torch.softmax(q @ k.T / (dim // block.heads) ** 0.5, dim=-1))
        attention = torch.stack(heads)
        attentions.append(attention)
        mixed = torch.cat([attention[h] @ qkv[:, 2, h] for h in range(block.heads)], dim=-1)
        x = x + block.proj(mixed)[None]
        x = x + block.mlp(block.norm2(x))
    return attentions


def _saved_hand_vit(path: Path, num_classes: int) -> HandViT:
    torch.manual_seed(7)
    model = HandViT(num_classes=num_classes, **HAND_VIT_ARGS).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def test_toy_family_and_method_explain_through_robustft_explain(registered, tmp_path):
    bench = make_generated_benchmark(tmp_path / "bench")
    model = _saved_hand_vit(tmp_path / "hand.safetensors", num_classes=3)
    images = sorted((bench.root / "shuffled" / "square").iterdir())
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("explain", overrides=[
            f"image=[{images[0]},{images[1]}]", f"output_dir={tmp_path / 'run'}",
            "device=cpu", "progress=false", f"methods=[{METHOD},grad_rollout]",
            f"model.family={FAMILY}", "model.name=hand_vit", "model.num_classes=3",
            f"model.weights_file={tmp_path / 'hand.safetensors'}"])
    result = run_explain(cfg)
    assert len(result.pngs) == 2
    with (tmp_path / "run" / "maps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["model"], row["method"]) for row in rows} == {
        ("hand_vit", METHOD), ("hand_vit", "grad_rollout")}
    transform = model_eval_transform(HandViTBackbone(model).preprocessing())
    for row in (row for row in rows if row["method"] == METHOD):
        with Image.open(row["image_path"]) as picture:
            tensor = transform(picture.convert("RGB"))
        with torch.no_grad():
            last = attention_by_hand(model, tensor)[-1]
        expected = last[:, 0, 1:].amax(dim=0).reshape(4, 4)  # CLS row, patches, max of heads
        maps = np.load(tmp_path / "run" / row["npy"])
        assert maps.shape == (1, 4, 4)
        np.testing.assert_allclose(maps[0], expected.numpy(), rtol=1e-5, atol=1e-7)


def test_toy_family_scores_through_robustft_eval(registered, tmp_path):
    bench = make_generated_benchmark(tmp_path / "bench", images_per_class=3)
    model = _saved_hand_vit(tmp_path / "hand.safetensors", num_classes=3)
    cfg = models_cfg(
        {}, tmp_path / "run",
        {"toy": {"family": FAMILY, "name": "hand_vit", "num_classes": "3", "kwargs": "{}",
                 "weights_file": str(tmp_path / "hand.safetensors")}},
        f"+eval.datasets.own={{type:generated,root:{bench.root},split:shuffled}}", "only=[own]",
        data_root=tmp_path)
    out = evaluation_run.run_evaluation(cfg)
    rows = read_results_csv(out / "results.csv")
    top1 = {r["model"]: float(r["value"]) for r in rows if r["metric"] == "top1"}
    # the direct count: every image of the split through the model's own transform
    transform = model_eval_transform(HandViTBackbone(model).preprocessing())
    classes = (bench.root / "classes.txt").read_text().split()
    correct = total = 0
    for label, name in enumerate(classes):
        for path in sorted((bench.root / "shuffled" / name).iterdir()):
            with Image.open(path) as picture, torch.no_grad():
                correct += int(model(transform(picture.convert("RGB"))[None]).argmax() == label)
            total += 1
    assert total == 9
    assert top1 == {"toy": pytest.approx(100.0 * correct / total)}
    # the family's weights identity is part of the pair's fingerprint
    records = json.loads((out / "fingerprints.json").read_text())
    assert [record["inputs"]["model"]["toy_vit"] for record in records.values()] == [
        "hand-written, v1"]


def test_a_spec_of_the_toy_family_builds_only_while_it_is_registered(tmp_path):
    spec = ModelSpec(family=FAMILY, name="hand_vit", pretrained=False)
    with pytest.raises(ValueError, match=rf"^model.family: unknown model family '{FAMILY}'; "
                                         r"known: \['hf', 'open_clip', 'timm'\]$"):
        spec.build()
    register_family(TOY_FAMILY)
    try:
        assert isinstance(spec.build(), HandViT)
    finally:
        FAMILIES.pop(FAMILY)


def test_toy_metric_of_the_toy_method_scores_through_robustft_eval(registered, tmp_path):
    bench = make_generated_benchmark(tmp_path / "bench", images_per_class=3)
    model = _saved_hand_vit(tmp_path / "hand.safetensors", num_classes=3)
    cfg = models_cfg(
        {}, tmp_path / "run",
        {"toy": {"family": FAMILY, "name": "hand_vit", "num_classes": "3", "kwargs": "{}",
                 "weights_file": str(tmp_path / "hand.safetensors")}},
        f"+eval.datasets.own={{type:generated,root:{bench.root},split:shuffled}}", "only=[own]",
        f"metrics=[{METRIC}]", f"relevance_method={METHOD}", data_root=tmp_path)
    out = evaluation_run.run_evaluation(cfg)
    rows = {r["metric"]: r for r in read_results_csv(out / "results.csv")}
    assert set(rows) == {f"{METHOD}:top_half_share", f"{METHOD}:top_half_share_constant_maps"}
    # the same share from the attention written out by hand: the CLS row of the last
    # block, max over heads, bilinear to the input (half-pixel centres), min-max per image
    transform = model_eval_transform(HandViTBackbone(model).preprocessing())
    shares = []
    for path in sorted((bench.root / "shuffled").rglob("*.png")):
        with Image.open(path) as picture:
            tensor = transform(picture.convert("RGB"))
        with torch.no_grad():
            grid = attention_by_hand(model, tensor)[-1][:, 0, 1:].amax(dim=0).reshape(1, 1, 4, 4)
        pixels = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
        pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min())
        shares.append(float(pixels[:16].sum() / pixels.sum()))
    assert len(shares) == 9
    share = rows[f"{METHOD}:top_half_share"]
    assert float(share["value"]) == pytest.approx(100.0 * sum(shares) / 9, rel=1e-5)
    assert int(share["num_images"]) == 9
    assert float(rows[f"{METHOD}:top_half_share_constant_maps"]["value"]) == 0.0
    # the metric's own settings are in the pair's fingerprint, its heading in results.md
    records = json.loads((out / "fingerprints.json").read_text())
    assert [record["inputs"]["explanations"][METRIC] for record in records.values()] == [
        {"rows": "top half"}]
    assert (f"## `{METHOD}`: relevance in the top half of the image (%), mean over images"
            in (out / "results.md").read_text())


def test_an_unregistered_metric_is_refused_in_one_line(tmp_path):
    cfg = models_cfg({}, tmp_path / "run", {"baseline": {}}, f"metrics=[{METRIC}]",
                     data_root=tmp_path)
    with pytest.raises(ValueError, match=r"^metrics: expected a list of \['top1', "
                                         r"'perturbation', 'segmentation', 'share'\], "
                                         rf"got \['{METRIC}'\]$"):
        evaluation_run.run_evaluation(cfg)


def test_toy_dataset_type_scores_through_robustft_eval(registered, tmp_path):
    bench = make_generated_benchmark(tmp_path / "bench", images_per_class=3)
    model = _saved_hand_vit(tmp_path / "hand.safetensors", num_classes=3)
    classes = (bench.root / "classes.txt").read_text().split()
    flat = tmp_path / "flat" / "images"
    flat.mkdir(parents=True)
    for path in (bench.root / "shuffled").rglob("*.png"):
        (flat / f"{path.parent.name}__{path.name}").write_bytes(path.read_bytes())
    toy = {"toy": {"family": FAMILY, "name": "hand_vit", "num_classes": "3", "kwargs": "{}",
                   "weights_file": str(tmp_path / "hand.safetensors")}}
    listed = f"[{','.join(classes)}]"
    cfg = models_cfg(
        {}, tmp_path / "run", toy,
        f"+eval.datasets.flat={{type:{DATASET},root:{tmp_path / 'flat'},classes:{listed}}}",
        f"+eval.datasets.gone={{type:{DATASET},root:{tmp_path},classes:{listed}}}",
        "only=[flat,gone]", "skip_missing=true", data_root=tmp_path)
    out = evaluation_run.run_evaluation(cfg)
    rows = read_results_csv(out / "results.csv")
    # "gone"'s root exists, but its folder rule's images/ does not: skipped as missing
    assert {(r["dataset"], r["metric"]) for r in rows} == {("flat", "top1")}
    transform = model_eval_transform(HandViTBackbone(model).preprocessing())
    correct = 0
    for path in sorted(flat.iterdir()):
        with Image.open(path) as picture, torch.no_grad():
            predicted = int(model(transform(picture.convert("RGB"))[None]).argmax())
        correct += int(predicted == classes.index(path.name.split("__")[0]))
    assert float(rows[0]["value"]) == pytest.approx(100.0 * correct / 9)
    assert int(rows[0]["num_images"]) == 9
    # the folder rule's folder is what the fingerprint counts
    records = json.loads((out / "fingerprints.json").read_text())
    assert [record["inputs"]["dataset"]["files"] for record in records.values()] == [9]
