"""The paper's optimiser and learning-rate schedule, as factories the training module takes
(Hydra builds them with ``_partial_: true``; configs name them as
``robustft.training.module.*``, where they are re-exported)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["OptimizerFactory", "SchedulerFactory", "adamw", "step_decay", "step_decay_scheduler"]


def step_decay(gamma: float, every: int):
    """The paper's schedule as a factor of the base lr: gamma^(epoch // every)."""
    return lambda epoch: gamma ** (epoch // every)


def step_decay_scheduler(optimizer: torch.optim.Optimizer, *, gamma: float = 0.85,
                         every: int = 2) -> torch.optim.lr_scheduler.LambdaLR:
    """lr * gamma^(epoch // every), stepped once per epoch (the paper's 0.85 every 2)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, step_decay(gamma, every))


def adamw(parameters: Iterable[nn.Parameter], *, lr: float = 3e-6,
          weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """The paper's optimiser: AdamW, weight decay 1e-4 (ViT-B's lr)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
