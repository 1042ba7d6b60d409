"""The study reports, rebuilt by ``python study/report.py`` from a stored study written by hand in the
contract's layout: CSV numbers against hand-computed ones, byte-identical rebuilds, TensorBoard
scalars and HParams read back, ablation statistics against scipy, figures, and refusals."""

from __future__ import annotations

import json
import math
import statistics
import struct
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from scipy import stats

from tests.helpers import write_json, write_study
from ray_cluster import run_main
from study.report import main as report_main

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "study" / "report.py"


# ----------------------------------------------------------------------------- a stored study, by hand
# (``write_study`` and ``write_json`` are in tests/helpers.py: other report tests write studies too)

def run_report(folder: Path) -> subprocess.CompletedProcess[str]:
    """``python study/report.py FOLDER``, in this process (``ray_cluster.run_main``)."""
    return run_main(report_main, [str(folder)], name=str(REPORT))


DELTAS = [0.0, 0.5, 1.0]
BACKBONES = ["resnet18", "resnet50"]


def joint_dev(delta: float, backbone: str, seed: int) -> float:
    # delta matters most, the backbone a little, seed 2 is a bit luckier
    return round(60.0 + 10.0 * delta + 2.0 * (backbone == "resnet50") + 2.0 * (seed == 2), 6)


