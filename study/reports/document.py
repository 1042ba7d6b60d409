"""A report as a list of blocks, written once and rendered twice: Markdown here, HTML in ``html.py``.

Text in blocks may use three inline marks, the same in both renderings: ```code```, ``**bold**`` and
``[text](link)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from study.reports.markup import Table, markdown


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class TableBlock:
    table: Table


@dataclass(frozen=True)
class Image:
    path: Path
    """A PNG beside the report; linked from Markdown, embedded in HTML."""
    alt: str


Block = Union[Heading, Para, Bullets, Code, TableBlock, Image]


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text]
        elif isinstance(b, Para):
            out += [b.text]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items]
        elif isinstance(b, Code):
            out += ["    " + line if line else "" for line in b.text.splitlines()]
        elif isinstance(b, TableBlock):
            out += markdown(b.table)
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path.name})"]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
