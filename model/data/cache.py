"""On-disk cache of the encoded (tokenised) splits, shared by every trial of a node.

Without it, every trial of a study re-reads, re-validates and re-tokenises the three splits. With it,
``load_task_data`` asks ``cached_splits`` for the splits: on a hit they are read back from one file;
on a miss the readers and encoders run (raising every ``DataError`` as before) and the result is
written for the next trial.

The key is a sha256 over exactly what determines the encoded content:

* the absolute path and the sha256 of the bytes of every data file read (``TaskData.files``: text
  files, crop dicts, rel2id). The path counts because samples hold absolute image paths built from
  the data folder; the bytes prove that the files are the ones that were validated on the miss.
* the tokenizer: its class, ``name_or_path``, vocabulary size, ``len(tokenizer)``, added tokens, and
  the sha256 of the fast tokenizer's full serialisation (vocabulary, normaliser, pre-tokeniser, e.g.
  RoBERTa's ``add_prefix_space``), so two tokenizers that split words differently never share a file.
* ``data.name``, ``data.max_len``, ``data.max_objects``, the format version, and the sha256 of the
  data-layer code (readers, encoder, this module), so editing them never serves stale encodings.

Image stamps are not in the key: the image files do not change what the text encodes to. What does
depend on the image files -- which listed crops exist (``image_keys``, ``missing_crops``) and the
count of missing images -- is recomputed on a hit from the cached samples (a ``stat`` per crop,
the same work the encoder does), so it is right even when crops were added or deleted since.

File format (safe, no pickle): one safetensors file per key holding, per split and field, the
concatenation of the per-sample tensors (``<split>.<field>``) and their lengths
(``<split>.<field>.len``), plus ``meta``: a uint8 tensor of the UTF-8 JSON of the samples and the
split's bookkeeping (pad id, truncated count). The safetensors metadata holds the key, the format
version and a sha256 of all tensor bytes. A file that cannot be read, is truncated, or has another
key, format or checksum is logged, deleted and rebuilt. Files are written under a temporary name and
renamed into place (atomic), and a miss is computed under ``<file>.lock`` (``filelock``) so trials
starting together compute once and the others read the result.

Location: ``$I2SRM_CACHE/encoded``, else ``~/.cache/i2srm/encoded`` (the root convention of the
visual feature store, ``model.features.store_root``). Old files are never removed automatically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from model.data.encode import EncodedDataset, _image_keys
from model.data.types import Sample
from model.fileio import atomic_path, cache_dir, file_sha256, open_lock_file, read_or_build, sources_sha256

log = logging.getLogger("i2srm")

FORMAT_VERSION = 1
"""Bump when the file layout or the meaning of its content changes."""
LOCK_TIMEOUT_S = 3600.0
"""How long a trial waits for another one encoding the same data before giving up with a message."""
_CODE_FILES = ("readers.py", "encode.py", "cache.py", "types.py")
"""The data-layer sources whose behaviour the cached content depends on."""
_SAMPLE_FIELDS = ("tokens", "image", "crops", "labels", "head", "tail", "relation", "source")
_TENSOR_FIELDS = {
    "mner": {"input_ids": torch.long, "attention_mask": torch.long, "word_index": torch.long,
             "labels": torch.long},
    "mre": {"input_ids": torch.long, "attention_mask": torch.long, "head_mask": torch.float32,
            "tail_mask": torch.float32, "label": torch.long},
}
"""Per task, the per-sample tensors of an encoded item and their dtypes (``label`` is a scalar)."""


class CacheError(RuntimeError):
    """A cache file that must not be used (unreadable, truncated, another key); it is rebuilt."""


def cache_root() -> Path:
    """``$I2SRM_CACHE/encoded``, else ``~/.cache/i2srm/encoded``."""
    return cache_dir("encoded")


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What determines how ``tokenizer`` splits words (see the module docstring)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    serial = ""
    if backend is not None:
        doc = json.loads(backend.to_str())
        # per-call state: a tokenizer(..., truncation=True, max_length=n) call leaves it set on the backend
        doc.pop("truncation", None)
        doc.pop("padding", None)
        serial = json.dumps(doc, sort_keys=True)
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": int(getattr(tokenizer, "vocab_size", 0) or 0),
        "len": len(tokenizer),
        "added": sorted((str(k), int(v)) for k, v in tokenizer.get_added_vocab().items()),
        "special": sorted(str(t) for t in tokenizer.all_special_tokens),
        "pad_id": tokenizer.pad_token_id,
        "backend": hashlib.sha256(serial.encode()).hexdigest(),
    }


def encoded_key(name: str, files: Sequence[Path], tokenizer: Any, max_len: int, max_objects: int) -> str:
    """sha256 of everything the encoded splits depend on; ``files`` must all exist."""
    paths = sorted(str(Path(f).expanduser().absolute()) for f in files)
    doc = {
        "format": FORMAT_VERSION,
        "code": sources_sha256(Path(__file__).resolve().parent, _CODE_FILES),
        "dataset": name,
        "files": [[p, file_sha256(p)] for p in paths],
        "tokenizer": tokenizer_identity(tokenizer),
        "max_len": int(max_len),
        "max_objects": int(max_objects),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_file(root: Path, name: str, key: str) -> Path:
    return root / f"{name}-{key[:24]}.safetensors"


# ------------------------------------------------------------------------------------------ writing

def _sample_json(s: Sample) -> dict[str, Any]:
    return {f: getattr(s, f) for f in _SAMPLE_FIELDS}


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flatten(splits: dict[str, EncodedDataset]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for split, ds in splits.items():
        fields = _TENSOR_FIELDS[ds.task]
        for field, dtype in fields.items():
            parts = [item[field].reshape(-1).to(dtype) for item in ds.items]
            tensors[f"{split}.{field}"] = torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)  # [sum L]
            tensors[f"{split}.{field}.len"] = torch.tensor([p.numel() for p in parts], dtype=torch.long)  # [N]
        meta[split] = {"task": ds.task, "pad_id": ds.pad_id, "max_objects": ds.max_objects,
                       "truncated": ds.truncated, "samples": [_sample_json(s) for s in ds.samples]}
    tensors["meta"] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
    return tensors


def write_cache(file: Path, key: str, splits: dict[str, EncodedDataset]) -> None:
    """Write ``splits`` to ``file`` atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    tensors = _flatten(splits)
    with atomic_path(file) as tmp:
        save_file(tensors, str(tmp), metadata={"key": key, "format": str(FORMAT_VERSION),
                                               "checksum": _checksum(tensors)})


