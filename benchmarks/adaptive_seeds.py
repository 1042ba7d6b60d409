"""What adaptive seeds buy on the shipped ``mixup_resolved.yaml``: seeds per configuration, each configuration's
interval before (on the space's first seeds) and after, and the runs and run-seconds against the same study with
a fixed seed count that gives every configuration as many seeds as the adaptive study's most.

    python benchmarks/adaptive_seeds.py [--results-dir DIR] [--fixed] [--out results/benchmarks/adaptive_seeds.json]

It runs ``study/run.py --space mixup_resolved.yaml`` as is (a local Ray, two trials side by side) under the name
``adaptive`` in ``--results-dir`` (default: a new temporary folder) and reads the finished study through the
reports' own loader. The interval is the one ``resolve`` reads (``study.reports.intervals``: the paired
difference of dev F1 from the reference, delta 0.7). With ``--fixed`` it then runs the same space without
``resolve`` on the fixed seeds ``1..K`` (K: the most seeds the adaptive study gave a configuration; the extra
seeds are the next integers, so the two studies' runs of one configuration and seed are the same computation)
and reports the same numbers for it; without it, the fixed-seed study's runs (``trials * K``) and its run-seconds
at the adaptive study's mean seconds per run (``fixed_equivalent``: computed from the measurement, not run).
``--replay W,W,..``: the rule (``study/adaptive.py``) applied again, at each width W, to the scores the adaptive
study measured: each configuration takes its seeds in order until its interval is within ±W or it has as many
as ``max_seeds``; the reference takes as many as the configuration that took most. It needs every configuration
to have run the seeds it would take (it says when one did not). Its runs and run-seconds are those of the
measured runs it takes, so a replay is exact where a study would repeat its runs (each run is seeded).
Run-seconds: the sum over a study's runs of their wall seconds (each run
trains on one thread on one granted CPU, so this is close to the CPU time the trainer used on an idle machine;
on a loaded one it is larger). Wall: the study command's wall time; for a study a previous invocation ran, from
its files (the last epoch any run wrote, ``trials/*/epochs.jsonl``, minus ``study.json``'s ``created``: the
reports, which ``study/report.py`` may have rebuilt since, are left out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPACE = "mixup_resolved.yaml"


def run_study(results: Path, name: str, sets: list[str]) -> float:
    """Run the shipped space as ``name`` with ``--set`` items; its wall seconds. A study that ``results`` already
    holds finished (its ``REPORT.md`` written) is read as it is, its wall time from its files, so that the script
    can be run again after it was stopped during the fixed-seed study."""
    report = results / name / "REPORT.md"
    if report.is_file():
        from datetime import datetime

        created = json.loads((results / name / "study.json").read_text(encoding="utf-8"))["created"]
        last = max(p.stat().st_mtime for p in (results / name / "trials").glob("*/epochs.jsonl"))
        return last - datetime.fromisoformat(created).timestamp()
    argv = [sys.executable, str(ROOT / "study" / "run.py"), "--space", SPACE, "--name", name,
            "--results-dir", str(results), *(a for s in sets for a in ("--set", s))]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: study/run.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall


def describe(study_dir: Path, first: int) -> dict[str, Any]:
    """Per configuration: seeds, interval half-width on the first ``first`` seeds and on all, resolved; totals."""
    from study.reports.intervals import interval, resolve_of
    from study.reports.load import load_study
    from study.reports.significance import configuration_tests
    from study.reports.stats import Group

    study = load_study(study_dir)
    groups, _, reference = configuration_tests(study)
    first_seeds = sorted({t.seed for t in study.trials})[:first]

    def early(g: Group) -> Group:
        return Group(g.values, tuple(t for t in g.trials if t.seed in first_seeds))

    rows = []
    for g in groups:
        row: dict[str, Any] = {"config": ", ".join(str(v) for v in g.values), "seeds": sorted(t.seed for t in g.trials),
                               "reference": g is reference}
        if g is not reference:
            before = interval(study, early(g), early(reference) if reference is not None else None)
            after = interval(study, g, reference)
            row.update(half_width_before=round(before.half_width, 3), half_width_after=round(after.half_width, 3),
                       resolved=after.resolved)
        rows.append(row)
    resolve = resolve_of(study)
    return {"configurations": rows, "runs": len(study.trials),
            "run_seconds": round(sum(t.wall_seconds for t in study.trials), 1),
            "resolve": None if resolve is None else resolve.to_dict()}


def replay(study_dir: Path, width: float) -> dict[str, Any]:
    """The rule at ``width`` over the measured scores of ``study_dir`` (see the module's docstring)."""
    from study.adaptive import half_width, paired_differences
    from study.reports.intervals import resolve_of
    from study.reports.load import load_study
    from study.reports.significance import configuration_tests

    study = load_study(study_dir)
    resolve = resolve_of(study)
    assert resolve is not None, f"{study_dir} did not run with resolve"
    groups, _, reference = configuration_tests(study)
    order = sorted({t.seed for t in study.trials})
    first = len(study.seeds)

    def scores(g: Any) -> dict[int, float | None]:
        return {t.seed: study.score(t) for t in g.trials}

    ref = scores(reference) if reference is not None else None
    taken: dict[str, int] = {}
    missing = []
    for g in groups:
        if g is reference:
            continue
        mine = scores(g)
        n = first
        while True:
            seeds = order[:n]
            if any(s not in mine or (ref is not None and s not in ref) for s in seeds):
                missing.append(", ".join(str(v) for v in g.values))
                break
            values = paired_differences({s: mine[s] for s in seeds}, ref and {s: ref[s] for s in seeds})
            if half_width(values) <= width or n >= resolve.max_seeds:
                break
            n += 1
        taken[", ".join(str(v) for v in g.values)] = n
    most = max(taken.values(), default=first)
    mean_seconds = sum(t.wall_seconds for t in study.trials) / max(1, len(study.trials))
    seconds = fixed_seconds = 0.0
    runs = fixed_runs = unmeasured = 0
    for g in groups:
        name = ", ".join(str(v) for v in g.values)
        n = most if g is reference else taken[name]
        chosen = [t for t in g.trials if t.seed in order[:n]]
        runs += len(chosen)
        seconds += sum(t.wall_seconds for t in chosen)
        # A fixed count giving every configuration as many seeds as the one that took most: the measured runs it
        # repeats, and the mean seconds of a measured run for those the adaptive study never made.
        fixed = [t for t in g.trials if t.seed in order[:most]]
        fixed_runs += most
        unmeasured += most - len(fixed)
        fixed_seconds += sum(t.wall_seconds for t in fixed) + (most - len(fixed)) * mean_seconds
    return {"width": width, "seeds": taken, "runs": runs, "run_seconds": round(seconds, 1),
            "fixed_seeds": most, "fixed_runs": fixed_runs, "fixed_run_seconds": round(fixed_seconds, 1),
            "fixed_runs_not_measured": unmeasured, "incomplete": missing}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--fixed", action="store_true", help="also run the fixed-seed study (about twice the time)")
    parser.add_argument("--replay", default="", help="widths to apply the rule at again, e.g. 2.5,3,4")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "adaptive_seeds.json")
    args = parser.parse_args()
    results = args.results_dir or Path(tempfile.mkdtemp(prefix="i2srm-adaptive-"))
    from study.space import load_space

    space = load_space(SPACE)
    first = len(space.seeds)
    out: dict[str, Any] = {"space": SPACE, "results_dir": str(results)}
    out["adaptive"] = {"wall_s": round(run_study(results, "adaptive", []), 1), **describe(results / "adaptive", first)}
    most = max(len(r["seeds"]) for r in out["adaptive"]["configurations"])
    if args.fixed:
        seeds = sorted({s for r in out["adaptive"]["configurations"] for s in r["seeds"]})[:most]
        sets = ["resolve=null", f"seeds={seeds}"]
        out["fixed"] = {"seeds": seeds, "wall_s": round(run_study(results, "fixed", sets), 1),
                        **describe(results / "fixed", first)}
    else:
        adaptive = out["adaptive"]
        runs = len(adaptive["configurations"]) * most
        out["fixed_equivalent"] = {"seeds_per_configuration": most, "runs": runs, "run_seconds": round(
            runs * adaptive["run_seconds"] / adaptive["runs"], 1)}
    widths = [float(w) for w in args.replay.split(",") if w.strip()]
    out["replays"] = [replay(results / "adaptive", w) for w in widths]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for name in ("adaptive", "fixed"):
        if name not in out:
            continue
        o = out[name]
        print(f"\n{name}: {o['runs']} runs, {o['run_seconds']} run-seconds, wall {o['wall_s']} s")
        print("| configuration | seeds | ± before | ± after | resolved |")
        print("|---|---|---|---|---|")
        for r in o["configurations"]:
            if r["reference"]:
                print(f"| {r['config']} (reference) | {len(r['seeds'])} | | | |")
            else:
                print(f"| {r['config']} | {len(r['seeds'])} | {r['half_width_before']} | {r['half_width_after']} | "
                      f"{r['resolved']} |")
    if "fixed_equivalent" in out:
        f = out["fixed_equivalent"]
        print(f"\nfixed seed count {f['seeds_per_configuration']} (computed): {f['runs']} runs, "
              f"{f['run_seconds']} run-seconds at the adaptive study's mean per run")
    for r in out["replays"]:
        print(f"\nreplay at ±{r['width']:g}: seeds {r['seeds']}, {r['runs']} runs, {r['run_seconds']} run-seconds; "
              f"fixed {r['fixed_seeds']} seeds: {r['fixed_runs']} runs, {r['fixed_run_seconds']} run-seconds"
              + (f" ({r['fixed_runs_not_measured']} of them not measured, at the mean run's seconds)"
                 if r["fixed_runs_not_measured"] else "")
              + (f"; not enough seeds measured for {r['incomplete']}" if r["incomplete"] else ""))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
