"""``tensorboard/``: per-trial learning curves and the HParams view, rebuilt from the stored records.

Layout: ``tensorboard/<trial_id>/`` is one run per trial holding its per-epoch scalars
(``dev/f1``, ``test/f1``, ``train/loss``, ``loss/ce``, ``loss/mix``, ``loss/kl``, ...) *and* its
HParams session (searched values, seed, status; metrics ``best_dev_f1``, ``test_f1_at_best``).
The experiment summary (each key's domain and the metric list) is written once, in the
root run. Why not ``SummaryWriter.add_hparams``: it writes each trial's hparams into an extra
sub-run named by the current time, so a stock ``tensorboard --logdir`` lists every trial twice,
the HParams table cannot show the curves' run, each sub-run carries its own experiment
(TensorBoard reads only one), and names change on every rebuild. The hparams plugin's own
``api`` module needs TensorFlow, so the protos are written directly, as its summary_v2 does.

Event files get a fixed name and wall times derived from the study's ``created`` time plus the
epochs' ``epoch_seconds``, so a rebuild writes the same bytes. The folder is written aside and
swapped in, so a rebuild never appends a second copy of the events.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from google.protobuf import struct_pb2
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from model.fileio import swap_folder, temp_folder
from study.records import STATUSES
from study.reports.load import Study, Trial
from study.reports.values import is_number, listed_values, spec_kind

# trainer metric -> scalar tag (grouped by prefix in TensorBoard's scalar dashboard)
SCALAR_TAGS = {
    "dev_f1": "dev/f1", "dev_precision": "dev/precision", "dev_recall": "dev/recall",
    "dev_accuracy": "dev/accuracy",
    "test_f1": "test/f1", "test_precision": "test/precision", "test_recall": "test/recall",
    "test_accuracy": "test/accuracy",
    "train_loss": "train/loss", "loss_ce": "loss/ce", "loss_mix": "loss/mix", "loss_kl": "loss/kl",
    "epoch_seconds": "time/epoch_seconds",
}
# Metrics of the HParams view: (tag, dataset type); a session's value is the tag's last scalar.
HPARAM_METRICS = (("best_dev_f1", api_pb2.DATASET_VALIDATION), ("test_f1_at_best", api_pb2.DATASET_UNKNOWN),
                  ("dev/f1", api_pb2.DATASET_VALIDATION), ("test/f1", api_pb2.DATASET_UNKNOWN),
                  ("train/loss", api_pb2.DATASET_TRAINING))
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


class _EventFile:
    def __init__(self, run_dir: Path, wall_time: float) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / EVENT_FILE.format(time=int(wall_time)), "wb")  # noqa: SIM115
        self._writer = RecordWriter(self._file)
        self.write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2"))

    def write(self, event: event_pb2.Event) -> None:
        self._writer.write(event.SerializeToString(deterministic=True))

    def summary(self, summary: summary_pb2.Summary, step: int, wall_time: float) -> None:
        self.write(event_pb2.Event(wall_time=wall_time, step=step, summary=summary))

    def close(self) -> None:
        self._writer.close()


def _scalar(tag: str, value: float) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])


def _plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    """As ``metadata.create_summary_metadata``, but with map fields (the hparams) in a fixed order."""
    data.version = metadata.PLUGIN_DATA_VERSION
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString(deterministic=True)))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta,
                                                                tensor=metadata.NULL_TENSOR)])


def _proto_value(value: Any) -> struct_pb2.Value:
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if is_number(value):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value="" if value is None else str(value))


def _data_type(values: Iterable[Any]) -> int:
    values = [v for v in values if v is not None]
    if values and all(isinstance(v, bool) for v in values):
        return api_pb2.DATA_TYPE_BOOL
    if values and all(is_number(v) for v in values):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _hparam_info(study: Study, key: str) -> api_pb2.HParamInfo:
    spec = study.search_spec(key)
    listed = listed_values(spec)
    seen = [t.value(key) for t in study.trials]
    info = api_pb2.HParamInfo(name=key, type=_data_type(listed or seen))
    kind = spec_kind(spec)
    if listed:
        info.domain_discrete.values.extend([_proto_value(v) for v in listed])
    elif kind in ("uniform", "loguniform", "int") and isinstance(spec.get(kind), list) and len(spec[kind]) >= 2:
        info.domain_interval.min_value, info.domain_interval.max_value = float(spec[kind][0]), float(spec[kind][1])
    return info


def _experiment(study: Study) -> plugin_data_pb2.HParamsPluginData:
    infos = [_hparam_info(study, k) for k in study.searched]
    seeds = sorted({t.seed for t in study.trials if t.seed is not None} | set(study.seeds))
    seed_info = api_pb2.HParamInfo(name="seed", type=api_pb2.DATA_TYPE_FLOAT64)
    seed_info.domain_discrete.values.extend([_proto_value(s) for s in seeds])
    status_info = api_pb2.HParamInfo(name="status", type=api_pb2.DATA_TYPE_STRING)
    status_info.domain_discrete.values.extend([_proto_value(s) for s in STATUSES])
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag, dataset_type=dt)
               for tag, dt in HPARAM_METRICS]
    exp = api_pb2.Experiment(name=study.name, description=study.description,
                             time_created_secs=_base_time(study),
                             hparam_infos=[*infos, seed_info, status_info], metric_infos=metrics)
    return plugin_data_pb2.HParamsPluginData(experiment=exp)


def _write_trial(study: Study, trial: Trial, root: Path, base: float) -> None:
    f = _EventFile(root / trial.trial_id, base)
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=base)
    for key in study.searched:
        start.hparams[key].CopyFrom(_proto_value(trial.value(key)))
    if trial.seed is not None:
        start.hparams["seed"].number_value = float(trial.seed)
    start.hparams["status"].string_value = trial.status
    f.summary(_plugin_summary(metadata.SESSION_START_INFO_TAG,
                              plugin_data_pb2.HParamsPluginData(session_start_info=start)), 0, base)
    wall, last = base, 0
    for i, row in enumerate(trial.epochs, 1):
        step = int(row.get("epoch", i))
        wall += float(row.get("epoch_seconds") or 0.0)
        last = step
        for name, tag in SCALAR_TAGS.items():
            if is_number(row.get(name)):
                f.summary(_scalar(tag, row[name]), step, wall)
    if trial.best_dev_f1 is not None and trial.test_f1_at_best is not None:
        f.summary(_scalar("best_dev_f1", trial.best_dev_f1), last, wall)
        f.summary(_scalar("test_f1_at_best", trial.test_f1_at_best), last, wall)
    end = plugin_data_pb2.SessionEndInfo(status=SESSION_STATUS[trial.status], end_time_secs=wall)
    f.summary(_plugin_summary(metadata.SESSION_END_INFO_TAG,
                              plugin_data_pb2.HParamsPluginData(session_end_info=end)), last, wall)
    f.close()


def write_tensorboard(study: Study) -> Path:
    base = _base_time(study)
    final = study.dir / "tensorboard"
    with temp_folder(final) as tmp:
        root = _EventFile(tmp, base)
        root.summary(_plugin_summary(metadata.EXPERIMENT_TAG, _experiment(study)), 0, base)
        root.close()
        for trial in study.trials:
            _write_trial(study, trial, tmp, base)
        return swap_folder(tmp, final)
