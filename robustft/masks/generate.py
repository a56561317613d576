"""TokenCut masks for a whole dataset folder: batched, resumable, with a manifest.

Input layouts (``layout="auto"`` picks the first that applies):

- ``generic``: ``<input_dir>/images/<class>/<name>.<ext>``
- ``imagefolder`` (ImageNet-style): ``<input_dir>/<class>/<name>.<ext>``

Output, always the generic layout: ``<output_dir>/masks/<class>/<name>.png`` (same stem
as the image; single-channel PNG, 0 = background, 255 = foreground, at the image's own
size), plus ``<output_dir>/tokencut_manifest.csv`` (one row per image, see
:data:`MANIFEST_FIELDS`) and ``<output_dir>/tokencut_settings.json`` (the parameters and
the preprocessing used). Pointing ``output_dir`` at a generic-layout ``input_dir`` puts
the masks next to the images.

Preprocessing: every image is **resized** (aspect ratio not kept, the model's timm
interpolation) to the model's input size, e.g. 224x224 — so any image size works
whatever the patch size, and images batch together. The patch-grid mask is then
upsampled (nearest) back to the image's own size and, with ``refine``, refined by the
bilateral solver at that size. Normalisation: the model's timm ``pretrained_cfg``
mean/std. EXIF orientation is not applied (mask pixels align with the stored pixels, as
ImageNet-S masks do).

Resume: an image whose mask PNG already exists is not recomputed; its manifest row is
taken from the previous manifest, or recomputed from the PNG when there is none
(``refined`` is then empty = unknown). ``kept`` is always re-evaluated with the current
minimum-foreground fraction.

Every mask is written, including those the minimum-foreground filter rejects: the
manifest's ``kept`` column is the filter (use :func:`kept_mask_pairs`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import str_to_pil_interp
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from robustft.attention import attention_blocks
from robustft.data.layout import (
    IMAGE_EXTENSIONS,
    first_stem_clash,
    list_class_folders,
    list_images,
)
from robustft.masks.bilateral import BilateralSolverParams, refine_mask
from robustft.masks.tokencut import (
    DEFAULT_EPS,
    DEFAULT_TAU,
    OFFICIAL_MIN_FOREGROUND_FRACTION,
    extract_patch_keys,
    graph_cut,
    upsample_nearest,
)
from robustft.models import create_model, preprocessing_config, token_layout

__all__ = [
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "SETTINGS_NAME",
    "GenerationSummary",
    "ImageEntry",
    "ManifestRow",
    "TokenCutSettings",
    "find_images",
    "generate_masks",
    "kept_mask_pairs",
    "load_mask_model",
    "read_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "tokencut_manifest.csv"
SETTINGS_NAME = "tokencut_settings.json"
MANIFEST_FIELDS = (
    "image",  # path relative to input_dir (posix)
    "mask",  # path relative to output_dir (posix); empty when skipped
    "class_name",
    "width",  # the image's own size (the mask's size)
    "height",
    "foreground_fraction",  # foreground pixels / all pixels of the final mask
    "kept",  # True/False by the minimum-foreground filter; empty when skipped
    "refined",  # True/False: bilateral-solver refinement applied; empty = unknown/skipped
    "status",  # written | resumed | skipped
    "reason",  # why skipped, or why not kept
)
# How often the manifest is rewritten during a run, so an interrupted run keeps its rows.
_MANIFEST_FLUSH_SECONDS = 30.0


@dataclass(frozen=True)
class ImageEntry:
    """One input image: absolute path, path relative to the input root, class folder and
    the mask's path relative to the output root."""

    path: Path
    relative: str
    class_name: str
    mask_relative: str


@dataclass(frozen=True)
class TokenCutSettings:
    """Algorithm parameters (``docs/method.md`` §4; the defaults are TokenCut's)."""

    tau: float = DEFAULT_TAU
    eps: float = DEFAULT_EPS
    refine: bool = False
    min_foreground_fraction: float = OFFICIAL_MIN_FOREGROUND_FRACTION
    bilateral: BilateralSolverParams = field(default_factory=BilateralSolverParams)
    # TokenCut inverts a refined mask whose IoU with the coarse one is < 0.5; "coarse"
    # falls back to the coarse mask instead.
    refine_low_iou: str = "invert"


