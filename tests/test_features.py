"""The visual feature store: exact equality with the online backbone, the cache key, corrupt files, one
computation when two processes start together, and the provider modes the trainer asks for."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from model.config import Config, ConfigError, build_config
from model.data import load_task_data
from model.data.encode import collate
from model.data.images import ImageLoader
from model.features import (CachedVisualProvider, StoreError, base_fingerprint, build_cached_provider,
                            build_visual_provider, compute_features, make_backbone, read_store, split_key,
                            split_paths, store_file, store_root, weights_identity)
from model.train import load_tokenizer
from model.visual import OnlineVisualProvider

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def _cfg(data_dir: Path, store: Path, **over: Any) -> Config:
    flat = {"data.name": "synthetic-mner", "data.dir": str(data_dir), "data.synthetic_size": 0.05,
            "model.backbone": "resnet18", "model.image_size": 33, "model.feature_cache_dir": str(store),
            "train.progress": False}
    flat.update(over)
    return build_config(flat)


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny synthetic MNER dataset (about 20/5/5 sentences, ~80 images) and its encoded splits."""
    data_dir = tmp_path_factory.mktemp("syn") / "mner"
    cfg = _cfg(data_dir, data_dir.parent / "unused")
    data = load_task_data(cfg, load_tokenizer(cfg.model.text_encoder))
    return data_dir, data


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding of 1e-6: a frozen backbone in eval mode is a pure function of the image,
    but a GEMM's rounding depends on how many rows it multiplies (the online path itself gives an image
    logits that differ by ~8e-7 between a batch of 5 and one of 64), so bitwise equality is not defined."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-6)


def _batches(ds: Any, size: int) -> list[dict[str, Any]]:
    return [collate([ds[i] for i in range(s, min(s + size, len(ds)))], 0, ds.max_objects)
            for s in range(0, len(ds), size)]


@pytest.mark.parametrize("use_objects,empty_crops", [(True, "clean"), (False, "clean"), (True, "reference")])
def test_cached_features_equal_online(syn: tuple[Path, Any], tmp_path: Path, use_objects: bool,
                                      empty_crops: str) -> None:
    data_dir, data = syn
    cfg = _cfg(data_dir, tmp_path, **{"model.use_objects": use_objects, "model.empty_crops": empty_crops})
    provider, cells_dim, backbone = build_visual_provider(cfg, data, CPU)
    assert isinstance(provider, CachedVisualProvider) and backbone is None and cells_dim == 960
    zero_image = empty_crops == "reference"
    assert provider.computed == ["train", "dev", "test"] + (["blank"] if zero_image else [])
    online = OnlineVisualProvider(make_backbone(cfg), ImageLoader(cfg.model.image_size), cfg.data.max_objects,
                                  cfg.model.use_objects, zero_image=zero_image)
    with torch.no_grad():
        blank_cells, _ = make_backbone(cfg)(torch.zeros(1, 3, 33, 33))  # the zero image
    slots = 1 + (cfg.data.max_objects if use_objects else 0)
    padded = 0
    for split in (data.train, data.test):
        for batch in _batches(split, 8):
            got = provider(batch["image_keys"], CPU)
            want = online(batch["image_keys"], CPU)
            assert got.cells.shape == (len(batch["image_keys"]), slots, 4, 960)
            assert got.mask.dtype == torch.bool and torch.equal(got.mask, want.mask)
            assert _same(got.cells, want.cells) and _same(got.logits, want.logits)
            assert got.logits.shape[1] == 1000
            absent = torch.tensor([[k >= len(keys) for k in range(slots)] for keys in batch["image_keys"]])
            padded += int(absent.sum())
            assert torch.equal(got.mask, ~absent)  # the mask: the image and existing crops, either way
            if zero_image:  # an absent crop is the zero image run through the backbone
                assert _same(got.cells[absent], blank_cells.expand(int(absent.sum()), -1, -1))
            else:
                assert not got.cells[absent].any()  # zero cells
    assert padded > 0 or not use_objects  # the data has samples with fewer than max_objects crops
    # A second run reads the files: nothing is computed again, same features.
    again = build_cached_provider(cfg, data, CPU)
    assert again.computed == [] and torch.equal(again.cells, provider.cells)


