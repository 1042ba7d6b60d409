"""The visual feature store: a frozen backbone's features of every image, computed once, served from disk.

A frozen ResNet in eval mode is a pure function of the image, so recomputing it every step of every
epoch of every trial (as the reference does) is pure waste. ``build_visual_provider`` picks how a run
gets its ``VisualFeatures``:

* ``model.feature_cache=on``, or ``auto`` with a frozen backbone: a ``CachedVisualProvider``. For each
  split, the cells [N, P, C] and global logits [N, 1000] of every distinct image path the split uses
  (whole images and crops; a missing file is the blank image, a feature too) are computed once and
  written to ``<store>/<backbone>-s<size>-p<P>-<stage_pool>-<split>-<key[:20]>.safetensors``; later runs,
  epochs and trials read them back and serve batches with one ``index_select``. Under
  ``model.empty_crops=reference`` one more file (split name ``blank``) holds the zero image's features, which
  every absent crop slot serves. The served features equal what
  ``OnlineVisualProvider`` computes for the same images, to 1e-6: a matrix product's float32 rounding
  depends on how many images share the forward pass, so the online path itself differs that much
  between batches (the pooled cells came out bitwise equal in the tests, the fc logits within 1e-6).
  The store computes in float32 even where the trainer runs the online path under bf16 autocast.
* ``off``, or a fine-tuned backbone (``model.finetune_backbone=true``), or BatchNorm on batch statistics
  (``model.backbone_bn=train``: a feature then depends on its batch; ``on`` is refused for both): the
  ``OnlineVisualProvider`` runs the backbone in every step, as the reference does.

The key of a file is a sha256 over exactly what determines its content: the bytes of the dataset's
text/dict files (``data.files``); for each image path, its path, size and mtime_ns (or "missing");
the split; backbone name and weights (a local weights file by the sha256 of its bytes; random init by
its seed); image size; prompt length; ``model.stage_pool`` (reference and clean cells never share a
file); torch and torchvision versions (kernels differ); the store format version and the sha256 of the
code computing the features (``model/visual.py`` and ``model/data/images.py``, so editing them can never
serve stale features).
Images are fingerprinted by ``stat`` rather than by their bytes: a dataset has tens of thousands of
image files (gigabytes, often on network storage) and every trial computes the key when it starts;
``stat`` is microseconds per file, and rewriting an image changes its mtime_ns (and usually its size).
Only a tool that rewrites content and then forges the old mtime defeats it: delete the store then.
The small text/dict files are hashed byte for byte.

A file holds float32 ``cells`` [N, P, C] and ``logits`` [N, 1000]; its safetensors metadata holds the
key, the format version, the row order (a JSON list of paths) and a sha256 of the tensors' bytes. A
file that cannot be read, is truncated, has another key or format, fails the checksum or lacks a row
is logged, deleted and rebuilt, never used. Files are written to a temporary name and renamed, so a
reader never sees a partial file.

Concurrency: several trials starting together on one node share the store. The first to need a
missing file takes ``<file>.lock`` (``filelock``), computes and writes; the others wait on the lock,
re-check, and read what it wrote, so the features are computed once.

Where the store lives: ``model.feature_cache_dir`` if set, else ``$I2SRM_CACHE/features``, else
``~/.cache/i2srm/features``.

* Per node (the default, under the home folder): each node of a Ray cluster computes the store once
  for itself; nothing is shared, so nothing depends on the network file system's locking.
* Shared (set ``model.feature_cache_dir`` to a folder every node mounts, e.g. NFS): computed once for
  the whole cluster. The lock is an ``flock`` on the shared folder, which Linux NFSv4 clients honour;
  on a file system without working locks keep the per-node default. The key includes image paths, so
  nodes must mount the data at the same path to share files (otherwise each computes its own,
  correctly keyed).

Old files are never removed automatically (a different backbone or size keeps its own file); delete
the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from model.config import Config, ConfigError
from model.fileio import atomic_path, cache_dir, file_sha256, open_lock_file, read_or_build, sources_sha256

if TYPE_CHECKING:
    from model.visual import ResNetFeatures, VisualFeatures, VisualProvider

log = logging.getLogger("i2srm.features")

FORMAT_VERSION = 1
"""Bump when the file layout or the meaning of its tensors changes."""
RANDOM_INIT_SEED = 0
"""Seed of a randomly initialised backbone (``model.backbone_weights=none``) unless the config has a
``model.backbone_seed``: a fixed function of the image (like a weights file), so every trial and seed shares
one store, and the trainer's RNG stream is untouched."""
COMPUTE_BATCH = 64
"""Images per backbone forward while building a store (speed only; the features do not depend on it)."""
LOCK_TIMEOUT_S = 6 * 3600.0
"""How long a run waits for another process building the same file: a large dataset with a deep backbone
on CPU takes about an hour; a lock held longer than this is a hung process."""
SPLITS = ("train", "dev", "test")
BLANK = "blank"
"""The store file (in place of a split name) holding the zero image's features: what an absent crop slot serves
under ``model.empty_crops=reference``."""
BLANK_KEY = "<zero image>"
"""Its one row's path: no file, so its stamp is ``missing``."""
_CODE_FILES = ("visual.py", "data/images.py")  # the code that turns an image file into features


