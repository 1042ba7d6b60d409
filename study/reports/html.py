"""``REPORT.html``: the report's blocks as one self-contained page (figures embedded as base64 PNG, no
script, no external style or font), so it opens from disk in any browser and can be sent as one file.
Links to the other files of the folder are relative and work while the page sits beside them.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Sequence

from model.fileio import atomic_write_text
from study.reports.document import Block, Bullets, Code, Heading, Image, Para, TableBlock
from study.reports.markup import html_table

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
        elif isinstance(b, TableBlock):
            body.append(html_table(b.table))
        elif isinstance(b, Image) and b.path.is_file():
            body.append(f'<figure><img src="{png_data_uri(b.path)}" alt="{html.escape(b.alt)}">'
                        f"<figcaption>{inline(b.alt)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_html(path: Path, title: str, blocks: Sequence[Block]) -> Path:
    return atomic_write_text(path, to_html(title, blocks))