def test_missing_image_is_the_blank_image_and_unknown_keys_are_refused(syn: tuple[Path, Any],
                                                                      tmp_path: Path) -> None:
    data_dir, data = syn
    cfg = _cfg(data_dir, tmp_path)
    backbone = make_backbone(cfg)
    real = split_paths(data.dev)[0]
    missing = str(tmp_path / "listed-but-absent.jpg")
    feats = compute_features(backbone, ImageLoader(33), [missing, real], CPU)
    with torch.no_grad():
        cells, logits = backbone(torch.zeros(1, 3, 33, 33))  # the blank image
    provider = CachedVisualProvider([feats], max_objects=3, use_objects=True)
    got = provider([[missing], [real, missing]], CPU)
    assert _same(got.cells[0, 0], cells[0]) and _same(got.logits[0], logits[0])
    assert _same(got.cells[1, 1], cells[0]) and not _same(got.cells[1, 0], cells[0])
    assert got.mask.tolist() == [[True, False, False, False], [True, True, False, False]]
    with pytest.raises(KeyError, match="not in the visual feature store"):
        provider([["/nowhere/else.jpg"]], CPU)


def test_key_changes_with_what_determines_the_features(syn: tuple[Path, Any], tmp_path: Path) -> None:
    data_dir, data = syn
    paths = split_paths(data.train)

    def key(cfg: Config, split: str = "train", files: list[Path] | None = None) -> str:
        return split_key(base_fingerprint(cfg, files if files is not None else data.files), split, paths)

    cfg = _cfg(data_dir, tmp_path)
    k0 = key(cfg)
    assert k0 == key(_cfg(data_dir, tmp_path))  # nothing changed: same key
    assert key(cfg, "dev") != k0
    assert key(_cfg(data_dir, tmp_path, **{"model.backbone": "resnet34"})) != k0
    assert key(_cfg(data_dir, tmp_path, **{"model.image_size": 64})) != k0
    assert key(_cfg(data_dir, tmp_path, **{"model.prompt_len": 2})) != k0
    pooled = _cfg(data_dir, tmp_path, **{"model.stage_pool": "clean"})  # reference and clean cells never mix
    assert key(pooled) != k0 and store_file(tmp_path, pooled, "train", key(pooled)) != store_file(tmp_path, cfg,
                                                                                                   "train", k0)
    # Weights: a local file is known by its bytes, not its name.
    torch.manual_seed(1)
    w1 = tmp_path / "a.pth"
    torch.save(make_backbone(cfg).net.state_dict(), w1)
    w1_copy = tmp_path / "a_copy.pth"
    w1_copy.write_bytes(w1.read_bytes())
    state = make_backbone(cfg).net.state_dict()
    state["fc.bias"] = state["fc.bias"] + 1.0
    w2 = tmp_path / "b.pth"
    torch.save(state, w2)
    k1 = key(_cfg(data_dir, tmp_path, **{"model.backbone_weights": str(w1)}))
    assert k1 != k0
    assert key(_cfg(data_dir, tmp_path, **{"model.backbone_weights": str(w1_copy)})) == k1
    assert key(_cfg(data_dir, tmp_path, **{"model.backbone_weights": str(w2)})) != k1
    assert weights_identity("none", 1) != weights_identity("none", 0)  # a random init is known by its seed
    # A changed data file (a copy of the dataset, then one byte of a text file) changes the key.
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(data_dir), str(copy)], check=True)
    files = [copy / Path(f).relative_to(data_dir) for f in data.files]
    copy_paths = [str(copy / Path(p).relative_to(data_dir)) for p in paths]
    base = base_fingerprint(cfg, files)
    kc = split_key(base, "train", copy_paths)
    assert kc == split_key(base_fingerprint(cfg, files), "train", copy_paths)
    text = next(f for f in files if f.name == "valid.txt")
    text.write_bytes(text.read_bytes() + b"\n")
    assert split_key(base_fingerprint(cfg, files), "train", copy_paths) != kc
    # ... and so does a rewritten image (its size and mtime).
    base = base_fingerprint(cfg, files)
    kc = split_key(base, "train", copy_paths)
    image = next(Path(p) for p in copy_paths if Path(p).is_file())
    st = image.stat()
    image.write_bytes(image.read_bytes() + b"\0")
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert split_key(base, "train", copy_paths) != kc


