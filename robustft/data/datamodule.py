"""The LightningDataModule for relevance fine-tuning on image/mask pairs.

It reads a record source (the generic layout by default), selects files with a seed,
decodes every selected pair (a corrupt or truncated file is an error before any model
step, not mid-epoch; masks without foreground are counted and excluded or kept per
``empty_masks``), writes the selection manifest to the run directory, and builds the joint
transforms from the model's preprocessing (mean/std/input size from the model's
family unless overridden).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader

from robustft.data.captions import selection_captions
from robustft.data.datasets import ImageMaskDataset, MaskDecoder
from robustft.data.generic import (
    Selection,
    decode_binary_mask,
    read_class_index,
    read_selection,
    scan_generic_layout,
    select_records,
    short_classes_warning,
    write_selection,
)
from robustft.data.mask_manifest import kept_mask_pairs
from robustft.data.pair_checks import (
    EmptyMaskPolicy,
    check_empty_mask_policy,
    check_selection,
    empty_mask_warning,
    write_empty_mask_list,
)
from robustft.data.samplers import EpochSeededSampler, derived_seed
from robustft.data.transforms import crop_height_width, joint_eval_transform, joint_train_transform
from robustft.data.unmasked import (
    UnmaskedImageDataset,
    UnmaskedRecord,
    batch_size_for_steps,
    select_unmasked_images,
)

__all__ = ["ImageMaskDataModule", "ImageNetSDataModule", "pairs_and_unmasked",
           "training_preprocessing"]
log = logging.getLogger(__name__)


def pairs_and_unmasked(batch: Any) -> tuple[dict, dict | None]:
    """A training batch as (pair batch, unmasked image batch or None): what the training
    loader yields, with images without masks a ``{"pairs", "unmasked"}`` dict (iterating
    the ``CombinedLoader`` itself gives it as ``(batch, batch_idx, dataloader_idx)``),
    without them the pair batch alone."""
    if isinstance(batch, tuple):
        batch = batch[0]
    if "pairs" in batch:
        return batch["pairs"], batch["unmasked"]
    return batch, None


def training_preprocessing(datamodule: Any) -> dict[str, Any] | None:
    """The data module's validation transform in the terms of a timm data config
    (``input_size``, ``crop_pct``, ``crop_mode``, ``interpolation``, ``mean``, ``std``):
    ``Resize(crop * resize_ratio)`` then ``CenterCrop(crop)`` is timm's centre crop at
    ``crop_pct = 1 / resize_ratio``; None for a data module without these settings."""
    if not all(hasattr(datamodule, key) for key in ("crop_size", "resize_ratio", "mean", "std")):
        return None
    height, width = crop_height_width(datamodule.crop_size)
    return {"input_size": [3, height, width], "crop_pct": 1.0 / float(datamodule.resize_ratio),
            "crop_mode": "center", "interpolation": "bilinear",
            "mean": [float(v) for v in datamodule.mean], "std": [float(v) for v in datamodule.std]}


def kept_mask_pairs_under(mask_manifest: str) -> list[tuple[str, str]]:
    """(image, mask) relative paths a TokenCut manifest kept; the manifest's folder is the
    masks' output_dir."""
    path = Path(mask_manifest)
    if not path.is_file():
        raise FileNotFoundError(f"TokenCut manifest not found: {path} (data.mask_manifest)")
    return kept_mask_pairs(path.parent)


