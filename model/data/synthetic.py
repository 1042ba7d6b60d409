"""The synthetic benchmark: small MNER and MRE datasets in which the image matters, in the public layouts.

``ensure_synthetic(kind, root, seed, size, unrelated)`` generates a dataset once and returns its folder:
``root`` (``data.dir``) or ``$I2SRM_CACHE/synthetic/<kind>-seed<seed>-size<size>`` (``I2SRM_CACHE`` defaults
to ``~/.cache/i2srm``; ``-unrelated<share>`` is appended when ``unrelated`` > 0). Files are written in exactly
the Twitter layout (MNER, prefix ``synthetic``) or the MNRE layout (MRE) of docs/data-formats.md, so the real
readers are what reads them. The same seed and size give byte-identical files (with the same numpy, Pillow and
torch); size 1.0 takes about two seconds per kind on two CPU cores.

Design. Shares are of the samples of every split, exact up to rounding; ``SYNTHETIC_DESIGN`` holds them.
- ``SPLIT_SIZES`` at size 1.0: 400 train / 100 dev / 100 test samples, each scaled by ``size``.
  Whole images are ``IMAGE_PX`` = 96 px JPEGs on a noisy grey background; object crops are
  ``CROP_PX`` = 40 px PNGs cut around the drawn objects, the most telling object first.
- Every sample is of one of three kinds:
  * image-only, ``IMAGE_ONLY_SHARE`` = 0.5. MNER: exactly one entity takes its name from
    ``AMBIGUOUS_NAMES``, a pool drawn equally for all four types, in the same type-neutral context
    (``NEUTRAL_CLAUSES``) that every entity gets; its type is shown only by the image: one large
    object in the type's colour and shape (``TYPE_STYLES``: PER red circle, LOC green triangle,
    ORG blue square, MISC yellow diamond), whose crop comes first. MRE: head and tail names come
    from ``AMBIGUOUS_NAMES``, the text is neutral ("X and Y ..."), and the relation, one of the six
    of ``RELATION_STYLES``, is shown only by a large object in that relation's colour and shape.
  * unrelated, ``UNRELATED_SHARE`` = 0.25: the image shows random shapes in random colours (type or
    relation colours among them) and says nothing about the text; every label is text-determined.
  * related and text-determined, the rest (0.25): every label can be read from the text (MNER:
    names from per-type lists ``NAMES``; MRE: a cue phrase per relation, ``RELATION_CUES``) and the
    image agrees (MNER: one object per entity in its type's style; MRE: the relation's object if it
    has a style, else neutral grey shapes), informative but redundant.
- MRE: ``NONE_SHARE`` = 0.2 of the samples have relation ``None`` (all text-determined, with a
  cue of their own); positive relations are the nine of ``MRE_RELATIONS``. ``ours_rel2id.json`` lists
  all 23 real relations.
- ``MISSING_IMAGE_SHARE`` = 0.02 of the images are listed but not written, as in the public bundle
  (drawn among samples that are not image-only; they are absent from the crop dict).
  ``NO_CROPS_SHARE`` = 0.04 are in the crop dict with an empty list, ``NOT_IN_DICT_SHARE`` = 0.04 are
  absent from it. Crop dicts: MNER train/test keyed by ``<id>.jpg``, dev by ``<id>``; MRE train/test
  keyed by image file name, dev by line index, so that every key style is exercised.
- What a text-only model can reach: MNER, about 29% of the entities are image-only and it can only
  guess their type (1 in 4), so entity F1 is capped near 0.78; MRE, half the samples are image-only
  positives spread over six relations (1 in 6 by guessing), so micro F1 is capped near 0.5. A model
  that reads the image can approach 1.0 on both.
- Unrelated pairs on demand (``data.synthetic_unrelated``, default 0: the design above, unchanged to the
  byte): that share of the samples that have an image get, in place of their own image and crops, the
  image and crops drawn for another sample of the same split (drawn uniformly, seeded by the seed, the
  kind, the split and ``UNRELATED_STREAM``). Text and labels are untouched, so the image no longer tells
  the text's hidden label (it may still agree by chance, as a random image would): the break condition of
  the semantic (KL) loss, which pulls the text's distribution towards the image's. Every split is treated
  alike. The drawing runs after all samples are made, from its own random stream, so the texts, labels and
  the other samples' files are the same as at share 0.
``meta/<split>.jsonl`` records each sample's kind and ground truth (outside the layout, ignored by
the readers) for per-kind analysis, and ``image_from`` (the donor's id) for a sample whose image was
replaced; ``COMPLETE``, written last, records the generation parameters.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from model.data.types import DataError
from model.fileio import cache_dir, held_lock, temp_folder

GENERATOR_VERSION = 1
KINDS = ("mner", "mre")
SPLIT_SIZES = {"train": 400, "dev": 100, "test": 100}
IMAGE_ONLY_SHARE = 0.5
UNRELATED_SHARE = 0.25
MISSING_IMAGE_SHARE = 0.02
NO_CROPS_SHARE = 0.04
NOT_IN_DICT_SHARE = 0.04
NONE_SHARE = 0.2
UNRELATED_STREAM = 1  # the extra seed component of the unrelated-pairs draw (samples use none)
ENTITY_COUNT_WEIGHTS = (0.45, 0.35, 0.20)  # P(1, 2, 3 entities) in an MNER sentence
TOKENS_RANGE = (8, 20)  # tokens per text, inclusive
IMAGE_PX = 96
CROP_PX = 40
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1  # fast; the files are small either way

TYPES = ("PER", "LOC", "ORG", "MISC")
TYPE_STYLES = {"PER": ((220, 40, 40), "circle"), "LOC": ((40, 170, 60), "triangle"),
               "ORG": ((40, 80, 220), "square"), "MISC": ((235, 200, 30), "diamond")}
RELATIONS = ("None", "/per/per/parent", "/per/per/siblings", "/per/per/couple", "/per/per/neighbor",
             "/per/per/peer", "/per/per/charges", "/per/per/alumi", "/per/per/alternate_names",
             "/per/org/member_of", "/per/loc/place_of_residence", "/per/loc/place_of_birth",
             "/org/org/alternate_names", "/org/org/subsidiary", "/org/loc/locate_at", "/loc/loc/contain",
             "/per/misc/present_in", "/per/misc/awarded", "/per/misc/race", "/per/misc/religion",
             "/per/misc/nationality", "/misc/misc/part_of", "/misc/loc/held_on")
RELATION_STYLES = {  # the six relations an image can show
    "/per/per/peer": ((230, 60, 200), "star"), "/per/per/couple": ((240, 130, 30), "ring"),
    "/per/org/member_of": ((30, 200, 210), "cross"), "/per/loc/place_of_residence": ((130, 60, 210), "hexagon"),
    "/org/loc/locate_at": ((150, 225, 40), "triangle_down"), "/per/misc/awarded": ((250, 250, 250), "bars"),
}
RELATION_CUES = {  # text-determined relations: a cue phrase; {h} head, {t} tail
    "/per/per/peer": ["{h} teams up with {t}", "{h} and teammate {t}", "{t} plays alongside {h}"],
    "/per/per/couple": ["{h} and her husband {t}", "{h} married {t}", "{t} and his wife {h}"],
    "/per/per/parent": ["{h} with his son {t}", "{t} and her dad {h}"],
    "/per/org/member_of": ["{h} joins {t}", "{t} signs {h}", "{h} officially with {t}"],
    "/per/loc/place_of_residence": ["{h} lives in {t}", "{h} at home in {t}"],
    "/org/loc/locate_at": ["{h} headquarters in {t}", "{t} office of {h}"],
    "/per/misc/present_in": ["{h} at the {t}", "{h} showed up at {t}"],
    "/per/misc/awarded": ["{h} wins {t}", "{h} takes home the {t}"],
    "/misc/loc/held_on": ["{h} held in {t}", "{t} hosts the {h}"],
    "None": ["{h} , {t} and more", "{h} trending next to {t}", "{t} fans react to {h}"],
}
MRE_RELATIONS = tuple(r for r in RELATION_CUES if r != "None")
MRE_NEUTRAL = ["{h} and {t}", "{h} and {t} today", "{h} and {t} again !", "look : {h} and {t}", "{h} and {t} here"]

NAMES = {
    "PER": ["Barack Obama", "Taylor Swift", "LeBron James", "Justin Bieber", "Kim Kardashian", "Lionel Messi",
            "Serena Williams", "Drake", "Rihanna", "Kanye West", "Hillary Clinton", "Tom Brady", "Selena Gomez",
            "Elon Musk", "Oprah Winfrey", "Adele", "Beyonce", "Harry Styles", "Emma Watson", "Neymar"],
    "LOC": ["New York", "London", "Paris", "Texas", "Boston", "California", "Tokyo", "Los Angeles", "Florida",
            "Brooklyn", "Seattle", "Canada", "Mexico", "Berlin", "Dublin", "Las Vegas", "Miami", "Sydney",
            "Rome", "Ohio"],
    "ORG": ["Google", "NASA", "Red Cross", "Chicago Bulls", "Real Madrid", "CNN", "Microsoft", "Starbucks",
            "Lakers", "BBC", "Nike", "UNICEF", "Harvard", "Netflix", "Warner Bros", "FIFA", "Amazon", "Ford",
            "Yankees", "Disney"],
    "MISC": ["Super Bowl", "Olympics", "Christmas", "Grammys", "World Cup", "iPhone", "Game of Thrones", "Oscars",
             "Halloween", "Star Wars", "Coachella", "Thanksgiving", "Xbox", "Wimbledon", "Pokemon", "Brexit",
             "Ramadan", "Eurovision", "Comic Con", "Easter"],
}
AMBIGUOUS_NAMES = ["Zorvik", "Kelmora", "Tavanu", "Brixel", "Quenta", "Morvane", "Elstra", "Dravik", "Solenne",
                   "Varrow", "Nimbra", "Pyralis", "Corvena", "Ilvane", "Yostar", "Fennix", "Grivel", "Ostrik",
                   "Zorvik Ama", "Nimbra Tesk", "Quenta Lo", "Velo Dran", "Kess Arum", "Tiral Vey"]
NEUTRAL_CLAUSES = ["{E} is trending again", "can't stop thinking about {E}", "all eyes on {E} tonight",
                   "just saw {E}", "look at {E} !", "so proud of {E}", "nobody talks about {E} enough",
                   "{E} right now", "what a day for {E}", "new pics of {E}", "here is {E}", "say hi to {E}"]
CONNECTORS = [",", "and", "|", "-", "..."]
FILLERS = ["lol", "so", "good", "omg", "wow", "today", "again", "yes", "really", "tbh"]
FILLER_CLAUSES = ["so good", "can't wait", "best day ever", "this is it", "love it", "no words"]
MENTIONS = ["@daily_pics", "@jess_92", "@newsbot", "@mike_t", "@the_real_ab", "@fan_page"]
HASHTAGS = ["#tbt", "#love", "#news", "#photo", "#fail", "#weekend", "#nofilter"]
EMOJI = ["😂", "❤️", "🔥", "👍", "😍", "🙌"]
NEUTRAL_COLOURS = [(110, 90, 70), (150, 150, 150), (60, 60, 60), (175, 145, 115)]
SHAPES = ("circle", "square", "triangle", "diamond", "star", "ring", "cross", "hexagon", "triangle_down", "bars")

SYNTHETIC_DESIGN: dict[str, Any] = {
    "split_sizes": SPLIT_SIZES, "image_only_share": IMAGE_ONLY_SHARE, "unrelated_share": UNRELATED_SHARE,
    "missing_image_share": MISSING_IMAGE_SHARE, "no_crops_share": NO_CROPS_SHARE,
    "not_in_dict_share": NOT_IN_DICT_SHARE, "none_share": NONE_SHARE, "entity_count_weights": ENTITY_COUNT_WEIGHTS,
    "tokens_range": TOKENS_RANGE, "image_px": IMAGE_PX, "crop_px": CROP_PX,
    "type_styles": {t: {"colour": c, "shape": s} for t, (c, s) in TYPE_STYLES.items()},
    "relation_styles": {r: {"colour": c, "shape": s} for r, (c, s) in RELATION_STYLES.items()},
    "mre_relations": MRE_RELATIONS, "version": GENERATOR_VERSION,
}

_SPLIT_FOLDERS = {"train": "train", "dev": "val", "test": "test"}
Box = tuple[int, int, int, int]
Colour = tuple[int, int, int]


def default_root(kind: str, seed: int, size: float, unrelated: float = 0.0) -> Path:
    extra = f"-unrelated{unrelated:g}" if unrelated > 0 else ""
    return cache_dir("synthetic") / f"{kind}-seed{seed}-size{size:g}{extra}"


def _marker(kind: str, seed: int, size: float, unrelated: float = 0.0) -> dict[str, Any]:
    """What ``COMPLETE`` records; ``unrelated`` only when > 0, so that the default data stays byte-identical."""
    out: dict[str, Any] = {"kind": kind, "seed": seed, "size": float(size), "version": GENERATOR_VERSION}
    if unrelated > 0:
        out["unrelated"] = float(unrelated)
    return out


def _identity(marker: dict[str, Any]) -> dict[str, Any]:
    """The parameters that make a dataset, a missing ``unrelated`` read as 0."""
    return {"kind": marker.get("kind"), "seed": marker.get("seed"), "size": marker.get("size"),
            "unrelated": float(marker.get("unrelated", 0.0))}


def _read_marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "COMPLETE").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, want: dict[str, Any]) -> bool:
    got = _read_marker(root)
    return got is not None and got.get("version") == want["version"] and _identity(got) == _identity(want)


LOCK_TIMEOUT_S = 3600.0
"""How long a process waits for another one generating the same synthetic data (seconds at size 1)."""


def _refuse_foreign(root: Path, want: dict[str, Any], own_cache: bool, kind: str, seed: int, size: float,
                    unrelated: float) -> None:
    """``DataError`` if ``root`` holds something other than this generator's data (which may be replaced: an
    older version of it in the own cache, the same data unfinished, or an empty folder)."""
    if not root.exists():
        return
    got = _read_marker(root)
    if got is not None and (own_cache or _identity(got) == _identity(want)):
        return
    if root.is_dir() and not any(root.iterdir()):
        return
    what = f"synthetic data {got}" if got else "other files"
    share = f" and unrelated share {unrelated:g}" if unrelated > 0 else ""
    raise DataError(f"data.dir {root} holds {what}, not the synthetic {kind} data of seed {seed} "
                    f"and size {size:g}{share}; point data.dir at a new folder or leave it unset.")


def ensure_synthetic(kind: Literal["mner", "mre"], root: Path | None, seed: int, size: float,
                     unrelated: float = 0.0) -> Path:
    """The folder of the synthetic ``kind`` dataset, generating it first if it is not complete there.

    MNER: the folder holding ``synthetic/`` (read with ``read_mner(folder, "synthetic", split)``);
    MRE: the folder holding ``txt/`` and ``ours_rel2id.json``. Generation writes into a temporary
    sibling folder and renames it into place under a file lock, so concurrent callers and crashes
    never see half a dataset. A ``root`` that holds anything else is refused, never overwritten.
    """
    if kind not in KINDS:
        raise DataError(f"unknown synthetic kind {kind!r}; accepted: {', '.join(KINDS)}.")
    if not (isinstance(seed, int) and seed >= 0):
        raise DataError(f"data.synthetic_seed is {seed!r}; accepted: an integer >= 0.")
    if not size > 0:
        raise DataError(f"data.synthetic_size is {size!r}; accepted: a number > 0 (1.0 = 400/100/100 samples).")
    if isinstance(unrelated, bool) or not isinstance(unrelated, (int, float)) or not 0.0 <= unrelated <= 1.0:
        raise DataError(f"data.synthetic_unrelated is {unrelated!r}; accepted: a share in [0, 1] (0 = none).")
    own_cache = root is None
    root = default_root(kind, seed, size, unrelated) if root is None else Path(root).expanduser().absolute()
    want = _marker(kind, seed, size, unrelated)
    if _is_complete(root, want):
        return root
    _refuse_foreign(root, want, own_cache, kind, seed, size, unrelated)  # before any lock file is made beside it
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"data.dir {root}: its folder {root.parent} cannot be created ({e.strerror or e}); point "
                        f"data.dir at a folder this user can write, or leave it unset.") from None
    with held_lock(root.parent / f".{root.name}.lock", LOCK_TIMEOUT_S, DataError,
                   f"the synthetic {kind} data {root}"):
        if _is_complete(root, want):  # another process finished while we waited
            return root
        _refuse_foreign(root, want, own_cache, kind, seed, size, unrelated)
        if root.is_dir() and any(root.iterdir()):
            shutil.rmtree(root)  # ours, from another generator version: regenerate
        elif root.is_dir():
            root.rmdir()
        with temp_folder(root) as tmp:  # removed unless renamed into place
            counts = (generate_mner if kind == "mner" else generate_mre)(tmp, seed, size, unrelated)
            (tmp / "COMPLETE").write_text(json.dumps({**want, "samples": counts}, indent=1) + "\n", encoding="utf-8")
            try:
                os.rename(tmp, root)  # not swap_folder: a complete root another process made is kept as it is
            except OSError:
                if not _is_complete(root, want):  # a lock the file system ignored, and a racer won: fine
                    raise
    return root


# ----------------------------------------------------------------------------------------- drawing

def _rng(seed: int, kind: str, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, KINDS.index(kind), list(SPLIT_SIZES).index(split)]))


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 20) -> tuple[int, int, int]:
    c = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _canvas(rng: np.random.Generator) -> Image.Image:
    """Noisy grey background, so that colour and shape, not a flat field, carry the signal."""
    grey = int(rng.integers(70, 151))
    tint = rng.integers(-10, 11, 3)
    noise = rng.integers(-35, 36, (IMAGE_PX, IMAGE_PX, 1))
    pixels = np.clip(grey + tint[None, None, :] + noise, 0, 255).astype(np.uint8)  # [H, W, 3]
    return Image.fromarray(pixels, "RGB")


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "triangle_down":
        draw.polygon([(x0, y0), (x1, y0), (cx, y1)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "star":
        pts = []
        for k in range(10):
            r = (0.5 if k % 2 == 0 else 0.2) * min(w, h)
            a = np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * np.cos(a), cy - r * np.sin(a)))
        draw.polygon(pts, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(min(w, h) / 5)))
    elif shape == "cross":
        t = max(2, int(min(w, h) / 4))
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=colour)
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=colour)
    elif shape == "hexagon":
        draw.polygon([(cx + 0.5 * w * np.cos(k * np.pi / 3), cy + 0.5 * h * np.sin(k * np.pi / 3))
                      for k in range(6)], fill=colour)
    elif shape == "bars":
        step = h / 5
        for k in (0, 2, 4):
            draw.rectangle((x0, y0 + k * step, x1, y0 + (k + 1) * step), fill=colour)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


def _box_anywhere(rng: np.random.Generator, lo: int, hi: int) -> Box:
    s = int(rng.integers(lo, hi + 1))
    x, y = int(rng.integers(0, IMAGE_PX - s + 1)), int(rng.integers(0, IMAGE_PX - s + 1))
    return (x, y, x + s, y + s)


def _boxes_apart(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[Box]:
    """``n`` <= 4 boxes in distinct quadrants, so that objects do not hide each other."""
    cell = IMAGE_PX // 2
    quads = rng.permutation(4)[:n]
    boxes = []
    for q in quads:
        s = int(rng.integers(lo, min(hi, cell) + 1))
        x = int(q % 2) * cell + int(rng.integers(0, cell - s + 1))
        y = int(q // 2) * cell + int(rng.integers(0, cell - s + 1))
        boxes.append((x, y, x + s, y + s))
    return boxes


def _crop(img: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    m = int(rng.integers(2, 7))
    x0, y0, x1, y1 = box
    region = (max(0, x0 - m), max(0, y0 - m), min(IMAGE_PX, x1 + m), min(IMAGE_PX, y1 + m))
    return img.crop(region).resize((CROP_PX, CROP_PX), Image.Resampling.BILINEAR)


def _picture(rng: np.random.Generator, objects: list[tuple[str, tuple[int, int, int]]], main: bool,
             distractors: int) -> tuple[Image.Image, list[Image.Image]]:
    """An image and its crops. ``main``: one large object (``objects[0]``) over small neutral distractors;
    otherwise each object in its own quadrant. Crops: the objects first, then the distractors."""
    img = _canvas(rng)
    draw = ImageDraw.Draw(img)
    small = [_box_anywhere(rng, 10, 16) for _ in range(distractors)]
    for box in small:  # drawn first: the telling object lies on top
        _draw(draw, _pick(rng, SHAPES), box, _jitter(rng, _pick(rng, NEUTRAL_COLOURS)))
    boxes = [_box_anywhere(rng, 48, 72)] if main else _boxes_apart(rng, len(objects), 24, 44)
    for (shape, colour), box in zip(objects, boxes):
        _draw(draw, shape, box, _jitter(rng, colour))
    crops = [_crop(img, b, rng) for b in boxes + small]
    return img, crops


def _random_colour(rng: np.random.Generator) -> Colour:
    r, g, b = (int(c) for c in rng.integers(0, 256, 3))
    return (r, g, b)


def _random_objects(rng: np.random.Generator, palette: list[Colour]) -> list[tuple[str, Colour]]:
    """1-3 random shapes in random colours, half of them in a telling colour: an unrelated image."""
    out = []
    for _ in range(int(rng.integers(1, 4))):
        colour: Colour = _pick(rng, palette) if rng.random() < 0.5 else _random_colour(rng)
        out.append((_pick(rng, SHAPES), colour))
    return out


# ----------------------------------------------------------------------------------------- text

def _wrap(rng: np.random.Generator, body: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """Tweet around ``body`` (token, label) pairs: RT/@mention prefix, filler, #hashtag, URL, emoji, as fit
    TOKENS_RANGE; returns the tokens and the offset of the body."""
    lo, hi = TOKENS_RANGE
    prefix: list[str] = []
    if rng.random() < 0.3 and len(body) + 3 <= hi:
        prefix = ["RT", _pick(rng, MENTIONS), ":"]
    elif rng.random() < 0.2 and len(body) + 1 <= hi:
        prefix = [_pick(rng, MENTIONS)]
    suffix: list[str] = []
    options = [(0.4, lambda: _pick(rng, FILLER_CLAUSES).split()), (0.4, lambda: [_pick(rng, HASHTAGS)]),
               (0.3, lambda: ["http://t.co/" + "".join(_pick(rng, "abcdefghijkmnpqrstuvwxyzABCDEFGH23456789")
                                                         for _ in range(8))]),
               (0.3, lambda: [_pick(rng, EMOJI)])]
    for p, make in options:
        if rng.random() < p:
            extra = make()
            if len(prefix) + len(body) + len(suffix) + len(extra) <= hi:
                suffix += extra
    while len(prefix) + len(body) + len(suffix) < lo:
        suffix.insert(0, _pick(rng, FILLERS))
    return [(w, "O") for w in prefix] + body + [(w, "O") for w in suffix], len(prefix)


def _fill(template: str, slots: dict[str, tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, tuple[int, int]]]:
    """Template words -> (token, BIO label) pairs; ``slots`` maps ``{E}``/``{h}``/``{t}`` to (name, type)."""
    out: list[tuple[str, str]] = []
    spans: dict[str, tuple[int, int]] = {}
    for word in template.split():
        if word in slots:
            name, typ = slots[word]
            start = len(out)
            out += [(w, f"{'B' if j == 0 else 'I'}-{typ}") for j, w in enumerate(name.split())]
            spans[word] = (start, len(out))
        else:
            out.append((word, "O"))
    return out, spans


# ----------------------------------------------------------------------------------------- splits

def _counts(size: float) -> dict[str, int]:
    return {s: max(1, round(n * size)) for s, n in SPLIT_SIZES.items()}


def _plan(rng: np.random.Generator, n: int) -> tuple[list[str], list[bool], list[str]]:
    """Per sample: kind (image_only / unrelated / text), missing image, crop-dict status (listed/empty/absent)."""
    n_img, n_unrel = round(IMAGE_ONLY_SHARE * n), round(UNRELATED_SHARE * n)
    kinds = ["image_only"] * n_img + ["unrelated"] * n_unrel + ["text"] * (n - n_img - n_unrel)
    kinds = [kinds[i] for i in rng.permutation(n)]
    others = [i for i in range(n) if kinds[i] != "image_only"]
    n_missing = min(len(others), round(MISSING_IMAGE_SHARE * n))
    missing_idx = {others[int(i)] for i in rng.permutation(len(others))[:n_missing]}
    missing = [i in missing_idx for i in range(n)]
    present = [i for i in range(n) if not missing[i]]
    order = [present[int(i)] for i in rng.permutation(len(present))]
    n_empty, n_absent = round(NO_CROPS_SHARE * n), round(NOT_IN_DICT_SHARE * n)
    status = ["absent" if missing[i] else "listed" for i in range(n)]
    for j, i in enumerate(order[: n_empty + n_absent]):
        status[i] = "empty" if j < n_empty else "absent"
    return kinds, missing, status


def _unrelated_donors(seed: int, kind: str, split: str, missing: list[bool], share: float) -> dict[int, int]:
    """Sample -> the sample whose picture it shows instead of its own: ``round(share * m)`` of the ``m``
    samples with an image, each given another such sample's picture, drawn uniformly; empty at share 0."""
    have = [i for i, gone in enumerate(missing) if not gone]
    if share <= 0 or len(have) < 2:
        return {}
    rng = np.random.default_rng(np.random.SeedSequence(
        [seed, KINDS.index(kind), list(SPLIT_SIZES).index(split), UNRELATED_STREAM]))
    chosen = sorted(int(k) for k in rng.permutation(len(have))[: round(share * len(have))])
    donors = {}
    for pos in chosen:
        other = int(rng.integers(len(have) - 1))  # uniform over the other samples with an image
        donors[have[pos]] = have[other if other < pos else other + 1]
    return donors


