"""Figure style shared by the report figures (sized for one column of a two-column paper), and how they are saved:
``.png`` and ``.pdf``, atomically (a temp file in the same folder, then ``os.replace``; see ``model.fileio``)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib

from model.fileio import atomic_path

matplotlib.use("Agg")  # no display on a cluster node; also keeps figures identical across machines

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)

COLUMN_WIDTH_IN = 3.3
ONE_COLUMN_IN = 3.5
"""A combined or compared figure one column of a paper wide (``report.py --combine``, ``--compare``)."""
TWO_COLUMN_IN = 7.2
"""The same across both columns."""
FIGURE_HEIGHT_IN = 2.4
PNG_DPI = 200
# Metadata that would otherwise stamp the build time or tool version into the file.
PDF_METADATA = {"CreationDate": None}
PNG_METADATA = {"Software": None}
FONT_PT = 8
SMALL_FONT_PT = 7

STYLE: dict[Any, Any] = {  # rc keys (matplotlib types them as literals)
    "font.size": FONT_PT,
    "axes.labelsize": FONT_PT,
    "axes.titlesize": FONT_PT,
    "xtick.labelsize": SMALL_FONT_PT,
    "ytick.labelsize": SMALL_FONT_PT,
    "legend.fontsize": SMALL_FONT_PT,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable and searchable
    "svg.hashsalt": "i2srm-study",
}


@contextmanager
def paper_style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(height_in: float = FIGURE_HEIGHT_IN) -> Figure:
    """A pyplot-free figure (no global state, safe to build many in one process), tight layout."""
    return Figure(figsize=(COLUMN_WIDTH_IN, height_in), layout="tight")


def mark_significance(ax: Any, points: Sequence[tuple[float, float, str]], color: str = "C0") -> None:
    """Significance stars (``study.reports.significance.STARS``) just above each (x, y) point that has one."""
    for x, y, mark in points:
        if mark:
            ax.annotate(mark, (x, y), xytext=(0, 2.5), textcoords="offset points", ha="center", va="bottom",
                        fontsize=SMALL_FONT_PT, color=color, zorder=4)


STARS_NOTE = "*: p(Holm) < 0.05 vs reference"


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