@pytest.fixture(scope="module")
def joint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    space = {"study": "joint", "description": "delta x backbone, for the report tests.",
             "trainer": {"data.name": "synthetic-mner"},
             "search": {"i2srm.delta": {"grid": DELTAS}, "model.backbone": {"choice": BACKBONES}},
             "sampler": "grid", "seeds": [1, 2], "metric": "dev_f1", "mode": "max",
             "reports": ["summary", "sensitivity", "importance", "tensorboard"], "reference": {"i2srm.delta": 0.7}}
    trials, n = [], 0
    for delta in DELTAS:
        for backbone in BACKBONES:
            for seed in (1, 2):
                n += 1
                d = joint_dev(delta, backbone, seed)
                # F1 in percent, as the trainer reports it; the best dev epoch is 2, test F1 there is dev - 3
                t: dict[str, Any] = {"trial_id": f"trial_{n}", "status": "completed",
                                     "params": {"i2srm.delta": delta, "model.backbone": backbone}, "seed": seed,
                                     "dev": [d - 10, d, d - 5], "test": [d - 20, d - 3, d - 1]}
                if (delta, backbone, seed) == (1.0, "resnet50", 2):  # pruned after one epoch, record not closed
                    t.update(status="pruned", dev=[d], test=[d - 3], record_best=False)
                trials.append(t)
    trials.append({"trial_id": "trial_13", "status": "failed", "seed": 3,
                   "params": {"i2srm.delta": 0.5, "model.backbone": "resnet50"},
                   "error": "RuntimeError: CUDA out of memory\nTraceback (most recent call last): ..."})
    folder = write_study(tmp_path_factory.mktemp("results") / "joint", "joint", space, trials,
                         {"i2srm.delta": CategoricalDistribution(DELTAS),
                          "model.backbone": CategoricalDistribution(BACKBONES)})
    proc = run_report(folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- tables

def test_trials_csv_lists_every_trial_with_failures(joint: Path) -> None:
    text = (joint / "trials.csv").read_text(encoding="utf-8")
    assert "\r" not in text
    assert text.splitlines()[0] == ("trial_id,status,error,i2srm.delta,model.backbone,seed,best_dev_f1,best_epoch,"
                                    "test_f1_at_best,epochs_run,wall_seconds,node")
    rows = _csv(joint / "trials.csv")
    assert [r["trial_id"] for r in rows] == [f"trial_{i}" for i in range(1, 14)]  # trial_10 after trial_9
    first = rows[0]
    assert (first["i2srm.delta"], first["model.backbone"], first["seed"]) == ("0.0", "resnet18", "1")
    assert (first["best_dev_f1"], first["best_epoch"], first["test_f1_at_best"]) == ("60.0000", "2", "57.0000")
    assert (first["epochs_run"], first["wall_seconds"], first["node"]) == ("3", "30.2", "127.0.0.1")
    failed = rows[-1]
    assert (failed["status"], failed["error"], failed["best_dev_f1"]) == \
        ("failed", "RuntimeError: CUDA out of memory", "")
    pruned = rows[11]  # best fields filled from its one epoch
    assert (pruned["status"], pruned["best_dev_f1"], pruned["best_epoch"], pruned["test_f1_at_best"]) == \
        ("pruned", "74.0000", "1", "71.0000")


def test_summary_matches_hand_computed_statistics(joint: Path) -> None:
    rows = _csv(joint / "summary.csv")
    assert list(rows[0]) == ["i2srm.delta", "model.backbone", "n", "dev_f1_mean", "dev_f1_std", "dev_f1_ci95",
                             "test_f1_mean", "test_f1_std", "test_f1_ci95", "reference", "n_paired", "test_f1_diff",
                             "diff_ci_low", "diff_ci_high", "effect_size", "p_value", "p_signflip", "p_holm",
                             "interval_halfwidth", "resolved"]
    # the reference configuration (delta 0.7, resnet50) never ran: no row is compared
    assert {r["reference"] for r in rows} == {"false"} and {r["p_value"] for r in rows} == {""}
    assert [(r["i2srm.delta"], r["model.backbone"]) for r in rows] == \
        [(repr(d), b) for d in DELTAS for b in BACKBONES]
    # by hand: seeds give dev 60 and 62 -> mean 61, std sqrt(2), ci95 = t(.975, 1) * std / sqrt(2) = 12.7062
    assert (rows[0]["n"], rows[0]["dev_f1_mean"], rows[0]["dev_f1_std"], rows[0]["dev_f1_ci95"]) == \
        ("2", "61.0000", "1.4142", "12.7062")
    assert (rows[0]["test_f1_mean"], rows[0]["test_f1_std"]) == ("58.0000", "1.4142")
    for r in rows:
        d, b = float(r["i2srm.delta"]), r["model.backbone"]
        devs = [joint_dev(d, b, s) for s in (1, 2)]  # the failed trial (seed 3) is not pooled
        tests = [x - 3 for x in devs]
        for col, xs in (("dev_f1", devs), ("test_f1", tests)):
            sd = statistics.stdev(xs)
            assert r[f"{col}_mean"] == f"{statistics.fmean(xs):.4f}"
            assert r[f"{col}_std"] == f"{sd:.4f}"
            assert r[f"{col}_ci95"] == f"{stats.t.ppf(0.975, 1) * sd / math.sqrt(2):.4f}"
        assert r["n"] == "2"


def _tensorboard_events(folder: Path) -> dict[Path, list[bytes]]:
    """Each event file under ``folder`` (by its path) and its events as TensorBoard reads them, with the
    writer's file-version header stamp (the time of writing) cleared and the HParams payloads decoded,
    so that the order a map's entries were serialized in does not count."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    files = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        events = []
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("file_version"):
                event.ClearField("wall_time")
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    value.metadata.plugin_data.content = data.SerializeToString(deterministic=True)
            events.append(event.SerializeToString(deterministic=True))
        files[path.relative_to(folder)] = events
    return files


def test_rebuild_gives_the_same_files_and_replaces_tensorboard(joint: Path) -> None:
    names = ["trials.csv", "summary.csv", "importance.csv", "REPORT.md", "REPORT.html", "sensitivity_i2srm.delta.png",
             "sensitivity_i2srm.delta.pdf", "importance.pdf"]
    before = {n: (joint / n).read_bytes() for n in names}
    events_before = _tensorboard_events(joint / "tensorboard")
    assert len(events_before) == 14 and all(len(events) >= 2 for events in events_before.values())
    (joint / "tensorboard" / "stale_run").mkdir()  # e.g. a trial folder that no longer exists
    proc = run_report(joint)
    assert proc.returncode == 0, proc.stderr
    assert {n: (joint / n).read_bytes() for n in names} == before  # byte-identical
    assert _tensorboard_events(joint / "tensorboard") == events_before  # same file names, same events, once
    assert not (joint / "tensorboard" / "stale_run").exists()  # swapped in, not merged
    assert not [p for p in joint.iterdir() if p.name.startswith(".") and p.name != ".report.lock"]  # no temp left


# ----------------------------------------------------------------------------- figures

def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_sensitivity_figures_per_searched_key(joint: Path) -> None:
    for key in ("i2srm.delta", "model.backbone"):
        png, pdf = joint / f"sensitivity_{key}.png", joint / f"sensitivity_{key}.pdf"
        assert _png_size(png) == (660, 480)  # 3.3 x 2.4 in at 200 dpi
        assert png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
        assert b"CreationDate" not in pdf.read_bytes()
    assert (joint / "importance.png").is_file() and (joint / "importance.pdf").is_file()


def test_axis_kinds() -> None:
    from study.reports.sensitivity import axis_kind

    from study.space import Param

    def spec(key: str, **kw: object) -> Param:
        return Param.from_dict(key, kw)

    assert axis_kind("i2srm.delta", [0.0, 0.5, 1.0], spec("i2srm.delta", grid=[0.0, 0.5, 1.0])) == "linear"
    assert axis_kind("i2srm.kl_weight", [0.0, 0.01, 0.1, 2.0], spec("i2srm.kl_weight", grid=[])) == "symlog"
    assert axis_kind("i2srm.kl_weight", [0.02, 0.3], spec("i2srm.kl_weight", loguniform=[0.01, 2.0])) == "log"
    assert axis_kind("i2srm.attn_heads", [1, 2, 4, 8, 16], None) == "log2"
    assert axis_kind("model.backbone", ["resnet18", "resnet50"], spec("model.backbone", choice=[])) == "category"


def test_continuous_search_is_binned_on_a_log_axis(tmp_path: Path) -> None:
    from study.reports import build_reports

    space = {"study": "kl", "search": {"i2srm.kl_weight": {"loguniform": [0.01, 2.0]}}, "sampler": "tpe",
             "seeds": [1], "reports": ["summary", "sensitivity"]}
    trials = [{"trial_id": f"t{i:02d}", "status": "completed", "seed": 1,
               "params": {"i2srm.kl_weight": 0.01 * 1.3 ** i}, "dev": [50.0 + i], "test": [50.0]}
              for i in range(20)]
    folder = write_study(tmp_path / "kl", "kl", space, trials)
    written = build_reports(folder)
    assert {p.name for p in written} >= {"summary.csv", "sensitivity_i2srm.kl_weight.png", "REPORT.md"}
    assert len(_csv(folder / "summary.csv")) == 20 and not (folder / "tensorboard").exists()
    assert "importance" not in (folder / "REPORT.md").read_text()


# ----------------------------------------------------------------------------- importance

def test_importance_is_fanova_on_the_records_with_pruned_trials(joint: Path) -> None:
    rows = _csv(joint / "importance.csv")
    assert [r["param"] for r in rows] == ["i2srm.delta", "model.backbone"]  # delta moves dev F1 most
    # by hand: one point per configuration, the mean over seeds of each trial's best dev F1; the pruned trial
    # (delta 1.0, resnet50, seed 2) counts at the one epoch it ran, where its dev F1 is joint_dev(...)
    ostudy = optuna.create_study(direction="maximize")
    dists = {"i2srm.delta": CategoricalDistribution(DELTAS), "model.backbone": CategoricalDistribution(BACKBONES)}
    for d in DELTAS:
        for b in BACKBONES:
            ostudy.add_trial(optuna.trial.create_trial(
                params={"i2srm.delta": d, "model.backbone": b}, distributions=dists,
                value=statistics.fmean(joint_dev(d, b, s) for s in (1, 2))))
    runs = [get_param_importances(ostudy, evaluator=FanovaImportanceEvaluator(n_trees=16, max_depth=8, seed=s))
            for s in range(5)]  # the study's forest size (importance.FANOVA_TREES, FANOVA_DEPTH)
    for r in rows:
        xs = [run[r["param"]] for run in runs]
        assert r["importance"] == f"{statistics.fmean(xs):.4f}"
        assert r["importance_std"] == f"{statistics.stdev(xs):.4f}"
        assert (r["n_configurations"], r["n_trials"], r["n_pruned"]) == ("6", "12", "1")  # the failed one is out
    assert "fANOVA" in rows[0]["note"] and "6 configurations (12 trials, 1 of them stopped early" in rows[0]["note"]


def test_importance_with_too_few_trials_writes_a_note(tmp_path: Path) -> None:
    from study.reports import build_reports

    space = {"study": "few", "search": {"i2srm.delta": {"grid": [0.0, 1.0]}, "model.backbone": {"choice": BACKBONES}},
             "sampler": "grid", "seeds": [1], "reports": ["importance"]}
    trials = [{"trial_id": "t1", "status": "completed", "seed": 1, "dev": [60.0], "test": [50.0],
               "params": {"i2srm.delta": 0.0, "model.backbone": "resnet18"}}]
    folder = write_study(tmp_path / "few", "few", space, trials,
                         {"i2srm.delta": CategoricalDistribution([0.0, 1.0]),
                          "model.backbone": CategoricalDistribution(BACKBONES)})
    build_reports(folder)
    rows = _csv(folder / "importance.csv")
    assert len(rows) == 1 and rows[0]["param"] == "" and rows[0]["n_configurations"] == "1"
    assert "too few configurations for an importance estimate: 1 " in rows[0]["note"]
    assert not (folder / "importance.png").exists()


# ----------------------------------------------------------------------------- tensorboard

def test_tensorboard_scalars_and_hparams(joint: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    run = EventAccumulator(str(joint / "tensorboard" / "trial_2"))
    run.Reload()
    tags = set(run.Tags()["scalars"])
    assert {"dev/f1", "test/f1", "train/loss", "loss/ce", "loss/mix", "loss/kl", "best_dev_f1",
            "test_f1_at_best"} <= tags
    dev = run.Scalars("dev/f1")
    d = joint_dev(0.0, "resnet18", 2)
    assert [e.step for e in dev] == [1, 2, 3]
    assert [e.value for e in dev] == pytest.approx([d - 10, d, d - 5])
    assert run.Scalars("best_dev_f1")[-1].value == pytest.approx(d)
    content = run.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["i2srm.delta"].number_value == 0.0
    assert start.hparams["model.backbone"].string_value == "resnet18"
    assert (start.hparams["seed"].number_value, start.hparams["status"].string_value) == (2, "completed")
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS

    failed = EventAccumulator(str(joint / "tensorboard" / "trial_13"))
    failed.Reload()
    end = metadata.parse_session_end_info_plugin_data(
        failed.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_FAILURE

    root = EventAccumulator(str(joint / "tensorboard"))
    root.Reload()
    exp = metadata.parse_experiment_plugin_data(root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    assert [h.name for h in exp.hparam_infos] == ["i2srm.delta", "model.backbone", "seed", "status"]
    assert [v.number_value for v in exp.hparam_infos[0].domain_discrete.values] == DELTAS
    assert {m.name.tag for m in exp.metric_infos} >= {"best_dev_f1", "test_f1_at_best", "dev/f1"}
    assert sorted(p.name for p in (joint / "tensorboard").iterdir() if p.is_dir()) == \
        sorted(f"trial_{i}" for i in range(1, 14))


def _session_groups(logdir: Path) -> dict[str, Any]:
    """The HParams table as TensorBoard's hparams plugin serves it: its ListSessionGroups handler over
    a data provider of ``logdir``."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    request = api_pb2.ListSessionGroupsRequest(allowed_statuses=list(api_pb2.Status.values()), slice_size=100)
    response = list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb), "", request).run()
    return {g.name: g for g in response.session_groups}