# ------------------------------------------------------------------------------------------ reading

def _sample(d: dict[str, Any]) -> Sample:
    return Sample(tokens=list(d["tokens"]), image=d["image"], crops=list(d["crops"]), labels=d["labels"],
                  head=tuple(d["head"]) if d["head"] is not None else None,
                  tail=tuple(d["tail"]) if d["tail"] is not None else None,
                  relation=d["relation"], source=d["source"])


def _rebuild(split: str, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> EncodedDataset:
    task, max_objects = info["task"], int(info["max_objects"])
    samples = [_sample(d) for d in info["samples"]]
    columns: dict[str, list[torch.Tensor]] = {}
    for field in _TENSOR_FIELDS[task]:
        flat, lengths = tensors[f"{split}.{field}"], tensors[f"{split}.{field}.len"]
        if len(lengths) != len(samples) or int(lengths.sum()) != flat.numel():
            raise CacheError(f"{split}.{field}: {len(lengths)} lengths summing to {int(lengths.sum())} for "
                             f"{len(samples)} samples and {flat.numel()} values")
        # clone: each item owns its storage (a view would carry the whole column into worker processes)
        columns[field] = [t.clone() for t in torch.split(flat, lengths.tolist())]
    if task == "mre":
        columns["label"] = [t.reshape(()) for t in columns["label"]]  # [] scalar, as encode_mre makes it
    items, missing_crops = [], 0
    for i, sample in enumerate(samples):
        keys, miss = _image_keys(sample, max_objects)  # crop existence is re-checked, not cached
        missing_crops += miss
        item: dict[str, Any] = {field: columns[field][i] for field in _TENSOR_FIELDS[task]}
        item["image_keys"] = keys
        item["index"] = i
        items.append(item)
    return EncodedDataset(items, samples, task, int(info["pad_id"]), max_objects, int(info["truncated"]),
                          missing_crops)


def read_cache(file: Path, key: str, splits: Sequence[str]) -> dict[str, EncodedDataset]:
    """The splits stored in ``file``; ``CacheError`` if it is unreadable, truncated or another key's."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != str(FORMAT_VERSION) or meta.get("key") != key:
                raise CacheError(f"format {meta.get('format')} key {meta.get('key', '')[:12]}, "
                                 f"expected format {FORMAT_VERSION} key {key[:12]}")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except CacheError:
        raise
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise CacheError(f"unreadable ({type(e).__name__}: {e})") from None
    if _checksum(tensors) != meta.get("checksum"):
        raise CacheError("checksum mismatch")
    try:
        info = json.loads(tensors.pop("meta").numpy().tobytes().decode())
        return {s: _rebuild(s, info[s], tensors) for s in splits}
    except CacheError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CacheError(f"inconsistent content ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------------------------------ the entry

def cached_splits(file: Path, key: str, splits: Sequence[str], build: Callable[[], dict[str, EncodedDataset]],
                  lock_timeout: float = LOCK_TIMEOUT_S) -> tuple[dict[str, EncodedDataset], bool]:
    """The encoded ``splits`` from ``file``, built by ``build()`` under ``<file>.lock`` when missing or
    unusable. Returns them and whether this process built them. If the cache folder cannot be written,
    a warning is logged and the splits are built without caching (the run never fails for the cache)."""
    from filelock import FileLock, Timeout

    def acquire() -> Any:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            open_lock_file(Path(str(file) + ".lock"))  # OSError here, not filelock's endless retries
            lock = FileLock(str(file) + ".lock")
            lock.acquire(timeout=lock_timeout)
            return lock
        except Timeout:
            raise RuntimeError(f"waited {lock_timeout:.0f} s for {file}.lock, held by another process encoding "
                               f"the same data; if none is running (a stale lock), delete the lock file.") from None
        except OSError as e:
            log.warning("encoded-data cache %s not writable (%s); encoding without the cache (set $I2SRM_CACHE "
                        "to a writable folder).", file.parent, e)
            return None

    def write(built: dict[str, EncodedDataset]) -> None:
        try:
            write_cache(file, key, built)
        except OSError as e:
            log.warning("could not write the encoded-data cache %s (%s); continuing without it.", file, e)

    return read_or_build(file, lambda: read_cache(file, key, splits), build, write, CacheError, acquire,
                         "encoded-data cache", log)
