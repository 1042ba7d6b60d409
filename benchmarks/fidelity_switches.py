"""Each fidelity switch's effect: the full ``reference`` model with the switch at its reference value against the
same model with only that switch at its other value, on both synthetic tasks, over seeds.

    python benchmarks/fidelity_switches.py [--seeds 1 2 3] [--switches model.stage_pool ...]
                                           [--tasks synthetic-mner synthetic-mre] [--jobs 2] [--set k=v ...]
                                           [--table-only]

Every run is one ``python -m model.train`` subprocess, made by ``benchmarks/trainer_table.py``'s ``run_one`` (one
torch thread, ``--jobs`` at a time; a finished run is reused). ``--set`` items apply to every run. Writes
``results/benchmarks/fidelity_switches.{json,md}``: test F1 at the best dev epoch, mean ± std over the seeds, for
each value (n: the seeds finished), the difference other − reference, and the mean wall time of one run.
``--table-only`` trains nothing: it makes the table from the runs already finished (a stopped benchmark).

Where a switch can make no difference in a setting, it is not run there (the runs would be the same run):
``model.prefix_positions`` on MNER (its reference value starts the text at 0 there, like ``clean``),
``model.crf_span`` on MRE (no CRF), and
``model.stage_pool`` at the synthetic recipes' 64 px (every stage side 16, 8, 4, 2 divides into the 2x2 grid, so
both poolings take the same windows): it runs at ``model.image_size=96``, whose last stage is 3x3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from trainer_table import _finished, _mean_sd, run_one, write_outputs  # noqa: E402  (benchmarks/ is not a package)

TASKS = ("synthetic-mner", "synthetic-mre")


@dataclass(frozen=True)
class Switch:
    key: str
    reference: str
    other: str
    common: tuple[str, ...] = ()   # --set items both values run with
    tasks: tuple[str, ...] = TASKS  # where the switch can change anything


SWITCHES = {s.key: s for s in (
    Switch("model.stage_pool", "reference", "clean", common=("model.image_size=96",)),
    Switch("model.empty_crops", "reference", "clean"),
    Switch("model.prefix_positions", "reference", "clean", tasks=("synthetic-mre",)),
    Switch("model.backbone_bn", "eval", "train"),
    Switch("model.crf_span", "reference", "clean", tasks=("synthetic-mner",)),
)}


def _slug(items: list[str]) -> str:
    return ",".join(items).replace("/", "_") or "reference"


def runs_of(switch: Switch, tasks: list[str]) -> list[tuple[str, str, list[str]]]:
    """(task, value, --set items) of the two settings of ``switch`` on each of ``tasks`` it can change."""
    out = []
    for task in (t for t in tasks if t in switch.tasks):
        for value in (switch.reference, switch.other):
            sets = list(switch.common) + ([] if value == switch.reference else [f"{switch.key}={value}"])
            out.append((task, value, sets))
    return out


def table(results: list[dict], switches: list[Switch], tasks: list[str]) -> str:
    lines = ["| switch | task | n | reference value: test F1 | other value: test F1 | other − reference | "
             "seconds per run (ref / other) |", "|---|---|---|---|---|---|---|"]
    for s in switches:
        for task in (t for t in tasks if t in s.tasks):
            f1 = {v: [r for r in results if (r["switch"], r["task"], r["value"]) == (s.key, task, v)]
                  for v in (s.reference, s.other)}
            if not all(f1.values()):
                continue
            ref, oth = ([r["test_f1"] for r in f1[v]] for v in (s.reference, s.other))
            secs = " / ".join(f"{statistics.mean(r['seconds'] for r in f1[v]):.0f}" for v in (s.reference, s.other))
            common = f" ({', '.join(s.common)})" if s.common else ""
            n = f"{len(ref)}" if len(ref) == len(oth) else f"{len(ref)} / {len(oth)}"
            lines.append(f"| `{s.key}`{common} | {task} | {n} | `{s.reference}` {_mean_sd(ref)} | `{s.other}` "
                         f"{_mean_sd(oth)} | {statistics.mean(oth) - statistics.mean(ref):+.2f} | {secs} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--switches", nargs="+", default=list(SWITCHES), choices=list(SWITCHES))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    p.add_argument("--table-only", action="store_true", help="train nothing; tabulate the finished runs")
    args = p.parse_args()
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    switches = [SWITCHES[k] for k in args.switches]
    # Seed-major, so a stopped benchmark still has every switch; equal settings (the shared reference runs) once.
    jobs: dict[tuple[str, int, str], tuple[str, int, list[str]]] = {}
    wanted: list[tuple[Switch, str, str, int, str]] = []
    for seed in args.seeds:
        for s in switches:
            for task, value, sets in runs_of(s, args.tasks):
                extra = sets + args.set
                jobs.setdefault((task, seed, _slug(extra)), (task, seed, extra))
                wanted.append((s, task, value, seed, _slug(extra)))
    started = time.time()
    done: dict[tuple[str, int, str], dict] = {}
    if args.table_only:
        for k, (task, seed, extra) in jobs.items():
            found = _finished(out_root / "fidelity_switches" / k[2] / "reference" / task / "full" / f"seed{seed}",
                              "reference", "full", seed, extra)
            if found is not None:
                done[k] = found
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {k: pool.submit(run_one, "reference", task, "full", seed,
                                      out_root / "fidelity_switches" / k[2], extra)
                       for k, (task, seed, extra) in jobs.items()}
            for i, (k, fut) in enumerate(futures.items(), 1):
                done[k] = fut.result()
                print(f"[{i}/{len(jobs)}] {k[0]} seed {k[1]} {k[2]}: test F1 {done[k]['test_f1']:.2f} "
                      f"({done[k]['seconds']:.0f}s)", flush=True)
    results = [{**done[(task, seed, slug)], "switch": s.key, "value": value}
               for s, task, value, seed, slug in wanted if (task, seed, slug) in done]
    md = table(results, switches, args.tasks)
    doc = {"results": results, "wall_seconds": time.time() - started, "jobs": args.jobs, "overrides": args.set}
    write_outputs(out_root, "fidelity_switches", doc, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