@dataclass
class ManifestRow:
    image: str
    mask: str = ""
    class_name: str = ""
    width: int | None = None
    height: int | None = None
    foreground_fraction: float | None = None
    kept: bool | None = None
    refined: bool | None = None
    status: str = ""
    reason: str = ""

    def to_csv(self) -> dict[str, str]:
        def text(value: Any) -> str:
            if value is None:
                return ""
            if isinstance(value, float):
                return f"{value:.6f}"
            return str(value)

        return {name: text(getattr(self, name)) for name in MANIFEST_FIELDS}

    @classmethod
    def from_csv(cls, record: dict[str, str]) -> ManifestRow:
        def optional(value: str | None, cast: Any) -> Any:
            if value is None or value == "":
                return None
            if cast is bool:
                return value.strip().lower() == "true"
            return cast(value)

        return cls(
            image=record["image"],
            mask=record.get("mask", "") or "",
            class_name=record.get("class_name", "") or "",
            width=optional(record.get("width"), int),
            height=optional(record.get("height"), int),
            foreground_fraction=optional(record.get("foreground_fraction"), float),
            kept=optional(record.get("kept"), bool),
            refined=optional(record.get("refined"), bool),
            status=record.get("status", "") or "",
            reason=record.get("reason", "") or "",
        )


@dataclass
class GenerationSummary:
    """What a run did. ``skipped`` lists ``(image path relative to input_dir, reason)``."""

    total: int
    written: int
    resumed: int
    kept: int
    skipped: list[tuple[str, str]]
    manifest_path: Path
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def find_images(
    input_dir: str | os.PathLike[str], layout: str = "auto"
) -> tuple[str, list[ImageEntry]]:
    """List the images of a dataset folder. Returns ``(layout, entries)``, entries sorted.

    ``layout``: ``"generic"`` (``<root>/images/<class>/<name>``), ``"imagefolder"``
    (``<root>/<class>/<name>``) or ``"auto"`` (generic when ``<root>/images`` is a
    folder). Hidden files and files with other extensions are ignored. Two images of one
    class with the same stem (``a.jpg``, ``a.png``) would share a mask file: ``ValueError``.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input_dir is not a folder: {root}")
    if layout == "auto":
        layout = "generic" if (root / "images").is_dir() else "imagefolder"
    if layout == "generic":
        image_root = root / "images"
        if not image_root.is_dir():
            raise FileNotFoundError(f"generic layout needs {image_root}/<class>/<name>.<ext>")
    elif layout == "imagefolder":
        image_root = root
    else:
        raise ValueError(f"layout must be 'auto', 'generic' or 'imagefolder', got {layout!r}")

    entries: list[ImageEntry] = []
    for class_name in list_class_folders(image_root):
        images = list_images(image_root / class_name)
        clash = first_stem_clash(images)
        if clash is not None:
            first, second = (p.relative_to(root).as_posix() for p in clash)
            raise ValueError(
                f"{first} and {second} would both write masks/{class_name}/{clash[1].stem}.png; "
                "rename one of them"
            )
        for path in images:
            entries.append(ImageEntry(path, path.relative_to(root).as_posix(), class_name,
                                      f"masks/{class_name}/{path.stem}.png"))
    if not entries:
        raise FileNotFoundError(
            f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {image_root}/<class>/ "
            f"(layout {layout!r})"
        )
    return layout, entries


def load_mask_model(
    name: str,
    weights_file: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    **model_kwargs: Any,
) -> nn.Module:
    """The ViT whose keys TokenCut cuts, in eval mode. ``weights_file`` loads local
    weights (no network); otherwise ``pretrained`` fetches the tag's weights from the hub
    (``pretrained=False``: random weights, for tests only). Checks early that the model
    has timm attention blocks (``TypeError`` naming the model class)."""
    model = create_model(
        name,
        pretrained=pretrained and weights_file is None,
        weights_file=weights_file,
        **model_kwargs,
    )
    attention_blocks(model)
    return model.eval()


class _ImageDataset(Dataset):
    """Reads an image, checks it, resizes to the model's input size and normalises."""

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str,
        patch_size: tuple[int, int],
        keep_rgb: bool,
    ) -> None:
        self.entries = list(entries)
        self.input_size = input_size
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.interpolation = str_to_pil_interp(interpolation)
        self.patch_size = patch_size
        self.keep_rgb = keep_rgb

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        item: dict[str, Any] = {"index": index, "pixels": None, "rgb": None, "size": None}
        try:
            with Image.open(entry.path) as image:
                image = image.convert("RGB")  # also forces the full decode
        # PIL raises many exception types for corrupt/truncated files; all mean a skip.
        except Exception as error:  # noqa: BLE001
            item["error"] = f"unreadable image: {type(error).__name__}: {error}"
            return item
        width, height = image.size
        item["size"] = (height, width)
        ph, pw = self.patch_size
        if height < ph or width < pw:
            item["error"] = f"image {width}x{height} is smaller than one {pw}x{ph} patch"
            return item
        resized = image.resize((self.input_size[1], self.input_size[0]), self.interpolation)
        array = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
        item["pixels"] = torch.from_numpy((array - self.mean) / self.std)
        if self.keep_rgb:
            item["rgb"] = np.asarray(image, dtype=np.uint8)
        item["error"] = None
        return item


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Rows of a ``tokencut_manifest.csv``."""
    with open(path, newline="") as handle:
        return [ManifestRow.from_csv(record) for record in csv.DictReader(handle)]


def kept_mask_pairs(output_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(image relative to input_dir, mask relative to output_dir)`` for every mask the
    minimum-foreground filter kept: what a fine-tuning data config should use."""
    rows = read_manifest(Path(output_dir) / MANIFEST_NAME)
    return [(row.image, row.mask) for row in rows if row.kept and row.mask]


