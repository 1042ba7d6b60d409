"""Pre-flight: what a run will fetch from the network, checked in seconds before any data is read.

A text encoder named by its hub id, or ``model.backbone_weights=imagenet``, is downloaded on first use. On a
machine that cannot reach the host that download retries for tens of seconds and ends in a long traceback.
``check_resources`` finds out first, in at most a couple of seconds per host, and raises a one-line
``ConfigError`` that names the key to change and the ways out. What is already on this machine (a local
folder, the Hugging Face cache, torch hub's checkpoint cache) needs no network and is never probed, so the
offline recipes (MiniLM shipped as a package, random backbone) cost no probe at all.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from model.config import ALLOW_SIMULATE_ENV, MINILM, PATH_KEYS, Config, ConfigError
from model.inputs import path_problem, show, show_text

PROBE_TIMEOUT_S = 2.0
"""How long a host has to accept a TCP connection before it counts as unreachable."""
PROBE_TTL_S = 30.0
"""How long the answer of a probe is reused for the same host and port."""
_PROBED: dict[tuple[str, int], tuple[float, str | None]] = {}

_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's ENV_VARS_TRUE_VALUES


def check_resources(cfg: Config, where: str = "") -> None:
    """The pre-flight of one validated config: what ``model.config.validate`` cannot see without this machine.

    Raise ``ConfigError`` (one line, prefixed by ``where``) when a file or folder the config names is missing,
    when ``i2srm.attn_heads`` does not divide the text encoder's sample width, or when the run needs a download
    from a host this machine cannot reach: files first, then the text encoder (reachable, then its width), then
    the ImageNet weights of the backbone (when images are used). A ``train.simulate_seconds`` config loads no
    model and no data: only its permission is checked (``check_simulate_allowed``).
    """
    try:
        if cfg.train.simulate_seconds is not None:
            check_simulate_allowed(cfg)
            return
        check_files(cfg)
        check_text_encoder(cfg.model.text_encoder)
        check_attn_heads(cfg)
        if cfg.model.use_image and cfg.model.backbone_weights == "imagenet":
            check_imagenet_weights(cfg.model.backbone)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


def check_simulate_allowed(cfg: Config) -> None:
    """``train.simulate_seconds`` is for measuring the platform: refused unless the environment sets
    ``I2SRM_ALLOW_SIMULATE=1`` (in the driver, and on every Ray node for the trials)."""
    if cfg.train.simulate_seconds is not None and os.environ.get(ALLOW_SIMULATE_ENV) != "1":
        raise ConfigError(f"'train.simulate_seconds' is {show(cfg.train.simulate_seconds)}: it replaces every "
                          f"epoch's training by a timed stand-in with pseudo-metrics (benchmarks only) and is "
                          f"refused unless {ALLOW_SIMULATE_ENV}=1 is set in the environment (of the driver and of "
                          f"every Ray node); leave it unset (null) to train.")


def check_files(cfg: Config) -> None:
    """The files and folders a config names on this machine: no path key starts with an unknown ``~user``, a
    ``model.backbone_weights`` path is a state dict of the backbone (``check_backbone_weights``), a text-encoder
    folder holds a model config (``check_encoder_folder``), and the ``data.dir`` of a real dataset is a folder."""
    flat = cfg.flat()
    for key in PATH_KEYS:  # first: every later check expands ~ in these
        problem = path_problem(flat[key]) if isinstance(flat[key], str) else None
        if problem is not None:
            raise ConfigError(f"'{key}' is {show(flat[key])}, which {problem}; allowed: an absolute or relative "
                              f"path, or ~/... for the home folder.")
    w = cfg.model.backbone_weights
    if w not in ("none", "imagenet") and not Path(w).expanduser().is_file():
        raise ConfigError(f"'model.backbone_weights' is {show(w)}; allowed: none, imagenet or the path of an existing "
                          f"state-dict file.")
    if cfg.data.dir and not cfg.data.name.startswith("synthetic-") and not Path(cfg.data.dir).expanduser().is_dir():
        raise ConfigError(f"'data.dir' is {show(cfg.data.dir)}, which is not a folder.")
    check_encoder_folder(cfg.model.text_encoder)
    if cfg.model.use_image and w not in ("none", "imagenet"):
        check_backbone_weights(w, cfg.model.backbone)


def check_attn_heads(cfg: Config) -> None:
    """With cross-sample transfer on, ``i2srm.attn_heads`` divides the sample width: the encoder's width (twice
    that for MRE, whose sample is the pair of entity markers)."""
    if not cfg.i2srm.transfer:
        return
    width = encoder_width(cfg.model.text_encoder)
    if width is None:
        return  # a config without hidden_size: the model says what it is when it is built
    rep = 2 * width if cfg.task == "mre" else width
    if rep % cfg.i2srm.attn_heads:
        divs = [d for d in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if rep % d == 0]
        raise ConfigError(f"'i2srm.attn_heads' is {show(cfg.i2srm.attn_heads)}; allowed: a divisor of the sample width "
                          f"{rep} of {cfg.model.text_encoder}, e.g. {divs}.")


@functools.lru_cache(maxsize=None)
def encoder_width(name_or_path: str) -> int | None:
    """Width (``hidden_size``) of the text encoder, read from its config without loading weights; None if its
    config does not say. Read once per encoder and process.

    A local folder, or a hub name already in the Hugging Face cache, has its ``config.json`` read directly (no
    torch import, a fraction of a second). Anything else goes through ``AutoConfig``, which may download it:
    ``check_text_encoder`` has made sure by then that the hub answers.
    """
    from model.encoders import resolve_text_encoder

    where = resolve_text_encoder(name_or_path)
    found = _cached_config_file(where)
    if found is not None:
        try:
            size = json.loads(found.read_text(encoding="utf-8")).get("hidden_size")
        except (OSError, ValueError, AttributeError):  # unreadable or not a JSON object: from_pretrained says why
            return None
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    from transformers import AutoConfig  # its attribute maps (e.g. T5's d_model), or a download

    try:
        size = getattr(AutoConfig.from_pretrained(where), "hidden_size", None)
    except (OSError, ValueError):  # not a model: loading it says why, with the library's own words
        return None
    return size if isinstance(size, int) else None


def _cached_config_file(where: str) -> Path | None:
    """``config.json`` of a local encoder folder, or of a hub name in the local Hugging Face cache."""
    folder = Path(where).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(where, "config.json")
    except ValueError:  # an id the hub would refuse (HFValidationError)
        return None
    return Path(found) if isinstance(found, str) else None


def check_encoder_folder(name: str) -> None:
    """A ``model.text_encoder`` that is a local folder holds ``config.json`` naming its ``model_type``."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return
    config = folder / "config.json"
    allowed = (f"allowed: a folder written by save_pretrained (config.json, weights, tokenizer), {MINILM} (the "
               f"offline MiniLM) or a hub name")
    try:
        tree = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model.text_encoder={show(name)} is a folder without config.json, so it holds no model; "
                          f"{allowed}.") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.text_encoder={show(name)}: {config} cannot be read as JSON "
                          f"({show_text(' '.join(str(e).split()), 200)}); {allowed}.") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("model_type"), str):
        raise ConfigError(f"model.text_encoder={show(name)}: {config} names no model_type; {allowed}.")


