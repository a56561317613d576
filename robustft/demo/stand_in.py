"""The demo's stand-in model: pre-trained from scratch on the generated benchmark's
``pretrain`` split (cached), or a pretrained backbone with a linear probe head fitted on it
(``experiment=demo_real``); and which checkpoint of the fine-tuning run the demo evaluates."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from robustft.synth.write import read_benchmark
from robustft.training.pretrain import pretrain_cached
from robustft.training.run import build_datamodule, build_model

log = logging.getLogger(__name__)
HEAD_DATA = ("scenes", "backgrounds", "backgrounds_only")


def pretrain_stand_in(cfg: DictConfig) -> None:
    """Step 2: the weights file named by ``cfg.model.weights_file``, trained if missing;
    for a pretrained backbone with a probe head (``experiment=demo_real``), the head file
    ``cfg.model.probe_head``, fitted if missing (:func:`fit_stand_in_head`)."""
    if cfg.model.get("probe_head"):
        fit_stand_in_head(cfg)
        return
    scratch_cfg = OmegaConf.merge(cfg.model, {"weights_file": None, "pretrained": False})
    pl.seed_everything(cfg.seed, workers=True)  # before the model's random initialisation
    model = build_model(scratch_cfg)
    data_cfg = OmegaConf.merge(cfg.data, {
        "root": cfg.pretrain.data_root, "train_per_class": None, "class_fraction": 1.0,
        "manifest": None, "manifest_out": None, "batch_size": cfg.pretrain.batch_size,
        "num_workers": cfg.pretrain.num_workers, "resize_ratio": cfg.pretrain.resize_ratio,
        # 16 epochs over the same 4,000 small PNGs: decode each once
        "cache_decoded": True,
        # plain cross-entropy on every pre-training image: no separate unmasked images
        "unmasked_root": None})
    datamodule = build_datamodule(data_cfg, model)
    # what the from-scratch pre-training depends on: demo_real's probe-head keys play no part
    # (and leaving them out keeps the stand-ins cached before they existed valid)
    model_settings = {key: value for key, value in
                      OmegaConf.to_container(scratch_cfg, resolve=True).items()
                      if not (key == "probe_head" and value is None)}
    pretrain_settings = {key: value for key, value in
                         OmegaConf.to_container(cfg.pretrain, resolve=True).items()
                         if not key.startswith("head_")}
    settings = {"model": model_settings, "pretrain": pretrain_settings,
                "benchmark": read_benchmark(Path(cfg.data.root).parent), "seed": cfg.seed,
                # the batch order is part of what the weights are: a cache written with
                # another order (before EpochSeededSampler) must not be reused
                "batch_order": "epoch_seeded"}
    pretrain_cached(model, datamodule, cfg.model.weights_file, settings=settings,
                    max_epochs=cfg.pretrain.max_epochs, lr=cfg.pretrain.lr,
                    weight_decay=cfg.pretrain.weight_decay,
                    warmup_epochs=cfg.pretrain.warmup_epochs,
                    trainer_kwargs={"accelerator": cfg.trainer.accelerator, "devices": 1})


def fit_stand_in_head(cfg: DictConfig) -> None:
    """The real-backbone stand-in: a linear probe on the frozen pretrained backbone's
    features, cached at ``model.probe_head`` with its settings beside it (refitted when they
    change). Its images (:func:`head_images`): ``pretrain.head_per_class`` of each class of
    the ``pretrain`` split, with ``pretrain.head_data=backgrounds`` the tied scenes' objects
    greyed out, so that the head learns each class's background from the scenes and its
    object only from the plain backdrops."""
    import json

    from robustft.training.probe_fit import fit_head_on_folder

    path = Path(cfg.model.probe_head)
    settings = {"model": OmegaConf.to_container(cfg.model, resolve=True),
                "data_root": str(cfg.pretrain.data_root), "head_data": str(cfg.pretrain.head_data),
                "per_class": cfg.pretrain.head_per_class, "fill": cfg.evaluation.background_fill,
                "weight_decay": cfg.pretrain.head_weight_decay,
                "benchmark": read_benchmark(Path(cfg.data.root).parent)}
    record = path.with_name(path.name + ".json")
    if path.is_file() and record.is_file() and json.loads(record.read_text()) == settings:
        log.info("stand-in head cached: %s", path)
        return
    folder = head_images(Path(cfg.pretrain.data_root), path.with_suffix(".images"),
                         str(cfg.pretrain.head_data), cfg.pretrain.head_per_class,
                         float(cfg.evaluation.background_fill))
    tower_cfg = OmegaConf.merge(cfg.model, {"probe_head": None, "num_classes": 0})
    fitted = fit_head_on_folder(build_model(tower_cfg), folder, path,
                                weight_decay=float(settings["weight_decay"]),
                                device="cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    record.write_text(json.dumps(settings, indent=2))
    log.info("stand-in head: a linear probe on %d pretrain images (%d features), training "
             "top-1 %.1f %%: %s", fitted.images, fitted.feature_dim, 100 * fitted.training_top1,
             path)


def head_images(pretrain_root: Path, folder: Path, head_data: str, per_class: int | None,
                fill: float) -> Path:
    """``folder/<class>/<name>.png``: the first ``per_class`` images of each class of the
    pretrain split (its metadata order); ``head_data=backgrounds`` replaces the object of
    every textured scene with the grey ``fill`` (the object-only evaluation's, inverted),
    plain-backdrop images (``background == -1``) are kept whole; ``backgrounds_only`` leaves
    the plain backdrops out (the head sees no object); ``scenes`` keeps all as they are."""
    import csv
    import shutil

    import numpy as np
    from PIL import Image

    from robustft.data.image_files import decode_binary_mask, load_rgb

    if head_data not in HEAD_DATA:
        raise ValueError(f"pretrain.head_data: expected one of {list(HEAD_DATA)}, got {head_data!r}")
    shutil.rmtree(folder, ignore_errors=True)
    taken: dict[str, int] = {}
    with open(pretrain_root / "metadata.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            plain = int(row["background"]) < 0
            if (per_class is not None and taken.get(row["class"], 0) >= per_class) or (
                    plain and head_data == "backgrounds_only"):
                continue
            taken[row["class"]] = taken.get(row["class"], 0) + 1
            pixels = np.asarray(load_rgb(pretrain_root / row["path"])).copy()
            if head_data != "scenes" and not plain:
                mask = decode_binary_mask(pretrain_root.parent / row["mask_path"])
                pixels[mask > 0] = round(255 * fill)
            target = folder / row["class"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target)
    return folder


def chosen_checkpoint(which: str, best: Path | None, last: Path | None,
                      selected: Path | None = None) -> Path:
    """``evaluation.checkpoint``: ``last`` (the end of the fixed-length recipe), ``best``
    (lowest validation loss) or ``selected`` (the held-out selection's weights,
    callbacks.heldout_selection)."""
    if which not in ("last", "best", "selected"):
        raise ValueError(f"evaluation.checkpoint must be 'last', 'best' or 'selected', got {which!r}")
    chosen = {"last": last, "best": best, "selected": selected}[which]
    if chosen is None:
        raise FileNotFoundError(f"the fine-tuning run wrote no {which!r} checkpoint "
                                "(callbacks.model_checkpoint disabled, or for 'selected': no "
                                "held-out pairs, data.holdout_per_class, or the selection kept "
                                "the original model)")
    return chosen