def compare_with_true_masks(
    output_dir: str | os.PathLike[str], true_root: str | os.PathLike[str]
) -> dict[str, float]:
    """Intersection over union of every written mask against a true mask in the generic
    layout, ``<true_root>/masks/<class>/<stem>.png`` (nonzero = foreground; resized
    nearest to the mask's size if they differ). Returns ``{image: IoU}`` for the images
    that have both; e.g. ImageNet-S or the generated benchmark's ``train`` split."""
    scores: dict[str, float] = {}
    for row in read_manifest(Path(output_dir) / MANIFEST_NAME):
        truth_path = Path(true_root) / row.mask
        if not row.mask or not truth_path.is_file():
            continue
        with Image.open(Path(output_dir) / row.mask) as image:
            predicted = np.asarray(image.convert("L")) > 127
        with Image.open(truth_path) as image:
            if image.size != (predicted.shape[1], predicted.shape[0]):
                image = image.resize((predicted.shape[1], predicted.shape[0]), Image.NEAREST)
            truth = np.asarray(image.convert("L")) > 0
        union = np.logical_or(predicted, truth).sum()
        scores[row.image] = 1.0 if union == 0 else float((predicted & truth).sum() / union)
    return scores


def _write_manifest(path: Path, rows: Iterable[ManifestRow]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r.image):
            writer.writerow(row.to_csv())
    os.replace(temporary, path)


