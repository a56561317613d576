"""Which fine-tuned weights to keep: the epoch with the best held-out share of relevance on
the object among those whose held-out decisions still agree with the original model's
(docs/method.md §10), or the original model itself when no epoch raises the share.

:func:`select_epoch` is the rule, on a table of per-epoch held-out measures;
:class:`HeldOutSelection` is the Lightning callback that keeps that table across a run (and
across resume: it is part of every checkpoint), saves ``selected.ckpt`` whenever the rule
picks the epoch just validated, and writes ``heldout_metrics.csv``, ``selection.json``
(with the one-line verdict) and, at the end, ``heldout_metrics.png`` to the run directory.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from robustft.training.heldout import HeldOutSummary

__all__ = ["DEFAULT_AGREEMENT_TOLERANCE", "OBJECTIVES", "EpochRecord", "HeldOutSelection", "SelectionResult",
           "select_epoch", "verdict_line"]
log = logging.getLogger(__name__)

#: Held-out top-1 agreement with the original model may fall by at most this much (1 point):
#: the bar a fine-tuning must keep in distribution (docs/method.md §10).
DEFAULT_AGREEMENT_TOLERANCE = 0.01
ORIGINAL = "original"
#: what the selection maximises: the held-out share of relevance on the object, or the
#: held-out top-1 on the pairs recombined onto other classes' backgrounds (docs/method.md §10)
OBJECTIVES = ("share", "swap_accuracy")


@dataclass(frozen=True)
class EpochRecord(HeldOutSummary):
    """The held-out measures of the weights at the end of ``epoch`` (0-based)."""

    epoch: int = -1

    @classmethod
    def from_metrics(cls, epoch: int, metrics: Mapping[str, Any],
                     prefix: str = "heldout/") -> EpochRecord:
        values = {f.name: float(metrics.get(f"{prefix}{f.name}", math.nan))
                  for f in fields(HeldOutSummary)}
        values["pairs"], values["images"] = int(values["pairs"]), int(values["images"])
        return cls(**values, epoch=epoch)


@dataclass(frozen=True)
class SelectionResult:
    """The rule's choice: ``epoch`` (None = the original model), why, and whether the chosen
    weights' held-out share is clearly above the original's (gain beyond the margin)."""

    epoch: int | None
    reason: str
    clearly_improved: bool
    record: EpochRecord | None

    @property
    def chosen(self) -> str:
        return ORIGINAL if self.epoch is None else f"epoch {self.epoch}"


def select_epoch(records: Sequence[EpochRecord],
                 agreement_tolerance: float = DEFAULT_AGREEMENT_TOLERANCE,
                 objective: str = "share") -> SelectionResult:
    """Among the epochs whose held-out agreement is at least ``1 - agreement_tolerance``, the
    one with the highest ``objective`` (the earliest among equals); the original model when
    no epoch keeps the agreement, or none raises the share, or (``swap_accuracy``) none
    raises the swapped top-1 above the original's. ``swap_accuracy`` falls back to the share
    where the held-out pairs have one class (nothing to recombine)."""
    if not 0.0 <= agreement_tolerance <= 1.0:
        raise ValueError(f"agreement_tolerance must be in [0, 1], got {agreement_tolerance}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    floor = 1.0 - agreement_tolerance
    kept = [r for r in records if r.agreement >= floor - 1e-12]
    if not kept:
        return SelectionResult(None, f"no epoch keeps the held-out agreement >= {floor:.1%}",
                               False, None)
    if objective == "swap_accuracy" and all(math.isnan(r.swap_accuracy) for r in kept):
        objective = "share"
    raising = [r for r in kept if r.share_gain > 0]
    if not raising:
        return SelectionResult(None, "no epoch that keeps the agreement raises the held-out "
                               "share", False, min(kept, key=lambda r: (-r.share, r.epoch)))
    if objective == "share":
        best = min(raising, key=lambda r: (-r.share, r.epoch))
        reason = f"highest held-out share with agreement >= {floor:.1%}"
    else:
        best = min(raising, key=lambda r: (-r.swap_accuracy, r.epoch))
        if not best.swap_accuracy > best.swap_accuracy_original:
            return SelectionResult(None, "no epoch that keeps the agreement and raises the share "
                                   "raises the top-1 on swapped backgrounds", False, best)
        reason = (f"highest held-out top-1 on swapped backgrounds with agreement >= {floor:.1%} "
                  "and the share raised")
    return SelectionResult(best.epoch, reason, best.share_gain > best.share_margin, best)


def verdict_line(result: SelectionResult, agreement_tolerance: float) -> str:
    """The run's one-line verdict, for the log and ``selection.json``."""
    record = result.record
    if record is None:
        return f"held-out selection: the original model ({result.reason}); no fine-tuned weights kept"
    numbers = (f"share {record.share:.1%} vs the original's {record.share_original:.1%} "
               f"({100 * record.share_gain:+.1f} points, margin {100 * record.share_margin:.1f} "
               f"over {record.pairs} held-out pairs), agreement {record.agreement:.1%} "
               f"(floor {1 - agreement_tolerance:.1%})")
    if not math.isnan(record.swap_accuracy):
        numbers += (f", top-1 on swapped backgrounds {record.swap_accuracy:.1%} vs the "
                    f"original's {record.swap_accuracy_original:.1%}")
    if result.epoch is None:
        return (f"held-out selection: the original model ({result.reason}; best epoch "
                f"{record.epoch}: {numbers})")
    if result.clearly_improved:
        return f"held-out selection: {result.chosen}, {numbers}: clearly above the original"
    return (f"held-out selection: {result.chosen}, {numbers}: NOT clearly above the original - the "
            "gain is within what the held-out set can tell apart from no change")