def check_backbone_weights(weights: str, backbone: str) -> None:
    """``model.backbone_weights=weights`` is a file ``torch.load`` reads (tensors only) into a state dict of
    torchvision's ``backbone``: every key, each with the backbone's shape (a training checkpoint that wraps it
    under ``state_dict`` is accepted, as the loader does)."""
    import torch
    from torchvision import models

    path = Path(weights).expanduser()
    key = f"model.backbone_weights={show(weights)}"
    if not path.is_file():
        raise ConfigError(f"{key}: no such file; allowed: none, imagenet or the path of a {backbone} state-dict file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch.load raises, the file is not a state dict
        raise ConfigError(f"{key} is not a file of tensors torch.load can read ({type(e).__name__}); allowed: "
                          f"a torch.save'd {backbone} state_dict.") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{key} holds a {type(state).__name__}, not a state dict of tensors; allowed: a "
                          f"torch.save'd {backbone} state_dict.")
    with torch.device("meta"):  # shapes only: no memory, no init
        want = {k: tuple(v.shape) for k, v in getattr(models, backbone)(weights=None).state_dict().items()}
    missing = [k for k in want if k not in state]
    wrong = [k for k in want if k in state and tuple(state[k].shape) != want[k]]
    if missing or wrong:
        what = (f"{len(missing)} of its {len(want)} keys missing (e.g. {show(missing[:3])})" if missing else
                f"{len(wrong)} tensors of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)}, "
                f"{backbone} has {want[wrong[0]]})")
        raise ConfigError(f"{key} is not a {backbone} state dict: {what}; check model.backbone against the file.")


