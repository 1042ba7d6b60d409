"""The trainer's headline table: full model vs ablations on both synthetic tasks, over seeds.

    python benchmarks/trainer_table.py [--seeds 1 2 3] [--rows full text_only no_kl no_attnmixup hvpnet]
                                       [--variants reference clean] [--tasks synthetic-mner synthetic-mre]
                                       [--jobs 2] [--set k=v ...] [--variant-set VARIANT:k=v ...]
                                       [--table-only]

Every run is an independent ``python -m model.train`` subprocess (one torch thread each, ``--jobs`` at a time).
Writes ``results/benchmarks/trainer_table.{json,md}``: test F1 at the best dev epoch, mean and std over seeds
(n/a for one seed), the difference of each row to the full model of the same variant, and the wall time of each
run; with two variants, one table per variant and a side-by-side table of the means.
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

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _finished(out: Path, variant: str, row: str, seed: int, extra: list[str]) -> dict | None:
    """The stored result of this run if ``out/metrics.json`` holds it with the same variant, row, seed and
    overrides, else None."""
    path = out / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    cfg = metrics.get("config", {})
    wanted = {"i2srm.variant": variant, "i2srm.ablation": row, "train.seed": seed}
    for item in extra:
        key, _, value = item.partition("=")
        wanted[key] = yaml.safe_load(value)
    if any(cfg.get(k) != v for k, v in wanted.items()) or metrics.get("epochs_run") != cfg.get("train.epochs"):
        return None
    task = metrics["dataset"]
    return {"variant": variant, "task": task, "row": row, "seed": seed, "test_f1": metrics["test_f1_at_best"],
            "dev_f1": metrics["best_dev_f1"], "best_epoch": metrics["best_epoch"], "seconds": metrics["seconds"],
            "reused": True}


def run_one(variant: str, task: str, row: str, seed: int, out_root: Path, extra: list[str]) -> dict:
    out = out_root / variant / task / row / f"seed{seed}"
    cmd = [sys.executable, "-m", "model.train", "--out", str(out), "--set", f"data.name={task}",
           "--set", f"i2srm.variant={variant}", "--set", f"i2srm.ablation={row}", "--set", f"train.seed={seed}",
           "--set", "train.progress=false", "--set", "train.threads=1",
           # metrics only: a full table's weights and resume states would take about 28 GB
           "--set", "train.save_best=false", "--set", "train.save_checkpoint=false"]
    for item in extra:
        cmd += ["--set", item]
    done = _finished(out, variant, row, seed, extra)
    if done is not None:  # a run this table already made (a stopped table picks up where it was)
        return done
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"variant": variant, "task": task, "row": row, "seed": seed, "test_f1": metrics["test_f1_at_best"],
            "dev_f1": metrics["best_dev_f1"], "best_epoch": metrics["best_epoch"], "seconds": time.time() - t0}


def write_outputs(out_root: Path, name: str, doc: dict, md: str) -> None:
    """``out_root/name.json`` (``doc``) and ``out_root/name.md`` (the table ``md``, also printed)."""
    (out_root / f"{name}.json").write_text(json.dumps(doc, indent=2))
    (out_root / f"{name}.md").write_text(md)
    print(md)


def _mean_sd(values: list[float]) -> str:
    sd = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "n/a"
    return f"{statistics.mean(values):.2f} ± {sd}"


def table(runs: list[dict], variant: str, tasks: list[str], rows: list[str]) -> str:
    lines = [f"Variant `{variant}`:", "",
             "| task | row | n | test F1 mean ± std | Δ vs full | dev F1 mean | seconds per run |",
             "|---|---|---|---|---|---|---|"]
    for task in tasks:
        mine = [r for r in runs if r["variant"] == variant and r["task"] == task]
        full = [r["test_f1"] for r in mine if r["row"] == "full"]
        for row in rows:
            sel = [r for r in mine if r["row"] == row]
            f1 = [r["test_f1"] for r in sel]
            if not f1:
                continue
            delta = statistics.mean(f1) - statistics.mean(full) if full else float("nan")
            lines.append(f"| {task} | {row} | {len(f1)} | {_mean_sd(f1)} | {delta:+.2f} | "
                         f"{statistics.mean(r['dev_f1'] for r in sel):.2f} | "
                         f"{statistics.mean(r['seconds'] for r in sel):.0f} |")
    return "\n".join(lines) + "\n"


def side_by_side(runs: list[dict], variants: list[str], tasks: list[str], rows: list[str]) -> str:
    """Test F1 mean ± std of each row under each variant, and the difference of the first to the second."""
    head = " | ".join(f"{v} test F1" for v in variants)
    lines = [f"| task | row | {head} | {variants[0]} − {variants[1]} |", "|---|---|" + "---|" * (len(variants) + 1)]
    for task in tasks:
        for row in rows:
            f1 = {v: [r["test_f1"] for r in runs if (r["variant"], r["task"], r["row"]) == (v, task, row)]
                  for v in variants}
            if not all(f1.values()):
                continue
            diff = statistics.mean(f1[variants[0]]) - statistics.mean(f1[variants[1]])
            lines.append(f"| {task} | {row} | " + " | ".join(_mean_sd(f1[v]) for v in variants) + f" | {diff:+.2f} |")
    return "\n".join(lines) + "\n"


def finished_runs(jobs: list[tuple[str, str, str, int]], root: Path, per_variant: dict[str, list[str]]) -> list[dict]:
    """The stored results of the runs of ``jobs`` that have finished (``--table-only``)."""
    found = (_finished(root / v / t / r / f"seed{s}", v, r, s, per_variant[v]) for v, t, r, s in jobs)
    return [run for run in found if run is not None]


def train_all(jobs: list[tuple[str, str, str, int]], root: Path, per_variant: dict[str, list[str]],
              workers: int) -> list[dict]:
    """Every run of ``jobs``, ``workers`` at a time (a finished one reused), with one progress line each."""
    runs: list[dict] = []
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_one, v, t, r, s, root, per_variant[v]) for v, t, r, s in jobs]
        for i, fut in enumerate(futures, 1):
            runs.append(fut.result())
            last = runs[-1]
            print(f"[{i}/{len(jobs)}] {last['variant']} {last['task']} {last['row']} seed {last['seed']}: test F1 "
                  f"{last['test_f1']:.2f} ({last['seconds']:.0f}s)", flush=True)
    return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--rows", nargs="+", default=["full", "text_only", "no_kl", "no_attnmixup", "hvpnet"])
    p.add_argument("--variants", nargs="+", default=["reference"], choices=["reference", "clean"],
                   help="i2srm.variant of every run; two give a side-by-side table")
    p.add_argument("--tasks", nargs="+", default=["synthetic-mner", "synthetic-mre"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variant-set", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                   help="an override for the runs of one variant only")
    p.add_argument("--table-only", action="store_true", help="train nothing; tabulate the finished runs")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args()
    out_root = Path(args.out)
    per_variant: dict[str, list[str]] = {v: list(args.set) for v in args.variants}
    for item in args.variant_set:
        variant, sep, override = item.partition(":")
        if not sep or variant not in per_variant or "=" not in override:
            p.error(f"--variant-set {item!r}: expected VARIANT:KEY=VALUE with VARIANT one of {args.variants}")
        per_variant[variant].append(override)
    out_root.mkdir(parents=True, exist_ok=True)
    # one seed of every row and variant first, so a stopped table still has every row
    jobs = [(v, t, r, s) for s in args.seeds for t in args.tasks for r in args.rows for v in args.variants]
    started = time.time()
    if args.table_only:
        runs = finished_runs(jobs, out_root / "trainer_table", per_variant)
        print(f"{len(runs)} of {len(jobs)} runs finished", flush=True)
    else:
        runs = train_all(jobs, out_root / "trainer_table", per_variant, args.jobs)
    md = "\n".join(table(runs, v, args.tasks, args.rows) for v in args.variants)
    if len(args.variants) == 2:
        md += "\n" + side_by_side(runs, args.variants, args.tasks, args.rows)
    doc = {"runs": runs, "wall_seconds": time.time() - started, "jobs": args.jobs, "overrides": per_variant}
    write_outputs(out_root, "trainer_table", doc, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
