"""TokenCut's degenerate-graph check and its feature / tau options: a complete graph (every
cosine above tau, as DINOv2's biased keys give) is named and not kept; ``features=auto``
keeps TokenCut's own cut wherever the keys' graph is not degenerate and cuts the centred
keys at the median cosine where it is; the manifest, the warning and ``compare_to``; and on
the real DINOv2-S-derived backbone (the ``real`` extra), the quokka's mask."""

from __future__ import annotations

import csv
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from robustft.backbones import backbone_of, create_model
from robustft.data.mask_manifest import TOKENCUT_MANIFEST_NAME, read_tokencut_manifest
from robustft.masks.generate import generate_masks
from robustft.masks.run import run_masks
from robustft.masks.settings import TokenCutSettings
from robustft.masks.tokencut import (
    centred,
    cut_image,
    degenerate_reason,
    extract_patch_features,
    graph_cut,
    median_cosine,
)

GRID = (8, 10)


def constructed_features(region: np.ndarray, dim: int = 16, noise: float = 0.15,
                         seed: int = 0) -> np.ndarray:
    """One direction inside ``region``, an orthogonal one outside, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    features = np.where(region.reshape(-1)[:, None], np.eye(dim)[0], np.eye(dim)[1])
    return features + noise * rng.standard_normal(features.shape)


def _region() -> np.ndarray:
    region = np.zeros(GRID, dtype=bool)
    region[2:6, 3:8] = True
    return region


def _biased(features: np.ndarray, norm: float = 48.0) -> np.ndarray:
    """Every feature plus one shared vector of ``norm``: what softmax attention ignores in keys."""
    bias = np.zeros(features.shape[1])
    bias[5] = norm
    return features + bias


def test_a_shared_bias_makes_the_graph_complete_and_it_is_named():
    keys = _biased(constructed_features(_region()))
    cut = graph_cut(keys, GRID)
    assert cut.share_below_tau == 0.0
    assert cut.eigenvalue == pytest.approx(1.0, abs=1e-9)  # (N I - J) v = N v for v _|_ 1
    assert degenerate_reason(cut).startswith("degenerate graph: second eigenvalue 1.0000, 0.00 %")


def test_auto_cuts_the_centred_keys_of_a_degenerate_graph():
    keys = _biased(constructed_features(_region()))
    cut, used = cut_image(keys, GRID)
    assert used == "centred_keys" and degenerate_reason(cut) == ""
    assert cut.tau == pytest.approx(median_cosine(centred(keys)))
    np.testing.assert_array_equal(cut.mask, _region())


def test_auto_is_tokencuts_own_cut_where_the_graph_is_not_degenerate():
    for seed in range(5):
        keys = constructed_features(_region(), seed=seed)
        cut, used = cut_image(keys, GRID)
        official = graph_cut(keys, GRID, tau=0.2)
        assert used == "keys" and cut.tau == 0.2
        np.testing.assert_array_equal(cut.mask, official.mask)
        np.testing.assert_array_equal(cut.eigenvector, official.eigenvector)
        assert 0 < official.share_below_tau < 1 and official.eigenvalue < 0.99


def test_median_cosine_and_share_below_tau_by_brute_force():
    features = np.random.default_rng(1).standard_normal((12, 5))
    pairs = [(i, j) for i, j in itertools.permutations(range(12), 2)]
    cosines = [features[i] @ features[j] / np.linalg.norm(features[i]) / np.linalg.norm(features[j])
               for i, j in pairs]
    assert median_cosine(features) == pytest.approx(float(np.median(cosines)))
    cut = graph_cut(features, (3, 4), tau=0.1)
    assert cut.share_below_tau == pytest.approx(np.mean([c <= 0.1 for c in cosines]))
    np.testing.assert_allclose(centred(features).mean(0), 0, atol=1e-12)


def test_tau_auto_and_named_features():
    keys = constructed_features(_region(), seed=2)
    cut, used = cut_image(keys, GRID, features_choice="keys", tau="auto")
    assert used == "keys" and cut.tau == pytest.approx(median_cosine(keys))
    with pytest.raises(ValueError, match="features must be one of"):
        cut_image(keys, GRID, features_choice="patches")
    with pytest.raises(ValueError, match="tau: expected a number or 'auto'"):
        TokenCutSettings(tau="high")


@pytest.fixture(scope="module")
def biased_vit() -> torch.nn.Module:
    """A tiny timm ViT whose last block's keys share a bias of norm ~48."""
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, embed_dim=64, depth=2,
                         num_heads=2).eval()
    with torch.no_grad():
        model.get_submodule("blocks.1.attn.qkv").bias[64:128] += 6.0
    return model


@pytest.mark.parametrize("kind, block", [("queries", 0), ("values", -1), ("output", 1), ("keys", -1)])
def test_features_of_any_block_by_hooks_equal_the_layers_by_hand(biased_vit, kind, block):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = biased_vit.patch_embed(images)
        tokens = biased_vit._pos_embed(tokens)
        for i, layer in enumerate(biased_vit.blocks):
            qkv = layer.attn.qkv(layer.norm1(tokens))
            if i == (block % 2):
                if kind != "output":
                    expected = qkv.chunk(3, dim=-1)[("queries", "keys", "values").index(kind)]
            tokens = layer(tokens)
            if i == (block % 2) and kind == "output":
                expected = tokens
    got = backbone_of(biased_vit).token_features(images, kind, block)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert extract_patch_features(biased_vit, images, kind, block).shape == (2, 64, 64)


