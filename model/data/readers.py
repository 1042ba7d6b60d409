"""Readers for the public MNER (Twitter-2015/2017) and MRE (MNRE) layouts on disk, and their crop dicts.

The layouts are those of the authors' data bundles (docs/data-formats.md); the synthetic benchmark is
written in the same layouts and read by these same functions. Every reader validates as it reads and
raises ``DataError`` naming the file and line (or the missing path) and what would be accepted, so a
bad download is refused before training starts.

Split names are ``train``, ``dev`` and ``test``; the file names of each layout are the tables below.
"""

from __future__ import annotations

import ast
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from model.data.types import DataError, Sample

log = logging.getLogger("i2srm")

SPLITS = ("train", "dev", "test")
# Twitter-2015/2017: <prefix>/{train,valid,test}.txt, <prefix>/<prefix>_{train,val,test}_dict.pth,
# <prefix>_aux_images/{train,val,test}/crops/.
MNER_TEXT_FILES = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}
MNER_AUX_SPLITS = {"train": "train", "dev": "val", "test": "test"}
# MNRE: txt/ours_{train,val,test}.txt, txt/mre_{train,dev,test}_dict.pth, img_org/{train,val,test}/,
# img_vg/{train,val,test}/crops/.
MRE_TEXT_SPLITS = {"train": "train", "dev": "val", "test": "test"}
MRE_DICT_SPLITS = {"train": "train", "dev": "dev", "test": "test"}
MRE_REL2ID = "ours_rel2id.json"
MRE_KEYS = ("token", "h", "t", "img_id", "relation")
NONE_RELATION = "None"

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
TYPE_ALIASES = {"OTHER": "MISC"}  # the raw Twitter files say OTHER for MISC
_ACCEPTED_LABELS = "O, or B-/I- followed by PER, LOC, ORG, OTHER or MISC"
_MNRE_LINE = ("{'token': [...], 'h': {'name': str, 'pos': [start, end]}, 't': {...}, "
              "'img_id': 'name.jpg', 'relation': '/per/per/peer'}")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class MnerPaths:
    text: Path
    crop_dict: Path
    images: Path
    crops: Path


@dataclass(frozen=True)
class MrePaths:
    text: Path
    crop_dict: Path
    images: Path
    crops: Path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}.")


def mner_paths(data_dir: str | Path, prefix: str, split: str) -> MnerPaths:
    """Where the Twitter layout keeps ``split`` of dataset ``prefix`` under ``data_dir`` (the NER_data folder)."""
    _check_split(split)
    root = Path(data_dir).expanduser().absolute()
    aux = MNER_AUX_SPLITS[split]
    return MnerPaths(text=root / prefix / MNER_TEXT_FILES[split],
                     crop_dict=root / prefix / f"{prefix}_{aux}_dict.pth",
                     images=root / f"{prefix}_images",
                     crops=root / f"{prefix}_aux_images" / aux / "crops")


def mre_paths(data_dir: str | Path, split: str) -> MrePaths:
    """Where the MNRE layout keeps ``split`` under ``data_dir`` (the RE_data folder holding ``txt/``)."""
    _check_split(split)
    root = Path(data_dir).expanduser().absolute()
    folder = MRE_TEXT_SPLITS[split]
    return MrePaths(text=root / "txt" / f"ours_{folder}.txt",
                    crop_dict=root / "txt" / f"mre_{MRE_DICT_SPLITS[split]}_dict.pth",
                    images=root / "img_org" / folder,
                    crops=root / "img_vg" / folder / "crops")


def _read_lines(path: Path, what: str) -> list[str]:
    """The file's lines (UTF-8, BOM tolerated, \\r\\n or \\n); a missing or non-UTF-8 file is a DataError."""
    if not path.is_file():
        raise DataError(f"missing {what}: {path} does not exist (expected the layout in docs/data-formats.md).")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); the data files are UTF-8.") from None
    # split on \n only: str.splitlines() would also split on U+2028 and friends, which tweets contain.
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def load_crop_dict(path: str | Path) -> dict[str, list[str]]:
    """A ``*_dict.pth`` crop dict: image name (or line index) -> crop file names, best first.

    Loaded with ``torch.load(..., weights_only=True)``, never full unpickling. Integer keys (MNRE
    releases keyed by line index) are returned as digit strings, so every key is a ``str``.
    """
    path = Path(path)
    accepted = "a dict saved with torch.save mapping image name (or line index) to a list of crop file names"
    if not path.is_file():
        raise DataError(f"missing crop dict: {path} does not exist; expected {accepted}.")
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol warns before it is refused below
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, disallowed pickle global, ...: all mean "not our dict"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot be read with torch.load(weights_only=True) ({first}); "
                        f"expected {accepted}.") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}; expected {accepted}.")
    out: dict[str, list[str]] = {}
    for key, value in obj.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise DataError(f"{path}: key {key!r} is a {type(key).__name__}; expected {accepted}.")
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{path}: the value of key {key!r} is {type(value).__name__} {value!r:.80}; "
                            f"expected {accepted}.")
        out[str(key)] = list(value)
    return out