def test_tensorboard_hparams_table_links_each_trial_to_its_run(joint: Path) -> None:
    from tensorboard.plugins.hparams import api_pb2

    groups = _session_groups(joint / "tensorboard")
    assert sorted(groups) == sorted(f"trial_{i}" for i in range(1, 14))
    trial = groups["trial_2"]
    assert [s.name for s in trial.sessions] == ["trial_2"]  # the session is the run holding the curves
    assert trial.sessions[0].status == api_pb2.STATUS_SUCCESS
    d = joint_dev(0.0, "resnet18", 2)
    metrics = {m.name.tag: m.value for m in trial.metric_values}
    assert metrics == pytest.approx({"best_dev_f1": d, "test_f1_at_best": d - 3, "dev/f1": d - 5,
                                     "test/f1": d - 1, "train/loss": 2.0 / 3})
    assert trial.hparams["model.backbone"].string_value == "resnet18" and trial.hparams["seed"].number_value == 2
    assert groups["trial_13"].sessions[0].status == api_pb2.STATUS_FAILURE and not groups["trial_13"].metric_values


def test_tensorboard_range_domains(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    from study.reports.load import load_study
    from study.reports.tensorboard import write_tensorboard

    space = {"study": "ranges", "search": {"i2srm.kl_weight": {"loguniform": [0.01, 2.0]},
                                           "i2srm.attn_heads": {"int": [1, 16]},
                                           "model.finetune_backbone": {"choice": [True, False]}},
             "sampler": "tpe", "seeds": [7], "reports": ["tensorboard"]}
    trials = [{"trial_id": f"t{i}", "status": "running" if i == 2 else "completed", "seed": 7, "dev": [50.0 + i],
               "test": [40.0], "params": {"i2srm.kl_weight": 0.05 * i, "i2srm.attn_heads": 2 * i,
                                          "model.finetune_backbone": i % 2 == 0}}
              for i in (1, 2)]
    folder = write_study(tmp_path / "ranges", "ranges", space, trials)
    assert write_tensorboard(load_study(folder)) == folder / "tensorboard"
    root = EventAccumulator(str(folder / "tensorboard"))
    root.Reload()
    exp = metadata.parse_experiment_plugin_data(root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in exp.hparam_infos}
    assert list(infos) == ["i2srm.kl_weight", "i2srm.attn_heads", "model.finetune_backbone", "seed", "status"]
    kl, heads, freeze = infos["i2srm.kl_weight"], infos["i2srm.attn_heads"], infos["model.finetune_backbone"]
    assert kl.type == api_pb2.DATA_TYPE_FLOAT64
    assert (kl.domain_interval.min_value, kl.domain_interval.max_value) == (0.01, 2.0)
    assert (heads.domain_interval.min_value, heads.domain_interval.max_value) == (1, 16)
    assert freeze.type == api_pb2.DATA_TYPE_BOOL
    assert {v.bool_value for v in freeze.domain_discrete.values} == {True, False}
    assert [v.number_value for v in infos["seed"].domain_discrete.values] == [7]
    groups = _session_groups(folder / "tensorboard")
    assert groups["t2"].sessions[0].status == api_pb2.STATUS_RUNNING
    assert groups["t2"].hparams["i2srm.kl_weight"].number_value == pytest.approx(0.1)
    assert groups["t2"].hparams["model.finetune_backbone"].bool_value is True


# ----------------------------------------------------------------------------- ablation

ABLATION_TEST = {  # test F1 per seed 1..6; no_attnmixup ran 3 seeds, no_objects only one
    "full": [80.0, 82.0, 81.0, 83.0, 79.0, 81.0],
    "no_kl": [78.0, 81.0, 80.0, 80.0, 78.0, 79.0],
    "text_only": [70.0, 72.0, 69.0, 73.0, 71.0, 70.0],
    "no_attnmixup": [79.0, 80.0, 80.0],
    "no_objects": [77.0],
}


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    space = {"study": "ablation", "search": {"i2srm.ablation": {"grid": list(ABLATION_TEST)}}, "sampler": "grid",
             "seeds": [1, 2, 3, 4, 5, 6], "reports": ["ablation", "summary", "tensorboard"]}
    trials = []
    for name in ("text_only", "no_objects", "full", "no_attnmixup", "no_kl"):  # not the table's order
        for seed, t in enumerate(ABLATION_TEST[name], 1):
            trials.append({"trial_id": f"{name}_s{seed}", "status": "completed", "seed": seed,
                           "params": {"i2srm.ablation": name}, "dev": [t + 1.0], "test": [t]})
    folder = write_study(tmp_path_factory.mktemp("results") / "ablation", "ablation", space, trials)
    proc = run_report(folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def test_ablation_csv_rows_statistics_and_tests(ablation: Path) -> None:
    rows = _csv(ablation / "ablation.csv")
    assert [r["i2srm.ablation"] for r in rows] == ["full", "no_kl", "no_attnmixup", "no_objects", "text_only"]
    by = {r["i2srm.ablation"]: r for r in rows}
    full = ABLATION_TEST["full"]
    for name, xs in ABLATION_TEST.items():
        r = by[name]
        assert r["n"] == str(len(xs)) and r["test_f1_mean"] == f"{statistics.fmean(xs):.4f}"
        assert r["dev_f1_mean"] == f"{statistics.fmean(xs) + 1.0:.4f}"
        assert r["delta_test_f1"] == f"{statistics.fmean(xs) - statistics.fmean(full):.4f}"
    for name in ("no_kl", "text_only"):
        xs = ABLATION_TEST[name]
        assert by[name]["n_paired"] == "6"
        assert float(by[name]["p_value"]) == pytest.approx(stats.ttest_rel(xs, full).pvalue, rel=1e-5)
        assert float(by[name]["p_wilcoxon"]) == pytest.approx(stats.wilcoxon(xs, full).pvalue, rel=1e-5)
        d = [a - b for a, b in zip(xs, full)]
        assert float(by[name]["effect_size"]) == pytest.approx(statistics.fmean(d) / statistics.stdev(d), rel=1e-5)
    p_mix = stats.ttest_rel(ABLATION_TEST["no_attnmixup"], full[:3]).pvalue
    assert float(by["no_attnmixup"]["p_value"]) == pytest.approx(p_mix, rel=1e-5)
    assert by["no_attnmixup"]["p_wilcoxon"] == ""  # 3 pairs < 6
    # Holm over the block's three tested rows (no_objects has one pair: no test)
    ps = sorted(float(by[n]["p_value"]) for n in ("no_kl", "text_only", "no_attnmixup"))
    holm = [min(1.0, 3 * ps[0])]
    holm += [max(holm[-1], min(1.0, 2 * ps[1]))]
    holm += [max(holm[-1], min(1.0, ps[2]))]
    assert sorted(float(by[n]["p_holm"]) for n in ("no_kl", "text_only", "no_attnmixup")) == \
        pytest.approx(holm, rel=1e-5)
    assert (by["no_objects"]["n_paired"], by["no_objects"]["p_value"], by["no_objects"]["p_wilcoxon"],
            by["no_objects"]["test_f1_std"]) == ("1", "", "", "")
    assert (by["full"]["p_value"], by["full"]["delta_test_f1"]) == ("", "0.0000")


def test_ablation_markdown_and_latex(ablation: Path) -> None:
    md = (ablation / "ablation.md").read_text(encoding="utf-8").splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + 5
    assert table[2].startswith("| **full** | **6** | **81.00 ± 1.41**")  # the best test F1, in bold
    # Holm p of no_kl is 0.008: two stars, escaped so that Markdown does not read them as emphasis
    assert "| no_kl | 6 | 79.33 ± 1.21 |" in table[3] and r"| -1.67\*\* |" in table[3]
    assert "| no_objects | 1 | 77.00 ± n/a |" in table[5]  # one seed: no std, never ± 0.00
    tex = (ablation / "ablation.tex").read_text(encoding="utf-8")
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:ablation-ablation}",
                   r"\textbf{full}", r"no\_kl", r"\begin{tabular}", r"$\pm$", "-1.67**"):
        assert needle in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    p = stats.ttest_rel(ABLATION_TEST["text_only"], ABLATION_TEST["full"]).pvalue
    text_only = next(line for line in tex.splitlines() if line.strip().startswith(r"text\_only"))
    assert (f"{p:.3f}" if p >= 0.0005 else "$<$0.001") in text_only
    assert not list(ablation.glob("sensitivity_*"))  # not asked for by the space's reports list
    assert "[ablation.tex](ablation.tex)" in (ablation / "REPORT.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- index and refusals

def test_report_md_names_the_best_configuration(joint: Path) -> None:
    text = (joint / "REPORT.md").read_text(encoding="utf-8")
    assert "# Study `joint`" in text and "python study/run.py --space joint.yaml" in text
    assert "c771943-dirty" in text and "11 completed, 1 pruned, 1 failed" in text
    # best mean dev F1: delta 1.0 with resnet50 (seeds 72 and 74)
    assert "`i2srm.delta` = 1, `model.backbone` = resnet50" in text  # shown to 4 significant digits
    # Each of its runs is trained again from its own complete config (seed and derived keys included).
    best = sorted(p.parent.name for p in (joint / "trials").glob("*/trial.json")
                  if json.loads(p.read_text())["params"] == {"i2srm.delta": 1.0, "model.backbone": "resnet50"})
    assert len(best) == 2 and all(f"python -m model.train --config joint/trials/{run}/config.yaml" in text
                                  for run in best)
    assert "test F1 (%): 70.00 ± 1.41" in text
    for name in ("trials.csv", "summary.csv", "sensitivity_i2srm.delta.png", "sensitivity_model.backbone.pdf",
                 "importance.csv", "tensorboard/"):
        assert f"[{name}]({name})" in text
    assert "`trial_13`: RuntimeError: CUDA out of memory" in text
    # the importance rests on 6 configurations: said, and warned about
    assert "on 6 configurations (12 trials, 1 of them stopped early" in text
    assert "**Warning:** the importance rests on 6 configuration(s), fewer than 10" in text


def test_not_a_study_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run_report(tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no study.json" in lines[0] and str(tmp_path) in lines[0]
    bad = tmp_path / "bad"
    write_json(bad / "study.json", {"name": "bad", "searched": []})
    write_json(bad / "trials" / "t1" / "trial.json", {"trial_id": "t1", "status": "exploded"})
    proc = run_report(bad)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "trial.json" in proc.stderr and "allowed: completed, pruned, failed, running" in proc.stderr
