"""``tensorboard/``: per-trial learning curves and the HParams view, rebuilt from the stored records.

Layout: ``tensorboard/<trial_id>/`` is one run per trial holding its per-epoch scalars (``dev/f1``,
``test/f1``, ``train/loss``, ``loss/ce``, ...) *and* its HParams session (searched values, seed, status;
metrics ``best_dev_f1``, ``test_f1_at_best``), so the HParams table links to the curves. The experiment
(each key's domain, the metric list) is written once, in the root run. Written by torch's
``SummaryWriter`` with the summaries of TensorBoard's ``hparams.summary_v2`` (no TensorFlow needed), not
by ``add_hparams``, which puts each trial's session into an extra sub-run named by the current time.

Rebuilds: wall times derive from the study's ``created`` time plus the epochs' ``epoch_seconds`` and each
run's event file is renamed to a fixed name, so a rebuild of the same records gives the same file names
holding the same events; not the same bytes (the writer stamps its file header with the current time, and
protobuf serializes the hparams map in no fixed order). The folder is written aside and swapped in, so a
rebuild never appends a second copy of the events.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from model.fileio import swap_folder, temp_folder
from study.reports.load import Study
from study.reports.values import is_number
from study.schema import STATUSES, Run

# trainer metric -> scalar tag (grouped by prefix in TensorBoard's scalar dashboard)
SCALAR_TAGS = {
    "dev_f1": "dev/f1", "dev_precision": "dev/precision", "dev_recall": "dev/recall",
    "dev_accuracy": "dev/accuracy",
    "test_f1": "test/f1", "test_precision": "test/precision", "test_recall": "test/recall",
    "test_accuracy": "test/accuracy",
    "train_loss": "train/loss", "loss_ce": "loss/ce", "loss_mix": "loss/mix", "loss_kl": "loss/kl",
    "epoch_seconds": "time/epoch_seconds",
}
# Metrics of the HParams view: a session's value is the tag's last scalar in the trial's run.
HPARAM_METRICS = (hp.Metric("best_dev_f1", dataset_type=hp.Metric.VALIDATION), hp.Metric("test_f1_at_best"),
                  hp.Metric("dev/f1", dataset_type=hp.Metric.VALIDATION), hp.Metric("test/f1"),
                  hp.Metric("train/loss", dataset_type=hp.Metric.TRAINING))
SESSION_STATUS = {"completed": api_pb2.STATUS_SUCCESS, "pruned": api_pb2.STATUS_SUCCESS,
                  "failed": api_pb2.STATUS_FAILURE, "running": api_pb2.STATUS_RUNNING}
EVENT_FILE = "events.out.tfevents.{time:010d}.i2srm-study"


def _base_time(study: Study) -> float:
    try:
        created = datetime.fromisoformat(study.created)
    except ValueError:
        return 0.0
    if created.tzinfo is None:  # a naive stamp is read as UTC, never as this machine's zone
        created = created.replace(tzinfo=timezone.utc)
    return created.timestamp()


def _hparam_value(value: Any) -> bool | float | str:
    if isinstance(value, bool) or is_number(value):
        return value
    return "" if value is None else str(value)


def _discrete(values: list[Any]) -> hp.Discrete:
    """One type for the whole domain, as the plugin wants: bools, else numbers, else text."""
    values = [v for v in values if v is not None]
    if values and all(isinstance(v, bool) for v in values):
        return hp.Discrete(values, dtype=bool)
    if values and all(is_number(v) for v in values):
        return hp.Discrete([float(v) for v in values], dtype=float)
    return hp.Discrete([str(v) for v in values], dtype=str)


def _hparam(study: Study, key: str) -> hp.HParam:
    """A searched key with the domain its spec declares (listed values, or a range's bounds)."""
    param = study.params.get(key)
    if param is not None and param.finite:
        return hp.HParam(key, _discrete(list(param.values)))
    if param is not None and param.kind in ("uniform", "loguniform"):
        return hp.HParam(key, hp.RealInterval(float(param.low or 0), float(param.high or 0)))
    if param is not None and param.kind == "int":
        return hp.HParam(key, hp.IntInterval(int(param.low or 0), int(param.high or 0)))
    return hp.HParam(key, _discrete(list({t.value(key) for t in study.trials})))  # no domain: the seen values


def _experiment(study: Study) -> summary_pb2.Summary:
    seeds = sorted({t.seed for t in study.trials if t.seed is not None} | set(study.seeds))
    hparams = [*(_hparam(study, k) for k in study.searched), hp.HParam("seed", hp.Discrete(seeds, dtype=int)),
               hp.HParam("status", hp.Discrete(STATUSES, dtype=str))]
    return hp.hparams_config_pb(hparams, HPARAM_METRICS, time_created_secs=_base_time(study))


def _session_end(trial: Run, wall: float) -> summary_pb2.Summary:
    end = plugin_data_pb2.SessionEndInfo(status=SESSION_STATUS[trial.status], end_time_secs=wall)
    meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=meta, tensor=metadata.NULL_TENSOR)])


def _events(writer: SummaryWriter) -> Any:
    """The writer's event file writer (an open ``SummaryWriter`` always has one)."""
    assert writer.file_writer is not None
    return writer.file_writer


def _write_trial(writer: SummaryWriter, study: Study, trial: Run, base: float) -> None:
    values = {k: _hparam_value(trial.value(k)) for k in study.searched}
    if trial.seed is not None:
        values["seed"] = float(trial.seed)
    values["status"] = trial.status
    _events(writer).add_summary(hp.hparams_pb(values, trial_id=trial.trial_id, start_time_secs=base), 0, base)
    wall, last = base, 0
    for i, row in enumerate(trial.epochs, 1):
        last = int(row.get("epoch", i))
        wall += float(row.get("epoch_seconds") or 0.0)
        for name, tag in SCALAR_TAGS.items():
            if is_number(row.get(name)):
                writer.add_scalar(tag, row[name], last, walltime=wall)
    if trial.best_dev_f1 is not None and trial.test_f1_at_best is not None:
        writer.add_scalar("best_dev_f1", trial.best_dev_f1, last, walltime=wall)
        writer.add_scalar("test_f1_at_best", trial.test_f1_at_best, last, walltime=wall)
    _events(writer).add_summary(_session_end(trial, wall), last, wall)


@contextlib.contextmanager
def _run(run_dir: Path, base: float) -> Iterator[SummaryWriter]:
    """A writer of one run; when it closes, its one event file gets the fixed name (the writer's
    own name has the host, the process id and the current time)."""
    with SummaryWriter(str(run_dir), max_queue=1000, flush_secs=3600) as writer:
        yield writer
    (event_file,) = run_dir.glob("events.out.tfevents.*")
    event_file.rename(run_dir / EVENT_FILE.format(time=int(base)))


def write_tensorboard(study: Study) -> Path:
    base = _base_time(study)
    final = study.dir / "tensorboard"
    with temp_folder(final) as tmp:
        with _run(tmp, base) as root:
            _events(root).add_summary(_experiment(study), 0, base)
        for trial in study.trials:
            with _run(tmp / trial.trial_id, base) as writer:
                _write_trial(writer, study, trial, base)
        return swap_folder(tmp, final)