class StoreError(RuntimeError):
    """A store file that must not be used (corrupt, partial, another key); it is rebuilt."""


def store_root(cfg: Config) -> Path:
    """``model.feature_cache_dir``, else ``$I2SRM_CACHE/features``, else ``~/.cache/i2srm/features``."""
    if cfg.model.feature_cache_dir:
        return Path(cfg.model.feature_cache_dir).expanduser()
    return cache_dir("features")


# ----------------------------------------------------------------------------------------------- the key

def image_stamp(path: str) -> list[Any]:
    """``[path, size, mtime_ns]`` of an image file, ``[path, "missing"]`` if there is none (the blank image)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, "missing"]
    return [path, st.st_size, st.st_mtime_ns]


def init_seed(cfg: Config) -> int:
    """The seed a random-init backbone is drawn from (``model.backbone_seed`` if the config has that key)."""
    return int(getattr(cfg.model, "backbone_seed", RANDOM_INIT_SEED))


def weights_identity(weights: str, seed: int = RANDOM_INIT_SEED) -> str:
    """What names the backbone's weights: the random-init seed, torchvision's ImageNet set, or a file's sha256."""
    if weights == "none":
        return f"random-init-seed-{seed}"
    if weights == "imagenet":
        return "imagenet-IMAGENET1K_V1"  # the set model.visual.build_resnet loads; torchvision's version is keyed too
    return "sha256-" + file_sha256(Path(weights).expanduser())


