"""Benchmark: one training step, plain vs relevance steps (eager, fused, second-order).

    python benchmarks/relevance_step.py --name deit_small_patch16_224 --img-size 224 \
        --batch 8 --rounds 5 --precision fp32 bf16 --phases --csv relevance_step.csv

Any model a ``robustft.backbones.ModelSpec`` builds (``--family timm|hf|open_clip``,
``--name``, ``--kwargs`` JSON for the constructor), random weights (``pretrained=False``, no
download), ``--device`` cpu by default:

- ``timm``: ``--name`` a timm model, ``--img-size`` passed as ``img_size`` unless
  ``--kwargs`` sets it;
- ``hf``: ``--hf-path`` a local folder with a ``config.json`` (weights not needed) or
  ``--hf-id``, ``--kwargs`` replacing config values; a ViT-Ti-shaped one:
  ``python -c "import transformers; transformers.ViTConfig(hidden_size=192,
  num_hidden_layers=12, num_attention_heads=3, intermediate_size=768).save_pretrained('vit_ti_hf')"``
  then ``--family hf --hf-path vit_ti_hf``;
- ``open_clip``: ``--name`` an OpenCLIP model name, ``--kwargs`` the arguments of
  ``open_clip.create_model`` (``embed_dim``, ``vision_cfg``, ``text_cfg`` replace the named
  config's, so any shape builds offline; ``--img-size`` becomes the tower's
  ``vision_cfg.image_size`` unless set there). The zero-shot head is ``--num-classes``
  generated names (``class 0`` ...) with the template ``a photo of a {}.``, computed with the
  model's own random text tower, or read from ``--embeddings-file`` (a head file). A
  ViT-Ti-shaped one with a one-block text tower::

      python benchmarks/relevance_step.py --family open_clip --name ViT-B-16 --kwargs \
        '{"embed_dim": 192, "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 192,
          "layers": 12, "head_width": 64}, "text_cfg": {"context_length": 16,
          "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}'

Steps the model cannot run are skipped with one line saying why (``fused`` where the
backbone refuses fused capture, e.g. attention dropout in training: it would time eager
again). Each step is a forward, a loss and its backward (gradients zeroed, no optimiser
update):

- ``plain``: cross-entropy on the labels (ordinary fine-tuning);
- ``eager``: relevance map with materialised attention (``relevance.backend=eager``,
  detached), bg + fg + classification loss (``robustft.losses.relevance_loss``);
- ``fused``: the same loss with ``relevance.backend=fused``;
- ``second_order``: the same with ``gradient_mode=second_order`` (eager).

``--precision bf16`` runs each step under ``torch.autocast(<device>, torch.bfloat16)``
(float32 weights); ``--compile`` calls ``model.compile()`` first (the warm-up round compiles).
The steps of all precisions are timed in interleaved rounds (after one warm-up round) so that
drift of the machine hits all alike; reports the median wall seconds, the median CPU seconds
of the process (steadier than wall time on a shared machine), the ratio to ``plain`` of the
same precision, and the peak memory of each step measured in a fresh process (CPU: peak RSS of
the process, and its rise over the RSS after building the model and inputs; CUDA: peak
allocated by the step). ``--phases`` adds where each step's time goes (torch.profiler: the
``robustft.relevance.*`` ranges of the relevance code, the benchmark's own ``step.*`` ranges,
and the ops that dominate).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from robustft.backbones import ModelSpec, backbone_of
from robustft.backbones.zero_shot import ZeroShotSpec
from robustft.losses import relevance_loss
from robustft.relevance import PHASES, relevance_map, upsample_and_normalize

STEPS = ("plain", "eager", "fused", "second_order")
ZERO_SHOT_TEMPLATE = "a photo of a {}."  # one prompt: the head is random text embeddings anyway
PRECISIONS = ("fp32", "bf16")


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="timm", help="ModelSpec family: timm | hf | open_clip")
    parser.add_argument("--name", "--model", dest="name", default="deit_small_patch16_224",
                        help="timm or OpenCLIP model name (family hf: optional, a label)")
    parser.add_argument("--hf-path", default=None,
                        help="family hf: a local folder with the model's config.json")
    parser.add_argument("--hf-id", default=None, help="family hf: a hub id (needs the hub cache)")
    parser.add_argument("--embeddings-file", default=None,
                        help="family open_clip: a zero-shot head file instead of --num-classes "
                             "generated names through the text tower")
    parser.add_argument("--kwargs", type=json.loads, default={},
                        help='model constructor arguments as JSON, e.g. \'{"depth": 2}\'')
    parser.add_argument("--img-size", type=int, default=224,
                        help="input size (timm: also passed as img_size unless --kwargs sets it)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=10,
                        help="classes of the head (open_clip: generated zero-shot class names)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"])
    parser.add_argument("--compile", action="store_true", help="model.compile() before timing")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--phases", action="store_true",
                        help="profile each step once more and print where its time goes")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--only", default=None,
                        help="(internal) run one <step>:<precision> in this process, print its memory")
    args = parser.parse_args(argv)
    if "plain" not in args.steps:
        args.steps = ["plain", *args.steps]  # the ratios are to the plain step
    return args


def _setup(args: argparse.Namespace):
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _model_spec(args).build(key="--name").to(args.device).train()
    if args.compile:
        model.compile()
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    masks = torch.zeros(args.batch, args.img_size, args.img_size, device=args.device)
    quarter = args.img_size // 4
    masks[:, quarter:-quarter, quarter:-quarter] = 1.0
    num_classes = backbone_of(model).num_classes or args.num_classes  # a head file has its own
    labels = torch.arange(args.batch, device=args.device) % num_classes
    return model, images, masks, labels


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    """The spec of ``args`` (module docstring: what each family takes)."""
    kwargs = json.loads(json.dumps(args.kwargs))  # a deep copy: vision_cfg may gain image_size
    if args.family == "timm":
        kwargs.setdefault("img_size", args.img_size)
    if args.family != "open_clip":
        return ModelSpec(name=args.name, family=args.family, pretrained=False,
                         num_classes=args.num_classes, kwargs=kwargs, hf_id=args.hf_id,
                         hf_path=args.hf_path)
    # create_model's vision_cfg replaces the named config's whole, force_image_size with it
    if isinstance(kwargs.get("vision_cfg"), dict):
        kwargs["vision_cfg"].setdefault("image_size", args.img_size)
    else:
        kwargs.setdefault("force_image_size", args.img_size)
    if args.embeddings_file:
        zero_shot = ZeroShotSpec(embeddings_file=args.embeddings_file)
    else:
        zero_shot = ZeroShotSpec(class_names=[f"class {index}" for index in range(args.num_classes)],
                                 templates=[ZERO_SHOT_TEMPLATE])
    return ModelSpec(name=args.name, family="open_clip", pretrained=False, kwargs=kwargs,
                     zero_shot=zero_shot)


def _runnable_steps(steps: list[str], model) -> list[str]:
    """``steps`` less those this model would not run as named, each said in one line."""
    refusal = backbone_of(model).fused_capture_refusal()
    if "fused" in steps and refusal:
        print(f"fused: skipped ({type(model).__name__} runs eager instead: {refusal})")
        return [step for step in steps if step != "fused"]
    return steps


def _step(kind: str, precision: str, model, images, masks, labels) -> None:
    model.zero_grad(set_to_none=True)
    autocast = (torch.autocast(images.device.type, dtype=torch.bfloat16) if precision == "bf16"
                else nullcontext())
    with autocast:
        if kind == "plain":
            with record_function("step.forward"):  # the logits of any family (hf: an output object)
                logits = backbone_of(model).class_scores(images)
            with record_function("step.loss"):
                loss = F.cross_entropy(logits, labels)
        else:
            backend = "fused" if kind == "fused" else "eager"
            mode = "second_order" if kind == "second_order" else "detached"
            out = relevance_map(model, images, labels, mode, backend=backend)
            with record_function("step.loss"):
                relevance = upsample_and_normalize(out.relevance, masks.shape[-2:])
                loss = relevance_loss(relevance, masks, out.logits, classification="label_ce",
                                      labels=labels).total
    with record_function("step.backward"):
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


def _memory_of(kind: str, precision: str, args: argparse.Namespace) -> None:
    """Runs in a fresh process: one step, its peak memory as JSON on stdout. With
    ``--compile`` a first step compiles, so that the peak is the step's, not the compiler's."""
    model, images, masks, labels = _setup(args)
    if args.compile:
        _step(kind, precision, model, images, masks, labels)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _step(kind, precision, model, images, masks, labels)
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        print(json.dumps({"step_peak_mib": peak, "process_peak_mib": None}))
        return
    before = _rss_mib()
    if not _reset_peak_rss():
        print("warning: cannot reset the peak RSS; it includes the model's construction",
              file=sys.stderr)
    _step(kind, precision, model, images, masks, labels)
    peak = _peak_rss_mib()
    print(json.dumps({"step_peak_mib": peak - before, "process_peak_mib": peak}))


_RANGES = {phase: f"robustft.relevance.{phase}" for phase in PHASES}  # the relevance code's
PHASE_COLUMNS = (  # (column, the profiler ranges it sums: the relevance code's or our own)
    ("forward", (_RANGES["forward"], "step.forward")),
    ("score_backward", (_RANGES["score_backward"],)),
    ("block_maps", (_RANGES["block_maps"],)),
    ("rollout", (_RANGES["rollout"],)),
    ("loss", ("step.loss",)),
    ("loss_backward", ("step.backward",)),
    ("of_it_maps_bwd", (_RANGES["block_maps_backward"],)),  # inside loss_backward
    ("total", ("step",)),
)


def _phases(runs: list[tuple[str, str]], model, images, masks, labels, top_ops: int = 8) -> None:
    """One profiled step per run: the wall seconds in each phase (``rest`` = the total less
    the phases: the map's read-out, Python, the profiler) and the ops with the most self
    time."""
    print("\nphases (one profiled step each, wall seconds; the profiler adds some overhead)")
    print(f"{'step':<20}" + "".join(f"{column:>15}" for column, _ in PHASE_COLUMNS)
          + f"{'rest':>9}")
    tables = []
    for kind, precision in runs:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("step"):
                _step(kind, precision, model, images, masks, labels)
        events = {event.key: event.cpu_time_total / 1e6 for event in prof.key_averages()}
        cells = {column: sum(events.get(name, 0.0) for name in names)
                 for column, names in PHASE_COLUMNS}
        rest = cells["total"] - sum(value for column, value in cells.items()
                                    if column not in ("of_it_maps_bwd", "total"))
        print(f"{kind + ':' + precision:<20}" + "".join(f"{value:>15.3f}" for value in cells.values())
              + f"{rest:>9.3f}")
        ops = sorted((e for e in prof.key_averages() if e.key.startswith("aten::")),
                     key=lambda e: e.self_cpu_time_total, reverse=True)[:top_ops]
        total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
        tables.append((kind, precision, [(e.key.removeprefix("aten::"), e.self_cpu_time_total / 1e6,
                                          e.self_cpu_time_total / total, e.count) for e in ops]))
    for kind, precision, ops in tables:
        print(f"\n{kind}:{precision} ops by self time: "
              + "; ".join(f"{name} {sec:.3f}s ({share:.0%}, {count}x)"
                          for name, sec, share, count in ops))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.only:
        kind, precision = args.only.split(":")
        _memory_of(kind, precision, args)
        return
    torch.set_grad_enabled(True)
    model, images, masks, labels = _setup(args)
    args.steps = _runnable_steps(args.steps, model)
    runs = [(kind, precision) for precision in args.precision for kind in args.steps]
    wall: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    cpu: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for round_index in range(args.rounds + 1):  # round 0 warms up (and compiles)
        for kind, precision in runs:
            start, start_cpu = time.perf_counter(), time.process_time()
            _step(kind, precision, model, images, masks, labels)
            if round_index > 0:
                wall[kind, precision].append(time.perf_counter() - start)
                cpu[kind, precision].append(time.process_time() - start_cpu)
    forwarded = list(argv if argv is not None else sys.argv[1:])
    print(f"family={args.family} name={args.name} kwargs={json.dumps(args.kwargs)} "
          f"classes={backbone_of(model).num_classes} "
          f"img={args.img_size} batch={args.batch} device={args.device} "
          f"threads={torch.get_num_threads()} compile={args.compile} rounds={args.rounds} (median)")
    header = ("step", "precision", "seconds", "x_plain", "cpu_seconds", "cpu_x_plain",
              "step_peak_mib", "process_peak_mib")
    print(f"{'step':<14}{'precision':>10}{'seconds':>10}{'x plain':>9}{'cpu s':>9}{'cpu x':>7}"
          f"{'step peak MiB':>15}{'process MiB':>13}")
    rows = []
    for kind, precision in runs:
        done = subprocess.run([sys.executable, __file__, *forwarded, "--only", f"{kind}:{precision}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the memory run of {kind}:{precision} failed: "
                               f"{done.stderr.strip().splitlines()[-1:]}")
        memory = json.loads(done.stdout.strip().splitlines()[-1])
        median, median_cpu = statistics.median(wall[kind, precision]), statistics.median(cpu[kind, precision])
        ratio = median / statistics.median(wall["plain", precision])
        cpu_ratio = median_cpu / statistics.median(cpu["plain", precision])
        process = memory["process_peak_mib"]
        rows.append(dict(zip(header, (kind, precision, round(median, 4), round(ratio, 3),
                                      round(median_cpu, 4), round(cpu_ratio, 3),
                                      round(memory["step_peak_mib"], 1),
                                      None if process is None else round(process, 1)))))
        print(f"{kind:<14}{precision:>10}{median:>10.4f}{ratio:>9.2f}{median_cpu:>9.3f}"
              f"{cpu_ratio:>7.2f}{memory['step_peak_mib']:>15.1f}"
              f"{'-' if process is None else f'{process:.1f}':>13}")
    if args.csv:
        settings = {"family": args.family, "name": args.name, "kwargs": json.dumps(args.kwargs),
                    "img_size": args.img_size, "batch": args.batch, "device": args.device,
                    "threads": torch.get_num_threads(), "compile": args.compile,
                    "rounds": args.rounds}
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*settings, *header])
            writer.writeheader()
            for row in rows:
                writer.writerow({**settings, **row})
        print(f"wrote {args.csv}")
    if args.phases:
        _phases(runs, model, images, masks, labels)


if __name__ == "__main__":
    main()
