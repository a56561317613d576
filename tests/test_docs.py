"""The documentation holds together: every relative link of the README and of ``docs/``
reaches a file (and, with ``#anchor``, a heading of it), and the page ``make compare`` and
``make compare-tuned`` write into holds exactly one ordered block for each of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from robustft.demo.marked_block import replace_marked_block
from robustft.schemas.schemas import CompareSettings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where ``[x](y)`` is no link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces -> -."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(),
                                                  flags=re.S | re.M), flags=re.M)
    return {_anchor(h) for h in headings}


def test_the_helpers_agree_with_hand_made_cases():
    assert _anchor("Loss, optimiser, configs, checkpoints, logging, resume") == \
        "loss-optimiser-configs-checkpoints-logging-resume"
    assert _anchor("Against the baselines: `make compare`") == "against-the-baselines-make-compare"
    text = "see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n![d](d.png)\n"
    assert LINK.findall(_prose(text)) == ["a.md", "d.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(ROOT)})")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def _make_target_page(target: str) -> Path:
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)",
                       (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, f"no make target {target}"
    page = re.search(r"compare\.readme=(\S+)", recipe.group(1))
    assert page, f"make {target} names no compare.readme"
    return ROOT / page.group(1)


@pytest.mark.parametrize(("target", "config"), [("compare", "compare"),
                                                ("compare-tuned", "compare_tuned")])
def test_make_compare_writes_its_own_block_of_the_demo_page(target, config):
    page = _make_target_page(target)
    assert page == ROOT / "docs" / "demo.md"
    settings = OmegaConf.load(ROOT / "configs" / f"{config}.yaml").compare
    block = settings.get("readme_block", CompareSettings().readme_block)
    assert block == config
    # raises unless the page has exactly one begin and one end marker, in that order
    replace_marked_block(page.read_text(), "x", name=block, source=str(page))