def _stem(name: str) -> str:
    """``dir/123.jpg`` -> ``123``: the key form shared by dicts keyed with or without an extension."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in _IMAGE_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


class CropLookup:
    """Finds a sample's crops in a crop dict keyed by image name (with or without extension) or line index.

    A dict whose keys are all digit strings is read as keyed by the 0-based line index of the
    sample in its text file, but only where ``allow_index`` (MNRE); Twitter image ids are numeric
    themselves, so a Twitter dict is always keyed by name.
    """

    def __init__(self, crops: dict[str, list[str]], allow_index: bool):
        self.by_index = allow_index and bool(crops) and all(k.isdigit() for k in crops)
        self.table = dict(crops) if self.by_index else {_stem(k): v for k, v in crops.items()}
        self.hits = 0

    def get(self, image_name: str, index: int) -> list[str]:
        key = str(index) if self.by_index else _stem(image_name)
        found = self.table.get(key)
        if found is None:
            return []
        self.hits += 1
        return found


def _warn_unmatched(lookup: CropLookup, path: Path, n: int) -> None:
    if lookup.table and lookup.hits == 0 and n:
        style = "line index" if lookup.by_index else "image name"
        log.warning("%s: none of its %d keys (read as %s) matches one of the %d samples; no crops used.",
                    path, len(lookup.table), style, n)


def _mner_label(label: str, path: Path, line: int) -> str:
    label = label.strip()
    if label == "O":
        return label
    head, sep, typ = label.partition("-")
    if sep and head in ("B", "I") and (typ in ENTITY_TYPES or typ in TYPE_ALIASES):
        return f"{head}-{TYPE_ALIASES.get(typ, typ)}"
    raise DataError(f"{path}:{line}: label {label!r} is not BIO over the known types; accepted: {_ACCEPTED_LABELS}.")


def read_mner(data_dir: str | Path, prefix: str, split: str) -> list[Sample]:
    """One split of a Twitter-style MNER dataset (``prefix`` twitter2015, twitter2017 or synthetic).

    ``data_dir`` is the folder holding ``<prefix>/``, ``<prefix>_images/`` and ``<prefix>_aux_images/``.
    Labels come back over PER/LOC/ORG/MISC (OTHER read as MISC). An ``IMGID`` line with no tokens
    after it is skipped with a warning; every other malformed line is a ``DataError``.
    """
    paths = mner_paths(data_dir, prefix, split)
    if not paths.text.is_file() and (Path(data_dir).expanduser() / MNER_TEXT_FILES[split]).is_file():
        raise DataError(f"missing split file {paths.text}: data.dir should be the folder that holds "
                        f"'{prefix}/', i.e. {Path(data_dir).expanduser().absolute().parent}.")
    lines = _read_lines(paths.text, f"{split} split file")
    lookup = CropLookup(load_crop_dict(paths.crop_dict), allow_index=False)

    samples: list[Sample] = []
    img_id: str | None = None
    start = 0
    tokens: list[str] = []
    labels: list[str] = []
    empty = 0

    def flush() -> None:
        nonlocal tokens, labels, empty
        if tokens:
            assert img_id is not None
            name = img_id if img_id.lower().endswith(".jpg") else f"{img_id}.jpg"
            crops = [str(paths.crops / c) for c in lookup.get(name, len(samples))]
            samples.append(Sample(tokens=tokens, image=str(paths.images / name), crops=crops,
                                  labels=labels, source=f"{paths.text}:{start}"))
        elif img_id is not None:
            empty += 1
        tokens, labels = [], []

    for no, line in enumerate(lines, 1):
        if line.startswith("IMGID:"):
            flush()  # a missing blank line between sentences is tolerated
            img_id = line[len("IMGID:"):].strip()
            start = no
            if not img_id:
                raise DataError(f"{paths.text}:{no}: empty IMGID; expected 'IMGID:<image id>'.")
            continue
        if not line.strip():
            flush()
            img_id = None
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{paths.text}:{no}: expected 'token<TAB>label' (one tab), got {line!r:.120}.")
        if img_id is None:
            raise DataError(f"{paths.text}:{no}: sentence has no IMGID line; each sentence starts with "
                            f"'IMGID:<image id>' and ends with a blank line.")
        tokens.append(parts[0])
        labels.append(_mner_label(parts[1], paths.text, no))
    flush()  # the final sentence may lack its blank line

    if empty:
        log.warning("%s: %d IMGID line(s) with no tokens skipped.", paths.text, empty)
    if not samples:
        raise DataError(f"{paths.text}: no sentences found; expected 'IMGID:<id>' lines each followed by "
                        f"'token<TAB>label' lines and a blank line.")
    _warn_unmatched(lookup, paths.crop_dict, len(samples))
    return samples


def read_rel2id(data_dir: str | Path) -> dict[str, int]:
    """``ours_rel2id.json``: relation name -> id, ids 0..n-1, ``None`` (the negative class) among them."""
    path = Path(data_dir).expanduser().absolute() / MRE_REL2ID
    accepted = "one JSON object mapping each relation name to a distinct id 0..n-1, 'None' included"
    if not path.is_file():
        raise DataError(f"missing relation file: {path} does not exist; expected {accepted}.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected {accepted}.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8; expected {accepted}.") from None
    if not isinstance(obj, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
        raise DataError(f"{path}: expected {accepted}.")
    if sorted(obj.values()) != list(range(len(obj))):
        raise DataError(f"{path}: ids are {sorted(obj.values())}; expected {accepted}.")
    if NONE_RELATION not in obj:
        raise DataError(f"{path}: has no '{NONE_RELATION}' relation; expected {accepted}.")
    return obj


def _span(obj: dict, role: str, n: int, path: Path, line: int) -> tuple[int, int]:
    ent = obj[role]
    pos = ent.get("pos") if isinstance(ent, dict) else None
    if not (isinstance(pos, (list, tuple)) and len(pos) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) for p in pos)):
        raise DataError(f"{path}:{line}: '{role}' must be {{'name': str, 'pos': [start, end]}}, got {ent!r:.120}.")
    s, e = pos
    if not 0 <= s < e <= n:
        raise DataError(f"{path}:{line}: '{role}' span pos={list(pos)} is outside the {n} tokens; "
                        f"expected 0 <= start < end <= {n} (end exclusive).")
    return s, e


def read_mre(data_dir: str | Path, split: str, rel2id: dict[str, int] | None = None) -> list[Sample]:
    """One split of an MNRE-style MRE dataset; ``data_dir`` holds ``txt/``, ``img_org/``, ``img_vg/``.

    Each non-blank line is a Python dict literal, parsed with ``ast.literal_eval``. The crop dict
    may be keyed by image file name or by the sample's 0-based line index in the text file (int
    or digit string). ``rel2id`` defaults to ``read_rel2id(data_dir)``.
    """
    paths = mre_paths(data_dir, split)
    if rel2id is None:
        rel2id = read_rel2id(data_dir)
    rel_file = Path(data_dir).expanduser().absolute() / MRE_REL2ID
    lines = _read_lines(paths.text, f"{split} split file")
    lookup = CropLookup(load_crop_dict(paths.crop_dict), allow_index=True)

    samples: list[Sample] = []
    for index, line in enumerate(lines):
        no = index + 1
        if not line.strip():
            continue
        try:
            obj = ast.literal_eval(line.strip())
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as e:
            why = getattr(e, "msg", None) or str(e) or type(e).__name__
            raise DataError(f"{paths.text}:{no}: not a Python dict literal ({why}); expected {_MNRE_LINE}.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{paths.text}:{no}: a {type(obj).__name__}, not a dict; expected {_MNRE_LINE}.")
        missing = [k for k in MRE_KEYS if k not in obj]
        if missing:
            raise DataError(f"{paths.text}:{no}: missing key(s) {', '.join(repr(k) for k in missing)}; "
                            f"each line needs {', '.join(MRE_KEYS)}.")
        tokens = obj["token"]
        if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)):
            raise DataError(f"{paths.text}:{no}: 'token' must be a non-empty list of strings.")
        head = _span(obj, "h", len(tokens), paths.text, no)
        tail = _span(obj, "t", len(tokens), paths.text, no)
        relation, img_id = obj["relation"], obj["img_id"]
        if not isinstance(relation, str) or relation not in rel2id:
            raise DataError(f"{paths.text}:{no}: relation {relation!r} is not in {rel_file}; "
                            f"known: {', '.join(sorted(rel2id, key=rel2id.__getitem__))}.")
        if not isinstance(img_id, str) or not img_id:
            raise DataError(f"{paths.text}:{no}: 'img_id' must be an image file name, got {img_id!r}.")
        crops = [str(paths.crops / c) for c in lookup.get(img_id, index)]
        samples.append(Sample(tokens=tokens, image=str(paths.images / img_id), crops=crops,
                              head=head, tail=tail, relation=relation, source=f"{paths.text}:{no}"))
    if not samples:
        raise DataError(f"{paths.text}: no samples found; expected one dict literal per line: {_MNRE_LINE}.")
    _warn_unmatched(lookup, paths.crop_dict, len(samples))
    return samples


def mner_files(data_dir: str | Path, prefix: str) -> list[Path]:
    """Every text and dict file ``read_mner`` reads for the three splits."""
    paths = [mner_paths(data_dir, prefix, s) for s in SPLITS]
    return [p for ps in paths for p in (ps.text, ps.crop_dict)]


def mre_files(data_dir: str | Path) -> list[Path]:
    """Every text, dict and relation file ``read_mre`` reads for the three splits."""
    files = [p for s in SPLITS for p in (mre_paths(data_dir, s).text, mre_paths(data_dir, s).crop_dict)]
    return files + [Path(data_dir).expanduser().absolute() / MRE_REL2ID]