def _write_mask(path: Path, mask: np.ndarray) -> None:
    """Atomic PNG write, so an interrupted run never leaves a truncated mask that a
    resumed run would take as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(temporary, format="PNG")
    os.replace(temporary, path)


def _keep_decision(fraction: float, minimum: float) -> tuple[bool, str]:
    if fraction < minimum:
        return False, f"foreground fraction {fraction:.6f} < min_foreground_fraction {minimum:.6f}"
    return True, ""


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_identity(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if arch:
        return f"{arch}.{tag}" if tag else str(arch)
    return type(model).__name__


def generate_masks(
    model: nn.Module,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    settings: TokenCutSettings = TokenCutSettings(),
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "auto",
    layout: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    model_description: str | None = None,
) -> GenerationSummary:
    """Compute TokenCut masks for every image under ``input_dir`` (see the module
    docstring for layouts, preprocessing, resume and outputs).

    Unreadable/corrupt images and images smaller than one patch are skipped and
    reported (manifest ``status=skipped`` with the reason, and a console warning naming
    the file); a model without timm attention blocks raises ``TypeError`` before any work.
    ``model_description`` (e.g. name and weights file) is recorded in the settings file;
    by default the model's timm ``pretrained_cfg`` name, which does not say whether its
    weights were loaded.
    """
    attention_blocks(model)  # clear TypeError naming the model class, before any I/O
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= settings.min_foreground_fraction < 1.0:
        raise ValueError(
            f"min_foreground_fraction must be in [0, 1), got {settings.min_foreground_fraction}"
        )
    layout, entries = find_images(input_dir, layout)
    output_root = Path(output_dir)
    output_root.mkdir(parents=True, exist_ok=True)
    manifest_path = output_root / MANIFEST_NAME

    preprocessing = preprocessing_config(model)
    input_size = tuple(int(s) for s in preprocessing["input_size"][1:])
    grid_size = token_layout(model, input_size).grid_size
    patch_size = tuple(int(p) for p in model.patch_embed.patch_size)
    _write_settings(
        output_root / SETTINGS_NAME,
        model_description or _model_identity(model),
        model,
        layout,
        input_dir,
        preprocessing,
        grid_size,
        settings,
    )

    previous: dict[str, ManifestRow] = {}
    if manifest_path.is_file() and not overwrite:
        previous = {row.image: row for row in read_manifest(manifest_path)}

    rows: dict[str, ManifestRow] = {}
    todo: list[ImageEntry] = []
    for entry in entries:
        mask_path = output_root / entry.mask_relative
        if overwrite or not mask_path.is_file():
            todo.append(entry)
            continue
        row = _resumed_row(entry, mask_path, previous.get(entry.relative), settings)
        if row is None:  # the existing PNG is unreadable: recompute it
            todo.append(entry)
        else:
            rows[entry.relative] = row
    resumed = len(rows)
    if resumed:
        log.info("resuming: %d of %d masks already exist in %s", resumed, len(entries), output_root)

    dataset = _ImageDataset(
        todo,
        input_size=input_size,
        mean=preprocessing["mean"],
        std=preprocessing["std"],
        interpolation=preprocessing.get("interpolation", "bicubic"),
        patch_size=patch_size,
        keep_rgb=settings.refine,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        shuffle=False,
    )
    torch_device = _resolve_device(device)
    model = model.to(torch_device).eval()

    skipped: list[tuple[str, str]] = []
    written = 0
    start = last_flush = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", desc="TokenCut masks", disable=not progress)
    try:
        for items in loader:
            good = [item for item in items if item["error"] is None]
            for item in items:
                if item["error"] is not None:
                    entry = todo[item["index"]]
                    skipped.append((entry.relative, item["error"]))
                    log.warning("skipped %s: %s", entry.path, item["error"])
                    height_width = item["size"] or (None, None)
                    rows[entry.relative] = ManifestRow(
                        image=entry.relative,
                        class_name=entry.class_name,
                        width=height_width[1],
                        height=height_width[0],
                        status="skipped",
                        reason=item["error"],
                    )
            if good:
                pixels = torch.stack([item["pixels"] for item in good]).to(torch_device)
                keys = extract_patch_keys(model, pixels).float().cpu().numpy()
                for item, features in zip(good, keys):
                    entry = todo[item["index"]]
                    rows[entry.relative] = _mask_for_image(
                        entry, features, grid_size, item, settings, output_root
                    )
                    written += 1
            bar.update(len(items))
            if time.perf_counter() - last_flush > _MANIFEST_FLUSH_SECONDS:
                _write_manifest(manifest_path, _all_rows(rows, previous, entries))
                last_flush = time.perf_counter()
    finally:
        bar.close()
        _write_manifest(manifest_path, _all_rows(rows, previous, entries))
    seconds = time.perf_counter() - start

    kept = sum(1 for row in rows.values() if row.kept)
    summary = GenerationSummary(
        total=len(entries),
        written=written,
        resumed=resumed,
        kept=kept,
        skipped=skipped,
        manifest_path=manifest_path,
        seconds=seconds,
    )
    log.info(
        "%d images: %d masks written, %d resumed, %d skipped, %d kept; %.1f images/s; manifest %s",
        summary.total,
        written,
        resumed,
        len(skipped),
        kept,
        summary.images_per_second,
        manifest_path,
    )
    return summary


def _all_rows(
    rows: dict[str, ManifestRow], previous: dict[str, ManifestRow], entries: Sequence[ImageEntry]
) -> list[ManifestRow]:
    """This run's rows, plus earlier rows of images not reached yet (interrupted run)."""
    out = dict(rows)
    for entry in entries:
        if entry.relative not in out and entry.relative in previous:
            out[entry.relative] = previous[entry.relative]
    return list(out.values())


