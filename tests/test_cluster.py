"""A real two-node Ray cluster on 127.0.0.1 (``ray start`` head + worker, token auth): a study joined with
``--address`` runs trials on both nodes, and when the worker node is killed mid-trial its trial resumes
from its last epoch checkpoint on the surviving node.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest

from ray_cluster import (start_cluster, start_study, trial_records, wait_until,  # noqa: I001
                         write_space)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EPOCHS = 8  # epochs of a tiny trial take well under a second: room to kill the worker midway

SPACE_BODY = """\
study: clu
search:
  i2srm.delta: {grid: [0.7]}
sampler: grid
seeds: [1, 2]
resources: {cpus: 1, gpus: 0}
max_concurrent: 2
max_failures: 2
progress_interval: 1
reports: [summary]
"""


def test_study_on_two_nodes_survives_losing_the_worker(tmp_path: Path, tiny_encoder: Path) -> None:
    space = write_space(tmp_path / "clu.yaml", tiny_encoder, SPACE_BODY, epochs=EPOCHS)
    results = tmp_path / "results"
    d = results / "clu"
    cluster = start_cluster()
    study = None
    try:
        head, worker = cluster.head.node_id[:8], cluster.workers[0].node_id[:8]
        study = start_study(["--space", str(space), "--address", cluster.address, "--results-dir", str(results)],
                            tmp_path, tmp_path / "study.log")

        def trained_on_worker() -> dict | None:
            on = [t for t in trial_records(d).values() if t["epochs_run"] >= 2 and t["node"].endswith(worker)]
            return on[0] if on else None

        # Kill the worker once its trial has 2 epochs recorded: Tune registers an epoch's checkpoint only
        # after the driver has processed that epoch's result, and processes the next result after that, so the
        # epoch-1 checkpoint is then known to Tune; the trial still has epochs left to train.
        on_worker = wait_until(trained_on_worker, 400, "2 recorded epochs on the worker node", study, poll=0.2)
        victim = on_worker["trial_id"]
        epochs_before = on_worker["epochs_run"]
        assert epochs_before <= EPOCHS - 3, f"the records saw the worker's trial only at epoch {epochs_before}"
        cluster.workers[0].kill()  # raylet, workers and all: the node's whole process group
        killed_at = time.monotonic()

        def resumed() -> dict | None:
            t = trial_records(d).get(victim, {})
            return t if t.get("resumed_from_epoch", 0) > 0 else None

        wait_until(resumed, 400, "the interrupted trial to report again", study, poll=0.2)
        recovery = time.monotonic() - killed_at
        study.wait(timeout=400)
        done = time.monotonic() - killed_at
        log = (tmp_path / "study.log").read_text(encoding="utf-8", errors="replace")
        assert study.returncode == 0, log[-3000:]
        assert "Traceback" not in log
    finally:
        if study is not None and study.poll() is None:
            study.kill()
        cluster.stop()

    trials = trial_records(d)
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials.values()), trials
    moved = trials[victim]
    other = next(t for tid, t in trials.items() if tid != victim)
    assert other["node"].endswith(head) and other["resumed_from_epoch"] == 0  # both nodes ran trials
    # Resumed from a checkpoint of the worker's run, not from epoch 0, and finished on the head.
    assert 1 <= moved["resumed_from_epoch"] < EPOCHS
    assert moved["node"].endswith(head) and moved["epochs_run"] == EPOCHS
    for t in trials.values():
        epochs = [line for line in (d / "trials" / t["trial_id"] / "epochs.jsonl").read_text().splitlines() if line]
        assert len(epochs) == EPOCHS
    with (d / "trials.csv").open(encoding="utf-8") as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    # ip/node-id: Ray reports the host's address as the ip, the node id tells the two nodes apart.
    assert re.fullmatch(r"\S+/[0-9a-f]{8}", rows[victim]["node"]) and rows[victim]["node"].endswith(head)
    print(f"\n[measured] node loss: trial {victim} resumed from epoch {moved['resumed_from_epoch']} "
          f"({epochs_before} reported on the worker); first epoch after the loss {recovery:.1f} s after the kill "
          f"(includes waiting for the head's own trial to free its CPU), study done {done:.1f} s after the kill")
