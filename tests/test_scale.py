"""``train.simulate_seconds`` (the stand-in of ``model/simulate.py``), ``benchmarks/scale.py`` on a tiny simulated
cluster, and ``benchmarks/gpu_check.sh`` on a machine without a GPU.

The benchmark test runs ``benchmarks/scale.py --trials 4 --slots 2 --nodes 1`` once: a real one-node Ray cluster
started with ``ray start`` (several nodes are tests/test_cluster.py's), ``study/run.py`` as the driver, 4 real
Tune trials through the study's trainable with 0.2-s simulated epochs, and the report timing; its JSON and the
study it leaves are both checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model.config import ALLOW_SIMULATE_ENV, ConfigError, build_config, config_from_flat
from model.preflight import check_resources
from model.simulate import STATE_FILE, epoch_metrics, quality

ROOT = Path(__file__).resolve().parent.parent
# What model.train.train reports every epoch for MNER; the stand-in must report the same keys.
MNER_KEYS = {"epoch", "dev_f1", "dev_precision", "dev_recall", "test_f1", "test_precision", "test_recall",
             "train_loss", "loss_ce", "loss_mix", "loss_kl", "best_dev_f1", "best_epoch", "test_f1_at_best",
             "epoch_seconds"}


def without_permission() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ALLOW_SIMULATE_ENV, None)
    return env


# ---------------------------------------------------------------------------------------------- the key


def test_simulate_refused_without_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission is the pre-flight's (validation reads no environment)."""
    monkeypatch.delenv(ALLOW_SIMULATE_ENV, raising=False)
    cfg = build_config({"train.simulate_seconds": 0.5})  # valid: a number >= 0
    with pytest.raises(ConfigError, match=r"^here: 'train\.simulate_seconds' is 0\.5: .*I2SRM_ALLOW_SIMULATE=1"):
        check_resources(cfg, "here: ")
    monkeypatch.setenv(ALLOW_SIMULATE_ENV, "true")  # only 1 allows it
    with pytest.raises(ConfigError, match="I2SRM_ALLOW_SIMULATE=1"):
        check_resources(cfg)
    monkeypatch.setenv(ALLOW_SIMULATE_ENV, "1")
    check_resources(cfg)
    assert build_config({}).train.simulate_seconds is None  # off by default, in every recipe too
    for name in ("synthetic-mner", "synthetic-mre"):
        assert build_config({"data.name": name}).train.simulate_seconds is None


