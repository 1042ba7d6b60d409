"""Training-step cost of ``model.crf_span`` on the study command's trainer recipe: the sub-word CRF (``reference``)
against the word CRF (``clean``), everything else as ``search_spaces/mixup.yaml`` trains it.

    python benchmarks/crf_span_cost.py [--steps 20] [--warmup 3] [--rounds 3] [--threads 1]

Synthetic MNER at 75%, resnet18 with the feature store, the offline MiniLM, batch 16, one torch thread; the two
values alternate ``--rounds`` times (so a change in the machine's load hits both) and each round times ``--steps``
optimizer steps after ``--warmup`` untimed ones with ``benchmarks/perf.py``'s ``throughput``. Prints samples/s of
each round and the ratio of the medians; writes ``results/benchmarks/crf_span_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perf import throughput  # noqa: E402  (benchmarks/ is not a package)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "crf_span_cost.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    base = {"data.name": "synthetic-mner", "data.synthetic_size": 0.75, "model.backbone": "resnet18",
            "train.device": "cpu", "train.progress": False, "train.save_checkpoint": False,
            "train.save_best": False}
    rates: dict[str, list[float]] = {"reference": [], "clean": []}
    for r in range(args.rounds):
        for value in ("reference", "clean"):
            got = throughput({**base, "model.crf_span": value}, args.steps, args.warmup)
            rates[value].append(got["samples_per_s"])
            print(f"round {r + 1}: model.crf_span={value}: {got['samples_per_s']:.2f} samples/s", flush=True)
    ratio = statistics.median(rates["reference"]) / statistics.median(rates["clean"])
    print(f"median samples/s: reference {statistics.median(rates['reference']):.2f}, clean "
          f"{statistics.median(rates['clean']):.2f}; reference / clean = {ratio:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"samples_per_s": rates, "ratio": ratio, "steps": args.steps,
                               "threads": args.threads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
