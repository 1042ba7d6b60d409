"""The trainer's data layer: read a dataset's three splits, check them, encode them once.

``load_task_data(cfg, tokenizer)`` is the one entry point the trainer needs: it picks the reader by
``cfg.data.name`` (Twitter-2015/2017, MNRE, or the synthetic benchmark generated on demand), reads
and validates all three splits before anything is encoded (so every ``DataError`` comes before
training), reports missing images once per split, and tokenises with ``cfg.data.max_len``. The
encoded splits are cached on disk (``model.data.cache``), so the trials of a study encode them once.

For MRE it adds the entity markers to ``tokenizer`` (``add_entity_markers``): the caller must then
resize the text encoder's embeddings to ``len(tokenizer)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import Config
from model.data.cache import cache_file, cache_root, cached_splits, encoded_key
from model.data.encode import (Collator, EncodedDataset, add_entity_markers, collate, encode_mner,
                               encode_mre)
from model.data.images import ImageLoader, blank, is_readable
from model.data.readers import (SPLITS, load_crop_dict, mner_files, mre_files, read_mner, read_mre,
                                read_rel2id)
from model.data.synthetic import SYNTHETIC_DESIGN, ensure_synthetic
from model.data.types import DataError, Sample

__all__ = [
    "MNER_LABELS", "SPLITS", "SYNTHETIC_DESIGN", "Collator", "DataError", "EncodedDataset", "ImageLoader",
    "Sample", "TaskData", "add_entity_markers", "blank", "collate", "count_missing_images", "encode_mner",
    "encode_mre", "ensure_synthetic", "load_crop_dict", "load_task_data", "read_mner", "read_mre",
    "read_rel2id",
]

log = logging.getLogger("i2srm")

MNER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
TWITTER = ("twitter2015", "twitter2017")


@dataclass
class TaskData:
    task: str
    """``mner`` or ``mre``."""
    train: EncodedDataset
    dev: EncodedDataset
    test: EncodedDataset
    label_names: list[str]
    """MNER: MNER_LABELS; MRE: relations ordered by id."""
    data_dir: Path
    files: list[Path]
    """Every data file read: text files, crop dicts, rel2id."""
    missing_images: dict[str, int]
    """Per split: samples whose whole image is missing or unreadable (a blank image is used)."""
    markers: tuple[str, ...] | None = None
    """MRE: the entity markers added to the tokenizer."""

    @property
    def none_index(self) -> int | None:
        """MRE: the id of the negative relation ``None``; MNER: None."""
        return self.label_names.index("None") if self.task == "mre" else None

    def split(self, name: str) -> EncodedDataset:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]


def count_missing_images(samples: list[Sample]) -> int:
    """Samples whose whole image is missing or unreadable (header check; each path checked once)."""
    seen: dict[str, bool] = {}
    missing = 0
    for s in samples:
        if s.image not in seen:
            seen[s.image] = is_readable(s.image)
        missing += not seen[s.image]
    return missing


def _data_dir(cfg: Config) -> Path:
    if cfg.data.name == "synthetic-mner":
        return ensure_synthetic("mner", Path(cfg.data.dir) if cfg.data.dir else None,
                                cfg.data.synthetic_seed, cfg.data.synthetic_size, cfg.data.synthetic_unrelated)
    if cfg.data.name == "synthetic-mre":
        return ensure_synthetic("mre", Path(cfg.data.dir) if cfg.data.dir else None,
                                cfg.data.synthetic_seed, cfg.data.synthetic_size, cfg.data.synthetic_unrelated)
    if not cfg.data.dir:
        raise DataError(f"data.dir must name the folder of the {cfg.data.name} data.")
    path = Path(cfg.data.dir).expanduser().absolute()
    if not path.is_dir():
        raise DataError(f"data.dir {path} is not a folder.")
    return path


def load_task_data(cfg: Config, tokenizer: Any) -> TaskData:
    """Read, check and encode the three splits of ``cfg.data.name``; see the module docstring.

    The encoded splits come from the on-disk cache (``model.data.cache``) when the data files,
    tokenizer and encoding settings are the ones a previous run encoded; otherwise they are read,
    validated and encoded here (every ``DataError`` raised as without the cache) and cached.
    """
    name = cfg.data.name
    data_dir = _data_dir(cfg)
    rel2id: dict[str, int] | None = None
    markers: tuple[str, ...] | None = None
    if name in TWITTER or name == "synthetic-mner":
        prefix = "synthetic" if name == "synthetic-mner" else name
        files = mner_files(data_dir, prefix)
        label_names = list(MNER_LABELS)
    elif name in ("mnre", "synthetic-mre"):
        rel2id = read_rel2id(data_dir)
        files = mre_files(data_dir)
        label_names = sorted(rel2id, key=rel2id.__getitem__)
        markers = add_entity_markers(tokenizer)  # before the key: the markers are part of the tokenizer
    else:
        raise DataError(f"data.name {name!r} has no reader; accepted: twitter2015, twitter2017, mnre, "
                        f"synthetic-mner, synthetic-mre.")

    def build() -> dict[str, EncodedDataset]:
        if rel2id is None:
            samples = {s: read_mner(data_dir, prefix, s) for s in SPLITS}  # all read (and checked) first
            return {s: encode_mner(rows, tokenizer, cfg.data.max_len, label_names, cfg.data.max_objects)
                    for s, rows in samples.items()}
        samples = {s: read_mre(data_dir, s, rel2id) for s in SPLITS}
        assert markers is not None  # set with rel2id
        return {s: encode_mre(rows, tokenizer, cfg.data.max_len, rel2id, markers, cfg.data.max_objects)
                for s, rows in samples.items()}

    if all(f.is_file() for f in files):
        key = encoded_key(name, files, tokenizer, cfg.data.max_len, cfg.data.max_objects)
        encoded, built = cached_splits(cache_file(cache_root(), name, key), key, SPLITS, build)
        if not built:
            log.info("%s: encoded splits read from the cache (%s).", name, cache_root())
    else:
        encoded = build()  # the readers name the missing file

    missing: dict[str, int] = {}
    for split, ds in encoded.items():
        missing[split] = count_missing_images(ds.samples)
        level = logging.WARNING if missing[split] else logging.INFO
        log.log(level, "%s %s: %d samples; %d of %d images missing or unreadable, blank images used.",
                name, split, len(ds), missing[split], len(ds))
    for split, ds in encoded.items():
        if ds.missing_crops:
            log.warning("%s %s: %d listed object crops missing on disk, left out (masked).",
                        name, split, ds.missing_crops)
    return TaskData(task=cfg.task, train=encoded["train"], dev=encoded["dev"], test=encoded["test"],
                    label_names=label_names, data_dir=data_dir, files=files, missing_images=missing,
                    markers=markers)
