"""The trainer's headline table: full model vs ablations on both synthetic tasks, over seeds.

    python benchmarks/trainer_table.py [--seeds 1 2 3] [--rows full text_only no_kl no_attnmixup]
                                       [--tasks synthetic-mner synthetic-mre] [--jobs 2] [--set k=v ...]

Every run is an independent ``python -m model.train`` subprocess (one torch thread each, ``--jobs`` at a time).
Writes ``results/benchmarks/trainer_table.{json,md}``: test F1 at the best dev epoch, mean and std over seeds,
the difference of each row to the full model, and the wall time of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_one(task: str, row: str, seed: int, out_root: Path, extra: list[str]) -> dict:
    out = out_root / task / row / f"seed{seed}"
    cmd = [sys.executable, "-m", "model.train", "--out", str(out), "--set", f"data.name={task}",
           "--set", f"i2srm.ablation={row}", "--set", f"train.seed={seed}", "--set", "train.progress=false",
           "--set", "train.threads=1"]
    for item in extra:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"task": task, "row": row, "seed": seed, "test_f1": metrics["test_f1_at_best"],
            "dev_f1": metrics["best_dev_f1"], "best_epoch": metrics["best_epoch"], "seconds": time.time() - t0}


def table(runs: list[dict], tasks: list[str], rows: list[str]) -> str:
    lines = ["| task | row | n | test F1 mean ± std | Δ vs full | dev F1 mean | seconds per run |",
             "|---|---|---|---|---|---|---|"]
    for task in tasks:
        full = [r["test_f1"] for r in runs if r["task"] == task and r["row"] == "full"]
        for row in rows:
            sel = [r for r in runs if r["task"] == task and r["row"] == row]
            f1 = [r["test_f1"] for r in sel]
            if not f1:
                continue
            sd = statistics.stdev(f1) if len(f1) > 1 else 0.0
            delta = statistics.mean(f1) - statistics.mean(full) if full else float("nan")
            lines.append(f"| {task} | {row} | {len(f1)} | {statistics.mean(f1):.2f} ± {sd:.2f} | {delta:+.2f} | "
                         f"{statistics.mean(r['dev_f1'] for r in sel):.2f} | "
                         f"{statistics.mean(r['seconds'] for r in sel):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--rows", nargs="+", default=["full", "text_only", "no_kl", "no_attnmixup"])
    p.add_argument("--tasks", nargs="+", default=["synthetic-mner", "synthetic-mre"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args()
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    jobs = [(t, r, s) for s in args.seeds for t in args.tasks for r in args.rows]  # one seed of every row first
    started = time.time()
    runs: list[dict] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, t, r, s, out_root / "trainer_table", args.set) for t, r, s in jobs]
        for i, fut in enumerate(futures, 1):
            runs.append(fut.result())
            last = runs[-1]
            print(f"[{i}/{len(jobs)}] {last['task']} {last['row']} seed {last['seed']}: test F1 "
                  f"{last['test_f1']:.2f} ({last['seconds']:.0f}s)", flush=True)
    md = table(runs, args.tasks, args.rows)
    doc = {"runs": runs, "wall_seconds": time.time() - started, "jobs": args.jobs, "overrides": args.set}
    (out_root / "trainer_table.json").write_text(json.dumps(doc, indent=2))
    (out_root / "trainer_table.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
