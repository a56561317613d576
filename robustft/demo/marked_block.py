"""Generated text inside a hand-written file: the lines between a begin and an end marker
(e.g. ``<!-- compare:begin -->`` / ``<!-- compare:end -->`` in docs/demo.md) are replaced,
everything else is kept byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["replace_marked_block", "replace_marked_block_in_file"]


def replace_marked_block(text: str, content: str, *, name: str, source: str = "text") -> str:
    """``text`` with what lies between ``<!-- {name}:begin -->`` and ``<!-- {name}:end -->``
    replaced by ``content`` (the marker lines stay). Exactly one pair, begin before end."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{source}: expected one {begin} and one {end} line, found "
                         f"{text.count(begin)} and {text.count(end)}")
    head, rest = text.split(begin)
    if end not in rest:
        raise ValueError(f"{source}: {end} comes before {begin}")
    _old, tail = rest.split(end)
    return f"{head}{begin}\n{content.strip(chr(10))}\n{end}{tail}"


def replace_marked_block_in_file(path: str | os.PathLike[str], content: str, *,
                                 name: str) -> Path:
    """Rewrite ``path`` with its ``name`` block replaced (see :func:`replace_marked_block`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (the file whose {name} block is generated)")
    path.write_text(replace_marked_block(path.read_text(), content, name=name, source=str(path)))
    return path
