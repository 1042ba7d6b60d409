"""The training recipe end to end on small synthetic data: learning, metrics.json, checkpoints, resume, CLI.

Only the learning test runs the shipped MiniLM; resume and the CLI run the tiny random encoder (conftest's
``tiny_encoder``): their point is the bookkeeping, not what the encoder knows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.config import build_config
from model.train import STATE_FILE, main, train
from ray_cluster import run_main

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"data.name": "synthetic-mner", "data.synthetic_size": 0.25, "model.backbone": "resnet18",
         "model.image_size": 33, "data.max_len": 32, "train.epochs": 2, "train.progress": False,
         "train.seed": 3}


class Stop(Exception):
    pass


def test_two_epochs_dev_f1_rises_and_everything_is_recorded(tmp_path: Path) -> None:
    cfg = build_config(SMALL)
    seen: list[tuple[dict, Path | None]] = []
    result = train(cfg, tmp_path / "run", callback=lambda m, ckpt: seen.append((dict(m), ckpt)))
    history = result["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0] and len(seen) == 2
    assert history[1]["dev_f1"] > history[0]["dev_f1"], history
    assert result["best_dev_f1"] == max(h["dev_f1"] for h in history)
    best = history[result["best_epoch"] - 1]
    assert result["test_f1_at_best"] == best["test_f1"]            # test read at the best dev epoch
    for key in ("dev_precision", "dev_recall", "test_f1", "loss_ce", "loss_mix", "loss_kl", "epoch_seconds"):
        assert key in history[0]
    assert history[0]["loss_mix"] > 0 and history[0]["loss_kl"] > 0  # the full model trains both I2SRM terms
    # what a rerun needs: the config, seed, code revision and package versions
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["config"]["i2srm.delta"] == 0.7 and stored["seed"] == 3
    assert stored["code_revision"] and "torch" in stored["packages"]
    assert (tmp_path / "run" / "best" / "model.pt").is_file()
    assert seen[-1][1] is not None and (seen[-1][1] / STATE_FILE).is_file()


def test_resume_continues_where_the_run_stopped(tmp_path: Path, tiny_encoder: Path) -> None:
    # MRE: with the tiny encoder its dev F1 is above 0 from the first epoch (MNER's stays 0), so it compares
    cfg = build_config({**SMALL, "data.name": "synthetic-mre", "model.text_encoder": str(tiny_encoder)})
    full = train(cfg, tmp_path / "full")
    assert full["history"][1]["dev_f1"] > 0

    def stop_after_first(metrics: dict, ckpt: Path | None) -> None:
        if metrics["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", callback=stop_after_first)
    resumed = train(cfg, tmp_path / "cut", resume_from=tmp_path / "cut" / "checkpoint")
    assert [h["epoch"] for h in resumed["history"]] == [1.0, 2.0]
    # the same seed and restored RNG states give the same second epoch as the uninterrupted run
    assert resumed["history"][1]["dev_f1"] == pytest.approx(full["history"][1]["dev_f1"], abs=1e-6)
    assert resumed["history"][1]["train_loss"] == pytest.approx(full["history"][1]["train_loss"], rel=1e-4)
    state = torch.load(tmp_path / "cut" / "checkpoint" / STATE_FILE, weights_only=True)
    assert state["run_state"]["epoch"] == 2
    # resumed from the last epoch's checkpoint into a fresh folder (a study trial after a driver kill):
    # nothing is trained again, the metrics come from the checkpoint
    calls: list[dict] = []
    again = train(cfg, tmp_path / "fresh", callback=lambda m, ckpt: calls.append(m),
                  resume_from=tmp_path / "cut" / "checkpoint")
    assert calls == [] and again["history"] == resumed["history"]
    assert json.loads((tmp_path / "fresh" / "metrics.json").read_text())["best_dev_f1"] == resumed["best_dev_f1"]
    # The CLI resumes with the checkpoint's config: --set may change how the run shows or saves, nothing else.
    ckpt = str(tmp_path / "cut" / "checkpoint")
    before = sorted(p.name for p in (tmp_path / "cut").rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "model.train", "--resume", ckpt, "--set", "train.epochs=9",
                           "--set", "train.lr=0.1", "--set", "train.progress=false"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "keeps its checkpoint's train.epochs, train.lr:" in lines[0] and "train.progress" in lines[0]
    assert sorted(p.name for p in (tmp_path / "cut").rglob("*")) == before
    from model.config import resume_config

    assert resume_config(cfg.flat(), sets=["train.progress=false", "train.epochs=2"]).train.progress is False


def test_cli_trains_and_refuses_bad_values(tmp_path: Path, tiny_encoder: Path) -> None:
    sets = [a for k, v in {**SMALL, "train.epochs": 1, "data.name": "synthetic-mre",
                           "model.text_encoder": tiny_encoder}.items()
            for a in ("--set", f"{k}={v}")]
    # ``python -m model.train`` in this process (its ``main``); a fresh process retraining a run from its
    # config.yaml is tests/test_one_score.py's.
    ok = run_main(main, ["--out", str(tmp_path / "mre"), *sets], ROOT, name="model.train")
    assert ok.returncode == 0, ok.stderr[-2000:]
    metrics = json.loads((tmp_path / "mre" / "metrics.json").read_text())
    assert metrics["task"] == "mre" and "test_accuracy" in metrics["history"][0]
    bad = run_main(main, ["--out", str(tmp_path / "bad"), "--set", "i2srm.attn_heads=5"], ROOT, name="model.train")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'i2srm.attn_heads' is 5; allowed: a divisor" in bad.stderr
    assert not (tmp_path / "bad").exists()