def _save_pictures(pictures: list[tuple[Image.Image, list[Image.Image]]], donors: dict[int, int],
                   missing: list[bool], status: list[str], keys: list[Any], image_paths: list[Path],
                   crop_dir: Path, stems: list[str]) -> dict[Any, list[str]]:
    """Write each sample's picture (its donor's, if it has one) and return the crop dict, in sample order."""
    crop_dict: dict[Any, list[str]] = {}
    for i in range(len(pictures)):
        img, crops = pictures[donors.get(i, i)]
        names = [] if missing[i] else _save(img, crops, image_paths[i], crop_dir, stems[i])
        if status[i] == "listed":
            crop_dict[keys[i]] = names
        elif status[i] == "empty":
            crop_dict[keys[i]] = []
    return crop_dict


def _save(img: Image.Image, crops: list[Image.Image], image_path: Path, crop_dir: Path, stem: str) -> list[str]:
    img.save(image_path, "JPEG", quality=JPEG_QUALITY)
    names = []
    for k, c in enumerate(crops):
        name = f"{stem}_crop{k}.png"
        c.save(crop_dir / name, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        names.append(name)
    return names


def generate_mner(out: Path, seed: int, size: float, unrelated: float = 0.0) -> dict[str, int]:
    """Write the MNER benchmark (Twitter layout, prefix ``synthetic``) under ``out``; samples per split."""
    counts = _counts(size)
    (out / "synthetic").mkdir(parents=True)
    (out / "synthetic_images").mkdir()
    (out / "meta").mkdir()
    for split_no, (split, n) in enumerate(counts.items()):
        rng = _rng(seed, "mner", split)
        crop_dir = out / "synthetic_aux_images" / _SPLIT_FOLDERS[split] / "crops"
        crop_dir.mkdir(parents=True)
        kinds, missing, status = _plan(rng, n)
        lines, meta, pictures, keys, paths, stems = [], [], [], [], [], []
        for i in range(n):
            img_id = str((split_no + 1) * 100000 + i)
            n_ent = 1 + int(rng.choice(3, p=ENTITY_COUNT_WEIGHTS))
            hidden = int(rng.integers(n_ent)) if kinds[i] == "image_only" else -1
            body: list[tuple[str, str]] = []
            ents = []
            for k in range(n_ent):
                if k:
                    body.append((_pick(rng, CONNECTORS), "O"))
                typ = _pick(rng, TYPES)
                name = _pick(rng, AMBIGUOUS_NAMES if k == hidden else NAMES[typ])
                part, spans = _fill(_pick(rng, NEUTRAL_CLAUSES), {"{E}": (name, typ)})
                s, e = spans["{E}"]
                ents.append({"start": len(body) + s, "end": len(body) + e, "type": typ, "image_only": k == hidden})
                body += part
            tokens, offset = _wrap(rng, body)
            for ent in ents:
                ent["start"] += offset
                ent["end"] += offset
            if kinds[i] == "image_only":
                typ = next(e["type"] for e in ents if e["image_only"])
                img, crops = _picture(rng, [TYPE_STYLES[typ][::-1]], main=True, distractors=int(rng.integers(0, 3)))
            elif kinds[i] == "unrelated":
                palette = [c for c, _ in TYPE_STYLES.values()]
                img, crops = _picture(rng, _random_objects(rng, palette), main=False, distractors=0)
            else:
                objects = [TYPE_STYLES[e["type"]][::-1] for e in ents]
                img, crops = _picture(rng, objects, main=False, distractors=0)
            pictures.append((img, crops))
            paths.append(out / "synthetic_images" / f"{img_id}.jpg")
            stems.append(img_id)
            keys.append(img_id if split == "dev" else f"{img_id}.jpg")  # both key styles of the public dicts
            lines.append(f"IMGID:{img_id}")
            lines += [f"{w}\t{lab.replace('MISC', 'OTHER')}" for w, lab in tokens]
            lines.append("")
            meta.append({"id": img_id, "kind": kinds[i], "missing_image": missing[i], "crops": status[i],
                         "entities": ents})
        donors = _unrelated_donors(seed, "mner", split, missing, unrelated)
        crop_dict = _save_pictures(pictures, donors, missing, status, keys, paths, crop_dir, stems)
        for i, j in donors.items():
            meta[i]["image_from"] = meta[j]["id"]
        text = "\n".join(lines) + "\n"
        if split == "test":  # the final sentence of a public file may lack its blank line
            text = text[:-1]
        (out / "synthetic" / {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}[split]).write_text(
            text, encoding="utf-8")
        torch.save(crop_dict, out / "synthetic" / f"synthetic_{_SPLIT_FOLDERS[split]}_dict.pth")
        _write_meta(out / "meta" / f"{split}.jsonl", meta)
    return counts


def _write_meta(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _mre_text(rng: np.random.Generator, kind: str, relation: str) -> tuple[list[str], tuple[int, int], tuple[int, int]]:
    if kind == "image_only":
        h_name = _pick(rng, AMBIGUOUS_NAMES)
        t_name = _pick(rng, [a for a in AMBIGUOUS_NAMES if a != h_name])
        template = _pick(rng, MRE_NEUTRAL)
        h_type = t_type = "MISC"  # unused: MRE files carry no entity types
    else:
        if relation == "None":
            h_type, t_type = _pick(rng, TYPES), _pick(rng, TYPES)
        else:
            h_type, t_type = (p.upper() for p in relation.split("/")[1:3])
        h_name = _pick(rng, NAMES[h_type])
        t_name = _pick(rng, [a for a in NAMES[t_type] if a != h_name])
        template = _pick(rng, RELATION_CUES[relation])
    body, spans = _fill(template, {"{h}": (h_name, h_type), "{t}": (t_name, t_type)})
    tokens, offset = _wrap(rng, body)
    h, t = spans["{h}"], spans["{t}"]
    return [w for w, _ in tokens], (h[0] + offset, h[1] + offset), (t[0] + offset, t[1] + offset)


def generate_mre(out: Path, seed: int, size: float, unrelated: float = 0.0) -> dict[str, int]:
    """Write the MRE benchmark (MNRE layout) under ``out``; samples per split."""
    counts = _counts(size)
    (out / "txt").mkdir(parents=True)
    (out / "meta").mkdir()
    (out / "ours_rel2id.json").write_text(json.dumps({r: i for i, r in enumerate(RELATIONS)}, indent=1) + "\n",
                                          encoding="utf-8")
    styled = list(RELATION_STYLES)
    for split, n in counts.items():
        rng = _rng(seed, "mre", split)
        folder = _SPLIT_FOLDERS[split]
        img_dir, crop_dir = out / "img_org" / folder, out / "img_vg" / folder / "crops"
        img_dir.mkdir(parents=True)
        crop_dir.mkdir(parents=True)
        kinds, missing, status = _plan(rng, n)
        text_idx = [i for i in range(n) if kinds[i] != "image_only"]
        n_none = min(len(text_idx), round(NONE_SHARE * n))
        none_idx = {text_idx[int(j)] for j in rng.permutation(len(text_idx))[:n_none]}
        lines, meta, pictures, keys, paths, stems = [], [], [], [], [], []
        for i in range(n):
            img_name = f"twitter_syn_{split}_{i:05d}.jpg"
            if kinds[i] == "image_only":
                relation = _pick(rng, styled)
            else:
                relation = "None" if i in none_idx else _pick(rng, MRE_RELATIONS)
            tokens, h, t = _mre_text(rng, kinds[i], relation)
            if kinds[i] == "unrelated":
                palette = [c for c, _ in RELATION_STYLES.values()]
                img, crops = _picture(rng, _random_objects(rng, palette), main=False, distractors=0)
            elif relation in RELATION_STYLES:
                img, crops = _picture(rng, [RELATION_STYLES[relation][::-1]], main=True,
                                      distractors=int(rng.integers(0, 3)))
            else:  # a related image with nothing to tell: neutral shapes
                objects = [(_pick(rng, SHAPES), _pick(rng, NEUTRAL_COLOURS)) for _ in range(int(rng.integers(1, 3)))]
                img, crops = _picture(rng, objects, main=False, distractors=0)
            pictures.append((img, crops))
            paths.append(img_dir / img_name)
            stems.append(img_name[:-4])
            keys.append(i if split == "dev" else img_name)  # dev keyed by line index, as some releases
            line = {"token": tokens, "h": {"name": " ".join(tokens[h[0]:h[1]]), "pos": [h[0], h[1]]},
                    "t": {"name": " ".join(tokens[t[0]:t[1]]), "pos": [t[0], t[1]]},
                    "img_id": img_name, "relation": relation}
            lines.append(repr(line))  # a Python literal with single quotes, as the public files
            meta.append({"id": img_name, "kind": kinds[i], "missing_image": missing[i], "crops": status[i],
                         "relation": relation})
        donors = _unrelated_donors(seed, "mre", split, missing, unrelated)
        crop_dict = _save_pictures(pictures, donors, missing, status, keys, paths, crop_dir, stems)
        for i, j in donors.items():
            meta[i]["image_from"] = meta[j]["id"]
        (out / "txt" / f"ours_{folder}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        torch.save(crop_dict, out / "txt" / f"mre_{'dev' if split == 'dev' else split}_dict.pth")
        _write_meta(out / "meta" / f"{split}.jsonl", meta)
    return counts
