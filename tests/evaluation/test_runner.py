"""The single-pass multi-model runner: exact counts on crafted logits, one pass == separate
passes, shared transforms computed once, per-factor rows on a sweep split."""

from __future__ import annotations

from pathlib import Path

import fixtures.miniature as miniature  # noqa: E402
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from robustft.backbones import create_model
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.labels import identity_protocol
from robustft.synth.read import ImageFolderSplit


class CodedImages(torch.utils.data.Dataset):
    """Solid images whose red channel encodes a sample id; targets and meta given."""

    def __init__(self, targets, metas, num_classes) -> None:
        self.name = "coded"
        self.protocol = identity_protocol(num_classes)
        self.samples = [(Path(f"{i}.png"), t, m) for i, (t, m) in enumerate(zip(targets, metas))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        _, target, meta = self.samples[index]
        return Image.new("RGB", (4, 4), (index, 0, 0)), target, dict(meta)


class LookupModel(nn.Module):
    """Returns crafted logits: row ``ranking[sample_id]`` read from the red pixel."""

    def __init__(self, rankings: list[list[int]], num_classes: int) -> None:
        super().__init__()
        self.rankings = rankings
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = (x[:, 0, 0, 0] * 255).round().long().tolist()
        logits = torch.zeros(len(ids), self.num_classes)
        for row, sample_id in enumerate(ids):
            for rank, cls in enumerate(self.rankings[sample_id]):
                logits[row, cls] = 100.0 - rank
        return logits


def _accuracy(rows, model, metric, factor="", value=""):
    (row,) = [
        r
        for r in rows
        if r["model"] == model
        and r["metric"] == metric
        and r["factor"] == factor
        and r["factor_value"] == value
    ]
    return row["value"], row["num_images"]


def test_exact_counts_top1_top5_and_per_factor() -> None:
    num_classes = 8
    targets = [0, 1, 2, 3, 4, 5]
    metas = [
        {"area": "0.1"},
        {"area": "0.1"},
        {"area": "0.1"},
        {"area": "0.5"},
        {"area": "0.5"},
        {"area": "0.5"},
    ]
    # sample -> predicted ranking (first = top-1)
    rankings = [
        [0, 1, 2, 3, 4],  # top1 hit
        [0, 1, 2, 3, 4],  # top5 hit (rank 2)
        [7, 6, 5, 4, 3],  # miss
        [3, 0, 1, 2, 4],  # top1 hit
        [0, 1, 2, 3, 4],  # top5 hit (rank 5)
        [7, 6, 0, 1, 2],  # miss
    ]
    dataset = CodedImages(targets, metas, num_classes)
    model = LookupModel(rankings, num_classes)
    rows = evaluate_models(
        {"m": model},
        dataset,
        transforms={"m": T.ToTensor()},
        batch_size=4,
        num_workers=0,
        progress=False,
    )
    assert _accuracy(rows, "m", "top1") == (pytest.approx(200 / 6, abs=1e-3), 6)
    assert _accuracy(rows, "m", "top5") == (pytest.approx(400 / 6, abs=1e-3), 6)
    # hand count per area: 0.1 -> top1 1/3, top5 2/3; 0.5 -> top1 1/3, top5 2/3
    assert _accuracy(rows, "m", "top1", "area", "0.1") == (pytest.approx(100 / 3), 3)
    assert _accuracy(rows, "m", "top5", "area", "0.1") == (pytest.approx(200 / 3), 3)
    assert _accuracy(rows, "m", "top1", "area", "0.5") == (pytest.approx(100 / 3), 3)
    assert _accuracy(rows, "m", "top5", "area", "0.5") == (pytest.approx(200 / 3), 3)
    assert {r["protocol"] for r in rows} == {"standard:8-way"}


def _tiny_vit(seed: int, num_classes: int, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(
        "vit_tiny_patch16_224",
        num_classes=num_classes,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
        **overrides,
    )


def test_single_pass_equals_separate_passes(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench", images_per_class=3)
    dataset = ImageFolderSplit(bench.root, "val", class_names=bench.class_names)
    models = {f"vit{seed}": _tiny_vit(seed, len(bench.class_names)) for seed in range(3)}
    transforms = build_eval_transforms(models)
    # Same preprocessing config -> one shared transform object -> decoded/transformed once.
    assert len({id(t) for t in transforms.values()}) == 1
    together = evaluate_models(
        models, dataset, transforms=transforms, batch_size=4, num_workers=0, progress=False
    )
    separate = []
    for name, model in models.items():
        separate += evaluate_models(
            {name: model},
            dataset,
            transforms={name: transforms[name]},
            batch_size=5,
            num_workers=0,
            progress=False,
        )
    key = lambda r: (r["model"], r["metric"], r["factor"], r["factor_value"])
    assert sorted(together, key=key) == sorted(separate, key=key)
    assert len(together) == 3  # 3 classes: top-5 is not reported, only top-1 per model


def test_models_with_different_preprocessing_get_their_own_tensor(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench")
    dataset = ImageFolderSplit(bench.root, "sweep_area", class_names=bench.class_names)
    models = {"a": _tiny_vit(0, 3), "b": _tiny_vit(1, 3)}
    models["b"].pretrained_cfg = {**models["b"].pretrained_cfg, "mean": (0.1, 0.2, 0.3)}
    transforms = build_eval_transforms(models)
    assert transforms["a"] is not transforms["b"]
    calls = {"a": 0, "b": 0}

    def counting(name):
        def apply(image):
            calls[name] += 1
            return transforms[name](image)

        return apply

    wrapped = {name: counting(name) for name in models}
    rows = evaluate_models(
        models, dataset, transforms=wrapped, batch_size=4, num_workers=0, progress=False
    )
    assert calls == {"a": len(dataset), "b": len(dataset)}
    factors = {(r["factor"], r["factor_value"]) for r in rows if r["factor"]}
    assert factors == {("area", "0.1"), ("area", "0.3")}  # x, y, rotation are constant


def test_legacy_transforms_are_shared_and_labelled(tmp_path: Path) -> None:
    models = {"a": _tiny_vit(0, 3), "b": _tiny_vit(1, 3)}
    transforms = build_eval_transforms(models, protocol="legacy")
    assert transforms["a"] is transforms["b"]
    out = transforms["a"](Image.new("RGB", (50, 40), (255, 0, 0)))
    assert out.shape == (3, 32, 32) and out[0].max().item() == pytest.approx(1.0)


def test_wrong_head_size_names_the_protocol(tmp_path: Path) -> None:
    bench = miniature.make_generated_benchmark(tmp_path / "bench")
    dataset = ImageFolderSplit(bench.root, "val")
    model = _tiny_vit(0, 1000)
    with pytest.raises(ValueError, match=r"expects logits of shape \(batch, 3\)"):
        evaluate_models(
            {"m": model},
            dataset,
            transforms=build_eval_transforms({"m": model}),
            batch_size=4,
            num_workers=0,
            progress=False,
        )


class ChannelMeans(nn.Module):
    """Logits = the mean of each colour channel (3 classes), or their negation."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * x.mean(dim=(2, 3))


def _broken_split(tmp_path: Path):
    """The generated benchmark's val split plus a corrupt PNG and a truncated JPEG."""
    from fixtures.broken_files import truncate

    bench = miniature.make_generated_benchmark(tmp_path / "bench", images_per_class=3)
    folder = bench.root / "val" / bench.class_names[1]
    corrupt = miniature.write_corrupt_image(folder / "val_corrupt.png")
    truncated = truncate(miniature.write_image(folder / "val_truncated.jpg", seed=7,
                                               size=(64, 48)))
    return bench, {str(corrupt), str(truncated)}


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_images_are_skipped_counted_and_listed(tmp_path: Path, num_workers) -> None:
    import numpy as np
    from PIL import ImageFile

    bench, broken = _broken_split(tmp_path)
    dataset = ImageFolderSplit(bench.root, "val", class_names=bench.class_names, name="val")
    models = {"means": ChannelMeans(), "negated": ChannelMeans(-1.0)}
    unreadable = []
    rows = evaluate_models(models, dataset, transforms={m: T.ToTensor() for m in models},
                           batch_size=2, num_workers=num_workers, progress=False,
                           unreadable=unreadable)
    assert {(u.dataset, u.path) for u in unreadable} == {("val", path) for path in broken}
    assert all("truncated" in u.error for u in unreadable if u.path.endswith(".jpg"))
    # manual count over the readable files, with numpy on the decoded pixels
    readable = [(path, target) for path, target, _ in dataset.samples if str(path) not in broken]
    assert len(readable) == len(dataset) - 2 == 9
    for name, sign in (("means", 1.0), ("negated", -1.0)):
        hits = sum(int(np.argmax(sign * np.asarray(Image.open(path).convert("RGB"), float)
                                 .mean(axis=(0, 1)))) == target for path, target in readable)
        assert _accuracy(rows, name, "top1") == (pytest.approx(100 * hits / 9), 9)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # a truncated file is never half grey


def test_unreadable_images_get_one_log_line(tmp_path: Path, caplog) -> None:
    bench, broken = _broken_split(tmp_path)
    dataset = ImageFolderSplit(bench.root, "val", class_names=bench.class_names, name="val")
    with caplog.at_level("WARNING"):
        evaluate_models({"m": ChannelMeans()}, dataset, transforms={"m": T.ToTensor()},
                        batch_size=4, num_workers=0, progress=False)
    (record,) = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert "val: 2 of 11 images are unreadable" in record.getMessage()


def test_a_dataset_without_a_readable_image_is_an_error(tmp_path: Path) -> None:
    for index, folder in enumerate("ab"):
        miniature.write_corrupt_image(tmp_path / "broken" / "split" / folder / f"{index}.png")
    dataset = ImageFolderSplit(tmp_path / "broken", "split", name="broken")
    with pytest.raises(ValueError, match=r"'broken': none of its 2 images decodes, e\.g\. .*0\.png"):
        evaluate_models({"m": ChannelMeans()}, dataset, transforms={"m": T.ToTensor()},
                        batch_size=4, num_workers=0, progress=False)


def test_timm_and_openclip_models_in_one_pass_each_with_its_own_preprocessing(tmp_path) -> None:
    import open_clip.transform
    import timm.data
    from tiny_models import tiny_clip, tiny_clip_tokenizer, tiny_vit

    from robustft.backbones.open_clip import zero_shot_classifier

    copy = miniature.make_generated_benchmark(tmp_path / "bench", images_per_class=4)
    dataset = ImageFolderSplit(copy.root, "train", class_names=copy.class_names, name="train")
    vit = tiny_vit("plain", img_size=(32, 32), num_classes=3)
    clip = tiny_clip()
    clip_model = zero_shot_classifier(clip, copy.class_names, ["a photo of a {}."],
                                      tokenizer=tiny_clip_tokenizer())
    models = {"vit": vit, "clip": clip_model}
    transforms = build_eval_transforms(models)
    assert transforms["vit"] is not transforms["clip"]  # different mean/std/crop
    rows = evaluate_models(models, dataset, transforms=transforms, batch_size=5, num_workers=0,
                           progress=False)
    # the truth: each model alone, with its library's own eval transform
    vit_config = timm.data.resolve_data_config({"input_size": (3, 32, 32)}, model=vit)
    own = {"vit": timm.data.create_transform(**vit_config),
           "clip": open_clip.transform.image_transform_v2(
               open_clip.transform.PreprocessCfg(**clip.visual.preprocess_cfg), is_train=False)}
    images = [dataset[i] for i in range(len(dataset))]
    for name, model in models.items():
        for image, _target, _meta in images:
            torch.testing.assert_close(transforms[name](image), own[name](image))
        with torch.no_grad():
            logits = torch.cat([model(own[name](image)[None]) for image, _t, _m in images])
        hits = (logits.argmax(1) == torch.tensor([t for _i, t, _m in images])).float()
        assert _accuracy(rows, name, "top1") == (pytest.approx(hits.mean().item() * 100), 12)
    image = images[0][0]
    assert not torch.allclose(own["vit"](image), own["clip"](image))  # the choice matters


class _CountingSplit(torch.utils.data.Dataset):
    """A dataset that counts how often each image is read (decoded)."""

    def __init__(self, dataset) -> None:
        self.dataset, self.reads = dataset, {}
        self.name, self.protocol = dataset.name, dataset.protocol

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.reads[index] = self.reads.get(index, 0) + 1
        return self.dataset[index]


def test_timm_hugging_face_and_openclip_in_one_pass_each_image_decoded_once(tmp_path) -> None:
    import timm.data
    from fixtures.tiny_hf import save_tiny_hf
    from tiny_models import tiny_clip, tiny_clip_tokenizer, tiny_vit
    from transformers import AutoImageProcessor

    from robustft.backbones import ModelSpec
    from robustft.backbones.open_clip import zero_shot_classifier

    copy = miniature.make_generated_benchmark(tmp_path / "bench", images_per_class=4)
    split = ImageFolderSplit(copy.root, "train", class_names=copy.class_names, name="train")
    dataset = _CountingSplit(split)
    save_tiny_hf(tmp_path / "hf", "vit", num_labels=3, image_size=32, patch_size=8, seed=1,
                 processor={"size": {"height": 32, "width": 32}, "image_mean": [0.3] * 3,
                            "image_std": [0.2] * 3})
    models = {
        "timm": tiny_vit("plain", img_size=(32, 32), num_classes=3),
        "hf": ModelSpec(family="hf", hf_path=str(tmp_path / "hf")).build().eval(),
        "clip": zero_shot_classifier(tiny_clip(), copy.class_names, ["a photo of a {}."],
                                     tokenizer=tiny_clip_tokenizer()),
    }
    transforms = build_eval_transforms(models)
    assert len({id(transform) for transform in transforms.values()}) == 3  # three preprocessings
    rows = evaluate_models(models, dataset, transforms=transforms, batch_size=5, num_workers=0,
                           progress=False)
    assert dataset.reads == {index: 1 for index in range(len(split))}  # decoded once for all
    images = [split[i] for i in range(len(split))]
    labels = torch.tensor([target for _image, target, _meta in images])
    processor = AutoImageProcessor.from_pretrained(tmp_path / "hf")
    vit_config = timm.data.resolve_data_config({"input_size": (3, 32, 32)}, model=models["timm"])
    own = {"timm": lambda image: models["timm"](timm.data.create_transform(**vit_config)(image)[None]),
           "hf": lambda image: models["hf"](**processor(image, return_tensors="pt")).logits,
           "clip": lambda image: models["clip"](transforms["clip"](image)[None])}
    for image, _target, _meta in images:  # the HF model sees exactly its processor's pixels
        torch.testing.assert_close(transforms["hf"](image)[None],
                                   processor(image, return_tensors="pt").pixel_values,
                                   atol=1e-5, rtol=0)
    for name, predict in own.items():
        with torch.no_grad():
            logits = torch.cat([predict(image) for image, _target, _meta in images])
        hits = (logits.argmax(1) == labels).float().mean().item() * 100
        assert _accuracy(rows, name, "top1") == (pytest.approx(hits, abs=1e-4), 12)


def test_timings_give_each_part_its_seconds_per_image(tmp_path: Path) -> None:
    from time import perf_counter

    from robustft.evaluation.metrics.map_scoring import ExplanationSettings

    bench = miniature.make_generated_benchmark(tmp_path / "bench", images_per_class=3)
    dataset = ImageFolderSplit(bench.root, "val", class_names=bench.class_names)
    models = {f"vit{seed}": _tiny_vit(seed, len(bench.class_names)) for seed in range(2)}
    settings = ExplanationSettings(metrics=("top1", "perturbation"), fractions=(0.0, 0.5))
    timings: dict[str, dict[str, float]] = {}
    started = perf_counter()
    evaluate_models(models, dataset, transforms=build_eval_transforms(models), batch_size=4,
                    num_workers=0, progress=False, explanations=settings, timings=timings)
    elapsed = perf_counter() - started
    assert list(timings) == ["vit0", "vit1"]
    for parts in timings.values():
        # the explanation scorer's parts (the maps of the perturbation test's class) and top-1
        assert set(parts) == {"top1", "forward", "relevance", "perturbation"}
        assert all(seconds > 0 for seconds in parts.values())
    # per image, over the 9 images: together no more than the call took
    total = sum(sum(parts.values()) for parts in timings.values())
    assert total * len(dataset) <= elapsed
    # top-1 alone: only its own part
    top1_only: dict[str, dict[str, float]] = {}
    evaluate_models(models, dataset, transforms=build_eval_transforms(models), batch_size=4,
                    num_workers=0, progress=False, timings=top1_only)
    assert {label: set(parts) for label, parts in top1_only.items()} == {
        "vit0": {"top1"}, "vit1": {"top1"}}
