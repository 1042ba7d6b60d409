"""The stand-in for a training run that ``train.simulate_seconds`` selects (benchmarks of the platform only).

``model.train.train`` hands a config with ``train.simulate_seconds`` set to ``simulate`` here, which keeps the
trainer's contract and replaces only the model compute:

* no model, tokenizer, data or torch is loaded (a trial process stays as small as Ray makes it);
* each epoch sleeps ``train.simulate_seconds``, then reports the trainer's per-epoch metrics dict (the same keys
  as ``model.train.train`` for the task) through ``callback(metrics, checkpoint_dir)``;
* each epoch writes a checkpoint (``OUT/checkpoint/simulated_state.json``: the run state and the config, a few
  KB, where the real trainer writes weights and optimizer state) and ``OUT/metrics.json``, atomically;
* ``resume_from`` continues after the checkpoint's epoch, as the real trainer does.

The pseudo-metrics are deterministic functions of the config and ``train.seed`` (no clock, no global RNG):

* quality ``q = exp(-sum_k d_k^2)`` over the keys ``k`` of the ``i2srm`` section: for a numeric key
  ``d_k = (v_k - r_k) / (|r_k| + 1)`` with ``v_k`` the run's value and ``r_k`` the key's dataclass default (the
  paper's reference value); for a string or boolean key ``d_k = 0`` when ``v_k == r_k``, else
  ``0.5 + b_k / 510`` with ``b_k`` the first byte of ``sha256("key=value")``. So ``q = 1`` at the reference
  values and falls smoothly away from them: a searcher has an optimum to find.
* at epoch ``e`` (1-based) the learning curve is ``c_e = 1 - exp(-e / 2)``, and with two draws ``n_dev``,
  ``n_test`` from ``random.gauss(0, 1)`` of ``random.Random(f"i2srm-simulate:{seed}:{e}")`` (in that order):
  ``dev_f1 = clip(100 q c_e + n_dev)``, ``test_f1 = clip(100 q c_e - 2 + n_test)`` (clip to [0, 100]);
  ``dev_precision = dev_recall = dev_f1`` (``test_*`` likewise; MRE also ``dev_accuracy = dev_f1``,
  ``test_accuracy = test_f1``); ``train_loss = loss_ce = 2 (1 - q c_e) + 0.1``, ``loss_mix = loss_kl = 0``;
  ``best_dev_f1``, ``best_epoch`` and ``test_f1_at_best`` are tracked as the trainer tracks them, and
  ``epoch_seconds`` is the epoch's measured wall time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

from model.config import Config, I2SRMConfig
from model.fileio import atomic_write_text

STATE_FILE = "simulated_state.json"
"""The stand-in's checkpoint file, beside where the real trainer writes ``state.pt``."""

Callback = Callable[[dict[str, float], "Path | None"], None]


def quality(cfg: Config) -> float:
    """``q`` in (0, 1]: 1 at the ``i2srm`` section's reference values (see the module docstring)."""
    reference = I2SRMConfig()
    total = 0.0
    for f in dataclasses.fields(I2SRMConfig):
        value, ref = getattr(cfg.i2srm, f.name), getattr(reference, f.name)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and isinstance(ref, (int, float)) and not isinstance(ref, bool)
        if numeric:
            d = (float(value) - float(ref)) / (abs(float(ref)) + 1.0)
        elif value == ref:
            d = 0.0
        else:
            d = 0.5 + hashlib.sha256(f"i2srm.{f.name}={value}".encode()).digest()[0] / 510.0
        total += d * d
    return math.exp(-total)


def _clip(x: float) -> float:
    return min(100.0, max(0.0, x))


