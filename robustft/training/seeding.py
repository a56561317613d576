"""Module randomness (dropout, drop-path, anything drawing from the global RNGs) as a
function of (seed, rank, epoch, batch), so that a run resumed from a checkpoint draws what
the uninterrupted run drew: Lightning does not save the global RNG state in checkpoints,
and a resumed process starts its stream elsewhere (model initialisation, sanity check,
DataLoader seeds)."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch

from robustft.data.samplers import derived_seed

__all__ = ["SeedEveryTrainingBatch"]


class SeedEveryTrainingBatch(pl.Callback):
    """Re-seeds torch (CPU and CUDA), numpy and ``random`` before every training batch from
    (``seed``, global rank, epoch, batch index). Seeding per batch rather than per epoch
    keeps the draws independent of anything that ran earlier in the epoch."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch,
                             batch_idx: int) -> None:
        seed = derived_seed("training batch", self.seed, trainer.global_rank,
                            trainer.current_epoch, batch_idx)
        torch.manual_seed(seed)  # also every CUDA device
        np.random.seed(seed % 2**32)
        random.seed(seed)
