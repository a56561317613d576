"""Evaluation datasets on miniature copies in their real layouts: labels, protocols,
per-factor meta, and bad input (each a clear error naming the file or key)."""

from __future__ import annotations

from pathlib import Path

import fixtures.miniature as miniature  # noqa: E402
import pytest
import torch
from torch import nn
from torchvision import transforms as T

from robustft.data.eval.imagenet import (
    imagenet_a,
    imagenet_r,
    imagenet_v2,
    imagenet_val,
)
from robustft.data.eval.objectnet import objectnet
from robustft.data.eval.registry import build_eval_dataset
from robustft.data.eval.si_score import si_score
from robustft.data.layout import CorruptImageError, DatasetLayoutError
from robustft.evaluation.runner import evaluate_models
from robustft.labels import imagenet_synsets, timm_subset_info

SYNSETS = imagenet_synsets()


def test_imagenet_val_labels_follow_timm_synset_order(tmp_path: Path) -> None:
    wnids = [SYNSETS[0], SYNSETS[417], SYNSETS[999]]
    written = miniature.make_wnid_folders(tmp_path / "val", wnids)
    dataset = imagenet_val(tmp_path / "val")
    assert len(dataset) == len(written)
    for path, target, meta in dataset.samples:
        assert SYNSETS[target] == written[path] and meta == {}
    image, target, meta = dataset[0]
    assert image.mode == "RGB" and image.size == miniature.IMAGE_SIZE
    assert dataset.protocol.label == "standard:1000-way"


@pytest.mark.parametrize("subset, build", [("a", imagenet_a), ("r", imagenet_r)])
def test_a_r_targets_index_the_200_classes(tmp_path: Path, subset, build) -> None:
    indices, wnids = timm_subset_info(subset)
    chosen = [wnids[0], wnids[57], wnids[199]]
    miniature.make_wnid_folders(tmp_path / subset, chosen, suffix=".jpg")
    standard = build(tmp_path / subset)
    assert standard.protocol.num_classes == 200
    assert sorted({t for _, t, _ in standard.samples}) == [0, 57, 199]
    legacy = build(tmp_path / subset, protocol="legacy")
    assert legacy.protocol.label == "legacy:1000-way"
    assert sorted({t for _, t, _ in legacy.samples}) == sorted(indices[i] for i in (0, 57, 199))


def test_a_scores_on_200_when_the_model_prefers_an_outside_class(tmp_path: Path) -> None:
    indices, wnids = timm_subset_info("a")
    miniature.make_wnid_folders(tmp_path / "a", [wnids[5]], per_class=3, suffix=".jpg")
    outside = next(i for i in range(1000) if i not in set(indices))

    class Crafted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(len(x), 1000)
            logits[:, outside] = 50.0  # largest logit: outside the 200
            logits[:, indices[5]] = 10.0  # the true class, best among the 200
            return logits

    rows = {}
    for protocol in ("standard", "legacy"):
        dataset = imagenet_a(tmp_path / "a", protocol=protocol)
        (top1,) = [
            r
            for r in evaluate_models(
                {"m": Crafted()},
                dataset,
                transforms={"m": T.ToTensor()},
                batch_size=2,
                num_workers=0,
                progress=False,
            )
            if r["metric"] == "top1"
        ]
        rows[protocol] = top1
    assert rows["standard"]["value"] == pytest.approx(100.0)
    assert rows["legacy"]["value"] == pytest.approx(0.0)
    assert rows["standard"]["protocol"].startswith("standard:")
    assert rows["legacy"]["protocol"] == "legacy:1000-way"


def test_v2_label_is_the_integer_folder_name(tmp_path: Path) -> None:
    written = miniature.make_imagenet_v2(tmp_path / "v2", folders=("2", "10", "100"))
    dataset = imagenet_v2(tmp_path / "v2")
    assert {path: target for path, target, _ in dataset.samples} == written
    assert sorted({t for _, t, _ in dataset.samples}) == [2, 10, 100]


