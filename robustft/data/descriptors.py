"""Dataset descriptors: what a correct copy of each dataset looks like (``robustft-data
verify`` checks a copy against one).

One YAML file per dataset in ``data_manifests/`` at the repository root (override the folder
with ``ROBUSTFT_MANIFESTS_DIR``; folder and variable keep their names so users' setups
keep working). Keys:

- ``name``, ``description``, ``layout`` (human-readable path pattern), ``protocol`` (the
  label protocol in words), ``dataset_type`` (the ``robustft.data.eval.registry`` key that
  reads it, or null);
- ``image_dir``: folder under the root holding the class folders (``.`` = the root);
- ``class_folders``: where the expected class-folder names come from — ``timm_synsets``
  (the 1000 wnids), ``timm_a`` / ``timm_r`` (the 200 of ImageNet-A / -R),
  ``integers_0_999`` (ImageNet-V2), ``objectnet_mapping`` (keys of
  ``mappings/folder_to_objectnet_label.json``), ``si_score_classes`` (``label`` column of
  each subset's ``foreground_classes.csv``), ``timm_synsets_subset`` (any subset of the
  1000 wnids, e.g. ImageNet-S919's 919), ``none`` (a dataset in files, not class
  folders, e.g. ImageNet-segmentation's one ``gtsegs_ijcv.mat``: only
  ``required_files`` are checked);
- ``num_classes``, ``num_images``: expected counts (null = not checked); images are the
  files ``robustft.data.layout.list_images`` lists, as every reader does (its extensions,
  hidden files such as macOS ``._x.jpg`` skipped);
- ``required_files``: files that must exist, relative to the root (per subset for
  SI-Score: relative to each subset folder);
- ``subsets``: SI-Score's subset folders (each checked like a dataset root).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLASS_FOLDER_SOURCES",
    "DatasetDescriptor",
    "list_descriptors",
    "load_descriptor",
    "descriptors_dir",
]

CLASS_FOLDER_SOURCES = frozenset(
    {
        "timm_synsets",
        "timm_a",
        "timm_r",
        "integers_0_999",
        "objectnet_mapping",
        "si_score_classes",
        "timm_synsets_subset",
        "none",
    }
)


@dataclass(frozen=True)
class DatasetDescriptor:
    name: str
    description: str
    layout: str
    protocol: str
    class_folders: str
    num_classes: int | None = None
    num_images: int | None = None
    dataset_type: str | None = None
    image_dir: str = "."
    required_files: tuple[str, ...] = ()
    subsets: tuple[str, ...] = ()
    notes: str = ""
    source: Path | None = field(default=None, compare=False)


def descriptors_dir() -> Path:
    """``$ROBUSTFT_MANIFESTS_DIR`` or the repository's ``data_manifests/``, installed as the
    package ``robustft.data_manifests`` (so wheels and editable installs both find it)."""
    env = os.environ.get("ROBUSTFT_MANIFESTS_DIR")
    if env:
        return Path(env)
    import robustft.data_manifests

    return Path(robustft.data_manifests.__file__).parent


def list_descriptors(directory: Path | None = None) -> list[str]:
    directory = directory or descriptors_dir()
    return sorted(path.stem for path in directory.glob("*.yaml"))


def load_descriptor(name: str, directory: Path | None = None) -> DatasetDescriptor:
    """The descriptor ``<directory>/<name>.yaml``; unknown names and keys are clear errors."""
    directory = directory or descriptors_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(
            f"no data manifest {name!r} in {directory}; known: {list_descriptors(directory)}"
        )
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = {f.name for f in fields(DatasetDescriptor)} - {"source"}
    unknown = set(raw) - known
    if unknown:
        raise KeyError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    missing = {"name", "description", "layout", "protocol", "class_folders"} - set(raw)
    if missing:
        raise KeyError(f"{path}: missing key(s) {sorted(missing)}")
    if raw["class_folders"] not in CLASS_FOLDER_SOURCES:
        raise ValueError(
            f"{path}: class_folders {raw['class_folders']!r} not one of {sorted(CLASS_FOLDER_SOURCES)}"
        )
    for key in ("required_files", "subsets"):
        if key in raw:
            raw[key] = tuple(raw[key] or ())
    return DatasetDescriptor(**raw, source=path)
