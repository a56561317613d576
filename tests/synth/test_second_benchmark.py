"""The second generated benchmark (``objects=glyphs``, ``backgrounds=fields``; data=synth_b):
deterministic files, masks that are the glyphs, background assignment per split from the
metadata, and objects / backgrounds that are not the first benchmark's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.benchmark_files import folder_digest, metadata_rows
from PIL import Image

from robustft.synth import SynthConfig, class_names, generate_benchmark, render_sample
from robustft.synth.config import EVAL_SPLITS, GENERIC_SPLITS, PLAIN_BACKGROUND, SPLITS
from robustft.synth.fields import FIELD_NAMES, background_spec, field, hatch_spec
from robustft.synth.fields import render_background as render_field
from robustft.synth.glyphs import GLYPH_NAMES, glyph_mask
from robustft.synth.shapes import SHAPE_NAMES, shape_mask

# data=synth_b's generator settings, at a tiny size
B = SynthConfig(num_classes=10, pretrain_per_class=3, train_per_class=3, eval_per_class=3,
                objects="glyphs", backgrounds="fields", area_range=(0.12, 0.2),
                rotation_range=(-15.0, 15.0), size_grid=(0.06, 0.12, 0.21), location_area=0.08,
                seed=5)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_b")
    generate_benchmark(root, B, progress=False)
    return root


def test_equal_configs_give_byte_identical_files_for_any_worker_count(bench, tmp_path) -> None:
    again = SynthConfig.from_dict(json.loads(json.dumps(B.to_dict())))  # as Hydra builds it
    generate_benchmark(tmp_path, again, progress=False, num_workers=2)
    first, second = folder_digest(bench), folder_digest(tmp_path)
    assert len(first) > 10 * 3 * len(SPLITS) * 2 and first == second
    # another seed draws other files
    other = tmp_path / "other"
    generate_benchmark(other, dataclasses.replace(B, seed=6), progress=False,
                       splits=("shuffled",))
    assert (folder_digest(other)["shuffled/00_T/T_00000.png"]
            != first["shuffled/00_T/T_00000.png"])


def test_benchmark_json_names_the_generator_and_the_classes(bench) -> None:
    info = json.loads((bench / "benchmark.json").read_text())
    assert info["config"]["objects"] == "glyphs" and info["config"]["backgrounds"] == "fields"
    assert SynthConfig.from_dict(info["config"]) == B
    assert info["classes"] == class_names(B) == [f"{i:02d}_{g}" for i, g in enumerate(GLYPH_NAMES)]
    assert [b["pattern"] for b in info["backgrounds"]] == [FIELD_NAMES[k % 5] for k in range(10)]
    for split in SPLITS:
        assert info["splits"][split]["count"] == 30
    for split in GENERIC_SPLITS:
        assert (bench / split / "images" / "04_K").is_dir() and (bench / split / "masks" / "04_K").is_dir()
    for split in EVAL_SPLITS:
        assert (bench / split / "04_K").is_dir() and (bench / f"{split}_masks" / "04_K").is_dir()


def test_every_mask_is_its_glyph_at_the_recorded_factors_and_the_object_is_on_it(bench) -> None:
    for split in SPLITS:
        for row in metadata_rows(bench, split):
            label = int(row["label"])
            mask = np.asarray(Image.open(bench / row["mask_path"])) > 0
            expected = glyph_mask(GLYPH_NAMES[label], 64, float(row["area"]), float(row["x"]),
                                  float(row["y"]), float(row["rotation"]))
            assert (mask == expected).mean() > 0.995, row  # factors are rounded in the CSV
            assert float(row["mask_fraction"]) == pytest.approx(mask.mean(), abs=1e-6)
            assert (bench / split / row["path"]).is_file()  # path: relative to the split
    # the composite is the object layer exactly on the mask, the background elsewhere
    quiet = dataclasses.replace(B, fg_noise=0.0)
    for label in range(10):
        image, mask, fg, bg = render_sample(quiet, label, (label + 2) % 10, 0.16, 0.5, 0.5,
                                            9.0 * label, rng=label, return_layers=True)
        assert np.array_equal(mask, glyph_mask(GLYPH_NAMES[label], 64, 0.16, 0.5, 0.5, 9.0 * label))
        assert np.array_equal(image[mask], fg[mask]) and np.array_equal(image[~mask], bg[~mask])
        assert len(np.unique(fg.reshape(-1, 3), axis=0)) == 2  # fill + hatching shade


def test_background_assignment_per_split_from_the_metadata(bench) -> None:
    for split in ("train", "pretrain", "in_distribution"):  # tie 1.0: own, or plain
        for row in metadata_rows(bench, split):
            assert (row["own_background"] == "1") or (
                split != "train" and int(row["background"]) == PLAIN_BACKGROUND), row
    assert all(int(r["background"]) >= 0 for r in metadata_rows(bench, "train"))
    anti = metadata_rows(bench, "anti_correlated")
    assert all(int(r["background"]) != int(r["label"]) and r["own_background"] == "0"
               and int(r["background"]) >= 0 for r in anti)
    shuffled = [int(r["background"]) for r in metadata_rows(bench, "shuffled")]
    assert all(0 <= b < 10 for b in shuffled) and len(set(shuffled)) >= 6
    assert all(int(r["background"]) == PLAIN_BACKGROUND for r in metadata_rows(bench, "rendition"))
    # the background a row names is what the image shows there: re-render it
    from robustft.synth.render import render_split_item

    for split in ("shuffled", "anti_correlated"):
        for row in metadata_rows(bench, split)[::4]:
            label, index = int(row["label"]), int(Path(row["path"]).stem.split("_")[-1])
            image, _mask, factors = render_split_item(B, split, label, index)
            assert factors["background"] == int(row["background"])
            assert np.array_equal(np.asarray(Image.open(bench / split / row["path"])), image)


def test_glyphs_are_other_objects_than_the_shapes_and_keep_their_area() -> None:
    for glyph in GLYPH_NAMES:
        mask = glyph_mask(glyph, 128, 0.15, 0.5, 0.5, 0.0)
        assert mask.mean() == pytest.approx(0.15, rel=0.06), glyph
        assert np.array_equal(mask, glyph_mask(glyph, 128, 0.15, 0.5, 0.5, 360.0))
        for shape in SHAPE_NAMES:
            other = shape_mask(shape, 128, 0.15, 0.5, 0.5, 0.0)
            # the closest pair, the A's strokes and the filled triangle, overlap 61 %
            assert (mask & other).sum() / (mask | other).sum() < 0.65, (glyph, shape)
    # no glyph is another one turned (the rotation sweep turns them by up to 315 degrees): a W
    # beside the M would overlap it ~100 % at 180; the closest pair, H and M (two shared
    # uprights), overlaps 76 %
    for a in GLYPH_NAMES:
        for b in GLYPH_NAMES:
            if a != b:
                ma = glyph_mask(a, 96, 0.15, 0.5, 0.5, 0.0)
                for angle in range(0, 360, 45):
                    mb = glyph_mask(b, 96, 0.15, 0.5, 0.5, float(angle))
                    assert (ma & mb).sum() / (ma | mb).sum() < 0.85, (a, b, angle)


def test_fields_are_smooth_grey_levels_and_the_hatching_is_class_specific() -> None:
    rng = np.random.default_rng(0)
    for pattern in FIELD_NAMES:
        for variant in (0, 1):
            f = field(pattern, variant, 64, rng)
            assert f.shape == (64, 64) and f.min() >= 0.0 and f.max() <= 1.0
            # continuous blends, unlike the two-colour binary textures of data=synth
            assert len(np.unique(f.round(3))) > 20, (pattern, variant)
    assert len({(background_spec(k, 10)["pattern"], background_spec(k, 10)["variant"])
                for k in range(10)}) == 10
    assert len({hatch_spec(label) for label in range(10)}) == 10
    quiet = dataclasses.replace(B, bg_noise=0.0)
    image, (light, dark) = render_field(3, quiet, np.random.default_rng(1))
    assert len(np.unique(image.reshape(-1, 3).round(), axis=0)) > 20
    plain, _ = render_field(PLAIN_BACKGROUND, quiet, np.random.default_rng(1))
    assert len(np.unique(plain.reshape(-1, 3), axis=0)) == 1


def test_family_settings_are_checked_and_omitted_from_format_1_configs() -> None:
    with pytest.raises(ValueError, match="objects must be one of shapes, glyphs") as error:
        SynthConfig(objects="letters")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="backgrounds must be one of"):
        SynthConfig(backgrounds="paintings")
    with pytest.raises(ValueError, match="unknown shapes .*disk.* for objects=glyphs"):
        SynthConfig(objects="glyphs", num_classes=2, shapes=("T", "disk"))
    with pytest.raises(ValueError, match="num_classes=11 > 10 available glyphs"):
        SynthConfig(objects="glyphs", num_classes=11)
    # the first generator's benchmark.json has no family keys, and reads back as the default
    plain = SynthConfig().to_dict()
    assert "objects" not in plain and "backgrounds" not in plain
    assert SynthConfig.from_dict(plain) == SynthConfig()
    assert B.to_dict()["objects"] == "glyphs"