def test_v2_rejects_a_non_numeric_folder(tmp_path: Path) -> None:
    miniature.make_imagenet_v2(tmp_path / "v2")
    miniature.write_image(tmp_path / "v2" / "n01440764" / "x.jpeg", seed=1)
    with pytest.raises(DatasetLayoutError, match=r"n01440764.*not a class number"):
        imagenet_v2(tmp_path / "v2")


def test_objectnet_standard_projection_and_border_crop(tmp_path: Path) -> None:
    copy = miniature.make_objectnet(tmp_path / "objectnet-1.0")
    dataset = objectnet(copy.root)
    labels = sorted(copy.label_to_pytorch)  # ["Alarm clock", "Banana", "Basket"]
    assert dataset.protocol.num_classes == 3
    assert dataset.protocol.class_names == tuple(labels)
    assert dataset.protocol.groups == tuple(tuple(copy.label_to_pytorch[k]) for k in labels)
    # air_freshener (no ImageNet counterpart) is not evaluated
    folders = {copy.images[path] for path, _, _ in dataset.samples}
    assert folders == {"alarm_clock", "banana", "basket"}
    for path, target, _ in dataset.samples:
        assert labels[target] == copy.folder_to_label[copy.images[path]]
    image, _, _ = dataset[0]
    width, height = miniature.IMAGE_SIZE
    assert image.size == (width - 4, height - 4)
    # crafted logits: the alarm clock scores via its SECOND mapped class (digital clock)
    logits = torch.zeros(1, 1000)
    logits[0, 530] = 3.0
    logits[0, 954] = 2.0
    assert dataset.protocol.scores(logits).argmax(1).item() == labels.index("Alarm clock")


def test_objectnet_legacy_uses_first_mapped_class_and_no_crop(tmp_path: Path) -> None:
    copy = miniature.make_objectnet(tmp_path / "objectnet-1.0")
    dataset = objectnet(copy.root, protocol="legacy")
    assert dataset.protocol.label == "legacy:1000-way"
    targets = {copy.images[path]: target for path, target, _ in dataset.samples}
    assert targets == {"alarm_clock": 409, "banana": 954, "basket": 790}
    assert dataset[0][0].size == miniature.IMAGE_SIZE


def test_objectnet_missing_mapping_file_is_named(tmp_path: Path) -> None:
    copy = miniature.make_objectnet(tmp_path / "objectnet-1.0")
    (copy.root / "mappings" / "pytorch_to_imagenet_2012_id.json").unlink()
    with pytest.raises(DatasetLayoutError, match="pytorch_to_imagenet_2012_id.json"):
        objectnet(copy.root)


def test_objectnet_unknown_folder_is_named(tmp_path: Path) -> None:
    copy = miniature.make_objectnet(tmp_path / "objectnet-1.0")
    miniature.write_image(copy.root / "images" / "spaceship" / "a.png", seed=3)
    with pytest.raises(DatasetLayoutError, match="spaceship"):
        objectnet(copy.root)


def test_si_score_meta_holds_only_the_varying_factor(tmp_path: Path) -> None:
    copies = miniature.make_si_score(tmp_path / "si-score")
    area = si_score(tmp_path / "si-score", "area")
    assert {tuple(meta) for _, _, meta in area.samples} == {("area",)}
    location = si_score(tmp_path / "si-score", "location20_area02_min0pc")
    assert {tuple(sorted(meta)) for _, _, meta in location.samples} == {("x_coord", "y_coord")}
    rotation = build_eval_dataset("si-score-rotation", tmp_path / "si-score")
    assert rotation.name == "si-score-rotation"
    index = copies["area"].imagenet_index
    for path, target, _ in area.samples:
        assert target == index[path.parent.name]