def epoch_metrics(cfg: Config, epoch: int, q: float) -> dict[str, float]:
    """The pseudo-scores of one epoch (everything but the best-tracking keys and ``epoch_seconds``)."""
    rng = random.Random(f"i2srm-simulate:{cfg.train.seed}:{epoch}")
    curve = 1.0 - math.exp(-epoch / 2.0)
    dev = _clip(100.0 * q * curve + rng.gauss(0.0, 1.0))
    test = _clip(100.0 * q * curve - 2.0 + rng.gauss(0.0, 1.0))
    loss = 2.0 * (1.0 - q * curve) + 0.1
    out = {"epoch": float(epoch), "dev_f1": dev, "dev_precision": dev, "dev_recall": dev}
    if cfg.task == "mre":
        out["dev_accuracy"] = dev
    out.update({"test_f1": test, "test_precision": test, "test_recall": test})
    if cfg.task == "mre":
        out["test_accuracy"] = test
    out.update({"train_loss": loss, "loss_ce": loss, "loss_mix": 0.0, "loss_kl": 0.0})
    return out


def simulate(cfg: Config, out_dir: str | Path, callback: Callback | None = None,
             resume_from: str | Path | None = None) -> dict[str, Any]:
    """``model.train.train`` with the model compute replaced (see the module docstring); returns the same
    ``metrics.json`` document."""
    from model.provenance import code_revision, package_versions

    seconds = cfg.train.simulate_seconds
    if seconds is None:
        raise ValueError("simulate() needs train.simulate_seconds set")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    state: dict[str, Any] = {"epoch": 0, "best_dev_f1": -1.0, "best_epoch": 0, "test_at_best": {}, "history": []}
    if resume_from is not None:
        state = json.loads((Path(resume_from) / STATE_FILE).read_text(encoding="utf-8"))["run_state"]
    q = quality(cfg)
    revision, versions = code_revision(), package_versions()  # once per run, as the trainer does
    ckpt_dir = out / "checkpoint"
    for epoch in range(int(state["epoch"]) + 1, cfg.train.epochs + 1):
        t0 = time.time()
        time.sleep(seconds)  # the stand-in for the epoch's training and evaluation
        metrics = epoch_metrics(cfg, epoch, q)
        test = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
        if metrics["dev_f1"] > state["best_dev_f1"]:
            state.update(best_dev_f1=metrics["dev_f1"], best_epoch=epoch, test_at_best=test)
        metrics.update({"best_dev_f1": state["best_dev_f1"], "best_epoch": float(state["best_epoch"]),
                        "test_f1_at_best": float(state["test_at_best"]["f1"]), "epoch_seconds": time.time() - t0})
        state["history"].append(metrics)
        state["epoch"] = epoch
        saved: Path | None = None
        if cfg.train.save_checkpoint:
            ckpt_dir.mkdir(exist_ok=True)
            atomic_write_text(ckpt_dir / STATE_FILE, json.dumps({"run_state": state, "config": cfg.flat()}))
            saved = ckpt_dir
        atomic_write_text(out / "metrics.json", json.dumps(_metrics_doc(cfg, state, started, revision, versions),
                                                           indent=2))
        if callback is not None:
            callback(metrics, saved)
    if not (out / "metrics.json").is_file():  # resumed after the last epoch: nothing left to run
        atomic_write_text(out / "metrics.json", json.dumps(_metrics_doc(cfg, state, started, revision, versions),
                                                           indent=2))
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _metrics_doc(cfg: Config, state: dict[str, Any], started: float, revision: str,
                 versions: dict[str, str]) -> dict[str, Any]:
    """The keys of the trainer's ``metrics.json``, plus ``simulated_seconds_per_epoch``."""
    return {"task": cfg.task, "dataset": cfg.data.name, "seed": cfg.train.seed, "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"], "best_dev_f1": state["best_dev_f1"],
            "test_at_best": state["test_at_best"], "test_f1_at_best": state["test_at_best"].get("f1"),
            "history": state["history"], "missing_images": {}, "seconds": round(time.time() - started, 2),
            "config": cfg.flat(), "code_revision": revision, "packages": versions,
            "simulated_seconds_per_epoch": cfg.train.simulate_seconds}
