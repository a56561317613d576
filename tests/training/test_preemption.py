"""Jobs that survive their scheduler: a ``robustft-train`` job that gets the pre-timeout
signal (SIGUSR2, as submitit has SLURM send it) in the middle of an epoch finishes the batch,
writes a checkpoint there, and the job run again in its directory (as submitit's requeue
runs it) ends with the uninterrupted run's weights, bit for bit, with augmentation,
dropout and two DataLoader workers."""

from __future__ import annotations

import signal

import pytest
from fixtures.exact_resume import MAX_EPOCHS, load_checkpoint, robustft_train, weight_differences

from robustft.data.samplers import EpochSeededSampler
from robustft.training.preemption import CheckpointOnSignal

SIGNAL_EPOCH, SIGNAL_BATCH = 3, 1  # the signal arrives as batch 1 of epoch 3 starts
SIGNAL = ["+callbacks.signal._target_=fixtures.signal_at.SignalAt",
          f"+callbacks.signal.epoch={SIGNAL_EPOCH}", f"+callbacks.signal.batch_idx={SIGNAL_BATCH}"]
STEPS_PER_EPOCH = 4


def _assert_exact(final: dict, reference: dict) -> None:
    assert final["epoch"] == MAX_EPOCHS - 1
    assert final["global_step"] == reference["global_step"]
    differing, largest = weight_differences(reference, final)
    assert not differing, f"{len(differing)} tensors differ, max abs difference {largest:.3g}"


def test_a_job_signalled_mid_epoch_continues_to_the_uninterrupted_weights(
        tmp_path, data_root, uninterrupted):
    # one job of a -m sweep in a fixed directory, as submitit runs it and runs it again
    job = ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "data.num_workers=2"]
    stopped = robustft_train(tmp_path, data_root, *job, *SIGNAL)
    last = tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt"
    # no submitit handler to hand over to here: the run stops after writing the checkpoint
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"robustft-train: error: TrainingStopped: stopped by SIGUSR2; resume with "
        f"ckpt_path={last} (multirun job 0, {last.parent.parent})")
    checkpoint = load_checkpoint(last)
    # written at the end of the batch the signal arrived in: 2 of epoch 3's 4 steps done
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (
        SIGNAL_EPOCH, SIGNAL_EPOCH * STEPS_PER_EPOCH + SIGNAL_BATCH + 1)
    assert checkpoint["ImageMaskDataModule"] == {"stopped_within_epoch": [SIGNAL_EPOCH,
                                                                          SIGNAL_BATCH + 1]}

    requeued = robustft_train(tmp_path, data_root, *job)  # the same job, run again
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "continuing from it (ckpt_path)" in requeued.stdout + requeued.stderr
    _assert_exact(load_checkpoint(last), uninterrupted)


@pytest.mark.slow
def test_a_submitit_job_requeued_on_the_signal_ends_with_the_uninterrupted_weights(
        tmp_path, data_root, uninterrupted):
    # the whole path through submitit's local executor: its handler requeues the job after
    # the checkpoint, its controller starts it again, and it continues from the file
    completed = robustft_train(tmp_path, data_root, "-m", "hydra/launcher=local",
                               "data.num_workers=0", *SIGNAL)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    logs = "".join(path.read_text() for path in sorted((sweep / "submitit").glob("*_0_log.*")))
    for line in ("SIGUSR2: checkpoint after batch 2 of epoch 3", "Caught signal SIGUSR2",
                 "Requeued job", "continuing from it (ckpt_path)"):
        assert line in logs
    _assert_exact(load_checkpoint(sweep / "0" / "checkpoints" / "last.ckpt"), uninterrupted)


def test_the_resumed_epoch_leaves_out_what_was_trained_and_keeps_the_order():
    full = list(EpochSeededSampler(range(10), seed=3, epoch=2, num_replicas=2, rank=1))
    resumed = EpochSeededSampler(range(10), seed=3, epoch=2, num_replicas=2, rank=1,
                                 resume_at=(2, 2))
    assert list(resumed) == full[2:] and len(resumed) == len(full)
    resumed.set_epoch(3)  # the next epoch is whole again
    assert list(resumed) == list(EpochSeededSampler(range(10), seed=3, epoch=3, num_replicas=2,
                                                    rank=1))


def test_an_unknown_signal_is_named():
    with pytest.raises(ValueError, match=r"^callbacks\.preemption\.signal_name: no signal SIGUSR9"):
        CheckpointOnSignal(checkpoint="last.ckpt", signal_name="USR9")


def test_the_handler_is_put_back_after_fit(tmp_path):
    callback = CheckpointOnSignal(checkpoint=str(tmp_path / "last.ckpt"))
    before = signal.getsignal(signal.SIGUSR2)

    class Trainer:  # what the hooks read
        training, sanity_checking, world_size = True, False, 1

    callback.on_fit_start(Trainer(), None)
    assert signal.getsignal(signal.SIGUSR2) == callback._on_signal
    callback.teardown(Trainer(), None, "fit")
    assert signal.getsignal(signal.SIGUSR2) == before
    assert not (tmp_path / "last.ckpt").exists()
