"""The reports of stored studies, rebuilt without training.

    python study/report.py results/<study>                                     # every report of one study
    python study/report.py --combine results/A results/B ... --out DIR [--panels study|dataset|key]
    python study/report.py --compare results/A results/B --out DIR             # B against A

Exit status: 0 when the reports are written; 2 with one line on stderr for bad input: a folder that is not a
study or a record that cannot be read, studies with no searched key in common, ``--out`` inside a study
folder, a study without a result, a missing or misplaced option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

# Works as ``python study/report.py`` too: the repository root must be importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study.reports import ReportError, build_reports  # noqa: E402
from study.schema import RecordError  # noqa: E402

PANELS = ("study", "dataset", "key")  # as study.reports.studies.PANELS, without importing matplotlib for --help


class UsageError(Exception):
    pass


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (like every other refusal of this command), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser() -> OneLineParser:
    p = OneLineParser(prog="report.py", description="Rebuild the reports of stored studies (no training).")
    p.add_argument("study_dir", type=Path, nargs="?", help="one study folder, e.g. results/mixup")
    p.add_argument("--combine", type=Path, nargs="+", metavar="STUDY",
                   help="two or more study folders: one multi-panel figure, a combined summary.csv and tables")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"),
                   help="two study folders: B - A per configuration, paired over the seeds both ran")
    p.add_argument("--out", type=Path, help="where --combine or --compare writes (not inside a study folder)")
    p.add_argument("--panels", choices=PANELS, default=None,
                   help="--combine: one panel per study (default), per dataset, or per searched key")
    return p


def check(args: argparse.Namespace) -> None:
    modes = [name for name, given in (("a study folder", args.study_dir is not None),
                                      ("--combine", args.combine is not None),
                                      ("--compare", args.compare is not None)) if given]
    if not modes:
        raise UsageError("give a study folder (e.g. results/mixup), --combine A B ... --out DIR, or "
                         "--compare A B --out DIR")
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} cannot be given together; choose one")
    if args.study_dir is not None and args.out is not None:
        raise UsageError("--out is for --combine and --compare; a study's own reports are written in its folder")
    if (args.combine is not None or args.compare is not None) and args.out is None:
        raise UsageError(f"{modes[0]} needs --out DIR, a folder outside every study")
    if args.panels is not None and args.combine is None:
        raise UsageError("--panels is for --combine")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        check(args)
    except UsageError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    try:
        if args.combine is not None:
            from study.reports.studies import combine

            written = combine(args.combine, args.out, args.panels or "study")
            where = args.out
        elif args.compare is not None:
            from study.reports.studies import compare

            written = compare(args.compare[0], args.compare[1], args.out)
            where = args.out
        else:
            written = build_reports(args.study_dir)
            where = args.study_dir
    except (ReportError, RecordError) as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} reports in {where}; index: {written[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
