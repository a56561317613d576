"""Writing the benchmark to disk (:func:`generate_benchmark`), reusing an identical one, and
reading back what was written (:func:`read_benchmark`).

Layout written by :func:`generate_benchmark` (``<name>`` is e.g. ``disk_00017.png``)::

    <root>/benchmark.json                  config, counts, format version
    <root>/classes.txt                     class folder names, one per line, label order
    <root>/pretrain/images/<class>/<name>  pre-training split (generic images+masks layout)
    <root>/pretrain/masks/<class>/<name>   uint8 single-channel PNG, 0 = bg, 255 = object
    <root>/pretrain/metadata.csv
    <root>/train/images|masks/<class>/...  the fine-tuning pool, same layout
    <root>/train/metadata.csv
    <root>/<split>/<class>/<name>          every split in EVAL_SPLITS, ImageFolder style
    <root>/<split>_masks/<class>/<name>
    <root>/<split>/metadata.csv            every split (always present for SWEEP_SPLITS)

``metadata.csv`` columns: ``path`` (relative to the split directory), ``mask_path``
(relative to the root), ``class``, ``label``, ``shape``, ``background`` (background id,
-1 = ``PLAIN_BACKGROUND`` for a plain backdrop or the board of ``rendition``),
``own_background`` (1 if the background is the class's own), ``area`` (requested object
area as a fraction of the image), ``x``, ``y`` (object centre as a fraction of width /
height), ``rotation`` (degrees, counter-clockwise as seen on screen), ``mask_fraction``
(actual mask pixels / image pixels, lower when the object is clipped by the border).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from robustft.synth.config import (
    EVAL_SPLITS,
    GENERIC_SPLITS,
    SPLITS,
    SynthConfig,
    class_names,
)
from robustft.synth.families import background_family
from robustft.synth.render import render_split_item

__all__ = ["FORMAT_VERSION", "generate_benchmark", "read_benchmark"]

FORMAT_VERSION = 1

_MARKER = ".synth_incomplete"  # written before generation, removed when benchmark.json is
_CSV_FIELDS = (
    "path",
    "mask_path",
    "class",
    "label",
    "shape",
    "background",
    "own_background",
    "area",
    "x",
    "y",
    "rotation",
    "mask_fraction",
)


def _split_count(config: SynthConfig, split: str) -> int:
    if split == "pretrain":
        return config.pretrain_per_class
    return config.train_per_class if split == "train" else config.eval_per_class


def _split_dirs(split: str) -> tuple[str, str]:
    """(image dir, mask dir) of a split, relative to the root."""
    if split in GENERIC_SPLITS:
        return f"{split}/images", f"{split}/masks"
    return split, f"{split}_masks"


def _write_png(path: Path, array: np.ndarray) -> None:
    # PIL writes no timestamp or other varying chunk into a PNG, so bytes are reproducible.
    Image.fromarray(array).save(path, format="PNG")


def _generate_item(args: tuple[str, SynthConfig, str, int, int]) -> dict[str, Any]:
    """Render and write one image + mask; returns its metadata row (runs in workers too)."""
    root_str, config, split, label, index = args
    root = Path(root_str)
    cls = class_names(config)[label]
    name = f"{config.class_shapes[label]}_{index:05d}.png"
    image, mask, f = render_split_item(config, split, label, index)
    img_dir, mask_dir = _split_dirs(split)
    _write_png(root / img_dir / cls / name, image)
    _write_png(root / mask_dir / cls / name, mask.astype(np.uint8) * 255)
    split_dir = split
    rel = (root / img_dir / cls / name).relative_to(root / split_dir).as_posix()
    return {
        "path": rel,
        "mask_path": f"{mask_dir}/{cls}/{name}",
        "class": cls,
        "label": label,
        "shape": config.class_shapes[label],
        "background": f["background"],
        "own_background": int(f["background"] == label),
        "area": round(f["area"], 6),
        "x": round(f["x"], 6),
        "y": round(f["y"], 6),
        "rotation": round(f["rotation"], 4),
        "mask_fraction": round(float(mask.mean()), 6),
    }


def read_benchmark(root: str | Path) -> dict[str, Any] | None:
    """The ``benchmark.json`` of a finished benchmark under ``root``, or None."""
    path = Path(root) / "benchmark.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _owned_paths(root: Path) -> list[Path]:
    paths = [root / "benchmark.json", root / "classes.txt"]
    paths += [root / split for split in GENERIC_SPLITS]
    for split in EVAL_SPLITS:
        paths += [root / split, root / f"{split}_masks"]
    return paths


def _remove_owned(root: Path) -> None:
    """Delete exactly what a generation writes (never anything else under ``root``)."""
    for p in _owned_paths(root):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _describes(stored: Any, config: SynthConfig) -> bool:
    """Whether a stored config dict is ``config``; keys added to SynthConfig since it was
    written take their defaults, which reproduce what the older generator drew."""
    try:
        return SynthConfig.from_dict(stored) == config
    except (TypeError, ValueError):
        return False


def generate_benchmark(
    root: str | Path,
    config: SynthConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
    num_workers: int = 0,
    splits: Iterable[str] = SPLITS,
) -> dict[str, Any]:
    """Generate the benchmark under ``root`` (or reuse an identical existing one).

    Args:
        root: output directory (created if needed).
        config: the benchmark parameters (default ``SynthConfig()``).
        progress: show a tqdm progress bar per split.
        overwrite: replace an existing benchmark with a different config (only the paths
            this generator writes are deleted).
        num_workers: >1 renders in that many processes; the files are identical either way.
        splits: subset of ``SPLITS`` to write (default all). Part of the recorded identity.

    Returns:
        The content of ``<root>/benchmark.json``.

    Raises:
        ValueError: ``<root>/benchmark.json`` exists with a different config (or split set,
            or format version) and ``overwrite`` is False, or ``root`` holds split folders
            that this generator did not write.
    """
    config = config or SynthConfig()
    root = Path(root)
    wanted = set(splits)
    unknown = wanted - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; known: {SPLITS}")
    splits = tuple(s for s in SPLITS if s in wanted)  # canonical order
    info_path = root / "benchmark.json"
    existing = read_benchmark(root)
    if existing is not None:
        same = (
            existing.get("format_version") == FORMAT_VERSION
            and _describes(existing.get("config"), config)
            and tuple(existing.get("splits", {})) == splits
        )
        if same:
            return existing
        if not overwrite:
            raise ValueError(
                f"{info_path} describes a benchmark with a different config (or splits / "
                f"format version); pass overwrite=True to replace it, or use another root"
            )
        _remove_owned(root)
    elif (root / _MARKER).exists() or overwrite:
        _remove_owned(root)  # an interrupted earlier run of ours: start clean
    elif any(p.exists() for p in _owned_paths(root)):
        raise ValueError(
            f"{root} already holds split folders but no benchmark.json; refusing to write "
            f"into them (pass overwrite=True to delete them first)"
        )

    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text("generation in progress\n")
    names = class_names(config)
    for split in splits:
        for d in _split_dirs(split):
            for cls in names:
                (root / d / cls).mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    counts: dict[str, int] = {}
    executor = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
    try:
        for split in splits:
            n = _split_count(config, split)
            tasks = [
                (str(root), config, split, c, i)
                for c in range(config.num_classes)
                for i in range(n)
            ]
            if executor is not None:
                it = executor.map(_generate_item, tasks, chunksize=64)
            else:
                it = map(_generate_item, tasks)
            rows = list(tqdm(it, total=len(tasks), desc=f"synth {split}", disable=not progress))
            split_dir = root / split
            with open(split_dir / "metadata.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            counts[split] = len(rows)
    finally:
        if executor is not None:
            executor.shutdown()

    (root / "classes.txt").write_text("".join(f"{c}\n" for c in names))
    info = {
        "format_version": FORMAT_VERSION,
        # The generator's name when format 1 was defined; kept so that benchmark.json stays
        # byte-identical (nothing reads it: reuse compares format_version, config, splits).
        "generator": "robustft.data.synth",
        "seed": config.seed,
        "config": config.to_dict(),
        "classes": names,
        "backgrounds": [background_family(config).spec(b, config.num_classes)
                        for b in range(config.num_classes)],
        "splits": {
            s: {
                "count": counts[s],
                "images": _split_dirs(s)[0],
                "masks": _split_dirs(s)[1],
                "metadata": f"{s}/metadata.csv",
            }
            for s in splits
        },
    }
    # benchmark.json last: its presence means the benchmark is complete.
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    (root / _MARKER).unlink()
    return json.loads(info_path.read_text())
