"""robustft-eval of two ViTs without a class token in one pass: an average-pooled ViT
(timm ``global_pool='avg'``) and a SigLIP (``vit_*_siglip_*``: ``global_pool='map'``, an
attention pool), both tiny random models saved as weights files, on a generated images+masks
folder. The report has a top-1 and a foreground-share row for each, equal to what a plain
loop over the images computes here (the images are at the models' input size and squashed
without a crop, so the preprocessing is the normalisation alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fixtures.eval_workspace import models_cfg
from fixtures.generic_layout import make_generic_layout
from PIL import Image
from safetensors.torch import save_file
from torch.nn import functional as F  # noqa: N812

import robustft.evaluation.run as evaluation_run
from robustft.backbones import create_model
from robustft.evaluation.report import read_results_csv
from robustft.relevance import relevance_map

SHAPE = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
MODELS = {  # label -> (timm name, pooling keywords)
    "gap": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg",
                                     "fc_norm": True}),
    "siglip": ("vit_base_patch16_siglip_224", {}),
}
CLASSES = 4


def _hydra_dict(values: dict) -> str:
    return "{" + ",".join(f"{k}:{str(v).lower() if isinstance(v, bool) else v}"
                          for k, v in values.items()) + "}"


def _build(label: str, seed: int):
    name, pooling = MODELS[label]
    torch.manual_seed(seed)
    return create_model(name, num_classes=CLASSES, **SHAPE, **pooling).eval()


def _expected(model, root: Path) -> tuple[float, float]:
    """(top-1 %, foreground share %) of ``model`` on the folder, image by image."""
    config = timm.data.resolve_data_config({}, model=model)
    mean, std = (torch.tensor(config[k])[:, None, None] for k in ("mean", "std"))
    correct, shares = [], []
    for label, folder in enumerate(sorted((root / "images").iterdir())):
        for path in sorted(folder.iterdir()):
            pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
            image = ((torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std)[None]
            mask = np.asarray(Image.open(root / "masks" / folder.name / path.name)) > 0
            out = relevance_map(model, image, torch.tensor([label]))
            correct.append(float(out.logits.argmax(dim=-1)[0] == label))
            relevance = F.interpolate(out.relevance.detach()[:, None], size=mask.shape,
                                      mode="bilinear", align_corners=False)[0, 0]
            relevance = (relevance - relevance.min()) / (relevance.max() - relevance.min())
            shares.append(float((relevance * torch.from_numpy(mask)).sum() / relevance.sum()))
    return 100.0 * float(np.mean(correct)), 100.0 * float(np.mean(shares))


def test_an_average_pooled_and_a_siglip_model_in_one_pass(tmp_path: Path) -> None:
    pairs = make_generic_layout(tmp_path / "pairs", num_classes=CLASSES, per_class=3,
                                size=(32, 32))
    entries, models = {}, {}
    for seed, label in enumerate(MODELS):
        models[label] = _build(label, seed)
        weights = tmp_path / f"{label}.safetensors"
        save_file(models[label].state_dict(), str(weights))
        name, pooling = MODELS[label]
        entries[label] = {"name": name, "pretrained": "false", "weights_file": str(weights),
                          "num_classes": str(CLASSES), "kwargs": _hydra_dict({**SHAPE, **pooling})}
    cfg = models_cfg({"data": tmp_path}, tmp_path / "run", entries,
                     f"+eval.datasets.pairs={{type:generic,root:{pairs}}}", "only=pairs",
                     "metrics=[top1,share]", "preprocessing.crop_mode=squash",
                     "preprocessing.crop_pct=1.0")
    out = evaluation_run.run_evaluation(cfg)
    rows = {(r["model"], r["metric"]): r for r in read_results_csv(out / "results.csv")}
    for label, model in models.items():
        top1, share = _expected(model, pairs)
        assert rows[(label, "top1")]["num_images"] == CLASSES * 3
        assert rows[(label, "top1")]["value"] == pytest.approx(top1, abs=1e-6)
        assert rows[(label, "grad_rollout:foreground_share")]["value"] == pytest.approx(
            share, abs=1e-3)
    markdown = (out / "results.md").read_text()
    assert "gap" in markdown and "siglip" in markdown
