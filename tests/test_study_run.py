"""``python study/run.py`` end to end: real Ray Tune, real Optuna, the real trainer on tiny synthetic data.

One study of 2 configurations x 2 seeds, where one configuration asks for a CUDA device no node has
(``cuda:99``), so its trials fail inside Ray: the stored records, the Optuna study, the progress and
failure lines, the refusal to overwrite a study, and ``--resume`` (ended configurations are not rerun).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from model.config import all_keys
from study.records import read_epochs, read_runs
from study.space import load_space
from ray_cluster import run_here, run_main, run_py
from study.run import main

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "study" / "run.py")
BAD_DEVICE = "cuda:99"
"""A device no node has: only the node a trial lands on can tell, so its trials fail (ConfigError, one line)."""
STUDY_KEYS = {"name", "space_file", "space", "base_config", "searched", "metric", "mode", "seeds", "code_revision",
              "packages", "command", "created"}
TRIAL_KEYS = {"trial_id", "configuration", "status", "error", "params", "seed", "config", "node", "wall_seconds",
              "epochs_run", "best_dev_f1", "best_epoch", "test_f1_at_best", "resumed_from_epoch", "phase"}
PACKAGES = {"torch", "torchvision", "transformers", "ray", "optuna", "seqeval", "tensorboard", "numpy", "python"}


def run_study(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_py([RUN, *args], cwd, timeout=timeout)


def tiny_space(root: Path, encoder: Path) -> Path:
    space = root / "e2e.yaml"
    space.write_text(f"""\
study: e2e
trainer:
  data.name: synthetic-mner
  data.synthetic_size: 0.1
  data.max_len: 24
  model.backbone: resnet18
  model.image_size: 33
  model.text_encoder: {encoder}
  train.epochs: 2
search:
  train.device: {{choice: [cpu, "{BAD_DEVICE}"]}}
