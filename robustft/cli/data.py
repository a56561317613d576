"""``robustft-data``: dataset utilities.

    robustft-data synth ROOT [--num-classes K] [--pretrain-per-class N] [--train-per-class N]
                             [--eval-per-class N] [--tie P] [--plain-prob P]
                             [--marking-contrast C] [--seed S] [--image-size PX] [--overwrite]
    robustft-data verify DATASET ROOT [--no-counts] [--no-decode]
    robustft-data verify generic ROOT [--no-decode] [--examples N]   (your images/ + masks/)
    robustft-data list
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from robustft.cli.errors import one_line_errors


def _synth(args: argparse.Namespace) -> int:
    from robustft.synth import SynthConfig, generate_benchmark

    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(SynthConfig)
                 if getattr(args, field.name, None) is not None}
    info = generate_benchmark(Path(args.root), SynthConfig(**overrides), overwrite=args.overwrite)
    counts = {split: entry["count"] for split, entry in info["splits"].items()}
    print(f"benchmark at {args.root}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.dataset == "generic":
        from robustft.data.verify_generic import (
            exit_code,
            format_generic_report,
            verify_generic_layout,
        )

        generic = verify_generic_layout(args.root, decode_images=not args.no_decode)
        print(format_generic_report(generic, examples=args.examples))
        return exit_code(generic)
    from robustft.data.verify import exit_code, format_report, verify_dataset

    report = verify_dataset(args.dataset, args.root, check_counts=not args.no_counts,
                            decode_images=not args.no_decode)
    print(format_report(report))
    return exit_code(report)


def _list(_args: argparse.Namespace) -> int:
    from robustft.data.descriptors import list_descriptors

    print("\n".join(list_descriptors()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustft-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="generate the spurious-background benchmark")
    synth.add_argument("root", help="output directory")
    synth.add_argument("--num-classes", dest="num_classes", type=int)
    synth.add_argument("--pretrain-per-class", dest="pretrain_per_class", type=int,
                       help="images per class of the pre-training split")
    synth.add_argument("--train-per-class", dest="train_per_class", type=int,
                       help="images per class of the fine-tuning pool (train)")
    synth.add_argument("--eval-per-class", dest="eval_per_class", type=int)
    synth.add_argument("--tie", type=float, help="P(background matches the class) when tied")
    synth.add_argument("--plain-prob", dest="plain_prob", type=float,
                       help="share of plain-backdrop images in pretrain / in_distribution")
    synth.add_argument("--marking-contrast", dest="marking_contrast", type=float,
                       help="class-specific markings inside the objects (0 = plain fill)")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--image-size", dest="image_size", type=int)
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a benchmark generated with other settings")
    synth.set_defaults(run=_synth)
    verify = commands.add_parser(
        "verify", help="check a dataset copy against its descriptor "
                       "(data_manifests/<name>.yaml), or your own image/mask layout (generic)")
    verify.add_argument("dataset", help="dataset name (robustft-data list), or 'generic' for "
                                        "<root>/images/<class>/ + <root>/masks/<class>/")
    verify.add_argument("root", help="the dataset's root folder")
    verify.add_argument("--no-counts", action="store_true", help="skip class/image counts")
    verify.add_argument("--no-decode", action="store_true", help="do not decode every image")
    verify.add_argument("--examples", type=int, default=5,
                        help="generic: example paths printed per kind of problem")
    verify.set_defaults(run=_verify)
    commands.add_parser("list", help="list the dataset descriptors").set_defaults(run=_list)
    return parser


@one_line_errors("robustft-data")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
