"""EpochSeededSampler: the order and the augmentation seeds are functions of (seed, epoch)
only, not of torch's global RNG, and DataLoader workers do not change the batches."""

from __future__ import annotations

import pytest
import torch
from fixtures.generic_layout import make_generic_layout
from torch.utils.data import DataLoader

from robustft.data.datamodule import ImageMaskDataModule
from robustft.data.datasets import ImageMaskDataset
from robustft.data.generic import scan_generic_layout
from robustft.data.samplers import EpochSeededSampler, SampleKey, derived_seed
from robustft.data.transforms import joint_train_transform


def keys(sampler: EpochSeededSampler, epoch: int) -> list[SampleKey]:
    sampler.set_epoch(epoch)
    torch.manual_seed(epoch + 100)  # the global RNG must not matter
    return list(sampler)


def test_order_is_a_permutation_fixed_by_seed_and_epoch():
    sampler = EpochSeededSampler(range(20), seed=3)
    epoch_2 = keys(sampler, 2)
    assert sorted(key.index for key in epoch_2) == list(range(20))
    assert keys(EpochSeededSampler(range(20), seed=3), 2) == epoch_2
    assert list(EpochSeededSampler(range(20), seed=3, epoch=2)) == epoch_2  # epoch given up front
    assert [k.index for k in keys(sampler, 3)] != [k.index for k in epoch_2]
    assert [k.index for k in keys(EpochSeededSampler(range(20), seed=4), 2)] != [k.index for k in epoch_2]


def test_every_sample_and_epoch_gets_its_own_augmentation_seed():
    sampler = EpochSeededSampler(range(50), seed=0)
    seeds = [key.seed for epoch in range(4) for key in keys(sampler, epoch)]
    assert len(set(seeds)) == len(seeds) == 200


def test_derived_seed_keeps_streams_and_lengths_apart():
    # numpy's SeedSequence alone maps (0, 1) and (0, 1, 0) to the same state
    assert derived_seed("order", 0, 1) != derived_seed("order", 0, 1, 0)
    assert derived_seed("order", 0, 1) != derived_seed("augmentation", 0, 1)
    assert derived_seed("order", 0, 1) == derived_seed("order", 0, 1) < 2**63
    with pytest.raises(ValueError, match="non-negative"):
        derived_seed("order", -1)
    with pytest.raises(ValueError, match="data.seed"):
        EpochSeededSampler(range(4), seed=-1)


def test_ranks_share_out_the_epoch_order():
    alone = [key.index for key in keys(EpochSeededSampler(range(7), seed=1), 5)]
    ranks = [keys(EpochSeededSampler(range(7), seed=1, num_replicas=2, rank=rank), 5)
             for rank in (0, 1)]
    assert [len(keys_) for keys_ in ranks] == [4, 4]  # padded with the first index
    interleaved = [key.index for pair in zip(*ranks, strict=True) for key in pair]
    assert interleaved == alone + alone[:1]


def _dataset(tmp_path) -> ImageMaskDataset:
    root = make_generic_layout(tmp_path, num_classes=2, per_class=3, size=(36, 36))
    records = [r for recs in scan_generic_layout(root).values() for r in recs]
    return ImageMaskDataset(records, joint_train_transform(32, (0.0,) * 3, (1.0,) * 3,
                                                           resize_ratio=1.25, hflip=0.5))


def test_a_sample_key_fixes_the_crop_and_flip_and_leaves_the_global_rng_alone(tmp_path):
    dataset = _dataset(tmp_path)
    torch.manual_seed(0)
    first = dataset[SampleKey(1, 12345)]
    torch.manual_seed(1)
    state = torch.get_rng_state()
    again = dataset[SampleKey(1, 12345)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    # the draws still vary with the seed: 8 seeds give more than one crop/flip
    images = {dataset[SampleKey(1, seed)]["image"].numpy().tobytes() for seed in range(8)}
    assert len(images) > 1


def _batches(dataset, sampler, epochs, num_workers):
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=num_workers,
                        persistent_workers=num_workers > 0)
    batches = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        batches += [batch["image"] for batch in loader]
    return batches


def test_persistent_workers_give_the_batches_of_the_main_process(tmp_path):
    dataset = _dataset(tmp_path)
    in_main = _batches(dataset, EpochSeededSampler(dataset, seed=0), [0, 1, 2], 0)
    in_workers = _batches(dataset, EpochSeededSampler(dataset, seed=0), [0, 1, 2], 2)
    assert len(in_main) == len(in_workers) == 9
    assert all(torch.equal(a, b) for a, b in zip(in_main, in_workers, strict=True))
    assert not torch.equal(in_main[0], in_main[3])  # epochs differ


def test_train_loader_of_a_resumed_fit_starts_at_the_restored_epoch(tmp_path):
    # Lightning creates the first epoch's iterator before it calls set_epoch; with workers
    # that iterator draws at once. The loader must start at the restored epoch by itself.
    import pytorch_lightning as pl

    root = make_generic_layout(tmp_path, num_classes=2, per_class=3, size=(36, 36))

    def datamodule(processed_epochs: int) -> ImageMaskDataModule:
        module = ImageMaskDataModule(str(root), crop_size=32, mean=(0.0,) * 3, std=(1.0,) * 3,
                                     class_fraction=1.0, train_per_class=None, batch_size=2)
        module.trainer = pl.Trainer(logger=False, enable_progress_bar=False)
        module.trainer.fit_loop.epoch_progress.current.processed = processed_epochs
        module.setup("fit")
        return module

    resumed = [b["image"] for b in datamodule(3).train_dataloader()]
    loader = datamodule(0).train_dataloader()
    loader.sampler.set_epoch(3)
    assert all(torch.equal(a, b["image"]) for a, b in zip(resumed, loader, strict=True))