def test_si_score_per_factor_accuracy_matches_a_hand_count(tmp_path: Path) -> None:
    copies = miniature.make_si_score(tmp_path / "si-score")
    dataset = si_score(tmp_path / "si-score", "rotation")
    rows_by_id = {row["image_id"]: row for row in copies["rotation"].rows}
    # A model that is right exactly on images whose id is even.
    predictions = {}
    for path, target, _ in dataset.samples:
        predictions[path] = target if int(path.stem) % 2 == 0 else (target + 1) % 1000

    order = [predictions[path] for path, _, _ in dataset.samples]

    class Crafted(nn.Module):
        def forward(self, x):
            ids = (x[:, 0, 0, 0]).round().long().tolist()
            logits = torch.zeros(len(ids), 1000)
            for row, i in enumerate(ids):
                logits[row, order[i]] = 1.0
            return logits

    # Encode the sample index in the tensor (num_workers=0: the transform sees the
    # images in dataset order), so the crafted model knows which image it scores.
    class IndexTransform:
        def __init__(self):
            self.count = 0

        def __call__(self, image):
            value = float(self.count)
            self.count += 1
            return torch.full((3, 2, 2), value)

    rows = evaluate_models(
        {"m": Crafted()},
        dataset,
        transforms={"m": IndexTransform()},
        batch_size=4,
        num_workers=0,
        progress=False,
    )
    hand: dict[str, list[int]] = {}
    for path, _, _ in dataset.samples:
        rotation = rows_by_id[path.stem]["rotation"]
        hand.setdefault(rotation, []).append(int(int(path.stem) % 2 == 0))
    got = {
        r["factor_value"]: (r["value"], r["num_images"])
        for r in rows
        if r["factor"] == "rotation" and r["metric"] == "top1"
    }
    assert got == {v: (pytest.approx(100 * sum(h) / len(h)), len(h)) for v, h in hand.items()}
    assert set(got) == {"1", "21", "41"}


def test_si_score_image_without_metadata_row_is_named(tmp_path: Path) -> None:
    miniature.make_si_score(tmp_path / "si-score")
    miniature.write_image(tmp_path / "si-score" / "area" / "koala" / "9999.jpg", seed=1)
    with pytest.raises(DatasetLayoutError, match=r"9999.jpg has no row"):
        si_score(tmp_path / "si-score", "area")


def test_unknown_wnid_folder_is_a_clear_error(tmp_path: Path) -> None:
    miniature.make_wnid_folders(tmp_path / "val", [SYNSETS[3]])
    miniature.write_image(tmp_path / "val" / "n99999999" / "a.JPEG", seed=1)
    with pytest.raises(DatasetLayoutError, match=r"n99999999.*not one of the dataset's 1000"):
        imagenet_val(tmp_path / "val")
    _, a_wnids = timm_subset_info("a")
    not_in_a = next(w for w in SYNSETS if w not in set(a_wnids))
    miniature.make_wnid_folders(tmp_path / "a", [a_wnids[0], not_in_a], suffix=".jpg")
    with pytest.raises(DatasetLayoutError, match=not_in_a):
        imagenet_a(tmp_path / "a")


def test_empty_dataset_and_missing_root_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "val" / SYNSETS[0]).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="is empty"):
        imagenet_val(tmp_path / "val")
    with pytest.raises(DatasetLayoutError, match="not found"):
        imagenet_val(tmp_path / "nowhere")


def test_corrupt_image_raises_naming_the_file(tmp_path: Path) -> None:
    miniature.make_wnid_folders(tmp_path / "val", [SYNSETS[0]])
    bad = miniature.write_corrupt_image(tmp_path / "val" / SYNSETS[0] / "zz_broken.JPEG")
    dataset = imagenet_val(tmp_path / "val")
    index = [path for path, _, _ in dataset.samples].index(bad)
    with pytest.raises(CorruptImageError, match="zz_broken.JPEG"):
        dataset[index]
