"""Which checkpoint a run resumes, and which run directory it continues in.

``ckpt_path=last`` resumes the newest run of the task: the run under
``<log_dir>/<task_name>/runs/`` whose ``checkpoints/last.ckpt`` was written last. A
checkpoint inside a run's ``checkpoints/`` folder (``ckpt_path=<run>/checkpoints/last.ckpt``)
is resumed in that run's directory, so its logs and checkpoints stay in one place. Hydra
fixes the run directory before the task runs, so the configs ask ``run_dir_to_resume``
through a resolver (``robustft.cli.common``), and the task then finds its checkpoint in its
own run directory (``checkpoint_to_resume``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LAST", "checkpoint_to_resume", "newest_last_checkpoint", "run_dir_to_resume"]

LAST = "last"
CHECKPOINT_DIR, LAST_CHECKPOINT = "checkpoints", "last.ckpt"  # configs/callbacks/default.yaml


def newest_last_checkpoint(runs_dir: str | Path) -> Path | None:
    """The most recently written ``<runs_dir>/*/checkpoints/last.ckpt``, None if there is none."""
    candidates = [path for path in Path(runs_dir).glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}")
                  if path.is_file()]
    return max(candidates, key=lambda path: (path.stat().st_mtime, str(path)), default=None)


def run_dir_to_resume(ckpt_path: str | Path | None, runs_dir: str | Path) -> Path | None:
    """The existing run directory a run with ``ckpt_path`` continues in, None for a new one
    (no ``ckpt_path``; ``last`` with no run to resume, which ``checkpoint_to_resume`` then
    reports; a checkpoint file outside a run's ``checkpoints/`` folder)."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        last = newest_last_checkpoint(runs_dir)
        return None if last is None else last.parent.parent
    path = Path(ckpt_path)
    if path.parent.name == CHECKPOINT_DIR and path.is_file():
        return path.parent.parent
    return None


def checkpoint_to_resume(ckpt_path: str | Path | None, output_dir: str | Path) -> Path | str | None:
    """The checkpoint file to pass to ``Trainer.fit``: ``last`` is ``last.ckpt`` of this run's
    own directory (the one ``run_dir_to_resume`` chose). A missing file is an error: Lightning
    would start from scratch after a warning for ``last``."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        path = Path(output_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not path.is_file():
            # run_dir_to_resume found none, so this run got a new directory among the runs
            raise FileNotFoundError(
                f"ckpt_path=last: no run to resume, no {path.parent.parent.parent}/*/{CHECKPOINT_DIR}/"
                f"{LAST_CHECKPOINT} exists (give the checkpoint file as ckpt_path instead)")
        return path
    if "://" in str(ckpt_path) or str(ckpt_path) == "hpc" or str(ckpt_path).startswith("registry"):
        # a remote checkpoint (s3://...), SLURM's requeue checkpoint (hpc) and a model
        # registry entry are Lightning's to find and read
        return str(ckpt_path)
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: checkpoint file {path} not found")
    return path
