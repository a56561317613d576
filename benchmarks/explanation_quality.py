"""Explanation quality of the demo's stand-in and a relevance-fine-tuned checkpoint on the
demo's benchmark (issue 16, "Measure and report"): per split, relevance method and model,
top-1, the perturbation test's AUCs (positive: most relevant pixels removed first, lower is
better; negative: least relevant first, higher is better), the segmentation test (pixel
accuracy, mIoU, mAP of the map thresholded at its mean) and the share of relevance on the
object; and the wall time per image of each part, from the evaluator's own timings::

    python benchmarks/explanation_quality.py --finetuned logs/demo/runs/<run>/checkpoints/last.ckpt
    python benchmarks/explanation_quality.py --finetuned <ckpt> --images 50 data=synth_b

Everything is computed by ``robustft.evaluation.runner.evaluate_models`` (the code behind
``robustft-eval metrics=[top1,perturbation,segmentation,share]``), both models in one pass
over each split's images, once per relevance method. The original model is the demo's
(``model.*`` of the demo's config, weights ``model.weights_file``: the cached stand-in;
``--original`` names another weights file); the fine-tuned one is built from the
checkpoint's saved architecture. The benchmark is the demo's (``data.root``'s parent,
``ROBUSTFT_ROOT`` honoured) and must exist (``robustft-demo`` generates it); trailing
arguments are overrides of the demo's config. ``--images N`` evaluates N images per split,
evenly spaced over its sorted samples (every class represented).

Writes ``explanation_quality.csv`` (model, split, method, quantity, removed_fraction (the
perturbation curves' points; empty elsewhere), value in percent, images),
``explanation_quality_timing.csv`` (model, split, method, part, seconds per image) and
``explanation_quality.md`` (both tables, also printed) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from robustft.cli.errors import one_line_errors
from robustft.data.eval.base import EvalImageDataset
from robustft.evaluation.metrics.map_scoring import FRACTION_FACTOR, ExplanationSettings, metric_name
from robustft.evaluation.metrics.perturbation_curves import DEFAULT_FRACTIONS, check_fractions
from robustft.evaluation.model_loading import build_model_from_entry
from robustft.evaluation.runner import build_eval_transforms, evaluate_models
from robustft.relevance import RELEVANCE_METHODS, RelevanceChoice
from robustft.synth.read import ImageFolderSplit

SPLITS = ("shuffled", "anti_correlated", "in_distribution")
METHODS = ("grad_rollout", "rollout", "attn_gradcam", "raw_attention")
EXPLANATION_METRICS = ("perturbation", "segmentation", "share")

# (heading, the evaluator's metric: "top1" or <method>:<quantity>)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("top-1", "top1"),
    ("AUC pos (lower better)", "perturbation_positive_auc"),
    ("AUC neg (higher better)", "perturbation_negative_auc"),
    ("pixAcc", "segmentation_pixel_accuracy"),
    ("mIoU", "segmentation_miou"),
    ("mAP", "segmentation_map"),
    ("share", "foreground_share"),
)
# the evaluator's timed parts, in the order they run
PARTS = ("top1", "forward", "relevance", "perturbation", "segmentation", "share")


def evenly_spaced(dataset: ImageFolderSplit, count: int) -> EvalImageDataset:
    """``count`` samples of ``dataset`` (all when ``count`` <= 0), evenly spaced over its
    sorted samples, with their masks."""
    total = len(dataset)
    if count <= 0 or count >= total:
        return dataset
    picks = np.unique(np.linspace(0, total - 1, count).round().astype(int)).tolist()
    return EvalImageDataset(dataset.name, dataset.protocol, [dataset.samples[i] for i in picks],
                            root=dataset.root,
                            mask_paths=[dataset.mask_paths[i] for i in picks],
                            mask_decoder=dataset.mask_decoder)


def measure(models: dict, benchmark: Path, splits: Sequence[str], methods: Sequence[str], *,
            images: int, fractions: Sequence[float], batch_size: int
            ) -> tuple[list[dict], list[dict]]:
    """(value rows, timing rows): every metric of every (model, split, method)."""
    transforms = build_eval_transforms(models, crop_pct=1.0)  # images are the input size
    class_names = (benchmark / "classes.txt").read_text().split()
    values, timings = [], []
    for split in splits:
        split_set = ImageFolderSplit(benchmark, split, class_names=class_names, name=split)
        if not split_set.has_masks:
            raise FileNotFoundError(f"--splits: {benchmark / (split + '_masks')} not found; "
                                    "the segmentation test and the share need the split's masks")
        dataset = evenly_spaced(split_set, images)
        for position, method in enumerate(methods):
            # top-1 does not depend on the method: computed (and timed) in the first pass only
            metrics = (("top1",) if position == 0 else ()) + EXPLANATION_METRICS
            settings = ExplanationSettings(metrics=metrics, relevance=RelevanceChoice(method),
                                           fractions=tuple(fractions))
            parts: dict[str, dict[str, float]] = {}
            rows = evaluate_models(models, dataset, transforms=transforms,
                                   batch_size=batch_size, num_workers=0, device="cpu",
                                   progress=False, explanations=settings, timings=parts)
            for row in rows:
                if row["factor"] not in ("", FRACTION_FACTOR):
                    continue  # top-1 per sweep factor value: not part of this table
                quantity = row["metric"].removeprefix(metric_name(method, ""))
                values.append({"model": row["model"], "split": split,
                               "method": "" if quantity in ("top1", "top5") else method,
                               "quantity": quantity, "removed_fraction": row["factor_value"],
                               "value": row["value"], "images": row["num_images"]})
            for model, seconds in parts.items():
                timings += [{"model": model, "split": split, "method": method, "part": part,
                             "seconds_per_image": value} for part, value in seconds.items()]
            print(f"{split} / {method}: done", file=sys.stderr, flush=True)
    return values, timings


def quality_table(values: list[dict], models: Sequence[str], splits: Sequence[str],
                  methods: Sequence[str]) -> list[str]:
    """Markdown rows: split x method x model, the COLUMNS."""
    value_of = {(r["model"], r["split"], r["method"], r["quantity"]): r["value"]
                for r in values if not r["removed_fraction"]}
    lines = ["| split | method | model | " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(COLUMNS)]
    for split in splits:
        for method in methods:
            for model in models:
                cells = []
                for _heading, quantity in COLUMNS:
                    key = (model, split, "" if quantity == "top1" else method, quantity)
                    cells.append(f"{value_of[key]:.1f}" if key in value_of else "")
                lines.append(f"| {split} | {method} | {model} | " + " | ".join(cells) + " |")
    return lines


def timing_table(timings: list[dict], methods: Sequence[str]) -> list[str]:
    """Markdown rows: per method, each part's seconds per image (mean over models and splits)
    in ms, and as a multiple of the top-1 pass measured in the same run."""
    collected: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in timings:
        collected[(row["method"], row["part"])].append(row["seconds_per_image"])
    top1 = [value for (_method, part), got in collected.items() if part == "top1" for value in got]
    top1_ms = 1000 * float(np.mean(top1))
    parts = [part for part in PARTS[1:] if any(p == part for _m, p in collected)]
    lines = [f"top-1 (forward and scoring): {top1_ms:.2f} ms per image", "",
             "| method | " + " | ".join(parts) + " | all explanation parts |",
             "|---|" + "---:|" * (len(parts) + 1)]
    for method in methods:
        means = [1000 * float(np.mean(collected[(method, part)])) for part in parts]
        cells = [f"{ms:.2f} ms ({ms / top1_ms:.1f}x)" for ms in means]
        total = sum(means)
        cells.append(f"{total:.2f} ms ({total / top1_ms:.1f}x)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _fractions(text: str) -> list[float]:
    return [float(value) for value in _names(text)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finetuned", required=True, help="a robustft-train .ckpt")
    parser.add_argument("--original", default=None,
                        help="the original model's weights file (default: model.weights_file "
                             "of the demo's config, the cached stand-in)")
    parser.add_argument("--images", type=int, default=100, help="images per split (0 = all)")
    parser.add_argument("--splits", type=_names, default=list(SPLITS[:2]),
                        help="comma-separated (default: %(default)s)")
    parser.add_argument("--methods", type=_names, default=list(METHODS[:3]),
                        help="comma-separated relevance methods (default: %(default)s)")
    parser.add_argument("--fractions", type=_fractions, default=None,
                        help="comma-separated removed fractions of the perturbation test (the "
                             "AUC's x-grid; default the evaluator's 0,0.1,...,0.9)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default <log_dir>/explanation_quality/<time>)")
    parser.add_argument("overrides", nargs="*", help="overrides of the demo's config")
    return parser.parse_args(argv)


@one_line_errors("explanation_quality")
def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    unknown = [method for method in args.methods if method not in RELEVANCE_METHODS]
    if unknown:
        raise ValueError(f"--methods: {unknown} are not relevance methods; known: "
                         f"{sorted(RELEVANCE_METHODS)}")
    fractions = (check_fractions(args.fractions, key="--fractions") if args.fractions
                 else DEFAULT_FRACTIONS)
    with initialize_config_module("robustft.configs", version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tempfile.mkdtemp()}",
                                         "data.manifest_out=null", *args.overrides])
    benchmark = Path(cfg.data.root).parent.resolve()
    if not (benchmark / "classes.txt").is_file():
        raise FileNotFoundError(f"data.root: no generated benchmark at {benchmark} "
                                "(classes.txt missing; robustft-demo generates it)")
    original = OmegaConf.to_container(cfg.model, resolve=True)
    original["weights_file"] = str(args.original or original["weights_file"])
    if not Path(original["weights_file"]).is_file():
        raise FileNotFoundError(f"--original: weights file {original['weights_file']} not found")
    models = {"original": build_model_from_entry("original", original),
              "finetuned": build_model_from_entry("finetuned", {"checkpoint": args.finetuned})}
    started = time.perf_counter()
    values, timings = measure(models, benchmark, args.splits, args.methods, images=args.images,
                              fractions=fractions, batch_size=args.batch_size)
    elapsed = time.perf_counter() - started
    out = args.out or Path(cfg.paths.log_dir) / "explanation_quality" / time.strftime(
        "%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "explanation_quality.csv", values)
    write_csv(out / "explanation_quality_timing.csv", timings)
    counts = sorted({row["images"] for row in values})
    grid = " ".join(f"{f:g}" for f in fractions)
    lines = [
        "### Explanation quality: original vs relevance-fine-tuned", "",
        f"Benchmark `{benchmark}`, {'/'.join(map(str, counts))} images per split "
        f"(evenly spaced); original: `{original['weights_file']}`; fine-tuned: "
        f"`{args.finetuned}`. Percent. Perturbation AUC: trapezoid of top-1 (%) over the "
        f"removed fraction {grid} (max {100 * (fractions[-1] - fractions[0]):g}); removed "
        "pixels black, ordered by the predicted class's relevance. Segmentation: the "
        "predicted class's map thresholded at its mean. Share: relevance of the labelled "
        "class on the object.", "",
        *quality_table(values, list(models), args.splits, args.methods), "",
        "#### Time per image of each part (CPU, mean over models and splits)", "",
        "`forward`: the scorer's own forward; `relevance`: the maps (the predicted class's, "
        "shared by perturbation and segmentation, and the label's for the share); the "
        "metrics after it on their own. Ratios to top-1 were measured in the same run.", "",
        *timing_table(timings, args.methods), "",
        f"{len(args.splits)} splits x {len(args.methods)} methods x {len(models)} models in "
        f"{elapsed:.0f} s: `python benchmarks/explanation_quality.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
    ]
    (out / "explanation_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out}")
    return out


if __name__ == "__main__":
    main()