class ImageMaskDataModule(pl.LightningDataModule):
    """Fine-tuning pairs from ``root`` in the generic layout.

    Args:
        root: dataset root (``<root>/images``, ``<root>/masks``).
        crop_size, mean, std: the model's input size and normalisation (see
            ``robustft.backbones.preprocessing_config``).
        train_per_class / val_per_class / class_fraction / seed: the selection (None per
            class = all images).
        manifest: a selection file to reuse instead of selecting (``data.manifest``: the
            ``selection_manifest.csv`` a run wrote, see ``generic.write_selection``).
        manifest_out: where to write the selection file (the run directory).
        hflip: horizontal-flip probability of the train transform (0 disables it).
        mask_decoder: reads one mask file (default: generic binary masks).
        mask_manifest: a TokenCut manifest ``tokencut_manifest.csv`` (robustft-masks,
            ``data.mask_manifest``; not a selection file): only the pairs whose mask it kept.
        class_index: how folders map to the model's outputs: ``None`` = sorted folder
            positions (a head trained on these folders), ``"imagenet"`` = folders named by
            ImageNet wnid for a 1000-class head, or a file of class names in head order.
        cache_decoded: keep decoded images and masks in memory across epochs (small
            datasets read many times; with workers, each worker keeps its own copy).
        empty_masks: selected pairs whose mask has no foreground pixel are counted in one
            warning and listed next to the manifest (``<manifest>_empty_masks.csv``), then
            ``"exclude"``-d from fine-tuning and validation or kept as background-only
            examples (``"background"``). The manifest keeps the drawn selection, so reusing
            it redraws nothing and re-applies this rule.
        unmasked_root: an ImageFolder (``<root>/<class>/<image>``, the class folders of the
            masked images) of images without masks, seen by the classification term only
            (``loss.lambda_unmasked``): with it, each training batch is
            ``{"pairs": <pair batch>, "unmasked": <image batch> | None}``, every drawn
            unmasked image once per epoch, spread over the pairs' steps. None = off.
        unmasked_per_class: images drawn from each class folder of ``unmasked_root`` with
            ``seed`` (None = all); images of the masked selection are never drawn.
        holdout_per_class: pairs of every training class held out for validation, never
            trained on (``generic.select_records``): the held-out measures of
            ``robustft.training.heldout`` and the checkpoint selection read them. None / 0 =
            none (validation is then the held-out classes' pairs alone).
        unmasked_holdout_per_class: images of each class of ``unmasked_root`` held out
            (never trained on, drawn after the training draw) for the held-out agreement
            with the original model; they are a second validation loader of image batches
            without masks. None / 0 = none.
        captions: a captions file (``image,caption``; ``robustft.data.captions``) giving each
            selected image its prompt (batches then carry ``"caption"``, a list of strings;
            a manifest's ``caption`` column carries them itself). None = none.
    """

    def __init__(
        self,
        root: str,
        *,
        crop_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        train_per_class: int | None = 3,
        val_per_class: int | None = 1,
        class_fraction: float = 0.5,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        manifest: str | None = None,
        manifest_out: str | None = None,
        hflip: float = 0.5,
        resize_ratio: float = 256 / 224,
        mask_decoder: MaskDecoder = decode_binary_mask,
        mask_manifest: str | None = None,
        class_index: str | None = None,
        cache_decoded: bool = False,
        empty_masks: EmptyMaskPolicy = "exclude",
        unmasked_root: str | None = None,
        unmasked_per_class: int | None = None,
        holdout_per_class: int | None = None,
        unmasked_holdout_per_class: int | None = None,
        captions: str | None = None,
    ) -> None:
        super().__init__()
        self.captions = captions
        if unmasked_per_class is not None and unmasked_per_class < 1:
            raise ValueError(f"data.unmasked_per_class must be >= 1 or null (all), got "
                             f"{unmasked_per_class}; set data.unmasked_root=null to use no "
                             "images without masks")
        if unmasked_holdout_per_class and not unmasked_root:
            log.warning("data.unmasked_holdout_per_class=%s draws from data.unmasked_root, which "
                        "is null: no held-out images without masks (the decisions' agreement is "
                        "measured on the held-out pairs' images alone)", unmasked_holdout_per_class)
            unmasked_holdout_per_class = None
        self.unmasked_root, self.unmasked_per_class = unmasked_root, unmasked_per_class
        self.holdout_per_class = holdout_per_class
        self.unmasked_holdout_per_class = unmasked_holdout_per_class
        self.unmasked: list[UnmaskedRecord] = []
        self.unmasked_heldout: list[UnmaskedRecord] = []
        self.empty_masks = check_empty_mask_policy(empty_masks)
        self.cache_decoded = cache_decoded
        self.class_index = read_class_index(class_index) if class_index else None
        self.mask_manifest = mask_manifest
        self.root = Path(root)
        self.crop_size = crop_size if isinstance(crop_size, int) else crop_height_width(crop_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_per_class, self.val_per_class = train_per_class, val_per_class
        self.class_fraction, self.seed = class_fraction, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.manifest = manifest
        self.manifest_out = manifest_out
        self.hflip, self.resize_ratio = hflip, resize_ratio
        self.mask_decoder = mask_decoder
        self.drawn_selection: Selection | None = None  # what select() drew (the manifest)
        self.selection: Selection | None = None  # what is trained and validated on
        # (epoch, training batches done) where this run stops within an epoch, saved in the
        # checkpoint written next; and where the run it resumes stopped (state_dict)
        self._stops_at: tuple[int, int] | None = None
        self._resumes_at: tuple[int, int] | None = None

    def stop_within_epoch(self, epoch: int, batches_done: int) -> None:
        """The run stops after ``batches_done`` training batches of ``epoch`` (on a
        scheduler's signal, ``robustft.training.preemption``): the checkpoint written next
        records it, and a run resumed from that checkpoint skips those batches of the
        epoch, in the same order, so it continues exactly where this one stopped."""
        self._stops_at = (int(epoch), int(batches_done))

    def state_dict(self) -> dict[str, Any]:
        return {} if self._stops_at is None else {"stopped_within_epoch": list(self._stops_at)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stopped = state_dict.get("stopped_within_epoch")
        self._resumes_at = None if stopped is None else (int(stopped[0]), int(stopped[1]))

    def select(self) -> Selection:
        """Scan the layout and select (or read the given manifest); deterministic, so every
        DDP rank computes the same selection. ``setup`` decodes and checks it."""
        only_images = None
        if self.mask_manifest:
            only_images = {image for image, _mask in kept_mask_pairs_under(self.mask_manifest)}
        records = scan_generic_layout(self.root, only_images, self.class_index)
        if self.manifest:
            selection = read_selection(self.manifest, self.root, sorted(records))
        else:
            selection = select_records(records, train_per_class=self.train_per_class,
                                       val_per_class=self.val_per_class,
                                       class_fraction=self.class_fraction, seed=self.seed,
                                       holdout_per_class=self.holdout_per_class)
        return selection_captions(selection, self.captions, self.root, self.manifest)

    def write_selection(self, path: str) -> Path:
        """Write the drawn selection as a manifest that ``manifest=`` reads back."""
        assert self.drawn_selection is not None
        return write_selection(self.drawn_selection, self.root, path)

    def setup(self, stage: str | None = None) -> None:
        if self.selection is not None:
            return
        drawn = self.select()
        checked = check_selection(drawn, self.mask_decoder, empty_masks=self.empty_masks)
        self.drawn_selection, self.selection = drawn, checked.selection
        if self.unmasked_root:
            self.unmasked = self._select_unmasked(drawn)
        if self.unmasked_holdout_per_class:
            if not self.selection.val:
                raise ValueError("data.unmasked_holdout_per_class needs validation pairs too "
                                 "(data.holdout_per_class, or data.class_fraction < 1)")
            self.unmasked_heldout = self._select_unmasked(
                drawn, per_class=self.unmasked_holdout_per_class, stream="unmasked_holdout",
                also_exclude=[record.image_path for record in self.unmasked],
                key="data.unmasked_holdout_per_class")
        is_rank_zero = self.trainer is None or self.trainer.is_global_zero
        if not is_rank_zero:
            return
        empty_list = None
        if self.manifest_out:
            path = self.write_selection(self.manifest_out)
            log.info("selection manifest: %s (%d train, %d val)", path,
                     len(drawn.train), len(drawn.val))
            if any(checked.empty.values()):
                empty_list = write_empty_mask_list(
                    checked, self.empty_masks, path.with_name(f"{path.stem}_empty_masks.csv"))
        warning = empty_mask_warning(checked, self.empty_masks, empty_list)
        if warning:
            log.warning(warning)
        if not self.manifest:  # a reused manifest is taken as it is
            warning = short_classes_warning(drawn, train_per_class=self.train_per_class,
                                            val_per_class=self.val_per_class)
            if warning:
                log.warning(warning)
        if self.unmasked:
            log.info("images without masks: %d from %s (classification term only)",
                     len(self.unmasked), self.unmasked_root)
        if self.unmasked_heldout:
            log.info("held-out images without masks: %d from %s (validation only)",
                     len(self.unmasked_heldout), self.unmasked_root)

    def _select_unmasked(self, drawn: Selection, *, per_class: int | None | str = "training",
                         stream: str = "unmasked", also_exclude: Sequence[Path] = (),
                         key: str = "data.unmasked_root") -> list[UnmaskedRecord]:
        """Images without masks (the training draw by default), labelled as the masked layout
        labels its class folders; never one of the selected pairs' images."""
        names = self.class_index if self.class_index is not None else drawn.class_names
        labels = {name: position for position, name in enumerate(names)}
        return select_unmasked_images(
            self.unmasked_root, labels, seed=self.seed, stream=stream, key=key,
            per_class=self.unmasked_per_class if per_class == "training" else per_class,
            exclude=[record.image_path for record in (*drawn.train, *drawn.val)]
            + list(also_exclude))

    @property
    def num_classes(self) -> int:
        """Width of the head the labels index into."""
        if self.class_index is not None:
            return len(self.class_index)
        assert self.selection is not None, "call setup() first"
        return len(self.selection.class_names)

    def _loader(self, records, transform, shuffle: bool) -> DataLoader:
        """Pairs in batches of ``batch_size``; see ``_loader_of``."""
        dataset = ImageMaskDataset(records, transform, self.mask_decoder,
                                   cache_decoded=self.cache_decoded)
        return self._loader_of(dataset, shuffle, self.batch_size)

    def _loader_of(self, dataset, shuffle: bool, batch_size: int,
                   seed: int | None = None) -> DataLoader:
        """``shuffle``: in an order and with augmentation draws that are functions of
        (seed, epoch, sample) only (``EpochSeededSampler``), so a resumed run sees the same
        batches as an uninterrupted one; otherwise in file order."""
        sampler = None
        seed = self.seed if seed is None else seed
        if shuffle and self.trainer is None:
            sampler = EpochSeededSampler(dataset, seed=seed)
        elif shuffle:
            # the samples of this rank the run that stopped within an epoch trained on
            resume_at = (None if self._resumes_at is None
                         else (self._resumes_at[0], self._resumes_at[1] * batch_size))
            # the epoch Lightning's fit loop will pass to set_epoch (restored on resume)
            sampler = EpochSeededSampler(
                dataset, seed=seed, epoch=self.trainer.fit_loop.epoch_progress.current.processed,
                num_replicas=self.trainer.world_size, rank=self.trainer.global_rank,
                resume_at=resume_at)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, drop_last=False,
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        assert self.selection is not None
        transform = joint_train_transform(self.crop_size, self.mean, self.std,
                                          resize_ratio=self.resize_ratio, hflip=self.hflip)
        pairs = self._loader(self.selection.train, transform, shuffle=True)
        if not self.unmasked:
            return pairs
        # every unmasked image once per epoch, over the pairs' steps: "max_size" stops with
        # the longer loader and hands None for the shorter one's missing batches
        dataset = UnmaskedImageDataset(self.unmasked, transform, cache_decoded=self.cache_decoded)
        ranks = self.trainer.world_size if self.trainer is not None else 1
        batch_size = batch_size_for_steps(-(-len(self.unmasked) // ranks), len(pairs))
        # its own order and augmentation stream: the same (seed, epoch, index) as a pair's
        # would give unmasked image i the crop and flip of pair i
        unmasked = self._loader_of(dataset, shuffle=True, batch_size=batch_size,
                                   seed=derived_seed("unmasked", self.seed))
        return CombinedLoader({"pairs": pairs, "unmasked": unmasked}, mode="max_size")

    def val_dataloader(self) -> DataLoader | list:
        """The validation pairs; with held-out images without masks, ``[pairs, images]``
        (a batch of the second has no ``mask``)."""
        assert self.selection is not None
        if not self.selection.val:
            return []
        transform = joint_eval_transform(self.crop_size, self.mean, self.std,
                                         resize_ratio=self.resize_ratio)
        pairs = self._loader(self.selection.val, transform, shuffle=False)
        if not self.unmasked_heldout:
            return pairs
        images = UnmaskedImageDataset(self.unmasked_heldout, transform,
                                      cache_decoded=self.cache_decoded)
        return [pairs, self._loader_of(images, shuffle=False, batch_size=self.batch_size)]


class ImageNetSDataModule(ImageMaskDataModule):
    """ImageNet train images with ImageNet-S919 masks and the paper's split (3 images per
    class from ``num_train_classes`` classes, ``val_per_class`` from each other class),
    labels in ImageNet-1k order, ignore pixels (id 1000) kept out of the losses.

    The split is written as a JSON split file to ``manifest_out`` (the run directory);
    ``manifest`` (``data.manifest``) reuses an existing one exactly.
    """

    def __init__(self, imagenet_root: str, imagenet_s_root: str, *, crop_size: int | Sequence[int],
                 mean: Sequence[float], std: Sequence[float], num_train_classes: int = 500,
                 train_per_class: int = 3, val_per_class: int = 1, **kwargs) -> None:
        from robustft.data.imagenet import imagenet_s_mask_decoder

        super().__init__(imagenet_s_root, crop_size=crop_size, mean=mean, std=std,
                         train_per_class=train_per_class, val_per_class=val_per_class,
                         mask_decoder=imagenet_s_mask_decoder, **kwargs)
        self.imagenet_root = Path(imagenet_root)
        self.imagenet_s_root = Path(imagenet_s_root)
        self.num_train_classes = num_train_classes

    def select(self) -> Selection:
        from robustft.data.imagenet import make_paper_split, read_imagenet_s_split
        from robustft.labels import imagenet_synsets

        if self.manifest:
            split = read_imagenet_s_split(self.manifest, self.imagenet_root, self.imagenet_s_root)
        else:
            split = make_paper_split(self.imagenet_root, self.imagenet_s_root, seed=self.seed,
                                     num_train_classes=self.num_train_classes,
                                     train_per_class=self.train_per_class,
                                     val_per_class=self.val_per_class)
        self._split = split
        return Selection(train=split.train, val=split.val, class_names=imagenet_synsets())

    def write_selection(self, path: str) -> Path:
        from robustft.data.imagenet import write_imagenet_s_split

        return write_imagenet_s_split(self._split, path, self.imagenet_root, self.imagenet_s_root)
