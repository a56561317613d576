"""A job stopped by its scheduler loses nothing: on the scheduler's pre-timeout (or
preemption) signal, the run finishes the batch in progress, writes a checkpoint that resumes
exactly there, and only then hands over to whoever requeues the job.

Under ``hydra/launcher=slurm`` that is submitit: it asks SLURM to send ``SIGUSR2``
``signal_delay_s`` seconds before the time limit (``SUBMITIT_PREEMPT_SIGNAL`` names another),
and its handler for that signal requeues the job (``scontrol requeue``, at most
``max_num_timeout`` times for time-outs) and exits. This callback takes the signal first: the
handler only sets a flag (nothing else is safe in the middle of a training step); at the end
of the next training batch after which the optimiser stepped, the weights, optimiser,
schedulers, loop counters and the position in the epoch (``ImageMaskDataModule``'s
``stop_within_epoch``) go to ``checkpoint`` (``<run>/checkpoints/last.ckpt``), and then
submitit's handler runs as it would have. The requeued job resumes from that file
(``robustft.cli.launcher`` adds ``ckpt_path=<job dir>/checkpoints/last.ckpt`` to it), and the
rest of the epoch sees the batches and draws the uninterrupted run would have seen, so the
final weights are the uninterrupted run's (``tests/training/test_preemption.py``).

Where no mid-epoch checkpoint can be written exactly (the signal arrives outside the
training batches: set-up, sanity check, validation, after the last batch of an epoch; or the
data module cannot resume within an epoch), the job is handed over at once and resumes from
the last checkpoint there is, redoing the epoch it was in: still exact, as after ``kill -9``.
Without a handler to hand over to (a run not started by submitit), the run stops with
:class:`TrainingStopped` after writing the checkpoint; resume it with
``ckpt_path=<run>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl

__all__ = ["CheckpointOnSignal", "TrainingStopped"]
log = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """The run wrote its checkpoint and stopped on the scheduler's signal."""


class CheckpointOnSignal(pl.Callback):
    """On ``signal_name`` (``USR2``: submitit's), checkpoint to ``checkpoint`` at the next
    batch boundary where that resumes exactly, then run the signal's previous handler."""

    def __init__(self, checkpoint: str, signal_name: str = "USR2") -> None:
        name = signal_name.upper().removeprefix("SIG")
        if not isinstance(getattr(signal, f"SIG{name}", None), signal.Signals):
            raise ValueError(f"callbacks.preemption.signal_name: no signal SIG{name} on this system")
        self.checkpoint, self.signum = Path(checkpoint), getattr(signal, f"SIG{name}")
        self._previous: Any = None
        self._installed = False
        self._received = False
        self._frame: FrameType | None = None

    # ------------------------------------------------------------------ the signal itself

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._trainer is not None and self._trainer.training and not self._trainer.sanity_checking:
            self._received, self._frame = True, frame  # acted on at the end of the batch
        else:
            self._hand_over(frame)

    def _hand_over(self, frame: FrameType | None) -> None:
        """Run the handler that was there before ours (submitit's: requeue and exit)."""
        self._uninstall()
        previous = self._previous
        if callable(previous):
            log.warning("%s: handing over to %s", self.signum.name,
                        getattr(previous, "__qualname__", previous))
            previous(self.signum, frame)
        elif previous != signal.SIG_IGN:
            raise TrainingStopped(
                f"stopped by {self.signum.name}; resume with ckpt_path={self.checkpoint}"
                if self.checkpoint.is_file() else f"stopped by {self.signum.name} before any checkpoint")

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.info("not in the main thread: %s is left to its own handler", self.signum.name)
            return
        self._previous = signal.signal(self.signum, self._on_signal)
        self._installed = True

    def _uninstall(self) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    # ------------------------------------------------------------------ Lightning hooks

    _trainer: pl.Trainer | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer, self._received = trainer, False
        self._install()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._any_rank_received(trainer):
            return
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if not stepped and not last_batch:
            return  # accumulated gradients are not in a checkpoint: wait for the step
        datamodule = getattr(trainer, "datamodule", None)
        if not last_batch and hasattr(datamodule, "stop_within_epoch"):
            datamodule.stop_within_epoch(trainer.current_epoch, batch_idx + 1)
            trainer.save_checkpoint(self.checkpoint)
            log.warning("%s: checkpoint after batch %d of epoch %d written to %s",
                        self.signum.name, batch_idx + 1, trainer.current_epoch, self.checkpoint)
        else:
            log.warning("%s: no exact checkpoint within this epoch; the job resumes from %s",
                        self.signum.name, self.checkpoint if self.checkpoint.is_file() else "the start")
        self._hand_over(self._frame)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the flag was set after the epoch's last batch: no batch end comes before validation
        if self._any_rank_received(trainer):
            self._hand_over(self._frame)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._uninstall()
        self._trainer = None

    def _any_rank_received(self, trainer: pl.Trainer) -> bool:
        """Whether any process got the signal: SLURM signals every task, but not between the
        same two batches, and every rank must write the checkpoint at the same batch."""
        if trainer.world_size == 1:
            return self._received
        return bool(trainer.strategy.reduce_boolean_decision(self._received, all=False))
