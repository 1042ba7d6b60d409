"""The data layer's shared types: one ``Sample`` per sentence (MNER) or entity pair (MRE), and ``DataError``.

Every reader returns ``Sample`` objects with absolute image paths, so that the encoder and the
visual feature provider never need to know which on-disk layout a dataset came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.errors import DataError

__all__ = ["DataError", "Sample"]


@dataclass
class Sample:
    tokens: list[str]
    image: str
    """Absolute path of the whole image (may be missing: a blank image is used then)."""
    crops: list[str]
    """Absolute paths of the object crops, best first, all that the crop dict lists (the encoder keeps max_objects)."""
    labels: list[str] | None = None
    """MNER: one BIO tag per token over PER/LOC/ORG/MISC (OTHER already read as MISC)."""
    head: tuple[int, int] | None = None
    """MRE: token span [start, end) of the head entity."""
    tail: tuple[int, int] | None = None
    relation: str | None = None
    """MRE: relation name, a key of rel2id."""
    source: str = ""
    """``file:line`` where the sample starts, for messages."""
