"""Fingerprints of what produced an evaluation result, so that resuming never reuses a
number that belongs to another model, protocol or dataset copy.

A (model, dataset) pair's fingerprint is a short sha256 of the canonical JSON of its
inputs, all known BEFORE any model is built or any image decoded:

- ``model``: the config entry (``name``, ``num_classes``, ``kwargs``, ``pretrained`` as it
  acts: true only when the hub weights are loaded), the sha256 of the ``weights_file`` or
  of the ``checkpoint`` (whichever is loaded: a checkpoint wins, as in
  ``robustft.evaluation.model_loading``) and the timm version; when set, ``tag`` and
  ``zero_shot`` (a file it names by its sha256); and what the model's family says
  identifies its weights (``Family.weights_identity``: the OpenCLIP version; a Hugging
  Face entry's ``hf_id``, the sha256 of its ``hf_path`` folder's model files and the
  transformers version). The file paths are not
  part of it (a moved file with the same bytes is the same model); the sidecar records
  them.
- ``protocol``; ``preprocessing``: under the standard protocol the overrides that are set
  (``preprocessing.crop_pct=...``); the rest of a model's preprocessing is resolved by its
  family (timm: from the model's ``pretrained_cfg``), a function of ``name``, ``kwargs``
  and the family's identity and version, which are in the fingerprint (the resolved
  config needs the model built, which a rerun with nothing changed must not do). Under
  the legacy protocol the overrides do not apply and are left out.
- ``precision`` (autocast changes predictions); device, batch size and workers do not
  enter (they change nothing beyond float rounding).
- ``dataset``: its type, root (resolved absolute path), the other keys of its spec
  (``split``, ``class_names``...) and the number of files under the folder it reads
  (``robustft.data.eval.registry.dataset_folder``; hidden files are not counted).
- ``explanations`` (only when an explanation metric is requested, so that a top-1 run
  keeps the fingerprints it had before they existed): the metrics, the relevance method
  and the settings of the requested metrics (perturbation fractions, removal value and
  explained class; the share's explained class)
  (``robustft.evaluation.metrics.map_scoring.ExplanationSettings.fingerprint_inputs``).

``results.csv`` stores the digest per row; ``fingerprints.json`` in the run directory maps
each digest to its full inputs (and the model files' paths), so a user can see why a
pair was re-evaluated: :func:`describe_change` names the inputs that differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustft.backbones import DEFAULT_FAMILY, FAMILIES
from robustft.evaluation.model_loading import MODEL_ENTRY_KEYS

__all__ = [
    "FINGERPRINTS_NAME",
    "FileHasher",
    "Fingerprint",
    "count_files",
    "dataset_inputs",
    "describe_change",
    "fingerprint_record",
    "load_fingerprints",
    "model_inputs",
    "pair_fingerprint",
    "preprocessing_inputs",
    "save_fingerprints",
]

log = logging.getLogger(__name__)

FINGERPRINTS_NAME = "fingerprints.json"
DIGEST_LENGTH = 16  # hex characters: 64 bits, no collision among a run's pairs


class FileHasher:
    """sha256 of file contents, read in chunks (never whole into memory) and cached by
    (resolved path, size, mtime): a 1 GB checkpoint shared by several pairs of a run is
    read once."""

    def __init__(self) -> None:
        self._digests: dict[tuple[str, int, int], str] = {}
        self.files_hashed = 0

    def sha256(self, path: str | os.PathLike[str], *, key: str) -> str:
        """Hex sha256 of ``path``; ``key`` (the config key naming it) goes into errors."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: file not found: {path}")
        stat = path.stat()
        cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if cache_key not in self._digests:
            with path.open("rb") as handle:
                self._digests[cache_key] = hashlib.file_digest(handle, "sha256").hexdigest()
            self.files_hashed += 1
        return self._digests[cache_key]