def base_fingerprint(cfg: Config, data_files: Iterable[str | Path]) -> dict[str, Any]:
    """The parts of the key that all three splits share (computed once: it hashes files)."""
    import torchvision

    files = sorted(str(Path(f).expanduser().absolute()) for f in data_files)
    return {
        "format": FORMAT_VERSION,
        "code": sources_sha256(Path(__file__).resolve().parent, _CODE_FILES),  # a change invalidates every store
        "data_files": [[f, file_sha256(f)] for f in files],
        "backbone": cfg.model.backbone,
        "weights": weights_identity(cfg.model.backbone_weights, init_seed(cfg)),
        "image_size": cfg.model.image_size,
        "prompt_len": cfg.model.prompt_len,
        "stage_pool": cfg.model.stage_pool,  # reference and clean cells never share a file
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def split_key(base: dict[str, Any], split: str, paths: Sequence[str]) -> str:
    """sha256 of the shared parts, the split and the stamps of the split's images (``paths`` sorted)."""
    doc = {**base, "split": split, "images": [image_stamp(p) for p in paths]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def split_paths(dataset: Any) -> list[str]:
    """The distinct image keys (whole images and crops) an encoded split uses, sorted."""
    return sorted({k for i in range(len(dataset)) for k in dataset[i]["image_keys"]})


def store_file(root: Path, cfg: Config, split: str, key: str) -> Path:
    m = cfg.model
    return root / f"{m.backbone}-s{m.image_size}-p{m.prompt_len}-{m.stage_pool}-{split}-{key[:20]}.safetensors"


# ---------------------------------------------------------------------------------------------- the file

@dataclass
class SplitFeatures:
    """The features of one split: row i of ``cells``/``logits`` belongs to ``paths[i]``."""

    paths: list[str]
    cells: Tensor   # [N, P, C] float32
    logits: Tensor  # [N, G] float32


def tensors_checksum(cells: Tensor, logits: Tensor) -> str:
    h = hashlib.sha256()
    for t in (cells, logits):
        array: Any = t.detach().cpu().contiguous().numpy()
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def write_store(file: Path, key: str, feats: SplitFeatures) -> None:
    """Write ``feats`` to ``file`` atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    cells = feats.cells.detach().to("cpu", torch.float32).contiguous()    # [N, P, C]
    logits = feats.logits.detach().to("cpu", torch.float32).contiguous()  # [N, G]
    meta = {"key": key, "format": str(FORMAT_VERSION), "paths": json.dumps(feats.paths),
            "checksum": tensors_checksum(cells, logits)}
    with atomic_path(file) as tmp:
        save_file({"cells": cells, "logits": logits}, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors creates it owner-only; a shared store is read by other accounts


def read_store(file: Path, key: str, needed: Sequence[str]) -> SplitFeatures:
    """The features stored in ``file``; ``StoreError`` says why it cannot be used."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            if names != {"cells", "logits"}:
                raise StoreError(f"holds tensors {sorted(names)}, expected cells and logits")
            if meta.get("format") != str(FORMAT_VERSION):
                raise StoreError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
            if meta.get("key") != key:
                raise StoreError("its key does not match the data, backbone and settings of this run")
            # clone: own the memory rather than keep the file mapped (it may be replaced or deleted)
            cells, logits = f.get_tensor("cells").clone(), f.get_tensor("logits").clone()
    except StoreError:
        raise
    except Exception as e:  # safetensors raises its own error type for a bad header or a short file
        raise StoreError(f"unreadable ({type(e).__name__}: {e})") from None
    try:
        paths = json.loads(meta.get("paths", ""))
    except json.JSONDecodeError:
        raise StoreError("its row index (metadata 'paths') is not JSON") from None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise StoreError("its row index (metadata 'paths') is not a list of paths")
    if cells.dtype != torch.float32 or logits.dtype != torch.float32 or cells.dim() != 3 or logits.dim() != 2 \
            or cells.shape[0] != len(paths) or logits.shape[0] != len(paths):
        raise StoreError(f"tensors cells {tuple(cells.shape)} {cells.dtype} and logits {tuple(logits.shape)} "
                         f"{logits.dtype} do not fit its {len(paths)} rows")
    if tensors_checksum(cells, logits) != meta.get("checksum"):
        raise StoreError("checksum mismatch (the tensors were altered or partly written)")
    missing = set(needed).difference(paths)
    if missing:
        raise StoreError(f"{len(missing)} image(s) have no row, e.g. {sorted(missing)[0]}")
    return SplitFeatures(paths, cells, logits)


# ------------------------------------------------------------------------------------------- computing

def compute_features(backbone: "ResNetFeatures", loader: Any, paths: Sequence[str], device: torch.device,
                     batch_size: int = COMPUTE_BATCH, progress: bool = False, desc: str = "") -> SplitFeatures:
    """Run the frozen ``backbone`` over ``paths`` (loaded by ``loader.load``), ``batch_size`` at a time."""
    backbone.to(device).eval()
    cells_out: list[Tensor] = []
    logits_out: list[Tensor] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=desc or "visual features", unit="img", leave=False, dynamic_ncols=True)
    # fp32 whatever autocast the caller runs under: the store serves every later run
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = torch.stack([loader.load(p) for p in chunk]).to(device)  # [n, 3, S, S]
            cells, logits = backbone(images)                                  # [n, P, C], [n, G]
            cells_out.append(cells.float().cpu())
            logits_out.append(logits.float().cpu())
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return SplitFeatures(list(paths), torch.cat(cells_out), torch.cat(logits_out))


def _acquire(lock: Any, file: Path, timeout: float) -> None:
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        pass
    log.info("waiting for another process computing %s (lock %s)", file.name, lock.lock_file)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise RuntimeError(
            f"waited {timeout:.0f} s for {lock.lock_file}, held by another process computing the visual "
            f"features {file}; if no such process is running (e.g. a stale lock on a network file system), "
            f"delete the lock file, or set model.feature_cache_dir to a local folder.") from None


def load_or_build(file: Path, key: str, paths: Sequence[str], compute: Callable[[], SplitFeatures],
                  lock_timeout: float = LOCK_TIMEOUT_S) -> tuple[SplitFeatures, bool]:
    """The features in ``file``, built by ``compute()`` under ``<file>.lock`` when missing or unusable.

    Returns the features and whether this process computed them.
    """
    from filelock import FileLock

    def acquire() -> Any:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the feature store folder {file.parent} ({e}); set "
                              f"model.feature_cache_dir (or $I2SRM_CACHE) to a writable folder.") from None
        try:
            open_lock_file(Path(str(file) + ".lock"))
        except OSError as e:
            raise ConfigError(f"cannot create the lock file {file.name}.lock in the feature store folder {file.parent} "
                              f"({e.strerror or type(e).__name__}); set model.feature_cache_dir (or $I2SRM_CACHE) to a "
                              f"writable folder.") from None
        lock = FileLock(str(file) + ".lock")
        _acquire(lock, file, lock_timeout)
        return lock

    return read_or_build(file, lambda: read_store(file, key, paths), compute,
                         lambda feats: write_store(file, key, feats), StoreError, acquire, "feature store", log)


