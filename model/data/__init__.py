"""The trainer's data layer: read a dataset's three splits, check them, encode them once.

``load_task_data(cfg, tokenizer)`` is the one entry point the trainer needs: it picks the reader by
``cfg.data.name`` (Twitter-2015/2017, MNRE, or the synthetic benchmark generated on demand), reads
and validates all three splits before anything is encoded (so every ``DataError`` comes before
training), reports missing images once per split, and tokenises with ``cfg.data.max_len``.

For MRE it adds the entity markers to ``tokenizer`` (``add_entity_markers``): the caller must then
resize the text encoder's embeddings to ``len(tokenizer)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import Config
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
                                cfg.data.synthetic_seed, cfg.data.synthetic_size)
    if cfg.data.name == "synthetic-mre":
        return ensure_synthetic("mre", Path(cfg.data.dir) if cfg.data.dir else None,
                                cfg.data.synthetic_seed, cfg.data.synthetic_size)
    if not cfg.data.dir:
        raise DataError(f"data.dir must name the folder of the {cfg.data.name} data.")
    path = Path(cfg.data.dir).expanduser().absolute()
    if not path.is_dir():
        raise DataError(f"data.dir {path} is not a folder.")
    return path


def load_task_data(cfg: Config, tokenizer: Any) -> TaskData:
    """Read, check and encode the three splits of ``cfg.data.name``; see the module docstring."""
    name = cfg.data.name
    data_dir = _data_dir(cfg)
    if name in TWITTER or name == "synthetic-mner":
        prefix = "synthetic" if name == "synthetic-mner" else name
        samples = {s: read_mner(data_dir, prefix, s) for s in SPLITS}
        files = mner_files(data_dir, prefix)
        label_names, markers, rel2id = list(MNER_LABELS), None, None
    elif name in ("mnre", "synthetic-mre"):
        rel2id = read_rel2id(data_dir)
        samples = {s: read_mre(data_dir, s, rel2id) for s in SPLITS}
        files = mre_files(data_dir)
        label_names = sorted(rel2id, key=rel2id.__getitem__)
        markers = None
    else:
        raise DataError(f"data.name {name!r} has no reader; accepted: twitter2015, twitter2017, mnre, "
                        f"synthetic-mner, synthetic-mre.")

    missing: dict[str, int] = {}
    for split, rows in samples.items():
        missing[split] = count_missing_images(rows)
        level = logging.WARNING if missing[split] else logging.INFO
        log.log(level, "%s %s: %d samples; %d of %d images missing or unreadable, blank images used.",
                name, split, len(rows), missing[split], len(rows))

    encoded: dict[str, EncodedDataset] = {}
    if rel2id is None:
        for split, rows in samples.items():
            encoded[split] = encode_mner(rows, tokenizer, cfg.data.max_len, label_names, cfg.data.max_objects)
    else:
        markers = add_entity_markers(tokenizer)
        for split, rows in samples.items():
            encoded[split] = encode_mre(rows, tokenizer, cfg.data.max_len, rel2id, markers, cfg.data.max_objects)
    for split, ds in encoded.items():
        if ds.missing_crops:
            log.warning("%s %s: %d listed object crops missing on disk, left out (masked).",
                        name, split, ds.missing_crops)
    return TaskData(task=cfg.task, train=encoded["train"], dev=encoded["dev"], test=encoded["test"],
                    label_names=label_names, data_dir=data_dir, files=files, missing_images=missing,
                    markers=markers)