@dataclass(frozen=True)
class Fingerprint:
    """``digest`` of ``inputs`` (what the result depends on); ``sources`` (the model files'
    absolute paths) is recorded beside it, not hashed."""

    digest: str
    inputs: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """JSON-able form of config values (tuples as lists, mappings with str keys)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def model_inputs(
    label: str, entry: Mapping[str, Any], hasher: FileHasher
) -> tuple[dict[str, Any], dict[str, str]]:
    """(fingerprint inputs, source paths) of config entry ``models.<label>``."""
    unknown = set(entry) - MODEL_ENTRY_KEYS
    if unknown:
        raise KeyError(
            f"models.{label}: unknown key(s) {sorted(unknown)}; known: {sorted(MODEL_ENTRY_KEYS)}"
        )
    import timm

    checkpoint = entry.get("checkpoint") or None
    weights_file = None if checkpoint else entry.get("weights_file") or None
    sources: dict[str, str] = {}
    files: dict[str, str | None] = {"weights_file": None, "checkpoint": None}
    for key, path in (("weights_file", weights_file), ("checkpoint", checkpoint)):
        if path is not None:
            files[key] = "sha256:" + hasher.sha256(path, key=f"models.{label}.{key}")
            sources[key] = str(Path(path).resolve())
    inputs = {
        "name": entry.get("name"),
        "family": entry.get("family") or DEFAULT_FAMILY,
        "num_classes": entry.get("num_classes"),
        "kwargs": _plain(entry.get("kwargs") or {}),
        # null = ModelSpec's default (true), as the model is built
        "pretrained": (entry.get("pretrained") is not False) and not (checkpoint or weights_file),
        **files,
        "timm": timm.__version__,  # timm builds every model's evaluation transform
    }
    # Only when set, so that the fingerprints of plain timm entries stay what they were.
    if entry.get("tag"):
        inputs["tag"] = entry["tag"]
    zero_shot = entry.get("zero_shot")
    if zero_shot:
        inputs["zero_shot"] = _plain(zero_shot)
        for name, value in sorted(zero_shot.items()):
            # a file of class names, templates or class embeddings counts by its bytes
            if isinstance(value, str) and Path(value).is_file():
                key = f"models.{label}.zero_shot.{name}"
                inputs["zero_shot"][name] = "sha256:" + hasher.sha256(value, key=key)
                sources[f"zero_shot.{name}"] = str(Path(value).resolve())
    if entry.get("probe_head"):  # a linear probe head file counts by its bytes
        key = f"models.{label}.probe_head"
        inputs["probe_head"] = "sha256:" + hasher.sha256(entry["probe_head"], key=key)
        sources["probe_head"] = str(Path(entry["probe_head"]).resolve())
    family = FAMILIES.get(inputs["family"])  # an unknown one fails when it is built
    if family is not None:
        # only what the family adds, so that the digests of plain timm entries stay as they were
        identity, family_sources = family.weights_identity(
            entry, f"models.{label}", lambda path, key: hasher.sha256(path, key=key))
        inputs.update(identity)
        sources.update(family_sources)
    return inputs, sources


def preprocessing_inputs(protocol: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing part of the inputs (see module docstring)."""
    if protocol == "legacy":
        return {"transform": "legacy: Resize(size*256/224), CenterCrop(size), mean=std=0.5"}
    return {
        "transform": "timm pretrained_cfg of the model",
        **{key: _plain(value) for key, value in sorted(overrides.items()) if value is not None},
    }


def count_files(folder: str | os.PathLike[str]) -> int:
    """Files under ``folder`` (recursively, following links), hidden ones not counted."""
    total = 0
    for _, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        total += sum(1 for name in files if not name.startswith("."))
    return total


def dataset_inputs(
    kind: str, root: str | os.PathLike[str], spec: Mapping[str, Any], folder: Path
) -> dict[str, Any]:
    """The dataset part of the inputs: type, resolved root, other spec keys, file count."""
    return {
        "type": kind,
        "root": str(Path(root).resolve()),
        "spec": _plain(dict(spec)),
        "files": count_files(folder),
    }


def pair_fingerprint(
    model: Mapping[str, Any],
    dataset: Mapping[str, Any],
    *,
    protocol: str,
    preprocessing: Mapping[str, Any],
    precision: str,
    sources: Mapping[str, str] | None = None,
    explanations: Mapping[str, Any] | None = None,
) -> Fingerprint:
    """The fingerprint of one (model, dataset) pair from its parts."""
    inputs: dict[str, Any] = {
        "model": dict(model),
        "protocol": protocol,
        "preprocessing": dict(preprocessing),
        "precision": precision,
        "dataset": dict(dataset),
    }
    if explanations is not None:
        inputs["explanations"] = _plain(dict(explanations))
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]
    return Fingerprint(digest, json.loads(canonical), dict(sources or {}))


# --------------------------------------------------------------------------- explaining


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[:15] + ".."  # "sha256:" + 8 hex digits
    return json.dumps(value)


_ABSENT = object()


def describe_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """What differs between two fingerprints' inputs, as one phrase, e.g.
    ``model.checkpoint changed (sha256:1a2b3c4d.. -> sha256:3c4d5e6f..)``."""
    if old is None:
        return "its earlier fingerprint is not recorded in fingerprints.json"
    before, after = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if was != now:
            shown = ["unset" if v is _ABSENT else _show(v) for v in (was, now)]
            changes.append(f"{key} changed ({shown[0]} -> {shown[1]})")
    return "; ".join(changes) or "the fingerprint's inputs are unchanged but its digest differs"


# --------------------------------------------------------------------------- sidecar


def load_fingerprints(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{digest: {"inputs": ..., "sources": ...}}`` from ``path``; {} when absent. A file
    that cannot be read is reported and ignored: it only explains, results never depend
    on it."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("%s is unreadable (%s); rewriting it", path, error)
        return {}
    if not isinstance(records, dict):
        log.warning("%s is not a JSON object keyed by fingerprint; rewriting it", path)
        return {}
    return records


def save_fingerprints(
    path: str | os.PathLike[str], records: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Write ``records`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def fingerprint_record(fingerprint: Fingerprint) -> dict[str, Any]:
    """The sidecar entry of ``fingerprint``."""
    return {"inputs": fingerprint.inputs, "sources": fingerprint.sources}