# ------------------------------------------------------------------------------------------- serving

class CachedVisualProvider:
    """Serves ``VisualFeatures`` for batches of image keys from precomputed per-split features.

    All splits sit in one [1 + N, P, C] tensor whose row 0 serves absent crop slots (mask False): zeros, as the
    online provider leaves them, or with ``blank`` (``model.empty_crops=reference``) the zero image's features.
    A batch is one ``index_select``.
    """

    def __init__(self, splits: Sequence[SplitFeatures], max_objects: int, use_objects: bool,
                 blank: SplitFeatures | None = None) -> None:
        if not splits:
            raise ValueError("CachedVisualProvider needs the features of at least one split")
        first = splits[0]
        pad_cells = first.cells.new_zeros(1, *first.cells.shape[1:])   # [1, P, C]
        pad_logits = first.logits.new_zeros(1, first.logits.shape[1])  # [1, G]
        if blank is not None:
            pad_cells, pad_logits = blank.cells[:1], blank.logits[:1]
        self.zero_image = blank is not None
        self.cells = torch.cat([pad_cells] + [s.cells for s in splits])      # [1 + N, P, C]
        self.logits = torch.cat([pad_logits] + [s.logits for s in splits])   # [1 + N, G]
        self.row: dict[str, int] = {}
        offset = 1
        for s in splits:
            for i, p in enumerate(s.paths):
                self.row.setdefault(p, offset + i)  # an image in two splits has equal rows: keep the first
            offset += len(s.paths)
        self.slots = 1 + (max_objects if use_objects else 0)
        self.computed: list[str] = []  # splits this process computed (the rest were read from disk)
        self.files: list[Path] = []

    def _row(self, key: str) -> int:
        try:
            return self.row[key]
        except KeyError:
            raise KeyError(f"image {key!r} is not in the visual feature store, which holds the images of the "
                           f"train/dev/test splits it was built from; the batch comes from other data.") from None

    def __call__(self, image_keys: list[list[str]], device: torch.device) -> "VisualFeatures":
        from model.visual import VisualFeatures

        b, slots = len(image_keys), self.slots
        rows: list[int] = []
        present: list[int] = []
        for keys in image_keys:
            if not keys:
                raise ValueError("a sample of the batch has no image key; the whole image must come first.")
            kept = keys[:slots]
            rows.extend(self._row(k) for k in kept)
            rows.extend([0] * (slots - len(kept)))  # row 0: an absent crop (zeros or the zero image)
            present.append(len(kept))
        index = torch.tensor(rows, dtype=torch.long)                                       # [B * (1 + K)]
        cells = self.cells.index_select(0, index).view(b, slots, *self.cells.shape[1:])    # [B, 1 + K, P, C]
        logits = self.logits.index_select(0, index.view(b, slots)[:, 0])                   # [B, G]
        mask = torch.arange(slots).unsqueeze(0) < torch.tensor(present).unsqueeze(1)        # [B, 1 + K] bool
        return VisualFeatures(cells=cells.to(device, non_blocking=True), logits=logits.to(device, non_blocking=True),
                              mask=mask.to(device, non_blocking=True))


# ------------------------------------------------------------------------------------------- building

def make_backbone(cfg: Config) -> "ResNetFeatures":
    """The configured backbone; a random init is drawn from ``init_seed(cfg)`` with the global RNG left
    untouched, so a run's other randomness is the same whether the store was hit or built."""
    from model.visual import ResNetFeatures, build_resnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(cfg))
        net = build_resnet(cfg.model.backbone, cfg.model.backbone_weights)
    return ResNetFeatures(net, cfg.model.prompt_len, frozen=not cfg.model.finetune_backbone,
                          pool=cfg.model.stage_pool, batch_stats=cfg.model.backbone_bn == "train")


