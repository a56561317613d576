"""The training order and every augmentation draw as pure functions of (seed, epoch, sample),
so that a run resumed at an epoch boundary, or within an epoch (``resume_at``), sees exactly
the batches and crops/flips of the run it continues.

torch's global RNG, which a plain ``shuffle=True`` DataLoader and torchvision's random
transforms draw from, is neither saved in Lightning checkpoints nor shared with DataLoader
workers. Instead, ``EpochSeededSampler`` draws the epoch's permutation from a seed hashed
from (seed, epoch) and hands every index to the dataset with its own augmentation seed,
hashed from (seed, epoch, index). The keys travel with the indices to the workers, so this
holds with persistent workers too, where a dataset attribute set in the main process after
the workers started would never reach them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sized
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler

__all__ = ["EpochSeededSampler", "SampleKey", "derived_seed"]


class SampleKey(NamedTuple):
    """What the sampler yields: the dataset index and the seed of its augmentation draws."""

    index: int
    seed: int


def derived_seed(stream: str, *values: int) -> int:
    """A 63-bit seed hashed from a stream name and non-negative integers with numpy's
    ``SeedSequence``: neighbouring inputs ((0, 1) and (1, 0), epoch 3 and 4) give unrelated
    seeds. The name and the count keep streams apart: ``SeedSequence`` pads its input with
    zeros, so (seed, epoch) and (seed, epoch, 0) alone would give the same seed."""
    if any(value < 0 for value in values):
        raise ValueError(f"seeds must be non-negative integers, got {values}")
    entropy = [zlib.crc32(stream.encode()), len(values), *values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochSeededSampler(DistributedSampler):
    """Every index of ``data_source`` once per epoch (this rank's share of them under DDP), in
    a random order that is a function of (``seed``, epoch) only, each with its augmentation
    seed.

    Lightning calls ``set_epoch`` at the start of every training epoch. ``epoch`` is the
    epoch of the first iteration: Lightning creates the first epoch's DataLoader iterator
    before it calls ``set_epoch``, and with workers that iterator draws its first batches at
    once, so a run resumed at epoch 3 would otherwise start with epoch 0's order and
    augmentation. It shards across ``num_replicas`` ranks itself, as ``DistributedSampler``
    does (padding the epoch to a multiple of the ranks with its first indices): Lightning
    keeps a ``DistributedSampler`` under DDP, where it would wrap any other sampler in one
    whose own shuffle ignores the restored epoch in the same way.
    """

    def __init__(self, data_source: Sized, *, seed: int, epoch: int = 0, num_replicas: int = 1,
                 rank: int = 0, resume_at: tuple[int, int] | None = None) -> None:
        if len(data_source) == 0:
            raise ValueError("EpochSeededSampler needs at least one sample")
        if seed < 0:
            raise ValueError(f"data.seed must be a non-negative integer, got {seed}")
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed, drop_last=False)
        self.set_epoch(epoch)
        # (epoch, n): that epoch's first n samples of this rank were trained on before the
        # run stopped within it; they are left out when the resumed run iterates it.
        # __len__ stays the epoch's length: Lightning counts the resumed epoch's batches
        # from where it stopped, so the loader must end where the full epoch would.
        self.resume_at = resume_at

    def __iter__(self) -> Iterator[SampleKey]:
        size = len(self.dataset)
        generator = torch.Generator().manual_seed(derived_seed("order", self.seed, self.epoch))
        order = torch.randperm(size, generator=generator).tolist()
        order = (order * math.ceil(self.total_size / size))[:self.total_size]
        done = self.resume_at[1] if self.resume_at and self.resume_at[0] == self.epoch else 0
        for index in order[self.rank:self.total_size:self.num_replicas][done:]:
            yield SampleKey(index, derived_seed("augmentation", self.seed, self.epoch, index))
