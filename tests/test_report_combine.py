"""``python study/report.py --combine`` / ``--compare`` and ``REPORT.html`` on two stored studies (their records
written as study/run.py writes them, their reports built by report.py), and every output is read back with a
stock client: pandas for CSV, pypdf for PDF, html.parser for HTML, Pillow for the PNGs.
LaTeX: no TeX engine installs from PyPI, so the .tex files are checked for balance (braces, environments,
columns per row) rather than compiled.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pypdf import PdfReader
from scipy import stats

from tests.helpers import write_study
from ray_cluster import run_main
from study.report import main as report_main

ROOT = Path(__file__).resolve().parent.parent
REPORT = str(ROOT / "study" / "report.py")
DPI = 200
def tiny(results: Path, name: str, deltas: list[float], variant: str, level: float) -> Path:
    """A stored study as study/run.py leaves it (records written by ``write_study``, reports by report.py):
    ``i2srm.delta`` over ``deltas`` x seeds 1-3, two epochs each, made-up F1 around ``level``."""
    rng = np.random.default_rng(int(level))
    runs = []
    for c, delta in enumerate(deltas):
        for seed in (1, 2, 3):
            dev = level + 10 * delta + float(rng.normal(0, 2))
            test = dev - 1 + float(rng.normal(0, 1))
            runs.append({"trial_id": f"c{c:04d}-s{seed}", "configuration": c, "status": "completed", "seed": seed,
                         "params": {"i2srm.delta": delta}, "dev": [dev - 3, dev], "test": [test - 3, test]})
    space = {"study": name, "search": {"i2srm.delta": {"grid": deltas}}, "sampler": "grid", "seeds": [1, 2, 3],
             "reference": {"i2srm.delta": 0.7}, "reports": ["summary", "sensitivity"]}
    folder = write_study(results / name, name, space, runs, base={"i2srm.variant": variant})
    proc = report([str(folder)], results.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny_a: delta 0, 0.35, 0.7 x seeds 1-3 (reference variant); tiny_b: delta 0, 0.7 under the clean variant."""
    root = tmp_path_factory.mktemp("combine")
    results = root / "results"
    return {"root": root, "a": tiny(results, "tiny_a", [0.0, 0.35, 0.7], "reference", 60.0),
            "b": tiny(results, "tiny_b", [0.0, 0.7], "clean", 55.0)}


