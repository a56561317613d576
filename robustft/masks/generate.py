"""TokenCut masks for a whole dataset folder: batched, resumable, with a manifest.

Inputs: the ``generic`` or ``imagefolder`` layout (:mod:`robustft.masks.inputs`).

Output, always the generic layout: ``<output_dir>/masks/<class>/<name>.png`` (same stem
as the image; single-channel PNG, 0 = background, 255 = foreground, at the image's own
size), plus ``<output_dir>/tokencut_manifest.csv`` (one row per image, see
:data:`robustft.data.mask_manifest.TOKENCUT_MANIFEST_FIELDS`) and
``<output_dir>/tokencut_settings.json`` (the parameters and the preprocessing used,
:mod:`robustft.masks.settings`). Pointing ``output_dir`` at a generic-layout
``input_dir`` puts the masks next to the images.

Preprocessing: every image is **resized** (aspect ratio not kept, the model's own
interpolation) to the model's input size, e.g. 224x224 — so any image size works
whatever the patch size, and images batch together. The patch-grid mask is then
upsampled (nearest) back to the image's own size and, with ``refine``, refined by the
bilateral solver at that size. Normalisation: the model's own mean/std
(``robustft.backbones.preprocessing_config``). EXIF orientation is not applied (mask
pixels align with the stored pixels, as ImageNet-S masks do).

Resume: an image whose mask PNG already exists is not recomputed; its manifest row is
taken from the previous manifest, or recomputed from the PNG when there is none
(``refined`` is then empty = unknown). ``kept`` is always re-evaluated with the current
minimum-foreground fraction.

Every mask is written, including those the minimum-foreground filter rejects and those of
a degenerate graph (:func:`robustft.masks.tokencut.degenerate_reason`: the cut of a
complete graph is arbitrary): the manifest's ``kept`` column is the filter (use
:func:`kept_mask_pairs`), its ``reason`` says why not, and its ``features``, ``tau``,
``eigenvalue`` and ``share_below_tau`` columns what each graph was. A run that meets
degenerate graphs says how many in one warning line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from robustft.backbones import ModelSpec, backbone_of, preprocessing_config
from robustft.data.mask_manifest import (
    TOKENCUT_MANIFEST_NAME,
    TokenCutRow,
    read_tokencut_manifest,
    write_tokencut_manifest,
)
from robustft.masks.bilateral import refine_mask
from robustft.masks.dataset import ResizedImageDataset, collate_as_list
from robustft.masks.inputs import ImageEntry, find_images
from robustft.masks.settings import (
    DEFAULT_SETTINGS,
    SETTINGS_NAME,
    TokenCutSettings,
    model_identity,
    write_settings,
)
from robustft.masks.tokencut import (
    cut_image,
    degenerate_reason,
    extract_patch_features,
    upsample_nearest,
)
from robustft.resources import resolve_device

__all__ = ["GenerationSummary", "generate_masks", "load_mask_model"]

log = logging.getLogger(__name__)

# How often the manifest is rewritten during a run, so an interrupted run keeps its rows.
_MANIFEST_FLUSH_SECONDS = 30.0


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
    degenerate: int = 0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def load_mask_model(spec: ModelSpec) -> nn.Module:
    """The ViT whose keys TokenCut cuts, in eval mode (``spec.pretrained=False`` without a
    weights file: random weights, for tests only). Checks early that a backbone family
    explains the model (``TypeError`` naming the model class)."""
    model = spec.build()
    backbone_of(model).check_explainable()
    return model.eval()


def _write_mask(path: Path, mask: np.ndarray) -> None:
    """Atomic PNG write, so an interrupted run never leaves a truncated mask that a
    resumed run would take as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(temporary, format="PNG")
    os.replace(temporary, path)


_DEGENERATE = "degenerate graph"


def _keep_decision(fraction: float, minimum: float, degenerate: str = "") -> tuple[bool, str]:
    if degenerate:
        return False, degenerate
    if fraction < minimum:
        return False, f"foreground fraction {fraction:.6f} < min_foreground_fraction {minimum:.6f}"
    return True, ""


