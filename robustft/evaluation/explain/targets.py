"""Which classes an explanation explains, and what they are called.

A model's class names (:func:`model_class_names`), in this order of precedence: a file of
names (one per line, head order); the dataset's class names when there are as many as the
model has outputs (a model fine-tuned on those class folders); the ImageNet-1k names for
a 1000-way head (``robustft.labels``); else ``class <i>``. A class is named by any of its
aliases, case-insensitively: its full name, each comma-separated synonym of it
(``tabby``, ``tabby cat``), its ImageNet wnid, or its index.

Targets: ``predicted`` (the top class), ``label`` (the image's class folder), ``topk``
(the ``k`` top classes), or named ``classes``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from torch import Tensor

from robustft.labels import (
    IMAGENET_NUM_CLASSES,
    check_unique_class_names,
    imagenet_class_names,
    imagenet_synsets,
)

__all__ = ["ClassNames", "ExplainTarget", "explained_classes", "model_class_names"]


class ExplainTarget(StrEnum):
    predicted = "predicted"
    label = "label"
    topk = "topk"


class ClassNames:
    """``names[i]`` is class ``i``'s full name; ``aliases[i]`` more ways to name it."""

    def __init__(self, names: Sequence[str], *, source: str,
                 aliases: Sequence[Sequence[str]] | None = None) -> None:
        self.names = [str(name) for name in names]
        self.source = source  # where the names come from, for messages
        self._index: dict[str, list[int]] = {}
        for index, name in enumerate(self.names):
            extra = aliases[index] if aliases is not None else ()
            keys = {name, *(part.strip() for part in name.split(",")), *extra, str(index)}
            for alias in keys:
                if alias:
                    self._index.setdefault(alias.lower(), []).append(index)

    def __len__(self) -> int:
        return len(self.names)

    def short(self, index: int) -> str:
        """The first synonym of class ``index`` (``tabby`` of ``tabby, tabby cat``)."""
        return self.names[index].split(",")[0].strip() or self.names[index]

    def close_names(self, name: str, count: int = 5) -> list[str]:
        """Up to ``count`` full class names near ``name``: those containing it, then
        spelling neighbours."""
        wanted = name.strip().lower()
        containing = [full for full in self.names if wanted in full.lower()]
        spelled = [self.names[self._index[alias][0]]
                   for alias in difflib.get_close_matches(wanted, list(self._index), n=count)]
        words: dict[str, list[str]] = {}  # a misspelt word of a longer name ("elefant")
        for full in self.names:
            for word in full.lower().replace(",", " ").split():
                words.setdefault(word, []).append(full)
        near_words = [full for word in difflib.get_close_matches(wanted, list(words), n=count)
                      for full in words[word]]
        return list(dict.fromkeys(containing + spelled[:1] + near_words + spelled))[:count]

    def index_of(self, name: str | int, *, key: str) -> int:
        """The class named ``name``; a ``ValueError`` naming ``key``, the class and a few
        close names when there is none, or when the name fits several classes."""
        matches = sorted(set(self._index.get(str(name).strip().lower(), [])))
        if len(matches) == 1:
            return matches[0]
        where = f"the {len(self)} classes of the model ({self.source})"
        if matches:
            which = ", ".join(f"{i} ({self.names[i]})" for i in matches)
            raise ValueError(f"{key}: {name!r} names {len(matches)} of {where}: {which}; give "
                             "its index instead")
        close = self.close_names(str(name))
        hint = f"; close: {', '.join(repr(c) for c in close)}" if close else ""
        raise ValueError(f"{key}: no class {name!r} among {where}{hint}")


def _read_names_file(path: str, num_classes: int | None) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"class_names: file not found: {file}")
    numbered = [(number, line.strip())
                for number, line in enumerate(file.read_text().splitlines(), 1) if line.strip()]
    names = [text for _, text in numbered]
    check_unique_class_names(names, f"class_names: {file}",
                             line_numbers=[number for number, _ in numbered])
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"class_names: {file} lists {len(names)} names but the model has "
                         f"{num_classes} outputs (one name per line, in head order)")
    return names


def model_class_names(num_classes: int | None, *, names_file: str | None = None,
                      dataset_classes: Sequence[str] | None = None) -> ClassNames:
    """The class names of a model with ``num_classes`` outputs (see module docstring)."""
    if names_file:
        return ClassNames(_read_names_file(names_file, num_classes), source=f"class_names={names_file}")
    if dataset_classes and num_classes == len(dataset_classes):
        return ClassNames(dataset_classes, source="the dataset's class folders")
    if num_classes == IMAGENET_NUM_CLASSES:
        return ClassNames(imagenet_class_names(), source="ImageNet-1k names",
                          aliases=[[wnid] for wnid in imagenet_synsets()])
    if num_classes is None:
        raise ValueError("the model has no classifier head: there are no classes to explain")
    return ClassNames([f"class {i}" for i in range(num_classes)], source="no class names known; "
                      "class_names=<file> names them")


def explained_classes(probabilities: Tensor, *, target: ExplainTarget | str, k: int = 3,
                      classes: Sequence[int] = (), label: int | None = None,
                      image: str = "") -> list[int]:
    """The classes to explain for one image, whose class probabilities are
    ``probabilities`` (C,): the named ``classes`` when given, else by ``target``."""
    if classes:
        return list(classes)
    if target == ExplainTarget.predicted:
        return [int(probabilities.argmax())]
    if target == ExplainTarget.topk:
        if k < 1:
            raise ValueError(f"k must be >= 1 for target=topk, got {k}")
        return [int(i) for i in probabilities.topk(min(k, probabilities.numel())).indices]
    if target == ExplainTarget.label:
        if label is None:
            raise ValueError(f"target=label: {image} has no label (it is not in a class folder); "
                             "give a folder of class folders or a dataset split, or "
                             "target=predicted")
        return [label]
    raise ValueError(f"target must be one of {[t.value for t in ExplainTarget]}, got {target!r}")
