"""Label protocols: how a model's logits become scores over a dataset's label space.

A protocol is the one place where "which classes compete" is decided. Every evaluation
dataset carries one, and its targets are indices into ``protocol.num_classes``:

- :func:`identity_protocol` — the logits are the scores (ImageNet val / Sketch / V2 /
  SI-Score 1000-way, or a model trained on the generated benchmark's K classes).
- :func:`class_subset_protocol` — ImageNet-A / -R: the 1000 logits restricted to the
  dataset's 200 classes (timm's packaged index lists), so a model's largest logit outside
  the 200 cannot win.
- :func:`projection_protocol` — ObjectNet: per ObjectNet class, the max over the logits
  of the ImageNet classes mapped to it (113 classes).

``kind`` is ``"standard"`` (the field's protocol) or ``"legacy"`` (the public RobustViT
code: everything 1000-way). Legacy numbers are not comparable with standard ones, so
every report carries the kind next to the number.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "IMAGENET_NUM_CLASSES",
    "LabelProtocol",
    "ProtocolKind",
    "check_protocol_kind",
    "check_unique_class_names",
    "class_subset_protocol",
    "imagenet_class_names",
    "identity_protocol",
    "imagenet_protocol",
    "imagenet_synsets",
    "legacy_protocol",
    "projection_protocol",
    "timm_subset_info",
]

IMAGENET_NUM_CLASSES = 1000
ProtocolKind = Literal["standard", "legacy"]
PROTOCOL_KINDS: tuple[str, ...] = ("standard", "legacy")


def check_protocol_kind(kind: str) -> ProtocolKind:
    """Return ``kind`` if it is a known protocol kind, else raise naming the choices."""
    if kind not in PROTOCOL_KINDS:
        raise ValueError(f"unknown protocol {kind!r} (protocol); expected one of {PROTOCOL_KINDS}")
    return kind  # type: ignore[return-value]


@dataclass(frozen=True)
class LabelProtocol:
    """Maps logits of width ``num_inputs`` to scores over ``num_classes`` classes.

    ``groups[c]`` lists the logit columns that class ``c`` takes the max over; a protocol
    whose groups are ``[[0], [1], ...]`` over all inputs is the identity and skips the
    gather. ``class_names[c]`` names class ``c`` (a wnid, an ObjectNet label, a folder).
    """

    name: str
    kind: ProtocolKind
    num_inputs: int
    groups: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError(f"protocol {self.name!r} has no classes")
        for index, group in enumerate(self.groups):
            if not group:
                raise ValueError(f"protocol {self.name!r}: class {index} maps to no logit")
            bad = [column for column in group if not 0 <= column < self.num_inputs]
            if bad:
                raise ValueError(
                    f"protocol {self.name!r}: class {index} maps to logit columns {bad} "
                    f"outside [0, {self.num_inputs})"
                )
        if self.class_names and len(self.class_names) != len(self.groups):
            raise ValueError(
                f"protocol {self.name!r}: {len(self.class_names)} class names for "
                f"{len(self.groups)} classes"
            )

    @property
    def num_classes(self) -> int:
        return len(self.groups)

    @property
    def label(self) -> str:
        """``"<kind>:<name>"``, the string reports print next to every number."""
        return f"{self.kind}:{self.name}"

    @property
    def is_identity(self) -> bool:
        return self.num_classes == self.num_inputs and all(
            group == (index,) for index, group in enumerate(self.groups)
        )

    def scores(self, logits: Tensor) -> Tensor:
        """``(B, num_inputs)`` logits -> ``(B, num_classes)`` scores."""
        if logits.ndim != 2 or logits.shape[1] != self.num_inputs:
            raise ValueError(
                f"protocol {self.label} expects logits of shape (batch, {self.num_inputs}), "
                f"got {tuple(logits.shape)}: is the model's head the right size for this "
                "dataset?"
            )
        if self.is_identity:
            return logits
        if all(len(group) == 1 for group in self.groups):
            columns = torch.tensor([g[0] for g in self.groups], device=logits.device)
            return logits.index_select(1, columns)
        return self._max_over_groups(logits)

    def _max_over_groups(self, logits: Tensor) -> Tensor:
        # Pad every group to the longest with its own first column: max is unchanged.
        width = max(len(group) for group in self.groups)
        padded = [list(group) + [group[0]] * (width - len(group)) for group in self.groups]
        columns = torch.tensor(padded, device=logits.device)  # (C, width)
        gathered = logits[:, columns]  # (B, C, width)
        return gathered.amax(dim=2)


def identity_protocol(
    num_classes: int,
    *,
    name: str | None = None,
    kind: ProtocolKind = "standard",
    class_names: Sequence[str] = (),
) -> LabelProtocol:
    """Scores = logits, ``num_classes`` wide (1000 for ImageNet heads, K for a model
    trained on K classes)."""
    if num_classes < 1:
        raise ValueError(f"identity protocol needs num_classes >= 1, got {num_classes}")
    return LabelProtocol(
        name=name or f"{num_classes}-way",
        kind=check_protocol_kind(kind),
        num_inputs=num_classes,
        groups=tuple((index,) for index in range(num_classes)),
        class_names=tuple(class_names),
    )


def check_unique_class_names(names: Sequence[str], source: str, *,
                             line_numbers: Sequence[int] | None = None) -> None:
    """A ``ValueError`` naming ``source`` (a config key or file) and every repeated name when
    two of ``names`` are the same class name: equal up to case and runs of spaces, as a
    CLIP tokenizer and ``robustft-explain``'s class lookup see them. Two classes with one
    name get identical zero-shot head rows (they can never be told apart) and cannot be
    named apart. Entries are named by their list position (0-based), or by
    ``line_numbers`` (the file line of each name)."""
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        positions.setdefault(" ".join(str(name).lower().split()), []).append(index)
    repeated = [indices for indices in positions.values() if len(indices) > 1]
    if not repeated:
        return
    where, number = ("lines", list(line_numbers)) if line_numbers is not None else (
        "positions", list(range(len(names))))
    listed = "; ".join(
        " and ".join(repr(spelling) for spelling in dict.fromkeys(names[i] for i in indices))
        + f" ({where} {', '.join(str(number[i]) for i in indices)})" for indices in repeated)
    raise ValueError(f"{source}: {len(repeated)} class name(s) repeated: {listed}; each class "
                     "needs a name of its own (names compare ignoring case and spaces)")


def _read_timm_info(file_name: str) -> list[str]:
    data = pkgutil.get_data("timm.data", f"_info/{file_name}")
    if data is None:  # pragma: no cover - timm always ships these
        raise FileNotFoundError(f"timm does not ship data/_info/{file_name}")
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order (timm's packaged list)."""
    synsets = _read_timm_info("imagenet_synsets.txt")
    if len(synsets) != IMAGENET_NUM_CLASSES:  # pragma: no cover
        raise RuntimeError(f"timm's imagenet_synsets.txt has {len(synsets)} entries")
    return synsets


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order, each the WordNet lemmas of its
    wnid joined by ", " (``"tabby, tabby cat"``; timm's packaged lemma list)."""
    lemmas = dict(line.split("\t", 1) for line in _read_timm_info("imagenet_synset_to_lemma.txt"))
    return [lemmas[wnid].strip() for wnid in imagenet_synsets()]


def timm_subset_info(subset: str) -> tuple[list[int], list[str]]:
    """``(imagenet indices, wnids)`` of timm's packaged ``imagenet_{subset}`` lists
    (``subset`` = ``"a"`` or ``"r"``), in the same order."""
    if subset not in ("a", "r"):
        raise ValueError(f"unknown ImageNet subset {subset!r}; expected 'a' or 'r'")
    indices = [int(line) for line in _read_timm_info(f"imagenet_{subset}_indices.txt")]
    wnids = _read_timm_info(f"imagenet_{subset}_synsets.txt")
    if len(indices) != len(wnids):  # pragma: no cover
        raise RuntimeError(f"timm's imagenet_{subset} indices and synsets differ in length")
    return indices, wnids


def class_subset_protocol(subset: str) -> LabelProtocol:
    """ImageNet-A (``"a"``) or ImageNet-R (``"r"``): the 1000 logits restricted to the
    dataset's 200 classes, in timm's order; target ``c`` = the c-th wnid of that list."""
    indices, wnids = timm_subset_info(subset)
    return LabelProtocol(
        name=f"imagenet-{subset}-{len(indices)}-of-1000",
        kind="standard",
        num_inputs=IMAGENET_NUM_CLASSES,
        groups=tuple((index,) for index in indices),
        class_names=tuple(wnids),
    )


def projection_protocol(
    groups: Sequence[Sequence[int]],
    *,
    name: str,
    class_names: Sequence[str] = (),
    num_inputs: int = IMAGENET_NUM_CLASSES,
) -> LabelProtocol:
    """Per class ``c``, the max over logits ``groups[c]`` (ObjectNet: an ObjectNet class
    mapped to several ImageNet classes scores as the best of them)."""
    return LabelProtocol(
        name=name,
        kind="standard",
        num_inputs=num_inputs,
        groups=tuple(tuple(int(column) for column in group) for group in groups),
        class_names=tuple(class_names),
    )


def legacy_protocol() -> LabelProtocol:
    """The public RobustViT code's protocol for every ImageNet-derived dataset: all 1000
    logits compete and the target is an ImageNet index (ImageNet-A/-R unrestricted,
    ObjectNet's target = its first mapped ImageNet class)."""
    return identity_protocol(
        IMAGENET_NUM_CLASSES, name="1000-way", kind="legacy", class_names=imagenet_synsets()
    )


def imagenet_protocol(kind: ProtocolKind = "standard") -> LabelProtocol:
    """1000-way ImageNet protocol (val, Sketch, V2, SI-Score) of the given kind."""
    if check_protocol_kind(kind) == "legacy":
        return legacy_protocol()
    return identity_protocol(IMAGENET_NUM_CLASSES, name="1000-way", class_names=imagenet_synsets())