def generate_masks(
    model: nn.Module,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    settings: TokenCutSettings = DEFAULT_SETTINGS,
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
    the file); a model no backbone family explains raises ``TypeError`` before any work.
    ``model_description`` (e.g. name and weights file) is recorded in the settings file;
    by default the model's name as its family describes it, which does not say whether its
    weights were loaded.
    """
    backbone = backbone_of(model)
    backbone.check_explainable()  # a TypeError naming the model class, before any I/O
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= settings.min_foreground_fraction < 1.0:
        raise ValueError(
            f"min_foreground_fraction must be in [0, 1), got {settings.min_foreground_fraction}"
        )
    layout, entries = find_images(input_dir, layout)
    output_root = Path(output_dir)
    output_root.mkdir(parents=True, exist_ok=True)
    manifest_path = output_root / TOKENCUT_MANIFEST_NAME

    preprocessing = preprocessing_config(model)
    input_size = tuple(int(s) for s in preprocessing["input_size"][1:])
    grid_size = backbone.token_layout(input_size).grid_size
    patch_size = backbone.patch_size
    write_settings(
        output_root / SETTINGS_NAME,
        model_description or model_identity(model),
        model,
        layout,
        input_dir,
        preprocessing,
        grid_size,
        settings,
    )

    previous: dict[str, TokenCutRow] = {}
    if manifest_path.is_file() and not overwrite:
        previous = {row.image: row for row in read_tokencut_manifest(manifest_path)}

    rows: dict[str, TokenCutRow] = {}
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

    dataset = ResizedImageDataset(
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
        collate_fn=collate_as_list,
        shuffle=False,
    )
    torch_device = resolve_device(device)
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
                    rows[entry.relative] = TokenCutRow(
                        image=entry.relative,
                        class_name=entry.class_name,
                        width=height_width[1],
                        height=height_width[0],
                        status="skipped",
                        reason=item["error"],
                    )
            if good:
                pixels = torch.stack([item["pixels"] for item in good]).to(torch_device)
                batch_features = extract_patch_features(
                    model, pixels, settings.token_feature, settings.block).float().cpu().numpy()
                for item, features in zip(good, batch_features):
                    entry = todo[item["index"]]
                    rows[entry.relative] = _mask_for_image(
                        entry, features, grid_size, item, settings, output_root
                    )
                    written += 1
            bar.update(len(items))
            if time.perf_counter() - last_flush > _MANIFEST_FLUSH_SECONDS:
                write_tokencut_manifest(manifest_path, _all_rows(rows, previous, entries))
                last_flush = time.perf_counter()
    finally:
        bar.close()
        write_tokencut_manifest(manifest_path, _all_rows(rows, previous, entries))
    seconds = time.perf_counter() - start

    kept = sum(1 for row in rows.values() if row.kept)
    degenerate = [row for row in rows.values() if row.reason.startswith(_DEGENERATE)]
    if degenerate:
        log.warning("%d of %d graphs were degenerate (a complete or nearly complete graph: its "
                    "cut is arbitrary), e.g. %s: their masks are not kept; features=auto cuts the "
                    "centred keys instead, or set tau=auto", len(degenerate), len(rows),
                    degenerate[0].image)
    summary = GenerationSummary(
        total=len(entries),
        written=written,
        resumed=resumed,
        kept=kept,
        skipped=skipped,
        manifest_path=manifest_path,
        seconds=seconds,
        degenerate=len(degenerate),
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
    rows: dict[str, TokenCutRow], previous: dict[str, TokenCutRow], entries: Sequence[ImageEntry]
) -> list[TokenCutRow]:
    """This run's rows, plus earlier rows of images not reached yet (interrupted run)."""
    out = dict(rows)
    for entry in entries:
        if entry.relative not in out and entry.relative in previous:
            out[entry.relative] = previous[entry.relative]
    return list(out.values())


def _manifest_row(entry: ImageEntry, settings: TokenCutSettings, *, width: int, height: int,
                  fraction: float, refined: bool | None, status: str,
                  graph: TokenCutRow | None = None) -> TokenCutRow:
    """The manifest row of a mask with the given foreground fraction; ``kept`` and its
    reason come from the graph (a degenerate one is not kept) and the minimum-foreground
    filter of ``settings``. ``graph`` carries the graph's columns (features, tau,
    eigenvalue, share below tau, and its degenerate reason)."""
    graph = graph or TokenCutRow(image=entry.relative)
    degenerate = graph.reason if graph.reason.startswith(_DEGENERATE) else ""
    kept, reason = _keep_decision(fraction, settings.min_foreground_fraction, degenerate)
    return TokenCutRow(image=entry.relative, mask=entry.mask_relative,
                       class_name=entry.class_name, width=width, height=height,
                       foreground_fraction=fraction, kept=kept, refined=refined,
                       features=graph.features, tau=graph.tau, eigenvalue=graph.eigenvalue,
                       share_below_tau=graph.share_below_tau, status=status, reason=reason)


def _resumed_row(
    entry: ImageEntry, mask_path: Path, old: TokenCutRow | None, settings: TokenCutSettings
) -> TokenCutRow | None:
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
                         refined=refined, status="resumed", graph=old)


def _mask_for_image(
    entry: ImageEntry,
    features: np.ndarray,
    grid_size: tuple[int, int],
    item: dict[str, Any],
    settings: TokenCutSettings,
    output_root: Path,
) -> TokenCutRow:
    """Graph cut, upsampling, optional refinement, PNG write and the manifest row."""
    cut, used = cut_image(features, grid_size, settings.features, settings.tau, settings.eps)
    block = "" if settings.block == -1 else f"@block{settings.block}"
    graph = TokenCutRow(image=entry.relative, features=used + block, tau=cut.tau,
                        eigenvalue=cut.eigenvalue, share_below_tau=cut.share_below_tau,
                        reason=degenerate_reason(cut))
    height, width = item["size"]
    mask = upsample_nearest(cut.mask, (height, width))
    if settings.refine:
        mask = refine_mask(
            item["rgb"], mask, settings.bilateral, low_iou_action=settings.refine_low_iou
        )
    _write_mask(output_root / entry.mask_relative, mask)
    return _manifest_row(entry, settings, width=width, height=height,
                         fraction=float(mask.mean()), refined=settings.refine, status="written",
                         graph=graph)