def _manifest_row(entry: ImageEntry, settings: TokenCutSettings, *, width: int, height: int,
                  fraction: float, refined: bool | None, status: str) -> ManifestRow:
    """The manifest row of a mask with the given foreground fraction; ``kept`` and its
    reason come from the minimum-foreground filter of ``settings``."""
    kept, reason = _keep_decision(fraction, settings.min_foreground_fraction)
    return ManifestRow(image=entry.relative, mask=entry.mask_relative,
                       class_name=entry.class_name, width=width, height=height,
                       foreground_fraction=fraction, kept=kept, refined=refined,
                       status=status, reason=reason)


def _resumed_row(
    entry: ImageEntry, mask_path: Path, old: ManifestRow | None, settings: TokenCutSettings
) -> ManifestRow | None:
    """Manifest row for an existing mask: the previous row when it matches, else
    recomputed from the PNG. None when the PNG cannot be read (it will be recomputed)."""
    if old is not None and old.mask == entry.mask_relative and old.foreground_fraction is not None:
        fraction, width, height, refined = (
            old.foreground_fraction,
            old.width,
            old.height,
            old.refined,
        )
    else:
        try:
            with Image.open(mask_path) as image:
                mask = np.asarray(image.convert("L")) > 127
        except Exception:  # noqa: BLE001 - any unreadable PNG is simply recomputed
            log.warning("existing mask %s is unreadable; recomputing it", mask_path)
            return None
        fraction = float(mask.mean())
        height, width = mask.shape
        refined = None  # unknown without the earlier manifest
    return _manifest_row(entry, settings, width=width, height=height, fraction=fraction,
                         refined=refined, status="resumed")


def _mask_for_image(
    entry: ImageEntry,
    features: np.ndarray,
    grid_size: tuple[int, int],
    item: dict[str, Any],
    settings: TokenCutSettings,
    output_root: Path,
) -> ManifestRow:
    """Graph cut, upsampling, optional refinement, PNG write and the manifest row."""
    cut = graph_cut(features, grid_size, tau=settings.tau, eps=settings.eps)
    height, width = item["size"]
    mask = upsample_nearest(cut.mask, (height, width))
    if settings.refine:
        mask = refine_mask(
            item["rgb"], mask, settings.bilateral, low_iou_action=settings.refine_low_iou
        )
    _write_mask(output_root / entry.mask_relative, mask)
    return _manifest_row(entry, settings, width=width, height=height,
                         fraction=float(mask.mean()), refined=settings.refine, status="written")


def _write_settings(
    path: Path,
    model_description: str,
    model: nn.Module,
    layout: str,
    input_dir: str | os.PathLike[str],
    preprocessing: dict[str, Any],
    grid_size: tuple[int, int],
    settings: TokenCutSettings,
) -> None:
    record = {
        "model": model_description,
        "model_class": type(model).__name__,
        "input_dir": str(Path(input_dir).resolve()),
        "input_layout": layout,
        "preprocessing": (
            "each image resized (aspect ratio not kept) to the model input size; mask "
            "upsampled (nearest) from the patch grid to the image's own size"
        ),
        "model_input_size": list(preprocessing["input_size"][1:]),
        "patch_grid": list(grid_size),
        "mean": list(preprocessing["mean"]),
        "std": list(preprocessing["std"]),
        "interpolation": preprocessing.get("interpolation"),
        "mask_format": "single-channel PNG, 0 = background, 255 = foreground",
        "settings": asdict(settings),
        "note": "masks written by an earlier run with other settings are kept (resume)",
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2))
    os.replace(temporary, path)
