"""Benchmark: one training step, plain vs relevance steps (eager, fused, second-order).

    python benchmarks/relevance_step.py --model deit_small_patch16_224 --img-size 224 \
        --batch 8 --rounds 5

Random-init timm model (no download), fp32, ``--device`` cpu by default. Each step is a
forward, a loss and its backward (gradients zeroed, no optimiser update):

- ``plain``: cross-entropy on the labels (ordinary fine-tuning);
- ``eager``: relevance map with materialised attention (``relevance.backend=eager``,
  detached), bg + fg + classification loss (``robustft.losses.relevance_loss``);
- ``fused``: the same loss with ``relevance.backend=fused``;
- ``second_order``: the same with ``gradient_mode=second_order`` (eager).

The steps are timed in interleaved rounds (after one warm-up round) so that drift of the
machine hits all alike; reports the median seconds, the ratio to ``plain``, and the peak
memory of each step measured in a fresh process (CPU: peak RSS of the process, and its rise
over the RSS after building the model and inputs; CUDA: peak allocated by the step).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import timm
import torch
import torch.nn.functional as F

from robustft.losses import relevance_loss
from robustft.relevance import relevance_map, upsample_and_normalize

STEPS = ("plain", "eager", "fused", "second_order")


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--depth", type=int, default=None, help="override the model's depth")
    parser.add_argument("--embed-dim", type=int, default=None)
    parser.add_argument("--num-heads", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=STEPS, default=None,
                        help="(internal) run one step in this process and print its memory")
    return parser.parse_args(argv)


def _setup(args: argparse.Namespace):
    torch.manual_seed(0)
    kwargs = {k: v for k, v in (("depth", args.depth), ("embed_dim", args.embed_dim),
                                ("num_heads", args.num_heads)) if v is not None}
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes,
                              img_size=args.img_size, **kwargs).to(args.device).train()
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    masks = torch.zeros(args.batch, args.img_size, args.img_size, device=args.device)
    quarter = args.img_size // 4
    masks[:, quarter:-quarter, quarter:-quarter] = 1.0
    labels = torch.arange(args.batch, device=args.device) % args.num_classes
    return model, images, masks, labels


def _step(kind: str, model, images, masks, labels) -> None:
    model.zero_grad(set_to_none=True)
    if kind == "plain":
        loss = F.cross_entropy(model(images), labels)
    else:
        backend = "fused" if kind == "fused" else "eager"
        mode = "second_order" if kind == "second_order" else "detached"
        out = relevance_map(model, images, labels, mode, backend=backend)
        relevance = upsample_and_normalize(out.relevance, masks.shape[-2:])
        loss = relevance_loss(relevance, masks, out.logits, classification="label_ce",
                              labels=labels).total
    loss.backward()
    if images.device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak_rss() -> bool:
    """Linux: reset the process's high-water mark (VmHWM) to its current RSS, so that the
    peak is the step's, not the model construction's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _memory_of(kind: str, args: argparse.Namespace) -> None:
    """Runs in a fresh process: one step, its peak memory as JSON on stdout."""
    model, images, masks, labels = _setup(args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _step(kind, model, images, masks, labels)
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        print(json.dumps({"step_peak_mib": peak, "process_peak_mib": None}))
        return
    before = _rss_mib()
    if not _reset_peak_rss():
        print("warning: cannot reset the peak RSS; it includes the model's construction",
              file=sys.stderr)
    _step(kind, model, images, masks, labels)
    peak = _peak_rss_mib()
    print(json.dumps({"step_peak_mib": peak - before, "process_peak_mib": peak}))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.only:
        _memory_of(args.only, args)
        return
    torch.set_grad_enabled(True)
    model, images, masks, labels = _setup(args)
    times: dict[str, list[float]] = {kind: [] for kind in STEPS}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for kind in STEPS:
            start = time.perf_counter()
            _step(kind, model, images, masks, labels)
            if round_index > 0:
                times[kind].append(time.perf_counter() - start)
    forwarded = list(argv if argv is not None else sys.argv[1:])
    print(f"model={args.model} img={args.img_size} batch={args.batch} device={args.device} "
          f"threads={torch.get_num_threads()} rounds={args.rounds} (median)")
    print(f"{'step':<14}{'seconds':>10}{'x plain':>10}{'step peak MiB':>16}{'process MiB':>14}")
    plain = statistics.median(times["plain"])
    for kind in STEPS:
        done = subprocess.run([sys.executable, __file__, *forwarded, "--only", kind],
                              capture_output=True, text=True, check=True)
        memory = json.loads(done.stdout.strip().splitlines()[-1])
        median = statistics.median(times[kind])
        process = memory["process_peak_mib"]
        print(f"{kind:<14}{median:>10.4f}{median / plain:>10.2f}{memory['step_peak_mib']:>16.1f}"
              f"{'-' if process is None else f'{process:.1f}':>14}")


if __name__ == "__main__":
    main()