sampler: grid
seeds: [1, 2]
resources: {{cpus: 1, gpus: 0}}
max_concurrent: 2
progress_interval: 1
reports: [summary]
""", encoding="utf-8")
    return space


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("e2e")
    space = tiny_space(root, tiny_encoder)
    results = root / "results"
    proc = run_study(["--space", str(space), "--results-dir", str(results)], cwd=root)
    return {"root": root, "space": space, "results": results, "dir": results / "e2e", "bad": BAD_DEVICE,
            "proc": proc}


@pytest.mark.slow
def test_study_runs_and_reports(study: dict[str, Any]) -> None:
    proc = study["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Failed to fetch metrics" not in proc.stderr, proc.stderr[-3000:]  # Tune's own logger files are off
    progress = [ln for ln in proc.stderr.splitlines() if ln.startswith("[study e2e] ") and " done, " in ln]
    assert progress and progress[-1].startswith("[study e2e] 4/4 done, 0 running, 2 failed | best dev_f1 ")
    assert "(train.device=cpu, seed " in progress[-1] and "elapsed " in progress[-1]
    failed_lines = [ln for ln in proc.stderr.splitlines() if " failed: ConfigError: " in ln]
    assert len(failed_lines) == 2 and f"'train.device' is '{BAD_DEVICE}' but " in failed_lines[0]
    assert (study["dir"] / "trials.csv").is_file() and (study["dir"] / "summary.csv").is_file()


@pytest.mark.slow
def test_study_metadata(study: dict[str, Any]) -> None:
    d = study["dir"]
    meta = json.loads((d / "study.json").read_text(encoding="utf-8"))
    assert STUDY_KEYS <= set(meta) and meta["name"] == "e2e" and meta["space_file"] == str(study["space"])
    assert meta["searched"] == ["train.device"] and meta["seeds"] == [1, 2]
    assert (meta["metric"], meta["mode"]) == ("dev_f1", "max") and set(meta["base_config"]) == set(all_keys())
    assert meta["base_config"]["train.epochs"] == 2 and PACKAGES <= set(meta["packages"])
    assert meta["code_revision"] and "study/run.py --space" in meta["command"]
    stored = load_space(d / "space.yaml")
    assert stored.to_dict() == meta["space"] and stored.total_runs == 4
    assert yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))["train"]["epochs"] == 2


@pytest.mark.slow
def test_trial_records(study: dict[str, Any]) -> None:
    d = study["dir"]
    trials = read_runs(d)
    assert len(trials) == 4 and [t.trial_id for t in trials] == sorted(t.trial_id for t in trials)
    for t in trials:
        raw = json.loads((d / "trials" / t.trial_id / "trial.json").read_text(encoding="utf-8"))
        assert set(raw) == TRIAL_KEYS and raw["phase"] == "search"  # no confirm: every run is the search's
        assert t.config["train.seed"] == t.seed and t.config["train.progress"] is False
        assert t.config["train.threads"] == 1 and t.config["train.device"] == t.params["train.device"]
        assert t.trial_id == f"c{t.configuration:04d}-s{t.seed}"
        rerun = yaml.safe_load((d / "trials" / t.trial_id / "config.yaml").read_text(encoding="utf-8"))
        assert {f"{s}.{k}": v for s, sec in rerun.items() for k, v in sec.items()} == t.config
    good = [t for t in trials if t.params["train.device"] == "cpu"]
    bad = [t for t in trials if t.params["train.device"] == study["bad"]]
    assert sorted(t.seed for t in good) == [1, 2] and sorted(t.seed for t in bad) == [1, 2]
    for t in good:
        epochs = read_epochs(d, t.trial_id)
        assert t.status == "completed" and t.error == "" and t.epochs_run == 2 and t.node
        assert [e["epoch"] for e in epochs] == [1.0, 2.0] and t.wall_seconds > 0
        assert {"dev_f1", "test_f1", "train_loss", "loss_ce", "loss_mix", "loss_kl", "best_dev_f1",
                "test_f1_at_best", "epoch_seconds"} <= set(epochs[-1])
        assert "node" not in epochs[-1] and "time_total_s" not in epochs[-1]  # Ray's bookkeeping left out
        assert t.best_dev_f1 == max(e["dev_f1"] for e in epochs)
        best = next(e for e in epochs if e["epoch"] == t.best_epoch)
        assert t.test_f1_at_best == best["test_f1"]
        # A finished run's checkpoint (hundreds of MB) is dropped: only unfinished ones resume from theirs.
        state = d / "ray" / "e2e" / "state" / t.trial_id
        assert sorted(p.name for p in state.iterdir()) == ["finished.json", "latest.json"]
        assert json.loads((state / "finished.json").read_text())["result"]["epoch"] == 2
        assert len(list((d / "ray" / "e2e").glob(f"{t.trial_id}-*"))) == 1  # Tune's folder of the trial that ran it
    for t in bad:
        assert t.status == "failed" and t.epochs_run == 0 and t.best_dev_f1 is None
        assert t.error.startswith(f"ConfigError: 'train.device' is '{BAD_DEVICE}' but "), t.error
        assert "\n" not in t.error


@pytest.mark.slow
def test_optuna_study_holds_one_trial_per_configuration(study: dict[str, Any]) -> None:
    d = study["dir"]
    ot = optuna.load_study(study_name="e2e", storage=f"sqlite:///{d / 'optuna.db'}")
    assert len(ot.trials) == 2
    by_weights = {t.params["train.device"]: t for t in ot.trials}
    assert set(by_weights) == {"cpu", study["bad"]}
    done = by_weights["cpu"]
    assert done.state == optuna.trial.TrialState.COMPLETE
    # The searcher tells Optuna the mean over seeds of each run's score: dev_f1 at its best epoch.
    best = [max(e["dev_f1"] for e in read_epochs(d, t.trial_id)) for t in read_runs(d) if t.status == "completed"]
    assert done.value == pytest.approx(sum(best) / len(best))
    assert by_weights[study["bad"]].state != optuna.trial.TrialState.COMPLETE


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_existing_name_is_refused_and_resume_reruns_only_unfinished(study: dict[str, Any]) -> None:
    # The refusal and the resume in this process (the study itself ran as `python study/run.py`).
    d = study["dir"]
    before = {p: p.read_bytes() for p in sorted((d / "trials").rglob("*")) if p.is_file()}
    meta = (d / "study.json").read_bytes()
    proc = run_here(["--space", str(study["space"]), "--results-dir", str(study["results"])], study["root"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "already holds results" in lines[0] and "--resume" in lines[0]
    assert (d / "study.json").read_bytes() == meta
    assert {p: p.read_bytes() for p in sorted((d / "trials").rglob("*")) if p.is_file()} == before

    # --resume: every configuration has ended (one COMPLETE, one FAIL in the Optuna study): nothing runs again.
    proc = run_here(["--name", "e2e", "--results-dir", str(study["results"]), "--resume"], study["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = read_runs(d)
    assert len(trials) == 4 and sorted(t.status for t in trials) == ["completed", "completed", "failed", "failed"]
    for path, content in before.items():
        if path.name == "epochs.jsonl" or (path.name == "trial.json" and b'"completed"' in content):
            assert path.read_bytes() == content, path
    assert len(optuna.load_study(study_name="e2e", storage=f"sqlite:///{d / 'optuna.db'}").trials) == 2


def test_a_folder_holding_results_is_refused_before_anything_starts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "mixup").mkdir(parents=True)
    (results / "mixup" / "keep.txt").write_text("earlier results\n", encoding="utf-8")
    proc = run_main(main, ["--space", "mixup.yaml", "--results-dir", str(results)], tmp_path)  # in this process
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already holds results" in proc.stderr and "--name" in proc.stderr
    assert sorted(p.name for p in (results / "mixup").iterdir()) == ["keep.txt"]

    proc = run_main(main, ["--name", "nothing_here", "--results-dir", str(results), "--resume"], tmp_path)
    assert proc.returncode == 2 and "holds no study" in proc.stderr and "Traceback" not in proc.stderr


def test_scratch_folders_of_dead_trials_are_collected(tmp_path: Path) -> None:
    from study.trainable import scratch_dir

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = tmp_path / f"abc_00001-pid{int(gone.stdout)}-x1"  # a trial killed before its finally ran
    (dead / "checkpoint").mkdir(parents=True)
    (dead / "checkpoint" / "state.pt").write_bytes(b"0" * 1024)
    alive = tmp_path / f"abc_00002-pid{os.getpid()}-x2"  # a trial still running in this process
    alive.mkdir()
    fresh = scratch_dir("abc_00003", root=tmp_path)
    assert fresh.is_dir() and fresh.name.startswith(f"abc_00003-pid{os.getpid()}-")
    assert not dead.exists() and alive.is_dir()
