"""Every text file a report writes, from one document model: CSV rows, and a report as a list of blocks written
as Markdown (``REPORT.md``, the ``*.md`` tables), as one self-contained HTML page (``REPORT.html``) and, for its
tables, as LaTeX (booktabs).

Text in blocks may use three inline marks, the same in Markdown and HTML: ```code```, ``**bold**`` and
``[text](link)``. Table cells are plain text already formatted (``81.00 ± 1.41``, ``<0.001``, ``-1.67*``); each
renderer escapes them for its language. Bold cells mark the best value of a column (or a row, as the caller
decides). The page embeds its figures as base64 PNG and has no script and no external style or font, so it opens
from disk in any browser and can be sent as one file; its links to the other files of the folder are relative.
Every file is written atomically (``model.fileio``) with ``\\n`` line ends, so a rebuild is byte-identical.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from model.fileio import atomic_write_text

MD_NAME = "REPORT.md"
HTML_NAME = "REPORT.html"
ALIGN_MD = {"l": "---", "r": "---:", "c": ":---:"}
ALIGN_CSS = {"l": "left", "r": "right", "c": "center"}
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #222; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.92em; }
pre { background: #f4f4f4; padding: 0.6rem 0.8rem; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; }
thead th { border-bottom: 2px solid #888; }
img { max-width: 100%; height: auto; display: block; margin: 0.6rem 0; }
""".strip()
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


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
class Image:
    path: Path
    """A PNG beside the report; linked from Markdown, embedded in HTML."""
    alt: str


@dataclass(frozen=True)
class Table:
    head: Sequence[str]
    rows: Sequence[Sequence[str]]
    align: str
    """One of l, r, c per column."""
    bold: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    """(row, column) of cells set in bold."""
    head_tex: Sequence[str] | None = None
    """The head as LaTeX (math, ``\\texttt``); escaped ``head`` when None."""

    def __post_init__(self) -> None:
        if len(self.align) != len(self.head) or any(len(r) != len(self.head) for r in self.rows):
            raise ValueError(f"table of {len(self.head)} columns with align {self.align!r} and row lengths "
                             f"{sorted({len(r) for r in self.rows})}")


Block = Union[Heading, Para, Bullets, Code, Table, Image]


def best_in_column(values: Sequence[float | None], mode: str = "max") -> int | None:
    """Row index of the best value of a column (first of equals); None when the column is empty."""
    present = [(v, i) for i, v in enumerate(values) if v is not None and v == v]
    if not present:
        return None
    pick = max if mode == "max" else min
    best = pick(v for v, _ in present)
    return next(i for v, i in present if v == best)


def code_list(names: Iterable[str]) -> str:
    """``a``, ``b``: names (keys, studies) as code in running text."""
    return ", ".join(f"`{n}`" for n in names)


# -------------------------------------------------------------------------------------------------------- CSV

def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Rows are already formatted strings."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------------- Markdown

def markdown_table(table: Table) -> list[str]:
    def cell(i: int, j: int, text: str) -> str:
        text = text.replace("|", r"\|").replace("*", r"\*")  # significance stars are not emphasis
        return f"**{text}**" if (i, j) in table.bold and text else text

    lines = ["| " + " | ".join(h.replace("|", r"\|") for h in table.head) + " |",
             "|" + "|".join(ALIGN_MD[a] for a in table.align) + "|"]
    lines += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(row)) + " |" for i, row in enumerate(table.rows)]
    return lines


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
        elif isinstance(b, Table):
            out += markdown_table(b)
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path.name})"]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------------ LaTeX

def tex_escape(text: str) -> str:
    """Character by character, so that an inserted backslash is not escaped again."""
    out = "".join(_TEX.get(c, c) for c in text)
    return out.replace("±", r"$\pm$").replace("—", "---").replace("−", "-").replace("<", r"$<$") \
        .replace("Δ", r"$\Delta$")


def tex_code(text: str) -> str:
    """A key or name set in typewriter type."""
    return rf"\texttt{{{tex_escape(text)}}}"


def tex_label(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_:" else "-" for c in text)


def latex_table(table: Table, caption: str, label: str) -> str:
    """A ``table`` float; ``caption`` is LaTeX already (the caller escapes what it inserts)."""
    head = list(table.head_tex) if table.head_tex is not None else [tex_escape(h) for h in table.head]

    def cell(i: int, j: int, text: str) -> str:
        tex = tex_escape(text)
        return rf"\textbf{{{tex}}}" if (i, j) in table.bold and text else tex

    lines = [
        r"% Generated by study/report.py from the stored trials; needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"  \centering",
        rf"  \caption{{{caption}}}",
        rf"  \label{{{label}}}",
        r"  \begin{tabular}{" + table.align + "}",
        r"    \toprule",
        "    " + " & ".join(head) + r" \\",
        r"    \midrule",
    ]
    lines += ["    " + " & ".join(cell(i, j, c) for j, c in enumerate(row)) + r" \\"
              for i, row in enumerate(table.rows)]
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(stem: Path, table: Table, caption_md: str, caption_tex: str, label: str) -> list[Path]:
    """``stem.md`` (the caption, then the table) and ``stem.tex`` (a float), the two forms a paper takes."""
    md = "\n".join([caption_md, "", *markdown_table(table)]) + "\n"
    return [atomic_write_text(stem.with_name(stem.name + ".md"), md),
            atomic_write_text(stem.with_name(stem.name + ".tex"), latex_table(table, caption_tex, label))]


# ------------------------------------------------------------------------------------------------------- HTML

def inline(text: str) -> str:
    """Escape ``text`` and turn its inline marks (code, bold, links) into HTML."""
    parts = _CODE.split(text)  # odd parts are code spans: escaped only
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        esc = html.escape(part, quote=False)
        esc = _BOLD.sub(r"<strong>\1</strong>", esc)
        esc = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', esc)
        out.append(esc)
    return "".join(out)


def html_table(table: Table) -> str:
    def cell(tag: str, i: int, j: int, text: str) -> str:
        body = html.escape(text)
        if (i, j) in table.bold and text:
            body = f"<strong>{body}</strong>"
        return f'<{tag} style="text-align:{ALIGN_CSS[table.align[j]]}">{body}</{tag}>'

    out = ["<table>"]
    out.append("<thead><tr>" + "".join(cell("th", -1, j, h) for j, h in enumerate(table.head)) + "</tr></thead>")
    out.append("<tbody>")
    out += ["<tr>" + "".join(cell("td", i, j, c) for j, c in enumerate(row)) + "</tr>"
            for i, row in enumerate(table.rows)]
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(title: str, blocks: Sequence[Block]) -> str:
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>\n" + "\n".join(f"<li>{inline(item)}</li>" for item in b.items) + "\n</ul>")
        elif isinstance(b, Code):
            body.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif isinstance(b, Table):
            body.append(html_table(b))
        elif isinstance(b, Image) and b.path.is_file():
            body.append(f'<figure><img src="{png_data_uri(b.path)}" alt="{html.escape(b.alt)}">'
                        f"<figcaption>{inline(b.alt)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_page(folder: Path, title: str, blocks: Sequence[Block]) -> list[Path]:
    """``REPORT.html`` and ``REPORT.md`` of ``folder``, in that order (the Markdown file is the index)."""
    return [atomic_write_text(folder / HTML_NAME, to_html(title, blocks)),
            atomic_write_text(folder / MD_NAME, to_markdown(blocks))]
