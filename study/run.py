"""Run one hyperparameter study of the I2SRM trainer on Ray Tune with Optuna.

    python study/run.py --space NAME_OR_PATH [--address ADDR] [--name NAME] [--resume]
                        [--results-dir DIR] [--storage PATH_OR_URI]
                        [--host IP] [--set key=value ...]

A bare name (``mixup.yaml`` or ``mixup``) is looked up in ``search_spaces/``. ``--set`` overrides a trainer
key (``train.epochs=2``) or a study key (``seeds=[1,2,3]``, ``sampler=random``, ``resources.cpus=2``,
``search.i2srm.delta={grid: [0, 1]}``, ``optuna_storage=journal:/shared/mixup.log``). Results go to
``results/<study>/``. Exit status: 0 done, 1 no trial succeeded, 2 bad input (one line on stderr),
130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.config import ConfigError  # noqa: E402
from model.inputs import InputError, one_line, user_path  # noqa: E402
from study.optuna_storage import StorageError  # noqa: E402
from study.records import RecordError, command_line  # noqa: E402
from study.local_ray import ClusterError, keep_local_ray_on_loopback  # noqa: E402
from study.resolve import StudyExistsError, resolve_study  # noqa: E402
from study.runner import run_study  # noqa: E402
from study.space import REPO_ROOT, SpaceError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python study/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="search space YAML file, or a name in search_spaces/ (e.g. mixup.yaml)")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--storage", help="where Ray Tune keeps its trial folders and the runs their resume states: "
                        "a folder every node can reach, or a URI such as s3://bucket/path (default: "
                        "results/<study>/ray; a resume uses the study's own)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address a local Ray instance binds to (default 127.0.0.1: not reachable from "
                        "other machines)")
    parser.add_argument("--name", help="study name, the folder under the results dir (default: the space's study)")
    parser.add_argument("--resume", action="store_true", help="continue a stopped study of this name")
    parser.add_argument("--results-dir", default=str(REPO_ROOT / "results"), help="root of study folders")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a trainer or study key (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_local_ray_on_loopback(args.address, args.host)  # before anything imports ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from model.errors import DataError  # not model.data: that would load torch before Ray starts

    try:
        results_dir = user_path(args.results_dir, "--results-dir")
        if args.storage is not None:
            check_storage_flag(args.storage)
        resolved = resolve_study(args.space, args.set, args.name, results_dir, args.resume)
        space, study_dir = resolved.space, resolved.study_dir
        for key, (stored, given) in resolved.applied.items():
            print(f"[study {space.study}] --resume applies {key}={given} for this session (stored: {stored})",
                  file=sys.stderr)
        outcome = run_study(space, study_dir, resume=args.resume, address=args.address,
                            command=command_line(sys.argv if argv is None else ["study/run.py", *argv]),
                            storage=args.storage, host=args.host, threads=resolved.threads)
    except (SpaceError, ConfigError, DataError, StudyExistsError, ClusterError, RecordError, StorageError,
            InputError, OSError) as e:  # OSError: missing file; RecordError: a stored record that cannot be read
        # One line: the first of the message (library errors such as a missing PLM run over several), capped.
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items())) or "no trials"
    print(f"[study {study_dir.name}] {counts}; results in {outcome.study_dir}", file=sys.stderr)
    for path in outcome.reports:
        print(f"  {path}")
    if outcome.interrupted:
        print(f"[study {study_dir.name}] interrupted; continue with: python study/run.py --name {study_dir.name} "
              f"--results-dir {Path(args.results_dir)} --resume", file=sys.stderr)
        return 130
    return 0 if outcome.counts.get("completed", 0) + outcome.counts.get("pruned", 0) else 1


def check_storage_flag(storage: str) -> None:
    """``--storage``: a URI (``s3://...``) or a folder; ``InputError`` for a NUL byte or an unknown ``~user``."""
    if "\0" in storage or "://" not in storage:
        user_path(storage, "--storage")


def exit_fast(code: int) -> None:
    """Exit with ``code``, skipping the interpreter's last garbage collections over torch, Ray and matplotlib
    objects (about 1 s). Every file is written and closed by now; atexit handlers still run."""
    import gc

    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    exit_fast(main())
