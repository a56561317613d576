"""The run of ``robustft-masks`` (:func:`run_masks`): TokenCut masks for a dataset folder
from its config (``configs/masks.yaml``), and the IoU against true masks (``compare_to``).
The work is done by :func:`robustft.masks.generate.generate_masks`."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robustft.backbones import ModelSpec
from robustft.masks.bilateral import BilateralSolverParams
from robustft.masks.compare import IOU_TABLE_NAME, compare_with_true_masks, write_iou_table
from robustft.masks.generate import generate_masks, load_mask_model
from robustft.masks.settings import TokenCutSettings
from robustft.resources import resolve_num_workers

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("input_dir", "output_dir", "model.name")


def check_required(cfg: DictConfig) -> None:
    """A clear error for required keys that are missing or unset (``???``/null)."""
    missing = [
        key
        for key in REQUIRED_KEYS
        if OmegaConf.select(cfg, key, default=None, throw_on_missing=False) is None
    ]
    if missing:
        raise ValueError(
            "robustft-masks: missing required config value(s): "
            + ", ".join(missing)
            + ". Example: robustft-masks input_dir=/data/mydataset output_dir=/data/mydataset"
        )


def _describe(spec: ModelSpec) -> str:
    weights = spec.checkpoint or spec.weights_file or ("hub" if spec.pretrained else "random init")
    return f"{spec.name} (weights: {weights})"


def run_masks(cfg: DictConfig) -> None:
    """Build the model and settings from ``cfg`` (checked: :func:`check_required` and the
    schema's ``check_config``) and generate the masks."""
    spec = ModelSpec.from_mapping(OmegaConf.to_container(cfg.model, resolve=True))
    tau = cfg.tau if cfg.tau == "auto" else _number(cfg.tau, "tau")
    # every default is TokenCutSettings' (the schema reads them from there)
    settings = TokenCutSettings(
        tau=tau,
        features=str(cfg.features),
        block=int(cfg.block),
        eps=float(cfg.eps),
        refine=bool(cfg.refine),
        min_foreground_fraction=float(cfg.min_foreground_fraction),
        bilateral=BilateralSolverParams(),
        refine_low_iou=str(cfg.refine_low_iou),
    )
    model = load_mask_model(spec)  # after the settings: a wrong value stops before the build
    summary = generate_masks(
        model,
        cfg.input_dir,
        cfg.output_dir,
        settings,
        batch_size=int(cfg.batch_size),
        num_workers=resolve_num_workers(cfg.num_workers),
        device=str(cfg.device),
        layout=str(cfg.layout),
        overwrite=bool(cfg.overwrite),
        progress=bool(cfg.progress),
        model_description=_describe(spec),
    )
    print(
        f"robustft-masks: {summary.total} images, {summary.written} masks written, "
        f"{summary.resumed} resumed, {len(summary.skipped)} skipped, {summary.kept} kept "
        f"({summary.images_per_second:.1f} images/s); manifest: {summary.manifest_path}"
    )
    for image, reason in summary.skipped:
        print(f"  skipped {image}: {reason}")
    if summary.degenerate:
        print(f"  {summary.degenerate} degenerate graphs (masks not kept; reasons in the manifest)")
    if cfg.get("compare_to"):
        report_iou(cfg.output_dir, cfg.compare_to)


def _number(value, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number or 'auto', got {value!r}") from None


def report_iou(output_dir: str, true_root: str) -> None:
    """Print the IoU of every written mask with its true mask and the mean, and write them
    to ``<output_dir>/tokencut_iou.csv``."""
    scores = compare_with_true_masks(output_dir, true_root)
    if not scores:
        raise ValueError(f"compare_to: no true mask under {true_root}/masks/<class>/<stem>.png "
                         "matches a written mask")
    path = write_iou_table(scores, Path(output_dir) / IOU_TABLE_NAME)
    for image, iou in sorted(scores.items()):
        print(f"  IoU {iou:.3f}  {image}")
    print(f"robustft-masks: mean IoU {sum(scores.values()) / len(scores):.3f} over {len(scores)} "
          f"images with a true mask in {true_root}; table: {path}")
