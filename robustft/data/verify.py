"""Check a user's copy of a dataset against its descriptor (``robustft-data verify``).

:func:`verify_dataset` never raises on a bad copy: it collects every problem — missing
required files, missing / unknown class folders, count mismatches, unreadable images
(each with its path) — into a :class:`VerifyReport`. :func:`format_report` prints it;
:func:`exit_code` is 0 when the copy is fine and 1 when there is any problem.

Images are listed with ``robustft.data.layout.list_images``, the listing every reader
uses (its extensions; hidden files skipped), and decoded fully (a truncated JPEG passes a
header check) in a thread pool, with a progress bar, so a real 50,000-image copy takes a
minute or two and a miniature copy well under a second.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from robustft.data.descriptors import DatasetDescriptor, load_descriptor
from robustft.data.layout import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    list_class_folders,
    list_images,
    load_rgb,
)
from robustft.labels import imagenet_synsets, timm_subset_info

__all__ = ["VerifyReport", "exit_code", "format_report", "verify_dataset"]

MAX_LISTED = 20  # per problem kind in the printed report; the report object keeps all


@dataclass
class VerifyReport:
    name: str
    root: Path
    num_class_folders: int = 0
    num_images: int = 0
    missing_files: list[Path] = field(default_factory=list)
    missing_folders: list[Path] = field(default_factory=list)
    unknown_folders: list[Path] = field(default_factory=list)
    count_mismatches: list[str] = field(default_factory=list)
    unreadable_images: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_problems(self) -> int:
        return (
            len(self.missing_files)
            + len(self.missing_folders)
            + len(self.unknown_folders)
            + len(self.count_mismatches)
            + len(self.unreadable_images)
        )

    @property
    def ok(self) -> bool:
        return self.num_problems == 0


def _expected_folders(descriptor: DatasetDescriptor, root: Path) -> set[str] | None:
    """Expected class-folder names; None when any subset of a known set is fine."""
    source = descriptor.class_folders
    if source == "timm_synsets":
        return set(imagenet_synsets())
    if source in ("timm_a", "timm_r"):
        return set(timm_subset_info(source[-1])[1])
    if source == "integers_0_999":
        return {str(i) for i in range(1000)}
    if source == "objectnet_mapping":
        mapping = root / "mappings" / "folder_to_objectnet_label.json"
        return set(json.loads(mapping.read_text())) if mapping.is_file() else None
    if source == "si_score_classes":
        classes = root / "foreground_classes.csv"
        if not classes.is_file():
            return None
        with classes.open(newline="") as handle:
            return {row["label"] for row in csv.DictReader(handle)}
    return None  # timm_synsets_subset


def _decode(path: Path) -> str | None:
    try:
        load_rgb(path)
    except CorruptImageError as error:
        return str(error).split(": ", 1)[-1]
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return None


def _check_tree(
    descriptor: DatasetDescriptor,
    root: Path,
    report: VerifyReport,
    *,
    check_counts: bool,
    decode_images: bool,
    num_threads: int,
    progress: bool,
) -> None:
    for relative in descriptor.required_files:
        if not (root / relative).is_file():
            report.missing_files.append(root / relative)
    if descriptor.class_folders == "none":
        return  # a dataset in files (required_files), no class folders to check
    image_dir = root / descriptor.image_dir
    if not image_dir.is_dir():
        report.missing_folders.append(image_dir)
        return
    found = list_class_folders(image_dir)
    expected = _expected_folders(descriptor, root)
    if descriptor.class_folders == "timm_synsets_subset":
        known = set(imagenet_synsets())
        report.unknown_folders += [image_dir / f for f in found if f not in known]
    elif expected is not None:
        report.unknown_folders += [image_dir / f for f in found if f not in expected]
        report.missing_folders += [image_dir / f for f in sorted(expected - set(found))]
    # listed exactly as the readers list them (hidden files such as ._x.jpg skipped)
    images = [path for folder in found for path in list_images(image_dir / folder)]
    report.num_class_folders += len(found)
    report.num_images += len(images)
    if check_counts:
        if descriptor.num_classes is not None and len(found) != descriptor.num_classes:
            report.count_mismatches.append(
                f"{image_dir}: {len(found)} class folders, expected {descriptor.num_classes}"
            )
        if descriptor.num_images is not None and len(images) != descriptor.num_images:
            report.count_mismatches.append(
                f"{image_dir}: {len(images)} images, expected {descriptor.num_images}"
            )
    if not images:
        report.count_mismatches.append(
            f"{image_dir}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    if decode_images and images:
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            results = pool.map(_decode, images)
            bar = tqdm(
                results,
                total=len(images),
                desc=f"verify {descriptor.name}",
                unit="img",
                disable=not progress,
            )
            for path, reason in zip(images, bar, strict=True):
                if reason is not None:
                    report.unreadable_images.append((path, reason))


def verify_dataset(
    name: str,
    root: str | os.PathLike[str],
    *,
    descriptor: DatasetDescriptor | None = None,
    check_counts: bool = True,
    decode_images: bool = True,
    num_threads: int = 8,
    progress: bool = True,
) -> VerifyReport:
    """Compare the copy at ``root`` with the descriptor ``name`` (``data_manifests/<name>.yaml``,
    or ``descriptor`` when given). ``check_counts=False`` skips the class/image count check
    (for a deliberately partial copy)."""
    descriptor = descriptor or load_descriptor(name)
    root = Path(root)
    report = VerifyReport(name=descriptor.name, root=root)
    if not root.is_dir():
        report.missing_folders.append(root)
        return report
    if descriptor.subsets:
        for subset in descriptor.subsets:
            subset_root = root / subset
            if not subset_root.is_dir():
                report.missing_folders.append(subset_root)
                continue
            # counts are per subset in the descriptor (class count) - images are not fixed
            _check_tree(
                descriptor,
                subset_root,
                report,
                check_counts=check_counts,
                decode_images=decode_images,
                num_threads=num_threads,
                progress=progress,
            )
    else:
        _check_tree(
            descriptor,
            root,
            report,
            check_counts=check_counts,
            decode_images=decode_images,
            num_threads=num_threads,
            progress=progress,
        )
    if descriptor.notes:
        report.notes.append(descriptor.notes)
    return report


def _listed(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    lines = [f"  {title} ({len(items)}):"]
    lines += [f"    {item}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"    ... and {len(items) - MAX_LISTED} more")
    return lines


def format_report(report: VerifyReport) -> str:
    """Human-readable report: a summary line, then each problem kind with its paths."""
    status = "OK" if report.ok else f"{report.num_problems} problem(s)"
    lines = [
        f"{report.name} at {report.root}: {status}",
        f"  {report.num_class_folders} class folders, {report.num_images} images",
    ]
    lines += _listed("missing files", [str(p) for p in report.missing_files])
    lines += _listed("missing folders", [str(p) for p in report.missing_folders])
    lines += _listed("unknown folders", [str(p) for p in report.unknown_folders])
    lines += _listed("count mismatches", report.count_mismatches)
    lines += _listed(
        "unreadable images", [f"{p}: {reason}" for p, reason in report.unreadable_images]
    )
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def exit_code(report: VerifyReport) -> int:
    """0 when the copy matches its descriptor, 1 when anything is wrong."""
    return 0 if report.ok else 1
