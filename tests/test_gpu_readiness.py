"""The CUDA paths, checked on a CPU machine with stand-ins: a resume whose load follows the run's device (the
``meta`` device stands in for a GPU), a trial that Ray grants no GPU on a host where torch sees one, a CPU run
that must not start CUDA, determinism switches, and bf16 autocast (CPU autocast stands in for CUDA's)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import model.train as trainer
from model.config import ConfigError, build_config
from model.train import pick_device, set_determinism, train
from study.trainable import TrialSetup, trial_device

SMALL = {"data.synthetic_size": 0.05, "model.backbone": "resnet18", "model.image_size": 33, "data.max_len": 32,
         "train.epochs": 2, "train.progress": False, "train.seed": 3}


class Stop(Exception):
    pass


def _stop_after_first(metrics: dict, ckpt: Path | None) -> None:
    if metrics["epoch"] == 1:
        raise Stop


def test_resume_loads_rng_states_on_the_cpu_whatever_the_run_device(tmp_path: Path, tiny_encoder: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = build_config({**SMALL, "data.name": "synthetic-mre", "model.text_encoder": str(tiny_encoder)})
    full = train(cfg, tmp_path / "full")
    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", callback=_stop_after_first)
    real_load = torch.load

    def device_following_load(f: Any, map_location: Any = None, **kw: Any) -> Any:
        # A load mapped to the run's device (a torch.device) lands off the CPU, as on a GPU host.
        return real_load(f, map_location="meta" if isinstance(map_location, torch.device) else map_location, **kw)

    monkeypatch.setattr(torch, "load", device_following_load)
    resumed = train(cfg, tmp_path / "cut", resume_from=tmp_path / "cut" / "checkpoint")
    assert resumed["history"][1]["train_loss"] == pytest.approx(full["history"][1]["train_loss"], rel=1e-4)


def test_a_trial_granted_no_gpu_trains_on_the_cpu_even_where_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    setup = TrialSetup(trainer={"data.name": "synthetic-mre"}, seeds=(1,), searched=(), threads=1)
    assert setup.config({}, granted_gpus=[]).train.device == "cpu"          # Ray granted no GPU
    assert setup.config({}, granted_gpus=["0"]).train.device == "auto"      # a granted (fraction of a) GPU
    assert trial_device("cuda:1", []) == "cuda:1" and trial_device("cpu", ["0"]) == "cpu"
    pinned = TrialSetup(trainer={"train.device": "cpu"}, seeds=(1,), searched=(), threads=1)
    assert pinned.config({}, granted_gpus=["0"]).train.device == "cpu"


def test_cuda_is_named_with_its_index_so_modules_are_not_moved_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # a host with two GPUs
    assert pick_device("cuda") == torch.device("cuda:0") == pick_device("auto")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"'train.device' is 'cuda:2' but this machine has 2 CUDA device"):
        pick_device("cuda:2")


def test_a_cpu_run_does_not_start_cuda_to_save_its_rng_state(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Any:
        raise AssertionError("CUDA was started by a run that does not use it")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)          # a GPU host
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    state = trainer._rng_state()
    assert "cuda" not in state
    trainer._set_rng_state(state)


def test_deterministic_sets_and_clears_the_three_switches() -> None:
    try:
        set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.allow_tf32
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    finally:
        set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.allow_tf32


def test_a_deterministic_run_trains_and_repeats_itself(tmp_path: Path, tiny_encoder: Path) -> None:
    cfg = build_config({**SMALL, "train.epochs": 1, "data.name": "synthetic-mre", "train.deterministic": True,
                        "model.text_encoder": str(tiny_encoder)})
    try:
        one, two = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    finally:
        set_determinism(False)
    assert one["history"][0]["train_loss"] == two["history"][0]["train_loss"]


@pytest.mark.parametrize("task", ["synthetic-mner", "synthetic-mre"])
def test_bf16_autocast_trains_both_tasks_with_fp32_losses(task: str, tmp_path: Path, tiny_encoder: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The training step under bf16 autocast (CPU's, standing in for CUDA's): losses finite and reduced in
    fp32, and the same seed lands near the fp32 run."""
    cfg = build_config({**SMALL, "data.name": task, "model.text_encoder": str(tiny_encoder)})
    fp32 = train(cfg, tmp_path / "fp32")
    dtypes: set[torch.dtype] = set()
    import model.network as network  # train() imports build_network from here at each call
    build = network.build_network

    def recording_build(*args: Any, **kw: Any) -> Any:
        net = build(*args, **kw)
        net.register_forward_hook(
            lambda m, i, out: dtypes.update({out.loss.dtype, *(p.dtype for p in out.parts.values())})
            if hasattr(out, "loss") else None)
        return net

    monkeypatch.setattr(network, "build_network", recording_build)
    monkeypatch.setattr(trainer, "use_amp", lambda cfg, device: True)
    monkeypatch.setattr(trainer, "_autocast",
                        lambda device, amp: torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp))
    bf16 = train(cfg, tmp_path / "bf16")
    assert dtypes == {torch.float32}, dtypes
    for row in bf16["history"]:
        assert all(math.isfinite(row[k]) for k in ("train_loss", "loss_ce", "loss_kl", "loss_mix", "dev_f1"))
    assert bf16["history"][0]["train_loss"] == pytest.approx(fp32["history"][0]["train_loss"], rel=0.05)
