"""Rebuild every report of a stored study without training: ``python study/report.py results/<study>``.

Exit status: 0 when the reports are written; 2 with one line on stderr when the folder is not
a study or one of its records cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Works as ``python study/report.py`` too: the repository root must be importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study.reports import ReportError, build_reports  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the reports of a stored study (no training).")
    parser.add_argument("study_dir", type=Path, help="the study folder, e.g. results/mixup")
    args = parser.parse_args(argv)
    try:
        written = build_reports(args.study_dir)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} reports in {args.study_dir}; index: {written[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
