"""bf16 autocast against fp32 on the same seed, on the CPU: CPU autocast stands in for the CUDA autocast that
``train.amp`` turns on, so the training step's mixed-precision path is checked on a machine without a GPU.

    python benchmarks/bf16_cpu.py [--epochs 2] [--size 0.5] [--out results/benchmarks/bf16_cpu.json]

Both synthetic tasks (MNER and MRE) with the shipped MiniLM train twice with the same seed, once in fp32 and once
with ``model.train``'s autocast replaced by CPU bf16 autocast; it prints and writes each epoch's losses and dev/test
F1 of both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEYS = ("train_loss", "loss_ce", "loss_mix", "loss_kl", "dev_f1", "test_f1")


def run(task: str, epochs: int, size: float, bf16: bool, work: Path) -> list[dict[str, float]]:
    import torch

    import model.train as trainer
    from model.config import build_config

    cfg = build_config({"data.name": task, "data.synthetic_size": size, "train.epochs": epochs,
                        "train.progress": False, "train.save_checkpoint": False, "train.save_best": False,
                        "train.device": "cpu"})
    saved = trainer.use_amp, trainer._autocast
    if bf16:
        trainer.use_amp = lambda cfg, device: True  # type: ignore[assignment]
        trainer._autocast = lambda device, amp: torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp)
    try:
        result = trainer.train(cfg, work / f"{task}-{'bf16' if bf16 else 'fp32'}")
    finally:
        trainer.use_amp, trainer._autocast = saved
    return [{k: float(row[k]) for k in ("epoch", *KEYS)} for row in result["history"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=float, default=0.5, help="data.synthetic_size (1.0 = 400/100/100 samples)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "bf16_cpu.json")
    args = parser.parse_args(argv)
    doc: dict[str, Any] = {"epochs": args.epochs, "size": args.size, "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("synthetic-mner", "synthetic-mre"):
            rows = {p: run(task, args.epochs, args.size, p == "bf16", Path(tmp)) for p in ("fp32", "bf16")}
            doc["tasks"][task] = rows
            for a, b in zip(rows["fp32"], rows["bf16"]):
                print(f"{task} epoch {a['epoch']:.0f}: " + ", ".join(
                    f"{k} {a[k]:.4f} / {b[k]:.4f}" for k in KEYS) + "  (fp32 / bf16)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