def test_corrupt_files_are_detected_deleted_and_rebuilt(syn: tuple[Path, Any], tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    data_dir, data = syn
    cfg = _cfg(data_dir, tmp_path)
    first = build_cached_provider(cfg, data, CPU)
    train_file, dev_file = first.files[0], first.files[1]
    assert train_file.parent == tmp_path and train_file.is_file()
    good = train_file.read_bytes()
    train_paths = split_paths(data.train)
    train_key = split_key(base_fingerprint(cfg, data.files), "train", train_paths)

    def corrupt_with(payload: bytes, reason: str) -> None:
        train_file.write_bytes(payload)
        with pytest.raises(StoreError, match=reason):
            read_store(train_file, train_key, train_paths)

    corrupt_with(good[: len(good) // 2], "unreadable")                          # truncated
    corrupt_with(b"\xff" * 64, "unreadable")                                     # bad header
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    corrupt_with(bytes(flipped), "checksum mismatch")                            # altered tensor bytes
    corrupt_with(dev_file.read_bytes(), "key does not match")                    # another split's file
    with pytest.raises(StoreError, match="have no row"):
        train_file.write_bytes(good)
        read_store(train_file, train_key, train_paths + ["/extra/image.jpg"])

    train_file.write_bytes(good[: len(good) - 100])  # truncated: the next run must rebuild it
    (tmp_path / (train_file.name + ".tmp99999")).write_bytes(good[:100])  # what a killed writer leaves
    caplog.set_level(logging.WARNING, logger="i2srm.features")
    rebuilt = build_cached_provider(cfg, data, CPU)
    assert rebuilt.computed == ["train"]
    assert any("not usable" in r.getMessage() and train_file.name in r.getMessage() for r in caplog.records)
    assert torch.equal(rebuilt.cells, first.cells) and torch.equal(rebuilt.logits, first.logits)
    assert read_store(train_file, train_key, train_paths).cells.shape[0] == len(train_paths)
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left behind


_WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    from model.config import build_config
    from model.data import load_task_data
    from model.features import build_cached_provider, tensors_checksum
    from model.train import load_tokenizer

    data_dir, store, barrier, me = sys.argv[1:5]
    cfg = build_config({"data.name": "synthetic-mner", "data.dir": data_dir, "data.synthetic_size": 0.05,
                        "model.backbone": "resnet18", "model.image_size": 33,
                        "model.feature_cache_dir": store, "train.progress": False})
    data = load_task_data(cfg, load_tokenizer(cfg.model.text_encoder))
    # Start together: each announces itself, then waits for the other (no sleeps that decide the outcome).
    Path(barrier, me).touch()
    while len(list(Path(barrier).iterdir())) < 2:
        time.sleep(0.01)
    provider = build_cached_provider(cfg, data, torch.device("cpu"))
    print(json.dumps({"computed": provider.computed, "sum": tensors_checksum(provider.cells, provider.logits)}))
""")


def test_two_processes_started_together_compute_once(syn: tuple[Path, Any], tmp_path: Path) -> None:
    data_dir, _ = syn
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(data_dir), str(tmp_path / "store"),
                               str(barrier), name], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    computed = sorted(s for r in results for s in r["computed"])
    assert computed == ["blank", "dev", "test", "train"]  # each file computed by exactly one of the two
    assert results[0]["sum"] == results[1]["sum"]  # and both serve the same features


def test_provider_modes(syn: tuple[Path, Any], tmp_path: Path) -> None:
    data_dir, data = syn
    off, dim, bb = build_visual_provider(_cfg(data_dir, tmp_path, **{"model.feature_cache": "off"}), data, CPU)
    assert isinstance(off, OnlineVisualProvider) and bb is None and dim == 960
    assert not list(tmp_path.glob("*.safetensors"))  # off: no store written
    tuned_cfg = _cfg(data_dir, tmp_path, **{"model.finetune_backbone": True})
    tuned, _, bb = build_visual_provider(tuned_cfg, data, CPU)
    assert isinstance(tuned, OnlineVisualProvider) and bb is not None
    assert all(p.requires_grad for p in bb.parameters())
    with pytest.raises(ConfigError, match="finetune_backbone"):
        build_visual_provider(_cfg(data_dir, tmp_path, **{"model.finetune_backbone": True,
                                                          "model.feature_cache": "on"}), data, CPU)


def test_random_backbone_is_fixed_and_leaves_the_global_rng_alone(syn: tuple[Path, Any], tmp_path: Path) -> None:
    cfg = _cfg(syn[0], tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = make_backbone(cfg), make_backbone(cfg)
    assert torch.equal(torch.get_rng_state(), before)  # a store hit or miss leaves the run's RNG stream alike
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_store_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = build_config({"data.name": "synthetic-mner"})
    monkeypatch.setenv("I2SRM_CACHE", str(tmp_path / "c"))
    assert store_root(cfg) == tmp_path / "c" / "features"
    monkeypatch.delenv("I2SRM_CACHE")
    assert store_root(cfg) == Path.home() / ".cache" / "i2srm" / "features"
    cfg.model.feature_cache_dir = str(tmp_path / "shared")
    assert store_root(cfg) == tmp_path / "shared"
    name = store_file(store_root(cfg), cfg, "dev", "ab" * 32).name
    assert name.startswith(f"{cfg.model.backbone}-s{cfg.model.image_size}-p4-reference-dev-")
    assert name.endswith(".safetensors")
