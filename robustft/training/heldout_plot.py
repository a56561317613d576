"""The held-out measures of a run, epoch by epoch, as one PNG: the share of relevance on the
object (and the original's), the agreement with the original's decisions (and its floor),
with the selected epoch marked (``heldout_metrics.png`` beside ``heldout_metrics.csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

from robustft.training.selection import EpochRecord  # noqa: E402

__all__ = ["plot_heldout"]


def plot_heldout(records: Sequence[EpochRecord], path: Path, *, selected: int | None,
                 agreement_floor: float) -> Path:
    """Two panels over the epochs: held-out share (with the original's as a line) and
    held-out agreement (with the floor the selection keeps); ``selected`` is marked."""
    records = sorted(records, key=lambda r: r.epoch)
    epochs = [r.epoch for r in records]
    figure, (share_axis, agreement_axis) = plt.subplots(1, 2, figsize=(9, 3.2))
    share_axis.plot(epochs, [100 * r.share for r in records], marker="o", label="fine-tuned")
    share_axis.axhline(100 * records[0].share_original, color="grey", linestyle="--",
                       label="original")
    share_axis.set(xlabel="epoch", ylabel="held-out share on the object (%)")
    agreement_axis.plot(epochs, [100 * r.agreement for r in records], marker="o", color="C1")
    agreement_axis.axhline(100 * agreement_floor, color="grey", linestyle="--", label="floor")
    agreement_axis.set(xlabel="epoch", ylabel="held-out top-1 agreement (%)")
    for axis in (share_axis, agreement_axis):
        if selected is not None:
            axis.axvline(selected, color="C2", linestyle=":", label=f"selected: epoch {selected}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
