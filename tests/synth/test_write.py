"""Tests of the generated spurious-background benchmark (robustft.synth.write)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.benchmark_files import metadata_rows
from PIL import Image

from robustft.synth import (
    EVAL_SPLITS,
    GENERIC_SPLITS,
    SHAPE_NAMES,
    SPLITS,
    SWEEP_SPLITS,
    SynthConfig,
    background_spec,
    class_names,
    generate_benchmark,
    marking_spec,
    read_benchmark,
    render_background,
    render_sample,
    render_split_item,
    shape_mask,
)

TINY = SynthConfig(num_classes=4, pretrain_per_class=8, train_per_class=8, eval_per_class=8,
                   seed=3)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, generate_benchmark(root, TINY, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- layout ------------------------------------------------------------------------------


def test_layout_and_class_names(bench: tuple[Path, dict]) -> None:
    root, info = bench
    names = class_names(TINY)
    assert names == ["00_disk", "01_square", "02_triangle", "03_plus"]
    assert names == sorted(names)
    assert (root / "classes.txt").read_text().splitlines() == names
    assert info == read_benchmark(root)
    assert info["config"] == TINY.to_dict() and info["seed"] == 3
    assert list(info["splits"]) == list(SPLITS)
    for cls in names:
        for split in GENERIC_SPLITS:
            imgs = sorted(p.name for p in (root / split / "images" / cls).iterdir())
            masks = sorted(p.name for p in (root / split / "masks" / cls).iterdir())
            assert imgs == masks and len(imgs) == 8
        for split in EVAL_SPLITS:
            imgs = sorted(p.name for p in (root / split / cls).iterdir())
            masks = sorted(p.name for p in (root / f"{split}_masks" / cls).iterdir())
            assert imgs == masks and len(imgs) == 8
    for split in SPLITS:
        assert info["splits"][split]["count"] == 4 * 8
    # Formats: RGB uint8 images, single-channel {0, 255} masks.
    img = Image.open(root / "shuffled/02_triangle/triangle_00000.png")
    mask = Image.open(root / "shuffled_masks/02_triangle/triangle_00000.png")
    assert img.mode == "RGB" and img.size == (64, 64)
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert np.asarray(mask).any()


def test_metadata_rows_match_files_and_factors(bench: tuple[Path, dict]) -> None:
    root, _ = bench
    names = class_names(TINY)
    for split in SPLITS:
        split_dir = root / split
        rows = metadata_rows(root, split)
        listed = {r["path"] for r in rows}
        img_dir = split_dir / "images" if split in GENERIC_SPLITS else split_dir
        on_disk = {p.relative_to(split_dir).as_posix() for p in img_dir.rglob("*.png")}
        assert listed == on_disk, split
        for r in rows:
            label = int(r["label"])
            assert r["class"] == names[label] and r["path"].split("/")[-2] == names[label]
            mask = np.asarray(Image.open(root / r["mask_path"])) > 0
            assert float(r["mask_fraction"]) == pytest.approx(mask.mean(), abs=1e-6)
            # The mask is exactly the shape at the recorded factors.
            expected = shape_mask(
                TINY.class_shapes[label],
                64,
                float(r["area"]),
                float(r["x"]),
                float(r["y"]),
                float(r["rotation"]),
            )
            assert (mask == expected).mean() > 0.995  # factors are rounded in the CSV
    size = metadata_rows(root, "size")
    assert {float(r["area"]) for r in size} == set(TINY.size_grid)
    assert all(float(r["rotation"]) == 0 and float(r["x"]) == 0.5 for r in size)
    loc = metadata_rows(root, "location")
    pairs = {(float(r["x"]), float(r["y"])) for r in loc}
    assert pairs == {(x, y) for x in TINY.location_grid for y in TINY.location_grid}
    assert all(float(r["area"]) == TINY.location_area for r in loc)
    rot = metadata_rows(root, "rotation")
    assert {float(r["rotation"]) for r in rot} == set(TINY.rotation_grid)
    assert all(float(r["area"]) == pytest.approx(TINY.default_area) for r in rot)


def test_background_assignment(bench: tuple[Path, dict]) -> None:
    root, _ = bench
    anti = metadata_rows(root, "anti_correlated")
    assert all(int(r["background"]) != int(r["label"]) for r in anti)
    assert all(r["own_background"] == "0" for r in anti)
    assert all(int(r["background"]) == -1 for r in metadata_rows(root, "rendition"))
    assert all(0 <= int(r["background"]) < 4 for r in metadata_rows(root, "shuffled"))


@pytest.mark.parametrize("tie", [0.9, 0.5])
def test_tie_rate(tie: float) -> None:
    # Sampling only (no rendering / files): the train tie is ~tie, anti-correlated is never
    # own-background, shuffled is ~1/K.
    from robustft.synth.render import _sample_factors

    cfg = SynthConfig(num_classes=5, tie=tie, plain_prob=0.0, seed=1)
    n = 600

    def own_rate(split: str) -> float:
        own = [
            _sample_factors(cfg, split, c, i)["background"] == c for c in range(5) for i in range(n)
        ]
        return float(np.mean(own))

    assert own_rate("train") == pytest.approx(tie, abs=0.03)
    assert own_rate("pretrain") == pytest.approx(tie, abs=0.03)
    assert own_rate("in_distribution") == pytest.approx(tie, abs=0.03)
    assert own_rate("shuffled") == pytest.approx(1 / 5, abs=0.03)
    assert own_rate("anti_correlated") == 0.0
    # Non-own backgrounds are spread over all other classes.
    bgs = [_sample_factors(cfg, "anti_correlated", 0, i)["background"] for i in range(n)]
    assert set(bgs) == {1, 2, 3, 4}


# ---- exactness and determinism -----------------------------------------------------------


def test_plain_backdrop_share_and_rendering() -> None:
    # The plain share of pretrain / in_distribution is ~plain_prob (tie 1.0 elsewhere); train
    # and the other splits never get a plain backdrop; images that keep their texture do not
    # change with plain_prob; a plain backdrop is one flat colour (up to the pixel noise).
    from robustft.synth import PLAIN_BACKGROUND
    from robustft.synth.render import _sample_factors

    n = 500
    cfg = SynthConfig(num_classes=5, tie=1.0, plain_prob=0.3, seed=2)
    no_plain = dataclasses.replace(cfg, plain_prob=0.0)
    for split in ("pretrain", "in_distribution"):
        labelled = [(c, _sample_factors(cfg, split, c, i)) for c in range(5) for i in range(n)]
        plain = [f["background"] == PLAIN_BACKGROUND for _, f in labelled]
        assert np.mean(plain) == pytest.approx(0.3, abs=0.03)
        assert all(f["background"] == c  # tie 1.0
                   for c, f in labelled if f["background"] != PLAIN_BACKGROUND)
        for c in range(5):
            for i in range(20):
                f, g = _sample_factors(cfg, split, c, i), _sample_factors(no_plain, split, c, i)
                if f["background"] != PLAIN_BACKGROUND:
                    assert f == g
    for split in ("train", "shuffled", "anti_correlated", "size", "location", "rotation"):
        assert all(_sample_factors(cfg, split, c, i)["background"] >= 0
                   for c in range(5) for i in range(100))

    quiet = dataclasses.replace(cfg, bg_noise=0.0, fg_noise=0.0)
    image, mask, fg, bg = render_sample(quiet, 1, PLAIN_BACKGROUND, 0.3, 0.5, 0.5, 0.0, rng=4,
                                        return_layers=True)
    assert len(np.unique(bg.reshape(-1, 3), axis=0)) == 1
    assert np.array_equal(image, np.where(mask[..., None], fg, bg))
    assert np.abs(fg[0, 0].astype(float) - bg[0, 0].astype(float)).max() > 20  # contrast
    with pytest.raises(ValueError, match="background must be in"):
        render_sample(quiet, 1, 7, 0.3, 0.5, 0.5, 0.0, rng=4)


def test_mask_exact_compositing() -> None:
    cfg = SynthConfig(num_classes=10)
    for label in range(10):
        image, mask, fg, bg = render_sample(
            cfg,
            label,
            (label + 3) % 10,
            area=0.15,
            x=0.45,
            y=0.55,
            rotation=17.0 * label,
            rng=label,
            return_layers=True,
        )
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert np.array_equal(image[mask], fg[mask])
        assert np.array_equal(image[~mask], bg[~mask])
        # The background layer is the texture rendered first from the same generator.
        texture, _ = render_background((label + 3) % 10, cfg, np.random.default_rng(label))
        assert np.array_equal(bg, np.clip(np.rint(texture), 0, 255).astype(np.uint8))
        assert np.array_equal(
            mask, shape_mask(cfg.class_shapes[label], 64, 0.15, 0.45, 0.55, 17.0 * label)
        )
        # The object stands out: mean colour distance between the two layers under the mask.
        diff = np.linalg.norm(fg[mask].astype(float) - bg[mask].astype(float), axis=1)
        assert diff.mean() > 50


def test_written_files_rerender_exactly(bench: tuple[Path, dict]) -> None:
    root, _ = bench
    for split in ("train", "anti_correlated", "rendition", "location"):
        for r in metadata_rows(root, split)[::7]:
            label, index = int(r["label"]), int(Path(r["path"]).stem.split("_")[-1])
            image, mask, _ = render_split_item(TINY, split, label, index)
            split_dir = root / ("train" if split == "train" else split)
            assert np.array_equal(np.asarray(Image.open(split_dir / r["path"])), image)
            assert np.array_equal(np.asarray(Image.open(root / r["mask_path"])) > 0, mask)


def test_shape_geometry() -> None:
    # Area matches the request, rotation by 360 is identity, masks have hard edges (bool).
    for shape in SHAPE_NAMES:
        m = shape_mask(shape, 128, 0.12, 0.5, 0.5, 0.0)
        assert m.mean() == pytest.approx(0.12, rel=0.06), shape
        assert np.array_equal(m, shape_mask(shape, 128, 0.12, 0.5, 0.5, 360.0))
    # Rotation is counter-clockwise on screen: the horizontal bar turned 90 degrees is vertical.
    bar = shape_mask("bar", 64, 0.1, 0.5, 0.5, 90.0)
    rows, cols = np.nonzero(bar)
    assert np.ptp(rows) > 2.5 * np.ptp(cols)
    # Triangle points up at 0 degrees, left at 90 (counter-clockwise).
    tri = shape_mask("triangle", 64, 0.15, 0.5, 0.5, 90.0)
    cols = np.nonzero(tri)[1]
    assert np.sum(cols < 32) < np.sum(cols >= 32)  # the wide base is on the right


def test_rendition_style() -> None:
    filled_cfg = SynthConfig(num_classes=4)
    strokes_cfg = dataclasses.replace(filled_cfg, rendition_mask="strokes")
    img_f, mask_f = render_sample(filled_cfg, 1, 0, 0.2, 0.5, 0.5, 0.0, rng=5, style="rendition")
    img_s, mask_s = render_sample(strokes_cfg, 1, 0, 0.2, 0.5, 0.5, 0.0, rng=5, style="rendition")
    assert np.array_equal(img_f, img_s)  # the mask convention does not change the picture
    assert np.array_equal(mask_f, shape_mask("square", 64, 0.2, 0.5, 0.5, 0.0))
    assert mask_s.sum() < mask_f.sum() and not (mask_s & ~mask_f).any()
    # Default "chalk": light strokes on a dark board; "ink": dark strokes on light paper.
    assert img_s[mask_s].mean() > 150 and img_s[~mask_f].mean() < 100
    ink_cfg = dataclasses.replace(strokes_cfg, rendition_style="ink")
    img_i, mask_i = render_sample(ink_cfg, 1, 0, 0.2, 0.5, 0.5, 0.0, rng=5, style="rendition")
    assert np.array_equal(mask_i, mask_s)
    assert img_i[mask_i].mean() < 120 < img_i[~mask_f].mean()


def test_determinism_and_worker_independence(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, train_per_class=6, eval_per_class=3, num_classes=3)
    generate_benchmark(tmp_path / "a", cfg, progress=False)
    generate_benchmark(tmp_path / "b", cfg, progress=False, num_workers=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 50
    assert a == b
    # Another seed gives other images.
    generate_benchmark(tmp_path / "c", dataclasses.replace(cfg, seed=4), progress=False)
    c = _files(tmp_path / "c")
    assert c["train/images/00_disk/disk_00000.png"] != a["train/images/00_disk/disk_00000.png"]


def test_images_do_not_depend_on_counts() -> None:
    # Per-image seeding: image i of class c is the same whatever the per-class counts.
    small = dataclasses.replace(TINY, train_per_class=2)
    big = dataclasses.replace(TINY, train_per_class=50)
    a, _, _ = render_split_item(small, "train", 2, 1)
    b, _, _ = render_split_item(big, "train", 2, 1)
    assert np.array_equal(a, b)


# ---- regeneration ------------------------------------------------------------------------


def test_regeneration_skip_and_conflict(tmp_path: Path) -> None:
    cfg = SynthConfig(num_classes=2, pretrain_per_class=2, train_per_class=2, eval_per_class=1)
    info = generate_benchmark(tmp_path, cfg, progress=False)
    probe = tmp_path / "train/images/00_disk/disk_00000.png"
    stamp = probe.stat().st_mtime_ns
    # Same config (also when built from lists, e.g. by Hydra): skipped, files untouched.
    same = SynthConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert generate_benchmark(tmp_path, same, progress=False) == info
    assert probe.stat().st_mtime_ns == stamp
    # A benchmark.json written before a knob existed describes that knob's default.
    stored = json.loads((tmp_path / "benchmark.json").read_text())
    del stored["config"]["marking_contrast"]
    (tmp_path / "benchmark.json").write_text(json.dumps(stored))
    assert generate_benchmark(tmp_path, cfg, progress=False) == stored
    assert probe.stat().st_mtime_ns == stamp
    other = dataclasses.replace(cfg, tie=0.5)
    with pytest.raises(ValueError, match="benchmark.json"):
        generate_benchmark(tmp_path, other, progress=False)
    # overwrite=True replaces it, with no stale files left from the old config.
    bigger = dataclasses.replace(cfg, train_per_class=1, seed=9)
    info2 = generate_benchmark(tmp_path, bigger, progress=False, overwrite=True)
    assert info2["config"]["seed"] == 9
    assert len(list((tmp_path / "train/images/00_disk").iterdir())) == 1
    (tmp_path / "unrelated.txt").write_text("kept")
    generate_benchmark(tmp_path, cfg, progress=False, overwrite=True)
    assert (tmp_path / "unrelated.txt").read_text() == "kept"


def test_refuses_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train/something.txt").write_text("user data")
    with pytest.raises(ValueError, match="benchmark.json"):
        generate_benchmark(
            tmp_path,
            SynthConfig(num_classes=2, pretrain_per_class=1, train_per_class=1, eval_per_class=1),
            progress=False,
        )
    assert (tmp_path / "train/something.txt").exists()


# ---- class identity ----------------------------------------------------------------------


def test_renamed_object_keeps_class(tmp_path: Path) -> None:
    # The label comes from the class folder, not the file name: renaming a file keeps it in
    # its class, and an explicit shape order renames folders but each shape keeps its look.
    cfg = SynthConfig(
        num_classes=3, shapes=("ring", "disk", "star"), pretrain_per_class=2, train_per_class=2,
        eval_per_class=1,
    )
    assert class_names(cfg) == ["00_ring", "01_disk", "02_star"]
    _, mask_ring, _ = render_split_item(cfg, "shuffled", 0, 0)
    assert np.array_equal(
        mask_ring,
        shape_mask("ring", 64, **{k: v for k, v in _factors(cfg, "shuffled", 0, 0).items()}),
    )
    generate_benchmark(tmp_path, cfg, progress=False)
    src = tmp_path / "shuffled/02_star/star_00000.png"
    dst = src.with_name("renamed.png")
    src.rename(dst)
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(tmp_path / "shuffled"))
    assert ds.classes == class_names(cfg)
    labels = {Path(p).name: y for p, y in ds.samples}
    assert labels["renamed.png"] == 2 and labels["ring_00000.png"] == 0


def _factors(cfg: SynthConfig, split: str, label: int, index: int) -> dict[str, float]:
    from robustft.synth.render import _sample_factors

    f = _sample_factors(cfg, split, label, index)
    return {"area": f["area"], "x": f["x"], "y": f["y"], "rotation": f["rotation"]}


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="marking_contrast"):
        SynthConfig(marking_contrast=1.5)
    with pytest.raises(ValueError):
        SynthConfig(num_classes=len(SHAPE_NAMES) + 1)
    with pytest.raises(ValueError):
        SynthConfig(tie=1.5)
    with pytest.raises(ValueError, match="plain_prob"):
        SynthConfig(plain_prob=-0.1)
    with pytest.raises(ValueError):
        SynthConfig(num_classes=2, shapes=("disk", "disk"))
    with pytest.raises(ValueError):
        SynthConfig(rendition_mask="outline")
    with pytest.raises(ValueError):
        SynthConfig(rendition_style="pencil")
    assert SynthConfig(size_grid=[0.1, 0.2]) == SynthConfig(size_grid=(0.1, 0.2))
    assert set(SWEEP_SPLITS) <= set(EVAL_SPLITS)


def test_markings_are_two_shades_inside_the_object_and_class_specific() -> None:
    contrast = 0.3
    cfg = SynthConfig(num_classes=10, fg_noise=0.0, marking_contrast=contrast)
    for label in range(10):
        image, mask, fg, _bg = render_sample(cfg, label, (label + 1) % 10, area=0.3, x=0.5,
                                             y=0.5, rotation=0.0, rng=label, return_layers=True)
        shades = np.unique(fg.reshape(-1, 3), axis=0).astype(float)
        assert len(shades) == 2  # the fill and its marking shade, nothing else
        light, dark = shades[shades.sum(1).argsort()[::-1]]
        np.testing.assert_allclose(dark, light * (1 - contrast), atol=1.0)
        assert np.array_equal(image[~mask], _bg[~mask])  # markings stay on the object
    plain = SynthConfig(num_classes=10, fg_noise=0.0, marking_contrast=0.0)
    _image, _mask, fg, _bg = render_sample(plain, 0, 1, 0.3, 0.5, 0.5, 0.0, rng=0,
                                           return_layers=True)
    assert len(np.unique(fg.reshape(-1, 3), axis=0)) == 1  # 0: a plain fill, the silhouette
    markings = {marking_spec(label) for label in range(10)}
    backgrounds = {(b["pattern"], b["variant"])
                   for b in (background_spec(k, 10) for k in range(10))}
    assert len(markings) == 10 and not markings & backgrounds


# sha256 over "<relative path> <sha256 of the file>\n" lines (sorted) of every file that
# robustft.data.synth wrote for this config before the generator was split into
# robustft/synth/ (recorded at commit da4f3b5, numpy 2 / Pillow in the pinned venv):
# splitting the module must not change a byte of the benchmark.
FILES_BEFORE_THE_SPLIT = 143
DIGEST_BEFORE_THE_SPLIT = "8cdf7cc93f3942dc51d69b6948aea91d431c4d41806e74fe72bc4382d3f52a59"


def test_files_are_byte_identical_to_the_generator_before_the_split(tmp_path: Path) -> None:
    import hashlib

    config = SynthConfig(num_classes=3, pretrain_per_class=4, train_per_class=4,
                         eval_per_class=2)
    generate_benchmark(tmp_path, config, progress=False, num_workers=0)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    lines = "".join(
        f"{p.relative_to(tmp_path)} {hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in files
    )
    assert len(files) == FILES_BEFORE_THE_SPLIT
    assert hashlib.sha256(lines.encode()).hexdigest() == DIGEST_BEFORE_THE_SPLIT
