"""One score and exact reruns, on a real faceted study (``data.name`` searched, real Ray, Optuna, trainer).

- Every COMPLETE Optuna trial's value is the mean over its seeds of each run's score, dev F1 at the run's
  best epoch (``study.schema.score``), on runs where the best epoch is not the last.
- A run of each dataset trained again from its own ``trials/<run>/config.yaml`` repeats its dev and test F1
  epoch by epoch: the config holds the seed, the threads and the keys the dataset's recipe derives.
- ``--resume`` refuses a change of what the study computes, by name, and writes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from study.records import read_runs
from study.schema import score
from model.train import main as train_main
from ray_cluster import run_here, run_main, run_py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPACE = """\
study: facet
trainer:
  data.synthetic_size: 0.05
  model.backbone: resnet18
  model.image_size: 33
  model.text_encoder: {encoder}
  i2srm.attn_heads: 4
  train.batch_size: 8
  train.epochs: 4
  train.lr: 3.0e-3
search:
  data.name: {{grid: [synthetic-mner, synthetic-mre]}}
sampler: grid
seeds: [1, 2]
resources: {{cpus: 1, gpus: 0}}
max_concurrent: 1
progress_interval: 5
reports: [summary]
"""


@pytest.fixture(scope="module")
def facet(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, local_ray: None) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("facet")
    space = root / "facet.yaml"
    space.write_text(SPACE.format(encoder=tiny_encoder), encoding="utf-8")
    proc = run_here(["--space", str(space), "--results-dir", str(root / "results")], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "dir": root / "results" / "facet"}


@pytest.mark.slow
def test_optuna_is_told_the_mean_best_epoch_score(facet: dict[str, Any]) -> None:
    d = facet["dir"]
    runs = read_runs(d)
    assert len(runs) == 4 and all(r.status == "completed" and r.epochs_run == 4 for r in runs)
    # The check below means something only where a run's best epoch is not its last.
    assert any(r.best_epoch != r.epochs_run for r in runs), [(r.trial_id, r.best_epoch) for r in runs]
    study = optuna.load_study(study_name="facet", storage=f"sqlite:///{d / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    for t in complete:
        mine = [r for r in runs if r.configuration == t.number]
        best = [max(e["dev_f1"] for e in r.epochs) for r in mine]
        assert len(mine) == 2 and t.value == pytest.approx(sum(best) / len(best), abs=1e-12)
        assert t.value == pytest.approx(sum(score(r.epochs, "dev_f1", "max") or 0.0 for r in mine) / 2, abs=1e-12)
    # REPORT.md names the best configuration by the same number, and prints its runs' rerun commands.
    report = (d / "REPORT.md").read_text(encoding="utf-8")
    for r in runs:
        assert f"python -m model.train --config results/facet/trials/{r.trial_id}/config.yaml" in report


@pytest.mark.slow
def test_a_run_of_each_dataset_trains_again_from_its_config_yaml(facet: dict[str, Any], tmp_path: Path) -> None:

    d = facet["dir"]
    runs = {r.params["data.name"]: r for r in read_runs(d) if r.seed == 1}
    assert set(runs) == {"synthetic-mner", "synthetic-mre"}
    stored = {name: yaml.safe_load((d / "trials" / r.trial_id / "config.yaml").read_text()) for name, r in runs.items()}
    assert {name: c["data"]["name"] for name, c in stored.items()} == {n: n for n in stored}  # its own dataset
    # The recipe-derived key is written out: MRE's max_len, not MNER's.
    assert stored["synthetic-mre"]["data"]["max_len"] != stored["synthetic-mner"]["data"]["max_len"]
    for name, run in runs.items():
        assert stored[name]["train"]["seed"] == 1 and stored[name]["train"]["threads"] == 1
        out = tmp_path / name
        argv = ["--config", str(d / "trials" / run.trial_id / "config.yaml"), "--out", str(out)]
        # `python -m model.train --config ...`: MRE's in a fresh process, MNER's in this one, after the tests and
        # the studies this process has run (so no state left behind by them may change a run).
        if name == "synthetic-mre":
            proc = run_py(["-m", "model.train", *argv], facet["root"])
        else:
            proc = run_main(train_main, argv, facet["root"], name="model.train")
        assert proc.returncode == 0, proc.stderr[-3000:]
        again = json.loads((out / "metrics.json").read_text())["history"]
        assert [(e["epoch"], e["dev_f1"], e["test_f1"]) for e in again] == \
            [(e["epoch"], e["dev_f1"], e["test_f1"]) for e in run.epochs], name


@pytest.mark.slow
def test_resume_refuses_a_change_of_what_the_study_computes(facet: dict[str, Any]) -> None:
    d = facet["dir"]
    before = {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and "ray" not in p.parts}
    for sets, named in ((["train.epochs=9"], "train.epochs"), (["seeds=[1,2,3]"], "seeds"),
                        (["search.data.name={grid: [synthetic-mner]}"], "search.data.name")):
        proc = run_here(["--name", "facet", "--results-dir", str(d.parent), "--resume",
                        *(a for s in sets for a in ("--set", s))], facet["root"])
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"keeps its own {named} (" in lines[0] and "resources.cpus" in lines[0]
    proc = run_here(["--name", "facet", "--results-dir", str(d.parent), "--resume", "--storage",
                    str(facet["root"] / "elsewhere")], facet["root"])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "resumes on its own storage" in lines[0], proc.stderr
    assert not (facet["root"] / "elsewhere").exists()
    # How it runs may change: applied, said, and the finished study runs nothing again.
    proc = run_here(["--name", "facet", "--results-dir", str(d.parent), "--resume", "--set", "max_concurrent=2"],
                    facet["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--resume applies max_concurrent=2 for this session (stored: 1)" in proc.stderr
    after = {p: p.read_bytes() for p in before}
    assert {p for p in before if p.name in ("trial.json", "epochs.jsonl", "config.yaml") and before[p] != after[p]} \
        == set()