def check_text_encoder(name: str) -> None:
    """``model.text_encoder`` is a local folder, a hub name in the local Hugging Face cache, or the hub answers."""
    from model.encoders import resolve_text_encoder

    check_encoder_source(resolve_text_encoder(name), name)


def check_encoder_source(where: str, name: str | None = None) -> None:
    """What ``resolve_text_encoder(name)`` gave, ``where``: a local folder, a cached hub name, or the hub answers.

    Not a folder here nor in the Hugging Face cache, and the hub unreachable: one line now, rather than
    ``from_pretrained``'s ~25 s of retries and a traceback.
    """
    name = where if name is None else name
    if Path(where).expanduser().is_dir():
        return  # the shipped MiniLM and local folders: no hub library imported
    from huggingface_hub import constants

    if _looks_like_path(where):
        raise ConfigError(f"model.text_encoder={show(name)} is not a folder on this machine (nor a hub name); set it "
                          f"to a local model folder, to {MINILM} (the offline MiniLM shipped as a package) or to a hub "
                          f"name.")
    if _in_hub_cache(where):
        return
    endpoint = constants.ENDPOINT
    why = _hub_offline() or _unreachable(endpoint)
    if why is None:
        return
    raise ConfigError(
        f"model.text_encoder={show(name)} is not on this machine (no such folder, not in the Hugging Face cache) and "
        f"the model hub ({endpoint}) {why}; set model.text_encoder to a local model folder, to {MINILM} (the offline "
        f"MiniLM shipped as a package), or make the hub reachable.")


def check_imagenet_weights(backbone: str) -> None:
    """torchvision's ImageNet weights of ``backbone`` are in torch hub's checkpoint cache, or their host answers."""
    cached, url = imagenet_weights_file(backbone)
    if cached.is_file():
        return
    why = _unreachable(url)
    if why is None:
        return
    raise ConfigError(
        f"model.backbone_weights=imagenet: the ImageNet weights of {backbone} are not in torch's cache ({cached}) "
        f"and {url} {why}; set model.backbone_weights=PATH (a local state-dict file, e.g. a copy of {cached.name}) "
        f"or model.backbone_weights=none (random init), or make the host reachable.")


def imagenet_weights_file(backbone: str) -> tuple[Path, str]:
    """Where torch hub keeps the downloaded ImageNet weights of ``backbone``, and the URL they come from."""
    import torch

    from model.visual import imagenet_weights

    try:
        url = imagenet_weights(backbone).url
    except ValueError as e:  # an unknown backbone: the config check's words
        raise ConfigError(str(e)) from None
    # torch.hub.load_state_dict_from_url: <hub dir>/checkpoints/<basename of the URL path>
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path), url


def _looks_like_path(where: str) -> bool:
    """A file-system path rather than a hub id (``name`` or ``owner/name``)."""
    return (where.startswith(("/", ".", "~")) or "\\" in where or where.count("/") > 1
            or os.path.isabs(where))


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found: Any = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub would refuse (HFValidationError): not cached, from_pretrained will say why
        return False
    return isinstance(found, str)


def _hub_offline() -> str | None:
    """Why the Hugging Face libraries will not go online, or None."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in _TRUE:
            return f"is switched off ({var}={os.environ[var]})"
    if getattr(constants, "HF_HUB_OFFLINE", False):
        return "is switched off (HF_HUB_OFFLINE)"
    return None


def _unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the host of ``url`` (or the proxy for it) accepts a TCP connection within ``timeout``,
    else why not ("cannot be reached (...)"). Name resolution counts towards the timeout. An answer is kept
    for ``PROBE_TTL_S``, so the config's validation and the run's pre-flight probe a host once."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme) if host else None
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            host, port = p.hostname, p.port or 80
    now = time.monotonic()
    known = _PROBED.get((host, port))
    if known is not None and now - known[0] < PROBE_TTL_S:
        return known[1]
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported below, never raised
            outcome.append(e)

    # In a thread so a slow name lookup (not covered by the socket timeout) cannot hold the run either.
    worker = threading.Thread(target=probe, name="preflight-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if outcome and outcome[0] is None:
        why = None
    elif not outcome:
        why = f"cannot be reached (no answer from {host}:{port} within {timeout:g} s)"
    else:
        err = outcome[0]
        why = f"cannot be reached ({host}:{port}: {' '.join(str(err).split()) or type(err).__name__})"
    _PROBED[(host, port)] = (now, why)
    return why
