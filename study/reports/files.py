"""The report files that need more than ``model.fileio.atomic_write_text``: CSV tables and figures, written
atomically as well (a temp file in the same folder, then ``os.replace``; see ``model.fileio``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

from model.fileio import atomic_path, atomic_write_text

# Metadata that would otherwise stamp the build time or tool version into the file.
PDF_METADATA = {"CreationDate": None}
PNG_METADATA = {"Software": None}
PNG_DPI = 200


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Rows are already formatted strings; ``\\n`` line ends so a rebuild is byte-identical on any OS."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """``stem.png`` (200 dpi) and ``stem.pdf``, both without timestamps in their metadata."""
    out = []
    for suffix, kwargs in ((".png", {"dpi": PNG_DPI, "metadata": PNG_METADATA}),
                           (".pdf", {"metadata": PDF_METADATA})):
        path = stem.with_name(stem.name + suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], **kwargs)
        out.append(path)
    return out
