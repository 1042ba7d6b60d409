"""Atomic writes for every report file: a temp file in the same folder, then ``os.replace``.

A reader (a browser, LaTeX, a second ``report.py``) never sees a half-written file, and
a crash mid-write leaves the previous version in place.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

# Metadata that would otherwise stamp the build time or tool version into the file.
PDF_METADATA = {"CreationDate": None}
PNG_METADATA = {"Software": None}
PNG_DPI = 200


def _temp_path(path: Path) -> Path:
    """A fresh name beside ``path``; created by the writer, so it gets the usual permissions (umask),
    not ``mkstemp``'s private 0600."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Rows are already formatted strings; ``\\n`` line ends so a rebuild is byte-identical on any OS."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """``stem.png`` (200 dpi) and ``stem.pdf``, both without timestamps in their metadata."""
    out = []
    for suffix, kwargs in ((".png", {"dpi": PNG_DPI, "metadata": PNG_METADATA}),
                           (".pdf", {"metadata": PDF_METADATA})):
        path = stem.with_name(stem.name + suffix)
        tmp = _temp_path(path)
        try:
            fig.savefig(tmp, format=suffix[1:], **kwargs)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        out.append(path)
    return out


def swap_dir(new: Path, final: Path) -> Path:
    """Put the freshly written folder ``new`` in place of ``final``; the old one is removed, not merged.

    POSIX cannot ``rename`` onto a non-empty folder, so the old folder is first moved aside;
    the window in which ``final`` is absent is two renames long.
    """
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
