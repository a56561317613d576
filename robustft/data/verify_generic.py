"""Check a user's own images+masks layout (``robustft-data verify generic <root>``).

The layout is the one fine-tuning reads (``robustft.data.generic``), listed with the same
``layout.list_images`` (hidden files such as macOS ``._x.jpg`` skipped, and reported as
skipped). Unlike the training scan, which stops at the first problem, this collects every
one, by kind:

- errors (exit code 1): a missing ``images/`` or ``masks/`` folder, a class folder
  without images, a ``masks/<class>/`` folder without ``images/<class>/``, an image
  without its mask, two images of a class sharing a stem (and so a mask), an image or
  mask that cannot be decoded in full (corrupt, truncated), an image in a mode that is
  not read (32-bit grey, ``docs/image_modes.md``), a multi-channel mask, a mask of
  another size than its image;
- warnings: a mask without any foreground pixel (fine-tuning excludes it by default, see
  ``data.empty_masks``), a mask file without an image (never read);
- skipped: hidden files.

Pairs are decoded with :mod:`robustft.data.pair_checks`, the check the data module runs on
every selected pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from robustft.data.generic import (
    ImageMaskRecord,
    decode_binary_mask,
    orphan_mask_files,
    orphan_mask_folders,
)
from robustft.data.layout import first_stem_clash, list_class_folders, list_images
from robustft.data.pair_checks import inspect_pairs

__all__ = [
    "ERROR_KINDS",
    "SKIPPED_KINDS",
    "WARNING_KINDS",
    "Finding",
    "GenericLayoutReport",
    "exit_code",
    "format_generic_report",
    "verify_generic_layout",
]

# kind -> (singular, plural) as printed; the order is the report's order
ERROR_KINDS: dict[str, tuple[str, str]] = {
    "missing_folder": ("missing folder", "missing folders"),
    "empty_class_folder": ("class folder without images", "class folders without images"),
    "orphan_mask_folder": ("orphan mask folder", "orphan mask folders"),
    "missing_mask": ("missing mask", "missing masks"),
    "stem_clash": ("image sharing its mask with another image",
                   "images sharing their mask with another image"),
    "unreadable_image": ("unreadable image", "unreadable images"),
    "image_mode": ("image in a mode that is not read", "images in a mode that is not read"),
    "unreadable_mask": ("unreadable mask", "unreadable masks"),
    "mask_mode": ("mask with a wrong mode", "masks with a wrong mode"),
    "size_mismatch": ("mask of another size", "masks of another size"),
}
WARNING_KINDS: dict[str, tuple[str, str]] = {
    "empty_mask": ("mask without foreground", "masks without foreground"),
    "orphan_mask_file": ("mask file without an image", "mask files without an image"),
}
SKIPPED_KINDS: dict[str, tuple[str, str]] = {"hidden_file": ("hidden file", "hidden files")}
DEFAULT_EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    path: Path
    detail: str = ""  # e.g. what the decoder said


@dataclass
class GenericLayoutReport:
    root: Path
    num_class_folders: int = 0
    num_images: int = 0
    num_pairs: int = 0  # images whose mask file exists
    findings: dict[str, list[Finding]] = field(default_factory=dict)

    def add(self, kind: str, path: Path, detail: str = "") -> None:
        self.findings.setdefault(kind, []).append(Finding(path, detail))

    def _count(self, kinds: dict[str, tuple[str, str]]) -> int:
        return sum(len(self.findings.get(kind, [])) for kind in kinds)

    @property
    def num_errors(self) -> int:
        return self._count(ERROR_KINDS)

    @property
    def num_warnings(self) -> int:
        return self._count(WARNING_KINDS)

    def paths_by_kind(self) -> dict[str, list[Path]]:
        """kind -> the paths found (kinds with none left out)."""
        return {kind: [f.path for f in found] for kind, found in self.findings.items() if found}


def _hidden_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(folder)
                  if e.is_file() and e.name.startswith("."))


def _scan_class(report: GenericLayoutReport, class_name: str, label: int) -> list[ImageMaskRecord]:
    """Structural checks of one class; the pairs whose mask file exists."""
    root = report.root
    image_folder, mask_folder = root / "images" / class_name, root / "masks" / class_name
    for hidden in _hidden_files(image_folder) + _hidden_files(mask_folder):
        report.add("hidden_file", hidden)
    images = list_images(image_folder)
    report.num_images += len(images)
    if not images:
        report.add("empty_class_folder", image_folder)
    clash = first_stem_clash(images)
    if clash is not None:
        report.add("stem_clash", clash[1], f"shares {mask_folder / (clash[1].stem + '.png')} "
                                           f"with {clash[0].name}")
    for spare in orphan_mask_files(root, class_name, images):
        report.add("orphan_mask_file", spare)
    pairs = []
    for image in images:
        mask = mask_folder / f"{image.stem}.png"
        if mask.is_file():
            pairs.append(ImageMaskRecord(image, mask, label, class_name))
        else:
            report.add("missing_mask", mask)
    return pairs


def verify_generic_layout(root: str | os.PathLike[str], *, decode_images: bool = True,
                          num_threads: int | None = None,
                          progress: bool = True) -> GenericLayoutReport:
    """Every problem of the layout at ``root``; never raises on a bad layout.
    ``decode_images=False`` skips decoding (no unreadable / mode / size / empty checks)."""
    report = GenericLayoutReport(root=Path(root))
    images_dir, masks_dir = report.root / "images", report.root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            report.add("missing_folder", folder)
    if not images_dir.is_dir():
        return report
    class_names = list_class_folders(images_dir)
    report.num_class_folders = len(class_names)
    for orphan in orphan_mask_folders(report.root, class_names):
        report.add("orphan_mask_folder", orphan)
    pairs = [pair for label, class_name in enumerate(class_names)
             for pair in _scan_class(report, class_name, label)]
    report.num_pairs = len(pairs)
    if decode_images and pairs:
        def bar(results, total: int):
            return tqdm(results, total=total, desc="verify generic", unit="pair",
                        disable=not progress)

        for inspection in inspect_pairs(pairs, decode_binary_mask, num_threads=num_threads,
                                        progress=bar):
            for problem in inspection.problems:
                report.add(problem.kind, problem.path, problem.detail)
            if inspection.has_foreground is False:
                report.add("empty_mask", inspection.record.mask_path)
    return report


def _kind_line(report: GenericLayoutReport, level: str, names: tuple[str, str],
               found: list[Finding], examples: int) -> str:
    def shown(finding: Finding) -> str:
        path = finding.path
        text = path.relative_to(report.root).as_posix() if path.is_relative_to(report.root) \
            else str(path)
        return f"{text} ({finding.detail})" if finding.detail else text

    listed = [shown(f) for f in found[:examples]]
    if len(found) > examples:
        listed.append(f"... and {len(found) - examples} more")
    name = names[0] if len(found) == 1 else names[1]
    return f"  {level}: {len(found)} {name}: {', '.join(listed)}"


def format_generic_report(report: GenericLayoutReport, examples: int = DEFAULT_EXAMPLES) -> str:
    """A status line, the counts, then one line per kind found with up to ``examples``
    paths (relative to the root)."""
    if report.num_errors:
        status = f"{report.num_errors} error(s), {report.num_warnings} warning(s)"
    else:
        status = f"OK, {report.num_warnings} warning(s)" if report.num_warnings else "OK"
    lines = [f"generic layout at {report.root}: {status}",
             f"  {report.num_class_folders} class folders, {report.num_images} images, "
             f"{report.num_pairs} with a mask file"]
    for level, kinds in (("error", ERROR_KINDS), ("warning", WARNING_KINDS),
                         ("skipped", SKIPPED_KINDS)):
        for kind, names in kinds.items():
            if report.findings.get(kind):
                lines.append(_kind_line(report, level, names, report.findings[kind], examples))
    return "\n".join(lines)


def exit_code(report: GenericLayoutReport) -> int:
    """0 when the layout has no error (warnings allowed), 1 otherwise."""
    return 1 if report.num_errors else 0