class HeldOutSelection(pl.Callback):
    """Keeps the held-out measures of every epoch and the weights :func:`select_epoch`
    picks (``<dirpath>/<filename>.ckpt``); a no-op in a run without held-out pairs.

    Args:
        dirpath: where ``selected.ckpt`` goes.
        report_dir: where ``heldout_metrics.csv`` and ``selection.json`` go (default: the
            parent of ``dirpath``, the run directory).
        agreement_tolerance: how far the held-out top-1 agreement with the original model
            may fall below 100 % (default 1 point).
        filename: the checkpoint's name without ``.ckpt``.
    """

    def __init__(self, dirpath: str, agreement_tolerance: float = DEFAULT_AGREEMENT_TOLERANCE,
                 filename: str = "selected", report_dir: str | None = None,
                 objective: str = "share") -> None:
        if not 0.0 <= agreement_tolerance <= 1.0:
            raise ValueError(f"callbacks.heldout_selection.agreement_tolerance must be in [0, 1], "
                             f"got {agreement_tolerance}")
        if objective not in OBJECTIVES:
            raise ValueError(f"callbacks.heldout_selection.objective: expected one of "
                             f"{', '.join(OBJECTIVES)}, got {objective!r}")
        self.objective = objective
        self.dirpath = Path(dirpath)
        self.report_dir = Path(report_dir) if report_dir is not None else self.dirpath.parent
        self.agreement_tolerance = agreement_tolerance
        self.filename = filename
        self.records: list[EpochRecord] = []
        self.result: SelectionResult | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if "heldout/share" not in trainer.callback_metrics:
            return
        record = EpochRecord.from_metrics(trainer.current_epoch, trainer.callback_metrics)
        self.records = [r for r in self.records if r.epoch != record.epoch] + [record]
        self.result = select_epoch(self.records, self.agreement_tolerance, self.objective)
        if self.result.epoch == record.epoch:
            trainer.save_checkpoint(self.checkpoint_path)
        if trainer.is_global_zero:
            self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.result is not None and trainer.is_global_zero:
            from robustft.training.heldout_plot import plot_heldout

            plot_heldout(self.records, self.report_dir / "heldout_metrics.png",
                         selected=self.result.epoch, agreement_floor=1 - self.agreement_tolerance)
            log.info(verdict_line(self.result, self.agreement_tolerance))

    def summary(self) -> dict[str, Any] | None:
        """What ``selection.json`` holds (None before any held-out epoch)."""
        if self.result is None:
            return None
        result = self.result
        return {
            "chosen": result.chosen, "epoch": result.epoch,
            "checkpoint": None if result.epoch is None else str(self.checkpoint_path),
            "reason": result.reason, "clearly_improved": result.clearly_improved,
            "verdict": verdict_line(result, self.agreement_tolerance),
            "agreement_tolerance": self.agreement_tolerance, "objective": self.objective,
            "record": None if result.record is None else _finite(asdict(result.record)),
            "epochs": len(self.records)}

    def _write(self, trainer: pl.Trainer) -> None:
        self.report_dir.mkdir(parents=True, exist_ok=True)
        selected = self.result.epoch if self.result else None
        with (self.report_dir / "heldout_metrics.csv").open("w", newline="") as handle:
            names = [f.name for f in fields(EpochRecord)]
            writer = csv.writer(handle)
            writer.writerow(["epoch", *[n for n in names if n != "epoch"], "selected"])
            for record in sorted(self.records, key=lambda r: r.epoch):
                values = asdict(record)
                writer.writerow([record.epoch, *[values[n] for n in names if n != "epoch"],
                                 int(record.epoch == selected)])
        (self.report_dir / "selection.json").write_text(json.dumps(self.summary(), indent=2) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"records": [asdict(record) for record in self.records]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = [EpochRecord(**values) for values in state_dict.get("records", [])]
        self.result = (select_epoch(self.records, self.agreement_tolerance, self.objective)
                       if self.records else None)


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN / infinity: they become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in values.items()}