def _photos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "images" / "shapes"
    folder.mkdir(parents=True)
    for i in range(3):
        pixels = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
        pixels[8 + 4 * i:40, 10:44] = 220
        Image.fromarray(pixels).save(folder / f"s{i}.png")
    return root


def test_degenerate_graphs_are_written_not_kept_and_counted(tmp_path, biased_vit, caplog):
    data = _photos(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        summary = generate_masks(biased_vit, data, tmp_path / "keys", TokenCutSettings(features="keys"),
                                 progress=False, device="cpu")
    rows = read_tokencut_manifest(tmp_path / "keys" / TOKENCUT_MANIFEST_NAME)
    assert summary.degenerate == 3 and summary.kept == 0
    assert all(not row.kept and row.reason.startswith("degenerate graph") for row in rows)
    assert all(row.share_below_tau == 0.0 and row.eigenvalue > 0.99 for row in rows)
    assert len([r for r in caplog.records if "3 of 3 graphs were degenerate" in r.getMessage()]) == 1
    assert len(list((tmp_path / "keys" / "masks").rglob("*.png"))) == 3  # written all the same
    summary = generate_masks(biased_vit, data, tmp_path / "auto", progress=False, device="cpu")
    rows = read_tokencut_manifest(tmp_path / "auto" / TOKENCUT_MANIFEST_NAME)
    assert summary.degenerate == 0
    assert {row.features for row in rows} == {"centred_keys"}
    assert all(row.eigenvalue < 0.99 and row.share_below_tau > 0.01 for row in rows)


def _masks_cfg(overrides: list[str]):
    with initialize_config_module(version_base="1.3", config_module="robustft.configs"):
        return compose(config_name="masks", overrides=overrides)


def test_compare_to_reports_iou_per_image_and_the_mean(tmp_path, capsys):
    data = _photos(tmp_path / "data")
    truth = tmp_path / "truth" / "masks" / "shapes"
    truth.mkdir(parents=True)
    for i in range(2):  # s2 has no true mask
        box = np.zeros((64, 64), dtype=np.uint8)
        box[8 + 4 * i:40, 10:44] = 255
        Image.fromarray(box).save(truth / f"s{i}.png")
    run_masks(_masks_cfg([f"input_dir={data}", f"output_dir={tmp_path / 'out'}",
                    "model.name=vit_tiny_patch16_224", "model.pretrained=false",
                    "model.kwargs={img_size:64,patch_size:8,embed_dim:64,depth:2,num_heads:2}",
                    f"compare_to={tmp_path / 'truth'}", "num_workers=0", "progress=false",
                    "device=cpu"]))
    with open(tmp_path / "out" / "tokencut_iou.csv") as handle:
        table = {row["image"]: float(row["iou"]) for row in csv.DictReader(handle)}
    assert set(table) == {"images/shapes/s0.png", "images/shapes/s1.png", "mean"}
    assert table["mean"] == pytest.approx((table["images/shapes/s0.png"]
                                           + table["images/shapes/s1.png"]) / 2, abs=1e-6)
    assert f"mean IoU {table['mean']:.3f} over 2 images" in capsys.readouterr().out


def test_a_wrong_tau_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="^tau: expected a number or 'auto', got 'high'$"):
        run_masks(_masks_cfg([f"input_dir={tmp_path}", f"output_dir={tmp_path}", "tau=high",
                        "model.name=vit_tiny_patch16_224", "model.pretrained=false"]))


@pytest.mark.real
def test_robustft_masks_defaults_find_the_quokka_on_real_dinov2(tmp_path, real_weights, capsys):
    from fixtures.real import real_assets

    photos, truth = real_assets.write_photo_folder(tmp_path)
    common = [f"input_dir={photos}", f"model.name={real_assets.TIMM_NAME}",
              f"model.weights_file={real_weights.timm_file(224)}", "++model.kwargs.img_size=224",
              f"compare_to={truth}", "num_workers=0", "progress=false", "device=cpu"]
    run_masks(_masks_cfg([*common, f"output_dir={tmp_path / 'auto'}"]))
    rows = {Path(r.image).stem: r for r in read_tokencut_manifest(tmp_path / "auto" / TOKENCUT_MANIFEST_NAME)}
    with open(tmp_path / "auto" / "tokencut_iou.csv") as handle:
        iou = {row["image"]: float(row["iou"]) for row in csv.DictReader(handle)}
    assert iou["photo/quokka.png"] >= 0.8
    assert all(row.kept and row.features == "centred_keys" for row in rows.values())
    masks = {name: np.asarray(Image.open(tmp_path / "auto" / row.mask).resize((64, 64), Image.NEAREST))
             for name, row in rows.items()}
    for a, b in itertools.combinations(masks, 2):
        assert (masks[a] != masks[b]).mean() > 0.05, (a, b)
    # TokenCut's own setting on these weights: every graph complete, every mask refused
    run_masks(_masks_cfg([*common, f"output_dir={tmp_path / 'keys'}", "features=keys"]))
    keys_rows = read_tokencut_manifest(tmp_path / "keys" / TOKENCUT_MANIFEST_NAME)
    assert all(not r.kept and r.eigenvalue == pytest.approx(1.0, abs=1e-6) for r in keys_rows)
    assert "5 degenerate graphs" in capsys.readouterr().out
