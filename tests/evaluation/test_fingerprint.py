"""Fingerprints of (model, dataset) pairs: file hashes, what enters the digest, what does
not, the explanation of a change and the sidecar file."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from robustft.evaluation.fingerprint import (
    FileHasher,
    count_files,
    dataset_inputs,
    describe_change,
    load_fingerprints,
    model_inputs,
    pair_fingerprint,
    preprocessing_inputs,
    save_fingerprints,
)


def _file(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_file_hash_is_the_sha256_of_the_bytes_and_read_once(tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    path = _file(tmp_path / "w.safetensors", content)
    hasher = FileHasher()
    assert hasher.sha256(path, key="k") == hashlib.sha256(content).hexdigest()
    assert hasher.sha256(tmp_path / "." / "w.safetensors", key="k") == hashlib.sha256(content).hexdigest()
    assert hasher.files_hashed == 1  # the same file (same size, mtime) is not read again
    _file(path, b"other bytes")
    assert hasher.sha256(path, key="k") == hashlib.sha256(b"other bytes").hexdigest()
    assert hasher.files_hashed == 2


def test_missing_model_file_names_the_config_key(tmp_path: Path) -> None:
    entry = {"name": "vit_tiny_patch16_224", "weights_file": str(tmp_path / "nope.pth")}
    expected = r"^models\.ft\.weights_file: file not found: .*nope\.pth$"
    with pytest.raises(FileNotFoundError, match=expected) as error:
        model_inputs("ft", entry, FileHasher())
    assert "\n" not in str(error.value)
    with pytest.raises(KeyError, match="models.ft: unknown key"):
        model_inputs("ft", {"name": "x", "weight_file": "typo"}, FileHasher())


def test_model_inputs_follow_what_is_loaded(tmp_path: Path) -> None:
    weights = _file(tmp_path / "a.safetensors", b"weights")
    checkpoint = _file(tmp_path / "b.ckpt", b"checkpoint")
    hasher = FileHasher()
    hub, _ = model_inputs("m", {"name": "vit_tiny_patch16_224"}, hasher)
    assert hub["pretrained"] is True and hub["weights_file"] is None and hub["checkpoint"] is None
    local, sources = model_inputs("m", {"name": "vit_tiny_patch16_224", "pretrained": True,
                                        "weights_file": str(weights)}, hasher)  # fmt: skip
    assert local["pretrained"] is False  # a weights file replaces the hub weights
    assert local["weights_file"] == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    assert sources == {"weights_file": str(weights.resolve())}
    # a checkpoint wins over a weights file (model_loading ignores the file then)
    both, sources = model_inputs("m", {"weights_file": str(weights), "checkpoint": str(checkpoint)},
                                 hasher)  # fmt: skip
    assert both["weights_file"] is None
    assert both["checkpoint"] == "sha256:" + hashlib.sha256(b"checkpoint").hexdigest()
    assert sources == {"checkpoint": str(checkpoint.resolve())}


def _parts(tmp_path: Path, **changes):
    hasher = FileHasher()
    entry = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32},
             "weights_file": str(changes.pop("weights", tmp_path / "w.bin"))}  # fmt: skip
    entry.update(changes.pop("entry", {}))
    model, sources = model_inputs("m", entry, hasher)
    folder = changes.pop("folder", tmp_path / "data")
    dataset = dataset_inputs(changes.pop("kind", "imagenet-val"), folder,
                             changes.pop("spec", {}), folder)  # fmt: skip
    protocol = changes.pop("protocol", "standard")
    return pair_fingerprint(
        model, dataset, protocol=protocol,
        preprocessing=preprocessing_inputs(protocol, changes.pop("overrides", {})),
        precision=changes.pop("precision", "fp32"), sources=sources,
    )  # fmt: skip


def test_digest_changes_with_every_input(tmp_path: Path) -> None:
    _file(tmp_path / "w.bin", b"weights")
    _file(tmp_path / "data" / "n01440764" / "a.JPEG", b"x")
    base = _parts(tmp_path)
    assert len(base.digest) == 16 and base.digest == _parts(tmp_path).digest
    changed = {
        "name": _parts(tmp_path, entry={"name": "deit_tiny_patch16_224"}),
        "kwargs": _parts(tmp_path, entry={"kwargs": {"img_size": 48}}),
        "num_classes": _parts(tmp_path, entry={"num_classes": 10}),
        "weights": _parts(tmp_path, weights=_file(tmp_path / "v.bin", b"other weights")),
        "protocol": _parts(tmp_path, protocol="legacy"),
        "override": _parts(tmp_path, overrides={"crop_pct": 1.0}),
        "precision": _parts(tmp_path, precision="bf16"),
        "spec": _parts(tmp_path, spec={"split": "x"}),
        "type": _parts(tmp_path, kind="imagenet-sketch"),
    }
    _file(tmp_path / "data" / "n01440764" / "b.JPEG", b"y")
    changed["file count"] = _parts(tmp_path)
    digests = {name: fp.digest for name, fp in changed.items()}
    assert base.digest not in digests.values()
    assert len(set(digests.values())) == len(digests)


def test_digest_ignores_where_the_model_file_lies_and_unset_overrides(tmp_path: Path) -> None:
    _file(tmp_path / "data" / "c" / "a.png", b"x")
    first = _parts(tmp_path, weights=_file(tmp_path / "w.bin", b"weights"))
    moved = _parts(tmp_path, weights=_file(tmp_path / "elsewhere" / "w.bin", b"weights"))
    assert first.digest == moved.digest and first.sources != moved.sources
    assert _parts(tmp_path, weights=tmp_path / "w.bin", overrides={"crop_pct": None}).digest == first.digest
    # the legacy transform ignores timm preprocessing overrides, so they do not enter
    legacy = _parts(tmp_path, weights=tmp_path / "w.bin", protocol="legacy")
    legacy_crop = _parts(tmp_path, weights=tmp_path / "w.bin", protocol="legacy",
                         overrides={"crop_pct": 1.0})  # fmt: skip
    assert legacy.digest == legacy_crop.digest


def test_dataset_root_is_resolved_and_hidden_files_are_not_counted(tmp_path: Path) -> None:
    _file(tmp_path / "d" / "c1" / "a.jpg", b"1")
    _file(tmp_path / "d" / "c1" / "._a.jpg", b"macOS metadata")
    _file(tmp_path / "d" / ".cache" / "x", b"")
    _file(tmp_path / "d" / "c2" / "sub" / "b.png", b"2")
    _file(tmp_path / "d" / "metadata.csv", b"3")
    assert count_files(tmp_path / "d") == 3
    inputs = dataset_inputs("generated", tmp_path / "d" / ".." / "d", {"split": "c1"}, tmp_path / "d")
    assert inputs == {"type": "generated", "root": str((tmp_path / "d").resolve()),
                      "spec": {"split": "c1"}, "files": 3}  # fmt: skip


def test_describe_change_names_what_differs(tmp_path: Path) -> None:
    old_bytes, new_bytes = b"old checkpoint", b"new checkpoint"
    old_sha, new_sha = (hashlib.sha256(b).hexdigest() for b in (old_bytes, new_bytes))
    old = _parts(tmp_path, entry={"checkpoint": str(_file(tmp_path / "c.ckpt", old_bytes))},
                 folder=tmp_path)  # fmt: skip
    new = _parts(tmp_path, entry={"checkpoint": str(_file(tmp_path / "c.ckpt", new_bytes))},
                 folder=tmp_path, protocol="legacy")  # fmt: skip
    text = describe_change(old.inputs, new.inputs)
    assert f"model.checkpoint changed (sha256:{old_sha[:8]}.. -> sha256:{new_sha[:8]}..)" in text
    assert 'protocol changed ("standard" -> "legacy")' in text
    assert "preprocessing.transform changed" in text
    assert "dataset" not in text and "\n" not in text
    with_kwarg = dict(old.inputs, model=dict(old.inputs["model"], kwargs={"img_size": 32, "depth": 2}))
    assert describe_change(old.inputs, with_kwarg) == "model.kwargs.depth changed (unset -> 2)"
    assert "not recorded" in describe_change(None, new.inputs)


def test_sidecar_round_trip_and_unreadable_file(tmp_path: Path, caplog) -> None:
    path = tmp_path / "fingerprints.json"
    assert load_fingerprints(path) == {}
    records = {"abc": {"inputs": {"protocol": "standard"}, "sources": {}}}
    save_fingerprints(path, records)
    assert load_fingerprints(path) == records == json.loads(path.read_text())
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert load_fingerprints(path) == {}
    assert "fingerprints.json is unreadable" in caplog.text


def test_zero_shot_head_and_tag_enter_the_model_fingerprint(tmp_path: Path) -> None:
    def inputs(entry):
        return model_inputs("clip", entry, FileHasher())[0]

    plain = {"name": "vit_tiny_patch16_224"}
    assert not {"tag", "zero_shot", "open_clip"} & set(inputs(plain))  # timm digests unchanged
    clip = {"name": "ViT-B-16", "family": "open_clip", "tag": "laion2b_s34b_b88k",
            "zero_shot": {"class_names": "imagenet", "templates": "openai_imagenet"}}
    base = inputs(clip)
    assert base["tag"] == "laion2b_s34b_b88k" and base["open_clip"]
    assert inputs({**clip, "tag": "openai"}) != base
    assert inputs({**clip, "zero_shot": {"class_names": ["a", "b"]}}) != base
    names = _file(tmp_path / "classes.txt", b"cat\ndog\n")
    with_file = {**clip, "zero_shot": {"class_names": str(names)}}
    first = inputs(with_file)
    assert first["zero_shot"]["class_names"] == "sha256:" + hashlib.sha256(b"cat\ndog\n").hexdigest()
    _file(names, b"cat\ncow\n")
    assert inputs(with_file) != first  # same path, other names


def test_hugging_face_entries_fingerprint_their_folder_files(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    _file(folder / "config.json", b'{"model_type": "vit"}')
    weights = _file(folder / "model.safetensors", b"weights")
    hasher = FileHasher()
    entry = {"family": "hf", "hf_path": str(folder)}
    first, sources = model_inputs("m", entry, hasher)
    assert first["hf_path"] == {
        "config.json": "sha256:" + hashlib.sha256(b'{"model_type": "vit"}').hexdigest(),
        "model.safetensors": "sha256:" + hashlib.sha256(b"weights").hexdigest()}
    assert sources == {"hf_path": str(folder.resolve())}
    _file(weights, b"fine-tuned weights")
    second, _ = model_inputs("m", entry, hasher)
    # new weights in the same folder: a new model
    assert describe_change(first, second).startswith("hf_path.model.safetensors changed")
    _file(folder / "preprocessor_config.json", b'{"size": 32}')
    assert "preprocessor_config.json" in model_inputs("m", entry, hasher)[0]["hf_path"]
    hub, _ = model_inputs("m", {"family": "hf", "hf_id": "google/vit-base-patch16-224"}, hasher)
    assert hub["hf_id"] == "google/vit-base-patch16-224" and hub["hf_path"] is None
    timm_only, _ = model_inputs("m", {"name": "vit_tiny_patch16_224"}, hasher)
    assert "hf_path" not in timm_only  # timm digests are unchanged


def test_a_probe_head_file_counts_by_its_bytes(tmp_path: Path) -> None:
    head = tmp_path / "probe.safetensors"
    head.write_bytes(b"first")
    entry = {"name": "vit_small_patch14_dinov2", "probe_head": str(head)}
    first, sources = model_inputs("real", entry, FileHasher())
    assert first["probe_head"] == "sha256:" + hashlib.sha256(b"first").hexdigest()
    assert sources["probe_head"] == str(head.resolve())
    head.write_bytes(b"second")
    assert model_inputs("real", entry, FileHasher())[0]["probe_head"] != first["probe_head"]
    assert "probe_head" not in model_inputs("plain", {"name": "x"}, FileHasher())[0]