def test_simulate_refused_by_the_trainer_and_study_commands(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "model.train", "--out", str(tmp_path / "run"),
                           "--set", "train.simulate_seconds=0.1"], cwd=ROOT, capture_output=True, text=True,
                          env=without_permission(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'train.simulate_seconds'" in lines[0] and ALLOW_SIMULATE_ENV in lines[0], lines
    assert not (tmp_path / "run").exists()
    study = subprocess.run([sys.executable, "study/run.py", "--space", "mixup.yaml", "--results-dir",
                            str(tmp_path / "results"), "--set", "train.simulate_seconds=0.1"], cwd=ROOT,
                           capture_output=True, text=True, env=without_permission(), timeout=120)
    assert study.returncode == 2, study.stderr
    assert "'train.simulate_seconds'" in study.stderr and ALLOW_SIMULATE_ENV in study.stderr
    assert not (tmp_path / "results").exists()


def test_simulate_accepted_with_permission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from model.train import train

    monkeypatch.setenv(ALLOW_SIMULATE_ENV, "1")
    with pytest.raises(ConfigError, match=r"'train\.simulate_seconds' is -1\.0; allowed: null \(off\) or"):
        build_config({"train.simulate_seconds": -1})
    cfg = build_config({"train.simulate_seconds": 0.05, "train.epochs": 3, "i2srm.delta": 0.3})
    seen: list[tuple[dict[str, float], Path | None]] = []
    doc = train(cfg, tmp_path / "a", lambda metrics, ckpt: seen.append((metrics, ckpt)))
    assert [m["epoch"] for m, _ in seen] == [1.0, 2.0, 3.0]
    assert all(set(m) == MNER_KEYS for m, _ in seen)
    assert all(m["epoch_seconds"] >= 0.05 for m, _ in seen)
    assert all(c == tmp_path / "a" / "checkpoint" and (c / STATE_FILE).is_file() for _, c in seen)
    assert doc == json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert doc["history"] == [m for m, _ in seen] and doc["epochs_run"] == 3
    best = max(seen, key=lambda s: s[0]["dev_f1"])[0]
    assert (doc["best_dev_f1"], doc["best_epoch"], doc["test_f1_at_best"]) == \
        (best["dev_f1"], int(best["epoch"]), best["test_f1"])
    q = quality(cfg)
    for m, _ in seen:  # the documented pseudo-metrics
        assert {k: m[k] for k in epoch_metrics(cfg, int(m["epoch"]), q)} == epoch_metrics(cfg, int(m["epoch"]), q)

    # Deterministic in config and seed; the seed and the searched values change them.
    def scores(c: Any, out: Path) -> list[float]:
        return [h["dev_f1"] for h in train(c, out)["history"]]
    assert scores(cfg, tmp_path / "b") == [m["dev_f1"] for m, _ in seen]
    assert scores(build_config({"train.simulate_seconds": 0, "train.epochs": 3, "i2srm.delta": 0.3,
                                "train.seed": 7}), tmp_path / "c") != [m["dev_f1"] for m, _ in seen]
    # quality: 1 at the paper's values, lower away from them, for numeric and string keys alike
    assert quality(build_config({})) == 1.0
    assert quality(build_config({"i2srm.delta": 0.3})) < quality(build_config({"i2srm.delta": 0.6})) < 1.0
    assert quality(build_config({"i2srm.ablation": "no_kl"})) < 1.0
    mre = build_config({"data.name": "synthetic-mre", "train.simulate_seconds": 0, "train.epochs": 1})
    assert {"dev_accuracy", "test_accuracy"} <= set(train(mre, tmp_path / "mre")["history"][0])

    # Resume after the checkpoint's epoch, as the trainer does: the first 3 epochs are kept as they were.
    longer = build_config({"train.simulate_seconds": 0.05, "train.epochs": 5, "i2srm.delta": 0.3})
    resumed = train(longer, tmp_path / "a", resume_from=tmp_path / "a" / "checkpoint")
    assert [h["epoch"] for h in resumed["history"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert resumed["history"][:3] == [m for m, _ in seen]


def test_simulated_run_loads_no_torch(tmp_path: Path) -> None:
    code = ("import sys; from model.config import build_config; from model.train import train; "
            f"train(build_config({{'train.simulate_seconds': 0, 'train.epochs': 2}}), {str(tmp_path)!r}); "
            "print(sorted(m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**without_permission(), ALLOW_SIMULATE_ENV: "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- scale.py

CELL_KEYS = {
    "cell", "optuna_storage", "optuna_journal_bytes", "trials", "slots", "epochs", "epoch_seconds", "trial_seconds",
    "nodes", "cpus_per_node",
    "cluster_start_s", "load_average", "statuses", "trials_timed", "trial_times_from", "driver_wall_s",
    "first_trial_start_s", "last_trial_end_s",
    "trials_per_min", "ideal_trials_per_min", "throughput_vs_ideal", "throughput_vs_rounds_bound",
    "trials_per_min_end_to_end", "trial_seconds_mean", "trial_overhead_s_mean", "driver_cpu_s",
    "driver_cpu_ms_per_trial", "driver_cpu_s_while_trials_ran", "driver_cpu_ms_per_trial_while_running",
    "driver_cpu_s_before_first_trial", "driver_cpu_s_after_last_trial", "driver_peak_rss_mib",
    "last_trial_end_to_last_report_s", "last_trial_end_to_driver_exit_s", "study_dir_bytes", "study_dir_files",
    "optuna_db_bytes", "parts_bytes", "reports_s", "study_dir",
}
TOP_KEYS = {"benchmark", "created", "command", "code_revision", "machine", "space", "targets", "total_seconds",
            "cells", "verdicts"}


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("scale")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ALLOW_SIMULATE_ENV, None)  # scale.py allows the stand-in itself, for its cluster and driver
    proc = subprocess.run([sys.executable, "benchmarks/scale.py", "--trials", "4", "--slots", "2",
                           "--epoch-seconds", "0.2", "--epochs", "2", "--nodes", "1", "--work-dir",
                           str(root / "work"), "--out", str(root / "scale.json"), "--figure",
                           str(root / "scale.png"), "--progress-every", "5",
                           "--optuna-storage", "journal"],  # the default SQLite file: every other study test
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    return {"root": root, "proc": proc}


@pytest.mark.slow
def test_scale_tiny_run_writes_every_field(scale_run: dict[str, Any]) -> None:
    proc, root = scale_run["proc"], scale_run["root"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cluster up" in proc.stdout and "timing the report builders" in proc.stdout
    doc = json.loads((root / "scale.json").read_text())
    assert set(doc) == TOP_KEYS
    (cell,) = doc["cells"]
    assert set(cell) == CELL_KEYS
    assert (cell["trials"], cell["slots"], cell["epochs"], cell["trial_seconds"], cell["nodes"]) == (4, 2, 2, 0.4, 1)
    assert cell["cpus_per_node"] == [2] and cell["statuses"] == {"completed": 4} and cell["trials_timed"] == 4
    assert cell["trial_times_from"] in ("ray result.json", "study records")
    assert cell["ideal_trials_per_min"] == 300.0
    assert cell["optuna_storage"] == "journal" and cell["optuna_db_bytes"] == 0  # no optuna.db: the journal
    for key in ("driver_cpu_s", "driver_peak_rss_mib", "driver_wall_s", "trials_per_min", "study_dir_bytes",
                "optuna_journal_bytes", "trial_seconds_mean"):
        assert isinstance(cell[key], (int, float)) and math.isfinite(cell[key]) and cell[key] > 0, key
    assert cell["trial_seconds_mean"] >= 0.4  # two 0.2-s epochs at least
    assert cell["driver_cpu_ms_per_trial"] == pytest.approx(1000 * cell["driver_cpu_s"] / 4, abs=2.0)  # rounding
    assert 0 < cell["first_trial_start_s"] <= cell["last_trial_end_s"] < cell["driver_wall_s"]
    assert cell["last_trial_end_to_last_report_s"] <= cell["last_trial_end_to_driver_exit_s"]
    reports = cell["reports_s"]
    for key in ("load_study", "tables.write_trials_csv", "tables.write_summary_csv",
                "sensitivity.plot_sensitivity", "tensorboard.write_tensorboard", "build_reports",
                "report_py_total"):
        assert reports[key] >= 0, key
    assert reports["build_reports"] >= max(v for k, v in reports.items() if "." in k and not k.startswith("import"))
    verdicts = doc["verdicts"]
    assert isinstance(verdicts["driver_cpu_ms_per_trial_at_most_50"]["holds"], bool)
    # no 64-slot or 1,000-trial cell ran: those targets are not measured, not passed
    assert verdicts["throughput_at_least_90pct_at_64_slots_60s_trials"]["holds"] is None
    assert verdicts["reports_of_1000_trials_under_60s"]["holds"] is None
    assert (root / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_scale_study_records_are_correct(scale_run: dict[str, Any]) -> None:
    """The tiny study went through the real run path: per-trial records hold the stand-in's documented
    pseudo-metrics for each trial's own config, and Optuna was told each trial's final dev F1."""
    import optuna

    assert scale_run["proc"].returncode == 0, scale_run["proc"].stdout[-3000:]
    doc = json.loads((scale_run["root"] / "scale.json").read_text())
    study_dir = Path(doc["cells"][0]["study_dir"])
    records = [json.loads(p.read_text()) for p in sorted((study_dir / "trials").glob("*/trial.json"))]
    assert len(records) == 4 and all(r["status"] == "completed" and r["epochs_run"] == 2 for r in records)
    for r in records:
        cfg = config_from_flat(r["config"])
        assert cfg.train.simulate_seconds == 0.2 and set(r["params"]) == {"i2srm.delta", "i2srm.kl_weight"}
        assert (cfg.i2srm.delta, cfg.i2srm.kl_weight) == (r["params"]["i2srm.delta"], r["params"]["i2srm.kl_weight"])
        epochs = [json.loads(line) for line in (study_dir / "trials" / Path(r["trial_id"]) / "epochs.jsonl")
                  .read_text().splitlines() if line.strip()]
        assert [e["epoch"] for e in epochs] == [1, 2]
        for e in epochs:
            expected = epoch_metrics(cfg, int(e["epoch"]), quality(cfg))
            assert {k: e[k] for k in expected} == pytest.approx(expected)
        assert r["best_dev_f1"] == pytest.approx(max(e["dev_f1"] for e in epochs))
        r["score"] = max(e["dev_f1"] for e in epochs)  # the run's best epoch (schema.score)
    # The cell's Optuna study is in the journal file beside its study folder (--optuna-storage journal).
    (journal,) = (scale_run["root"] / "work").glob("*/optuna.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        (match,) = [r for r in records if r["params"] == pytest.approx(t.params)]
        assert t.value == pytest.approx(match["score"])


# ---------------------------------------------------------------------------------------------- gpu_check.sh


def test_gpu_check_stops_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the check would run for minutes")
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA device" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


# ---------------------------------------------------------------------------------------------- optuna_storage.py


def test_optuna_storage_benchmark_measures_both_storages(tmp_path: Path) -> None:
    out = tmp_path / "optuna_storage.json"
    proc = subprocess.run([sys.executable, "benchmarks/optuna_storage.py", "--slots", "2,3", "--configs", "4",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert [(r["storage"], r["slots"]) for r in rows] == [("sqlite (default)", 2), ("sqlite (default)", 3),
                                                          ("journal file", 2), ("journal file", 3)]
    for r in rows:
        assert r["configs"] == 4 and r["ask_ms"] > 0 and r["tell_ms"] > 0
        assert math.isclose(r["total_ms"], r["ask_ms"] + r["tell_ms"], abs_tol=0.02)
    bad = subprocess.run([sys.executable, "benchmarks/optuna_storage.py", "--slots", "two", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--slots 'two'" in bad.stderr


# ---------------------------------------------------------------------------------------------- suite_cpu.py


def test_suite_cpu_benchmark_accounts_each_module_and_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "suite_cpu.json"
    args = ["tests/test_heads_metrics.py", "-n", "0", "-p", "no:cacheprovider"]
    proc = subprocess.run([sys.executable, "benchmarks/suite_cpu.py", "--out", str(out), "--", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["command"] == "python -m pytest -q " + " ".join(args) and result["pytest_exit_status"] == 0
    [module] = result["modules"]
    assert module["module"] == "tests/test_heads_metrics.py" and module["tests"] == result["tests"] >= 5
    assert list(result["worker_wall_s"]) == ["main"]  # not the outer run's xdist worker
    busy = sum(result["machine_cpu_s"][k] for k in ("user", "nice", "system", "irq", "softirq"))
    assert result["busy_cpu_s"] == pytest.approx(busy, abs=0.2) and busy > 0
    assert result["least_wall_s_on_these_cores"] == pytest.approx(busy / result["cores"], abs=0.1)
    assert result["cpu_s_outside_the_tests_processes"] == pytest.approx(
        busy - module["own_cpu_s"] - module["children_cpu_s"], abs=0.3)
    assert "tests/test_heads_metrics.py" in proc.stdout and str(out) in proc.stdout
    # A failing pytest run is still measured and written, and the benchmark exits 1.
    failing = subprocess.run([sys.executable, "benchmarks/suite_cpu.py", "--out", str(out), "--",
                              "tests/no_such_module.py", "-n", "0", "-p", "no:cacheprovider"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert failing.returncode == 1
    assert json.loads(out.read_text(encoding="utf-8"))["pytest_exit_status"] not in (0, None)
