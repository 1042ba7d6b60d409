"""Trial faults and driver loss, on a local Ray instance with the real trainer (no test hooks in it).

- A trial whose loss turns NaN (a real bad config: train.lr 1e6 with clipping off goes NaN within two epochs)
  raises in the trainer; it is recorded as failed with its error's first line, retried once (max_failures: 1),
  and the study finishes with the other completed. (A trial that raises before training, on a device its node
  lacks, is tests/test_study_run.py's.)
- The driver killed with SIGKILL after some runs finished: ``--resume`` completes the study with the
  requested number of runs, continues the unfinished ones from their stored state, and runs no finished one again.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import optuna
import pytest

from ray_cluster import (run_here, run_py, kill_group, start_study, trial_records,  # noqa: I001
                         wait_until, write_space)

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "study" / "run.py")
EPOCHS = 5  # the driver-kill study: trials long enough to be killed midway



@pytest.mark.slow
def test_a_nan_trial_fails_with_its_first_line_and_the_study_finishes(tmp_path: Path, tiny_encoder: Path) -> None:
    space = write_space(tmp_path / "faults.yaml", tiny_encoder, """\
  train.max_grad_norm: 1.0e12
study: faults
search:
  train.lr: {choice: [1.0e-4, 1.0e6]}
sampler: grid
seeds: [1]
resources: {cpus: 1, gpus: 0}
max_concurrent: 1  # one trial process; the retry of the failed run gets a new one
max_failures: 1
progress_interval: 1
reports: [summary]
""")
    results = tmp_path / "results"
    proc = run_py([RUN, "--space", str(space), "--results-dir", str(results)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    d = results / "faults"
    with (d / "trials.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    by = {float(r["train.lr"]): r for r in rows}
    good, nan = by[1e-4], by[1e6]
    assert good["status"] == "completed" and good["error"] == "" and good["epochs_run"] == "2"
    assert nan["status"] == "failed" and nan["error"].startswith("NonFiniteLoss: training loss is not finite in epoch")
    assert int(nan["epochs_run"]) < 2  # the finite epochs before the NaN (if any) are kept
    assert "\n" not in nan["error"]
    failed_lines = [ln for ln in proc.stderr.splitlines() if " failed: " in ln]
    assert len(failed_lines) == 1 and "NonFiniteLoss: " in failed_lines[0], proc.stderr[-3000:]
    # The summary is built despite the failure; the failed trial does not enter it.
    with (d / "summary.csv").open(encoding="utf-8") as f:
        summary = list(csv.DictReader(f))
    counted = {float(s["train.lr"]) for s in summary if int(s["n"]) > 0}
    assert counted == {1e-4}, summary


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_driver_sigkill_then_resume_finishes_without_rerunning(tmp_path: Path, tiny_encoder: Path) -> None:
    space = write_space(tmp_path / "drv.yaml", tiny_encoder, """\
study: drv
search:
  i2srm.delta: {grid: [0.0, 0.5, 0.7, 1.0]}
sampler: grid
seeds: [1]
resources: {cpus: 1, gpus: 0}
max_concurrent: 2
progress_interval: 1
reports: [summary]
""", epochs=EPOCHS)
    results = tmp_path / "results"
    d = results / "drv"
    store = tmp_path / "shared-store"  # --storage: Tune's trial folders and the runs' states outside results/
    proc = start_study(["--space", str(space), "--results-dir", str(results), "--storage", str(store)], tmp_path,
                       tmp_path / "run1.log")
    try:
        def one_done_one_saved_midway() -> list[str]:
            """Unfinished runs with a stored resume state, once one run has completed."""
            records = trial_records(d)
            if not any(t["status"] == "completed" for t in records.values()):
                return []
            return [rid for rid, t in records.items() if t["status"] == "running" and 1 <= t["epochs_run"] < EPOCHS - 1
                    and (store / "drv" / "state" / rid / "latest.json").is_file()]
        midway = wait_until(one_done_one_saved_midway, 400, "a completed run and one saved midway", proc, poll=0.5)
    finally:
        kill_group(proc, signal.SIGKILL)  # the driver and the local Ray instance it started
    before = trial_records(d)
    finished = {tid: (d / "trials" / tid / "epochs.jsonl").read_bytes()
                for tid, t in before.items() if t["status"] == "completed"}
    assert 1 <= len(finished) < 4
    assert (store / "drv" / "state").is_dir() and not (d / "ray").exists()
    # The kill's worst moment for a run: its state of epoch k stored, the report of epoch k never processed.
    # Make it so for every run that was midway (drop its last recorded epoch): --resume must continue each
    # from its stored state and still record every epoch once.
    moved = [tid for tid in midway if tid not in finished]
    for tid in moved:
        path = d / "trials" / tid / "epochs.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(lines) > 1:
            path.write_text("".join(lines[:-1]), encoding="utf-8")
    assert moved, (midway, before)

    # The resume is an ordinary run of the driver: in this process, on the session's Ray instance.
    resumed = run_here(["--name", "drv", "--results-dir", str(results), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr
    after = trial_records(d)
    assert len(after) == 4 and all(t["status"] == "completed" for t in after.values()), \
        {tid: (t["status"], t["error"]) for tid, t in after.items()}
    assert all(after[tid]["resumed_from_epoch"] >= 1 for tid in moved), \
        ({tid: after[tid] for tid in moved}, log[-3000:])
    for tid, content in finished.items():  # no finished trial ran again
        assert (d / "trials" / tid / "epochs.jsonl").read_bytes() == content
    deltas = sorted(t["params"]["i2srm.delta"] for t in after.values())
    assert deltas == [0.0, 0.5, 0.7, 1.0]  # the grid, each point once: the searcher went on where it was
    assert all([e["epoch"] for e in map(json.loads, (d / "trials" / tid / "epochs.jsonl").read_text().splitlines())]
               == list(range(1, EPOCHS + 1)) for tid in after)
    ot = optuna.load_study(study_name="drv", storage=f"sqlite:///{d / 'optuna.db'}")
    assert sorted(t.params["i2srm.delta"] for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE) == deltas