def report(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python study/report.py *args`` from ``cwd``, in this process (``ray_cluster.run_main``)."""
    return run_main(report_main, args, cwd, name=REPORT)


# ----------------------------------------------------------------------------- readers

class PageParser(HTMLParser):
    """Tags must nest and close; collects images, tables, text."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tables = 0
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "table":
            self.tables += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(path: Path) -> PageParser:
    page = PageParser()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == []
    return page


def decoded_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    img = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
    img.load()
    assert img.format == "PNG"
    return img


def check_latex(text: str) -> None:
    """Balanced braces and $, environments that nest, and every row of the tabular as wide as its spec."""
    unescaped = re.sub(r"\\[{}$%&_#]", "", text)  # escaped characters first, then comments
    body = "\n".join(line.split("%")[0] for line in unescaped.splitlines())
    depth = 0
    for c in body:
        depth += {"{": 1, "}": -1}.get(c, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "an unclosed {"
    assert body.count("$") % 2 == 0, "an unclosed $"
    envs: list[str] = []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", body):
        if kind == "begin":
            envs.append(name)
        else:
            assert envs and envs.pop() == name
    assert envs == []
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", text).group(1)
    rows = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    head = text.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    for row in [head, *rows]:
        row = re.sub(r"\\&", "", row)
        assert row.rstrip().endswith(r"\\") and row.count("&") == len(spec) - 1, row
        assert row.count("$") % 2 == 0, row


# ----------------------------------------------------------------------------- one study's REPORT.html

def test_report_html_is_self_contained(studies: dict[str, Path]) -> None:
    a = studies["a"]
    page = parse_html(a / "REPORT.html")
    assert len(page.images) == 1 and page.images[0]["alt"].startswith("F1 against")
    img = decoded_png(page.images[0]["src"])
    assert img.size == (660, 480)  # the sensitivity figure, 3.3 x 2.4 in at 200 dpi
    assert img.tobytes() == Image.open(a / "sensitivity_i2srm.delta.png").convert(img.mode).tobytes()
    text = "".join(page.text)
    best = pd.read_csv(a / "summary.csv")
    rerun = re.findall(r"python -m model\.train --config results/tiny_a/(trials/c\d+-s\d+/config\.yaml)", text)
    assert rerun and all((a / path).is_file() for path in rerun)  # the best configuration's runs, each as it ran
    assert page.tables >= 2 and "Significance against the reference" in text
    assert not [h for h in page.links if "://" in h]  # nothing outside the folder
    assert all((a / h).exists() for h in page.links), page.links
    assert len(best) == 3 and (a / "REPORT.md").is_file()
    source = (a / "REPORT.html").read_text(encoding="utf-8")
    assert "<script" not in source and "http" not in source.replace("http-equiv", "")


def test_rebuilding_one_study_still_works(studies: dict[str, Path]) -> None:
    proc = report([str(studies["a"])], studies["root"])
    assert proc.returncode == 0 and proc.stdout.startswith("wrote ") and proc.stdout.strip().endswith("REPORT.md")


# ----------------------------------------------------------------------------- --combine

@pytest.fixture(scope="module")
def combined(studies: dict[str, Path]) -> Path:
    out = studies["root"] / "paper"
    proc = report(["--combine", str(studies["a"]), str(studies["b"]), "--out", str(out)], studies["root"])
    assert proc.returncode == 0, proc.stderr
    return out


def test_combined_figure_widths_and_pdf(combined: Path) -> None:
    for width, inches in (("1col", 3.5), ("2col", 7.2)):
        png = Image.open(combined / f"sensitivity_{width}.png")
        assert png.size[0] == round(inches * DPI)
        pdf = PdfReader(combined / f"sensitivity_{width}.pdf")
        assert len(pdf.pages) == 1 and float(pdf.pages[0].mediabox.width) == pytest.approx(inches * 72)
        text = pdf.pages[0].extract_text()
        assert "tiny_a" in text and "tiny_b" in text and "i2srm.delta" in text and "test F1 (%)" in text


def test_combined_panels_share_one_y_axis(studies: dict[str, Path]) -> None:
    from study.reports.load import load_study
    from study.reports.studies import figure, labels, panels

    ss = [load_study(studies["a"]), load_study(studies["b"])]
    for by, n in (("study", 2), ("dataset", 1), ("key", 1)):
        layout = panels(ss, ["i2srm.delta"], labels(ss), by)
        assert len(layout) == n
        fig = figure(ss, labels(ss), layout, "2col")
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == n
        assert all(axes[0].get_shared_y_axes().joined(axes[0], ax) for ax in axes[1:])
        assert len({ax.get_ylim() for ax in axes}) == 1
    both = panels(ss, ["i2srm.delta"], labels(ss), "dataset")[0]
    assert both.title == "synthetic-mner" and both.members == (0, 1)  # one dataset: both studies in one panel


def test_combined_summary_and_tables(studies: dict[str, Path], combined: Path) -> None:
    rows = pd.read_csv(combined / "summary.csv")
    assert list(rows.columns[:3]) == ["study", "data.name", "i2srm.delta"]
    for name, n in (("tiny_a", 3), ("tiny_b", 2)):
        own = pd.read_csv(studies[name[-1]] / "summary.csv")
        mine = rows[rows["study"] == name].drop(columns=["study", "data.name"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own)  # each study's own rows, unchanged
        assert len(mine) == n
    md = (combined / "table.md").read_text(encoding="utf-8").splitlines()
    table = [line for line in md if line.startswith("|")]
    assert table[0] == "| i2srm.delta | tiny_a (synthetic-mner) | tiny_b (synthetic-mner) |"
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0", "0.35", "0.7"]
    assert table[3].split("|")[3].strip() == "—"  # tiny_b did not run 0.35
    for col, name in ((2, "tiny_a"), (3, "tiny_b")):  # the best mean of each study, in bold
        own = rows[rows["study"] == name]
        best = own.loc[own["test_f1_mean"].idxmax(), "i2srm.delta"]
        bold = [line.split("|")[1].strip() for line in table[2:] if line.split("|")[col].strip().startswith("**")]
        assert bold == [f"{best:g}"]
    tex = (combined / "table.tex").read_text(encoding="utf-8")
    check_latex(tex)
    assert tex.count(r"\textbf{") == 2 and r"tiny\_a" in tex
    page = parse_html(combined / "REPORT.html")
    assert decoded_png(page.images[0]["src"]).size[0] == round(7.2 * DPI)


# ----------------------------------------------------------------------------- --compare

def test_compare_is_paired_by_seed_and_equals_scipy(studies: dict[str, Path]) -> None:
    out = studies["root"] / "a_vs_b"
    proc = report(["--compare", str(studies["a"]), str(studies["b"]), "--out", str(out)], studies["root"])
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(out / "compare.csv")
    assert list(rows["i2srm.delta"]) == [0.0, 0.7]  # the configurations both ran
    ta, tb = (pd.read_csv(studies[s] / "trials.csv") for s in ("a", "b"))
    ps = []
    for _, r in rows.iterrows():
        xa = ta[ta["i2srm.delta"] == r["i2srm.delta"]].set_index("seed")["test_f1_at_best"]
        xb = tb[tb["i2srm.delta"] == r["i2srm.delta"]].set_index("seed")["test_f1_at_best"]
        seeds = sorted(set(xa.index) & set(xb.index))
        a, b = xa[seeds].to_numpy(), xb[seeds].to_numpy()
        assert r["n_paired"] == len(seeds) == 3
        assert r["test_f1_diff"] == pytest.approx(np.mean(b - a), abs=1e-3)
        p = stats.ttest_rel(b, a).pvalue
        if np.isnan(p):  # identical runs under both variants
            assert pd.isna(r["p_value"])
            continue
        assert r["p_value"] == pytest.approx(p, rel=1e-3)  # the CSV's F1 has 4 decimals
        ps.append(p)
    if len(ps) == 2:
        lo, hi = sorted(ps)
        assert sorted(rows["p_holm"]) == pytest.approx([2 * lo, max(2 * lo, hi)], rel=1e-3)
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "`i2srm.variant` reference → clean" in md  # what differs between the studies
    check_latex((out / "compare.tex").read_text(encoding="utf-8"))
    pdf = PdfReader(out / "compare.pdf")
    assert float(pdf.pages[0].mediabox.width) == pytest.approx(3.5 * 72)
    assert "tiny_a" in pdf.pages[0].extract_text()
    page = parse_html(out / "REPORT.html")
    assert page.tables == 1 and len(page.images) == 1 and decoded_png(page.images[0]["src"]).size[0] == 700


# ----------------------------------------------------------------------------- refusals

def one_line_refusal(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("report.py: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_refusals(studies: dict[str, Path], tmp_path: Path) -> None:
    a, b, cwd = str(studies["a"]), str(studies["b"]), studies["root"]
    other = write_study(tmp_path / "heads", "heads", {"study": "heads", "seeds": [1], "sampler": "grid",
                                                      "search": {"i2srm.attn_heads": {"grid": [1, 2]}}},
                        [{"trial_id": "t1", "status": "completed", "seed": 1, "params": {"i2srm.attn_heads": 1},
                          "dev": [50.0], "test": [50.0]}])
    empty = write_study(tmp_path / "empty", "empty", {"study": "empty", "seeds": [1], "sampler": "grid",
                                                      "search": {"i2srm.delta": {"grid": [0.0]}}}, [])
    out = str(tmp_path / "out")
    cases: list[tuple[list[str], tuple[str, ...]]] = [
        (["--combine", a, str(tmp_path), "--out", out], ("no study.json", str(tmp_path))),
        (["--combine", a, str(other), "--out", out], ("share no searched key", "i2srm.attn_heads", "i2srm.delta")),
        (["--compare", a, str(other), "--out", out], ("share no searched key",)),
        (["--combine", a, b, "--out", str(studies["a"] / "paper")], ("inside the study folder", "overwrite")),
        (["--compare", a, b, "--out", a], ("inside the study folder",)),
        (["--combine", a, a, "--out", out], ("given twice",)),
        (["--combine", a, str(empty), "--out", out], ("no completed or pruned trial",)),
        (["--combine", a, "--out", out], ("at least two study folders",)),
        (["--combine", a, b], ("needs --out",)),
        (["--panels", "key", a], ("--panels is for --combine",)),
        (["--combine", a, b, "--out", out, "--panels", "seed"], ("invalid choice", "study", "dataset", "key")),
        ([a, "--out", out], ("--out is for --combine and --compare",)),
        ([], ("give a study folder",)),
    ]
    for args, needles in cases:
        one_line_refusal(report(args, cwd), *needles)
    assert not (tmp_path / "out").exists() and not (studies["a"] / "paper").exists()  # nothing written


def test_refusals_without_a_study_run(tmp_path: Path) -> None:
    """The same checks on hand-written records (fast; the slow test covers real studies)."""
    def delta_study(name: str) -> Path:
        return write_study(tmp_path / name, name, {"study": name, "seeds": [1], "sampler": "grid",
                                                   "search": {"i2srm.delta": {"grid": [0.0]}}},
                           [{"trial_id": "t1", "status": "completed", "seed": 1, "params": {"i2srm.delta": 0.0},
                             "dev": [50.0], "test": [50.0]}])

    a, b = delta_study("a"), delta_study("b")
    one_line_refusal(report(["--compare", str(a), str(b), "--out", str(b / "x")], tmp_path), "inside the study folder")
    one_line_refusal(report(["--compare", str(a), "--out", str(tmp_path / "o")], tmp_path), "expected 2 arguments")
    proc = report(["--combine", str(a), str(b), "--out", str(tmp_path / "o"), "--panels", "key"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert list(rows["study"]) == ["a", "b"] and rows["test_f1_std"].isna().all()  # one seed: no std


def test_latex_check_catches_what_a_tex_engine_would(tmp_path: Path) -> None:
    """The balance check on the ablation table, and on broken copies of it (so the check can fail)."""
    from study.reports import build_reports

    space = {"study": "abl", "seeds": [1, 2], "sampler": "grid", "reports": ["ablation"],
             "search": {"i2srm.ablation": {"grid": ["full", "no_kl"]}}}
    trials = [{"trial_id": f"{a}{s}", "status": "completed", "seed": s, "params": {"i2srm.ablation": a},
               "dev": [70.0 + s], "test": [60.0 + s + (a == "full")]} for a in ("full", "no_kl") for s in (1, 2)]
    folder = write_study(tmp_path / "abl", "abl", space, trials)
    build_reports(folder)
    tex = (folder / "ablation.tex").read_text(encoding="utf-8")
    check_latex(tex)
    for broken in (tex.replace(r"\textbf{full}", r"\textbf{full"), tex.replace(r"\end{tabular}", ""),
                   tex.replace(r"no\_kl &", r"no\_kl & 1 &"), tex.replace(r"$\pm$", r"$\pm", 1)):
        with pytest.raises(AssertionError):
            check_latex(broken)
