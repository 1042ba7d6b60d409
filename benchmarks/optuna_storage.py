"""What one configuration costs the driver in Optuna, per storage: CPU milliseconds of ``ask`` and of
``set_user_attr`` + ``tell``, as ``study/search.py`` calls them, with SLOTS configurations running at once.

    python benchmarks/optuna_storage.py [--slots 8,64] [--configs 300] [--out results/benchmarks/optuna_storage.json]

Each storage is opened the way a study opens it (``study.optuna_storage.open_storage``): the default SQLite
file (WAL mode, 60 s lock timeout) and Optuna's journal file (``optuna_storage: journal:PATH``), in a fresh
temporary folder. The study samples two keys with a seeded random sampler, as the scale benchmark's space does;
SLOTS trials are kept RUNNING, and each step tells the oldest one and asks a new one. CPU time is
``time.process_time`` of this process (the storage's own work, commits included; no Ray).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STORAGES = {"sqlite (default)": None, "journal file": "journal:{dir}/journal.log"}


def measure(spec: str | None, slots: int, configs: int) -> dict[str, float]:
    """CPU ms per configuration of ``ask`` and of ``set_user_attr`` + ``tell`` on a new study (in a temporary
    folder, removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="i2srm-optuna-bench-") as tmp:
        return _measure(Path(tmp), spec, slots, configs)


def _measure(folder: Path, spec: str | None, slots: int, configs: int) -> dict[str, float]:
    import optuna
    from optuna.trial import TrialState

    from study.optuna_storage import open_storage
    from study.search import SEEDS_ATTR

    storage = open_storage(spec.format(dir=folder) if spec else None, folder)
    study = optuna.create_study(study_name="bench", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    dists = {"i2srm.delta": optuna.distributions.FloatDistribution(0.0, 1.0),
             "i2srm.kl_weight": optuna.distributions.FloatDistribution(0.01, 2.0, log=True)}
    running = [study.ask(dists) for _ in range(slots)]
    ask = tell = 0.0
    for _ in range(configs):
        trial = running.pop(0)
        c0 = time.process_time()
        trial.set_user_attr(SEEDS_ATTR, {"1": 50.0})
        study.tell(trial, 50.0, state=TrialState.COMPLETE)
        c1 = time.process_time()
        running.append(study.ask(dists))
        c2 = time.process_time()
        tell, ask = tell + c1 - c0, ask + c2 - c1
    return {"ask_ms": round(1000 * ask / configs, 2), "tell_ms": round(1000 * tell / configs, 2),
            "total_ms": round(1000 * (ask + tell) / configs, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/optuna_storage.py", description=__doc__.split("\n")[0])
    parser.add_argument("--slots", default="8,64", help="comma-separated RUNNING configurations (default %(default)s)")
    parser.add_argument("--configs", type=int, default=300, help="configurations told and asked (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "optuna_storage.json")
    args = parser.parse_args(argv)
    try:
        slots = [int(s) for s in args.slots.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--slots {args.slots!r}: expected comma-separated whole numbers, e.g. 8,64")
    if not slots or min(slots) < 1 or args.configs < 1:
        parser.error("--slots and --configs must be >= 1")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    print(f"{'storage':<18}{'slots':>6}{'ask ms':>9}{'attr+tell ms':>14}{'total ms':>10}   (CPU per configuration)")
    for name, spec in STORAGES.items():
        for n in slots:
            row = {"storage": name, "slots": n, "configs": args.configs, **measure(spec, n, args.configs)}
            rows.append(row)
            print(f"{name:<18}{n:>6}{row['ask_ms']:>9.1f}{row['tell_ms']:>14.1f}{row['total_ms']:>10.1f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"optuna": optuna.__version__, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
