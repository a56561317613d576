"""robustft.evaluation.explain.figures from Python: the files it writes, one map per explained
class equal to the method's own map for that class, class names, image folders, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from fixtures.miniature import write_corrupt_image
from PIL import Image

from robustft.backbones import create_model
from robustft.evaluation.explain.figures import ExplainSettings, explain
from robustft.evaluation.explain.inputs import collect_images
from robustft.evaluation.explain.targets import model_class_names
from robustft.relevance import (
    RELEVANCE_METHODS,
    RelevanceChoice,
    RelevanceOutput,
    relevance_choices,
    relevance_map,
)
from robustft.relevance.methods import RelevanceMethod

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _tiny_model(num_classes: int = 5, seed: int = 0):
    """A random tiny ViT whose eval transform is the identity on a 32x32 image
    (crop_pct 1: no resize, no crop), so its input can be written down by hand."""
    torch.manual_seed(seed)
    model = create_model("vit_tiny_patch16_224", num_classes=num_classes,
                         pretrained_cfg_overlay=dict(crop_pct=1.0), **TINY)
    with torch.no_grad():  # non-trivial attention in every block
        for name, parameter in model.named_parameters():
            if name.endswith(("cls_token", "pos_embed")):
                parameter.normal_(0, 0.5)
    return model.eval()


def _write_image(path, seed=0, size=(32, 32)):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _patch_gradient(model, images, target, gradient_mode, *, backend):
    """A second method, written here: |d logit_target / d input| summed over channels and
    8x8 patches."""
    images = images.clone().requires_grad_()
    with torch.enable_grad():
        logits = model(images)
        score = logits.gather(1, target[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, images)
    relevance = gradient.abs().sum(1).unfold(1, 8, 8).unfold(2, 8, 8).sum((-1, -2))
    return RelevanceOutput(relevance=relevance, logits=logits.detach(), target=target)


def test_each_class_gets_the_methods_own_map_for_it_and_two_classes_differ(tmp_path, monkeypatch):
    monkeypatch.setitem(RELEVANCE_METHODS, "patch_gradient", RelevanceMethod(_patch_gradient, False))
    pixels = _write_image(tmp_path / "photo.png")
    model = _tiny_model()
    settings = ExplainSettings(relevance_choices(["grad_rollout", "patch_gradient"]), classes=[0, 1])
    result = explain({"tiny": model}, collect_images(str(tmp_path / "photo.png")), tmp_path / "out",
                     settings, progress=False)
    # the input by hand: ToTensor + timm's ViT normalisation (mean = std = 0.5)
    inputs = ((torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - 0.5) / 0.5)[None]
    for method, direct in (("grad_rollout", relevance_map), ("patch_gradient", _patch_gradient)):
        maps = np.load(tmp_path / "out" / "maps" / "photo" / f"tiny__{method}.npy")
        assert maps.shape == (2, 4, 4) and maps.dtype == np.float32
        for position, class_index in enumerate((0, 1)):
            own = direct(model, inputs, torch.tensor([class_index]), "detached", backend="eager")
            np.testing.assert_allclose(maps[position], own.relevance[0].detach().numpy(),
                                       rtol=1e-4, atol=1e-6)
        assert not np.allclose(maps[0], maps[1], rtol=0.05, atol=0)
    with torch.no_grad():
        probabilities = model(inputs).softmax(-1)[0]
    rows = [(r.method, r.class_index, r.position) for r in result.maps]
    assert rows == [("grad_rollout", 0, 0), ("grad_rollout", 1, 1),
                    ("patch_gradient", 0, 0), ("patch_gradient", 1, 1)]
    for record in result.maps:
        assert record.probability == pytest.approx(float(probabilities[record.class_index]), rel=1e-5)
        assert record.class_name == f"class {record.class_index}"


def test_predicted_and_topk_follow_the_models_probabilities(tmp_path):
    _write_image(tmp_path / "a.png", seed=3)
    model = _tiny_model()
    images = collect_images(str(tmp_path / "a.png"))
    with torch.no_grad():
        inputs = ((torch.from_numpy(np.array(Image.open(tmp_path / "a.png"))).permute(2, 0, 1)
                   .float() / 255 - 0.5) / 0.5)[None]
        order = model(inputs)[0].argsort(descending=True).tolist()
    top = explain({"m": model}, images, tmp_path / "k", ExplainSettings(target="topk", k=3),
                  progress=False)
    assert [r.class_index for r in top.maps] == order[:3]
    predicted = explain({"m": model}, images, tmp_path / "p", ExplainSettings(), progress=False)
    assert [r.class_index for r in predicted.maps] == order[:1]


def test_a_folder_of_class_folders_explains_every_image_for_its_label(tmp_path):
    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=2, size=(32, 32),
                               class_names=["zebra", "okapi"])
    images = collect_images(str(root))
    assert images.class_names == ["okapi", "zebra"]  # sorted folders
    assert [i.name for i in images.images] == ["okapi_img0", "okapi_img1", "zebra_img0", "zebra_img1"]
    result = explain({"two": _tiny_model(num_classes=2)}, images, tmp_path / "out",
                     ExplainSettings(target="label"), progress=False)
    assert [(r.image, r.class_name, r.class_index) for r in result.maps] == [
        ("okapi_img0", "okapi", 0), ("okapi_img1", "okapi", 0), ("zebra_img0", "zebra", 1),
        ("zebra_img1", "zebra", 1)]
    with (tmp_path / "out" / "maps.csv").open() as handle:
        assert [row["class_name"] for row in csv.DictReader(handle)] == ["okapi", "okapi", "zebra", "zebra"]


def test_image_folders_loose_split_and_max_images(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for index in range(5):
        _write_image(loose / f"{index}.png", seed=index)
    assert [i.name for i in collect_images(str(loose), max_images=3).images] == ["0", "2", "4"]
    assert collect_images(str(loose)).class_names is None
    # a split of the generated benchmark: class order from the root's classes.txt
    split = tmp_path / "bench" / "shuffled"
    for name in ("square", "circle"):
        (split / name).mkdir(parents=True)
        _write_image(split / name / "x.png")
    (tmp_path / "bench" / "classes.txt").write_text("square\ncircle\n")
    images = collect_images(str(split))
    assert images.class_names == ["square", "circle"]
    # images in folder order, labels by class name
    assert [(i.name, i.label) for i in images.images] == [("circle_x", "circle"), ("square_x", "square")]
    # the same stem twice gets two output names
    both = collect_images([str(loose / "0.png"), str(split / "square" / "x.png"), str(loose / "0.png")])
    assert [i.name for i in both.images] == ["0", "x", "0_2"]


def test_imagenet_class_names_take_synonyms_wnids_and_indices():
    names = model_class_names(1000)
    assert names.index_of("tabby cat", key="classes") == 281 == names.index_of("Tabby", key="classes")
    assert names.index_of("n02391049", key="classes") == 340 == names.index_of(340, key="classes")
    assert names.short(386) == "African elephant"
    with pytest.raises(ValueError, match=r"^classes: 'crane' names 2 of .*134 \(crane\), 517 \(crane\)"):
        names.index_of("crane", key="classes")


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_input_is_one_line_naming_it(tmp_path):
    model = _tiny_model()
    corrupt = write_corrupt_image(tmp_path / "broken.jpg")
    with pytest.raises(OSError, match="cannot decode image .*broken.jpg") as error:
        explain({"m": model}, collect_images(str(corrupt)), tmp_path / "o", progress=False)
    _one_line(error)
    with pytest.raises(FileNotFoundError,
                       match="image: no such image file or folder: .*missing.png") as error:
        collect_images(str(tmp_path / "missing.png"))
    _one_line(error)
    _write_image(tmp_path / "ok.png")
    images = collect_images(str(tmp_path / "ok.png"))
    with pytest.raises(ValueError,
                       match=r"^methods: unknown relevance method 'lrp_magic'; known: \[") as error:
        relevance_choices(["grad_rollout", "lrp_magic"])
    _one_line(error)
    with pytest.raises(ValueError, match="target=label: .*ok.png has no label") as error:
        explain({"m": model}, images, tmp_path / "o", ExplainSettings(target="label"), progress=False)
    _one_line(error)
    imagenet_head = create_model("vit_tiny_patch16_224", num_classes=1000, **TINY)
    with pytest.raises(ValueError, match=r"^classes: no class 'elefant' among the 1000 classes .*"
                                         r"close: .*'African elephant, Loxodonta africana'") as error:
        explain({"m": imagenet_head}, images, tmp_path / "o", ExplainSettings(classes=["zebra", "elefant"]),
                progress=False)
    _one_line(error)
    assert not list((tmp_path / "o").glob("*.png"))  # refused before any image was explained


@pytest.mark.parametrize("settings, explained", [
    (ExplainSettings(), "explained: each model's predicted class (target=predicted)"),
    (ExplainSettings(target="label"), "explained: the class of the image's folder (target=label)"),
    (ExplainSettings(target="topk", k=2),
     "explained: the top 2 classes of each model (target=topk, k=2)"),
    (ExplainSettings(classes=["c1", 0]), "explained: the named classes (classes=['c1', 0])"),
])
def test_the_png_says_what_was_explained_and_has_a_colour_bar(tmp_path, settings, explained):
    from matplotlib import colormaps

    from robustft.evaluation.explain.overlay_grid import colorbar_box, draw_grid, legend_height

    root = make_generic_layout(tmp_path / "pairs", num_classes=2, per_class=1, size=(32, 32))
    images = collect_images(str(root))
    result = explain({"m": _tiny_model(num_classes=2)}, images, tmp_path / "out", settings,
                     progress=False)
    lines = settings.legend()
    assert lines == [explained,
                     "colour: relevance for that class, each map scaled to its own min-max"]
    with Image.open(result.pngs[0]) as png:
        picture = np.asarray(png.convert("RGB"))
    # the grid alone, as explain draws it: one row of the image and its overlays at scale 5
    cells = 1 + (2 if settings.target == "topk" or settings.classes else 1)
    grid = draw_grid([[np.zeros((32, 32, 3), np.uint8)] * cells], cell_titles=[["a\nb"] * cells],
                     scale=5)
    assert picture.shape[:2] == (grid.height + legend_height(lines, grid.width), grid.width)
    left, top, right, bottom = colorbar_box(grid.size, lines)
    assert right - left == 256 and bottom - top == 10
    # the bar is the overlays' colour map from 0 (least relevant) to 1 (most), every row
    expected = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    for row in range(top, bottom):
        np.testing.assert_array_equal(picture[row, left:right], expected)
    assert tuple(expected[0]) == (0, 0, 127) and tuple(expected[-1]) == (127, 0, 0)  # blue, red


def test_repeated_class_names_are_refused_naming_file_lines_and_classes(tmp_path):
    _write_image(tmp_path / "a.png")
    images = collect_images(str(tmp_path / "a.png"))
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\nowl\nCat\n")
    with pytest.raises(ValueError) as caught:
        explain({"m": _tiny_model(num_classes=4)}, images, tmp_path / "o",
                ExplainSettings(class_names=str(names)), progress=False)
    assert str(caught.value) == (
        f"class_names: {names}: 1 class name(s) repeated: 'cat' and 'Cat' (lines 1, 5); each "
        "class needs a name of its own (names compare ignoring case and spaces)")
    names.write_text("cat\ndog\nowl\nemu\n")
    with pytest.raises(ValueError) as caught:
        explain({"m": _tiny_model(num_classes=4)}, images, tmp_path / "o",
                ExplainSettings(class_names=str(names), classes=["Cat", "dog", 0]), progress=False)
    assert str(caught.value) == ("classes: 'Cat' and 0 both name class 0 (cat); name each class "
                                 "once")
    assert not list((tmp_path / "o").glob("*.png"))


def test_rollout_from_a_later_block_is_explained_and_named_with_its_option(tmp_path):
    from robustft.relevance import attention_rollout

    pixels = _write_image(tmp_path / "photo.png", seed=4)
    model = _tiny_model()  # 2 blocks
    settings = ExplainSettings((RelevanceChoice("rollout", {"start_layer": 1}),))
    result = explain({"tiny": model}, collect_images(str(tmp_path / "photo.png")), tmp_path / "out",
                     settings, progress=False)
    (record,) = result.maps
    assert record.method == "rollout(start_layer=1)"
    inputs = ((torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - 0.5) / 0.5)[None]
    with torch.no_grad():
        expected = attention_rollout(model, inputs, start_layer=1).relevance[0].numpy()
        every_block = attention_rollout(model, inputs).relevance[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out" / record.npy)[0], expected,
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(expected, every_block)
    assert "methods rollout(start_layer=1);" in (tmp_path / "out" / "index.md").read_text()