def use_cache(cfg: Config) -> bool:
    """Whether ``model.feature_cache`` (with ``model.finetune_backbone`` and ``model.backbone_bn``) asks for the
    store: ``auto`` bypasses it for a fine-tuned backbone and for batch statistics, ``on`` refuses both."""
    mode = cfg.model.feature_cache
    if mode == "on" and cfg.model.finetune_backbone:
        raise ConfigError("'model.feature_cache' is 'on' but 'model.finetune_backbone' is true: a fine-tuned "
                          "backbone changes its features every step, so they cannot be stored. "
                          "Set model.feature_cache to auto or off, or model.finetune_backbone to false.")
    if mode == "on" and cfg.model.backbone_bn == "train":
        raise ConfigError("'model.feature_cache' is 'on' but 'model.backbone_bn' is 'train': with batch statistics "
                          "an image's features depend on the other images of its batch, so they cannot be stored. "
                          "Set model.feature_cache to auto or off, or model.backbone_bn to eval.")
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"'model.feature_cache' is {mode!r}; allowed: auto, on, off.")
    online = cfg.model.finetune_backbone or cfg.model.backbone_bn == "train"
    return mode == "on" or (mode == "auto" and not online)


def build_cached_provider(cfg: Config, data: Any, device: torch.device,
                          lock_timeout: float = LOCK_TIMEOUT_S) -> CachedVisualProvider:
    """Read (or compute once, then read) the features of the three splits of ``data``."""
    from model.data.images import ImageLoader

    root = store_root(cfg)
    base = base_fingerprint(cfg, data.files)
    backbone: ResNetFeatures | None = None
    loaded: list[SplitFeatures] = []
    computed: list[str] = []
    files: list[Path] = []
    for split in SPLITS:
        paths = split_paths(getattr(data, split))
        key = split_key(base, split, paths)
        file = store_file(root, cfg, split, key)

        def compute(split: str = split, paths: list[str] = paths) -> SplitFeatures:
            nonlocal backbone
            if backbone is None:
                backbone = make_backbone(cfg)
            t0 = time.perf_counter()
            feats = compute_features(backbone, ImageLoader(cfg.model.image_size), paths, device,
                                     progress=cfg.train.progress, desc=f"visual features ({split})")
            dt = time.perf_counter() - t0
            log.info("computed visual features of %d %s images with %s at %d px in %.1f s (%.0f images/s)",
                     len(paths), split, cfg.model.backbone, cfg.model.image_size, dt, len(paths) / max(dt, 1e-9))
            return feats

        feats, built = load_or_build(file, key, paths, compute, lock_timeout)
        if not built:
            log.info("visual features of %d %s images read from %s", len(paths), split, file)
        loaded.append(feats)
        files.append(file)
        if built:
            computed.append(split)
    blank: SplitFeatures | None = None
    if cfg.model.empty_crops == "reference":
        key = split_key(base, BLANK, [BLANK_KEY])
        file = store_file(root, cfg, BLANK, key)

        def compute_blank() -> SplitFeatures:
            nonlocal backbone
            if backbone is None:
                backbone = make_backbone(cfg)
            return compute_features(backbone, _BlankLoader(cfg.model.image_size), [BLANK_KEY], device)

        blank, built = load_or_build(file, key, [BLANK_KEY], compute_blank, lock_timeout)
        files.append(file)
        if built:
            computed.append(BLANK)
    provider = CachedVisualProvider(loaded, cfg.data.max_objects, cfg.model.use_objects, blank)
    provider.computed, provider.files = computed, files
    return provider


class _BlankLoader:
    """``load(anything)``: the zero image [3, S, S] (what an absent crop slot holds under the reference)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def load(self, path: str) -> Tensor:
        from model.data.images import blank

        return blank(self.image_size)


def build_visual_provider(cfg: Config, data: Any, device: torch.device
                          ) -> tuple["VisualProvider", int, nn.Module | None]:
    """The provider of a run's ``VisualFeatures``, the width C of a visual cell, and the backbone module when
    the trainer must switch its mode (fine-tuned, so it is also optimised, or ``model.backbone_bn=train``, whose
    frozen parameters the optimizer skips); None otherwise."""
    from model.data.images import ImageLoader
    from model.visual import OnlineVisualProvider, channels_of

    cells_dim = channels_of(cfg.model.backbone)
    if use_cache(cfg):
        return build_cached_provider(cfg, data, torch.device(device)), cells_dim, None
    backbone = make_backbone(cfg).to(device)
    online = OnlineVisualProvider(backbone, ImageLoader(cfg.model.image_size), cfg.data.max_objects,
                                  cfg.model.use_objects, zero_image=cfg.model.empty_crops == "reference")
    switched = cfg.model.finetune_backbone or cfg.model.backbone_bn == "train"
    return online, cells_dim, (backbone if switched else None)
