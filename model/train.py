"""The training recipe: one I2SRM run, from a Config to metrics.json and a best checkpoint.

    python -m model.train [--config FILE] [--set key=value ...] [--out DIR] [--resume CHECKPOINT_DIR]

A study calls ``train()`` many times through its per-epoch ``callback`` (report, checkpoint, early stop);
nothing here knows about Ray. torch is imported inside the functions that use it, so that a run with
``train.simulate_seconds`` set (``model/simulate.py``, benchmarks of the platform) never loads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np

from model.config import RUN_ONLY_KEYS, Config, ConfigError, load_config, resume_config
from model.fileio import atomic_torch_save, atomic_write_text
from model.inputs import InputError, one_line, user_path

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from model.network import I2SRMNetwork

log = logging.getLogger("i2srm")

Callback = Callable[[dict[str, float], "Path | None"], None]
STATE_FILE = "state.pt"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


@dataclass
class RunState:
    """Everything that changes from epoch to epoch; checkpointed with the weights."""

    epoch: int = 0
    best_dev_f1: float = -1.0
    best_epoch: int = 0
    test_at_best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_device(name: str) -> torch.device:
    """The run's device, with an index on CUDA (``cuda`` is the current device, e.g. ``cuda:0``), so that a
    module's ``param.device`` compares equal to it and nothing is moved again every step."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"'train.device' is {name!r} but no CUDA device is visible; use auto or cpu.")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"'train.device' is {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}, cuda or auto.")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def use_amp(cfg: Config, device: torch.device) -> bool:
    """bf16 autocast: asked for, on CUDA, and supported by the card (pre-Ampere cards train fp32)."""
    import torch

    if not (cfg.train.amp and device.type == "cuda"):
        return False
    if not torch.cuda.is_bf16_supported():
        log.warning("train.amp: %s has no bf16 support; training in fp32", torch.cuda.get_device_name(device))
        return False
    return True


def set_determinism(on: bool) -> None:
    """``train.deterministic``: deterministic kernels (an error for an op that has none), cuDNN without
    autotuning and TF32 off, and cuBLAS's fixed workspace, so that a resumed CUDA run repeats its
    uninterrupted self. Off: torch's defaults (faster; CUDA results may differ in the last digits)."""
    import torch

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = not on  # torch's default (True) runs "fp32" convolutions in TF32


def gpu_memory(device: torch.device) -> dict[str, float]:
    """Peak GPU memory of the run so far (MiB reserved by torch's allocator: what another trial on the same
    card cannot have); empty off CUDA."""
    import torch

    if device.type != "cuda":
        return {}
    return {"gpu_peak_mib": torch.cuda.max_memory_reserved(device) / 2**20}


def release_gpu_memory(device: torch.device) -> None:
    """Hand the allocator's cached blocks back to the card (trials that share a GPU see the memory free)."""
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoConfig, AutoTokenizer

    from model.encoders import resolve_text_encoder

    path = resolve_text_encoder(name_or_path)
    model_type = getattr(AutoConfig.from_pretrained(path), "model_type", "")
    # Byte-level BPE tokenizers need a prefix space to take pre-split words (MNER tokens).
    extra = {"add_prefix_space": True} if model_type in ("roberta", "xlm-roberta", "longformer", "bart", "gpt2") else {}
    return AutoTokenizer.from_pretrained(path, use_fast=True, **extra)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    import torch

    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # legacy=True: (name, keys, pos, has_gauss, cached_gaussian)
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]]}
    if torch.cuda.is_initialized():  # a CPU run never starts CUDA (it would hold memory on GPU 0)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(checkpoint_dir: Path) -> dict[str, Any]:
    """A resume state, every tensor on the CPU: the RNG states and the loader's generator state must be CPU
    tensors, and ``load_state_dict`` copies weights and optimizer state onto the parameters' own device."""
    import torch

    return torch.load(checkpoint_dir / STATE_FILE, map_location="cpu", weights_only=True)


class Evaluator:
    """Plain-path predictions on one split, scored with the task's metric (percentages)."""

    def __init__(self, task: str, label_names: list[str], none_index: int | None) -> None:
        self.task, self.label_names, self.none_index = task, label_names, none_index

    def __call__(self, net: I2SRMNetwork, loader: DataLoader, visual_fn: Callable, device: torch.device,
                 amp: bool) -> dict[str, float]:
        import torch

        with torch.no_grad():
            return self._score(net, loader, visual_fn, device, amp)

    def _score(self, net: I2SRMNetwork, loader: DataLoader, visual_fn: Callable, device: torch.device,
               amp: bool) -> dict[str, float]:
        from model.metrics import mner_scores, mre_scores

        net.eval()
        gold: list[Any] = []
        pred: list[Any] = []
        for batch in loader:
            batch = _to_device(batch, device)
            with _autocast(device, amp):
                out = net.predict(batch, visual_fn(batch))
            if self.task == "mner":
                lengths = batch["word_mask"].sum(1).tolist()
                labels = batch["labels"].tolist()
                for n, g, p in zip(lengths, labels, cast("list[list[int]]", out)):  # MNER: a tag path per sentence
                    gold.append([self.label_names[i] for i in g[:n]])
                    pred.append([self.label_names[i] for i in p[:n]])
            else:
                gold.extend(batch["label"].tolist())
                pred.extend(int(p) for p in cast("list[int]", out))  # MRE: a relation per sample
        if self.task == "mner":
            return mner_scores(gold, pred)
        assert self.none_index is not None
        return mre_scores(gold, pred, self.none_index)


def _autocast(device: torch.device, amp: bool) -> Any:
    import torch

    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def make_loaders(cfg: Config, data: Any) -> tuple[DataLoader, DataLoader, DataLoader]:
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(cfg.train.seed)
    nw = cfg.data.num_workers
    pin = cfg.train.device != "cpu" and torch.cuda.is_available()  # lets non_blocking copies overlap the step
    train = DataLoader(data.train, batch_size=cfg.train.batch_size, shuffle=True, generator=g, drop_last=False,
                       collate_fn=data.train.collate, num_workers=nw, pin_memory=pin)
    dev = DataLoader(data.dev, batch_size=cfg.train.eval_batch_size, shuffle=False, collate_fn=data.dev.collate,
                     num_workers=nw, pin_memory=pin)
    test = DataLoader(data.test, batch_size=cfg.train.eval_batch_size, shuffle=False, collate_fn=data.test.collate,
                      num_workers=nw, pin_memory=pin)
    return train, dev, test


def make_optimizer(net: Any, cfg: Config, backbone: torch.nn.Module | None,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the network's parameter groups, fused into one kernel per step on CPU and CUDA: the
    default per-tensor loop costs ~0.2 s per step on 2 CPU cores for MiniLM (8x the fused step)."""
    import torch

    return torch.optim.AdamW(net.param_groups(cfg, backbone=backbone), fused=device.type in ("cpu", "cuda"))


def make_visual(cfg: Config, data: Any, device: torch.device) -> tuple[Callable[[dict], Any], int,
                                                                       torch.nn.Module | None]:
    """The function giving a batch its VisualFeatures (None when text only), the cells' width, and the
    backbone module when it is fine-tuned (so its parameters join the optimizer)."""
    if not cfg.model.use_image:
        return (lambda batch: None), 0, None
    from model.features import build_visual_provider

    provider, cells_dim, backbone = build_visual_provider(cfg, data, device)
    return (lambda batch: provider(batch["image_keys"], device)), cells_dim, backbone


def train(cfg: Config, out_dir: str | Path, callback: Callback | None = None,
          resume_from: str | Path | None = None) -> dict[str, Any]:
    """Train one run; see the module docstring. Returns what it writes to ``out_dir/metrics.json``.

    With ``train.simulate_seconds`` set, the stand-in of ``model/simulate.py`` runs instead (no model, no data)."""
    from model.preflight import check_resources

    check_resources(cfg)  # an unreachable hub or weights download: one line, in seconds, before anything is loaded
    if cfg.train.simulate_seconds is not None:
        from model.simulate import simulate

        return simulate(cfg, out_dir, callback, resume_from)
    import torch
    from transformers import get_linear_schedule_with_warmup

    from model.data import load_task_data
    from model.network import build_network
    from model.provenance import code_revision, package_versions

    out = Path(out_dir)  # created once the data and the model are ready: a refused run leaves nothing
    started = time.time()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    set_determinism(cfg.train.deterministic)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    amp = use_amp(cfg, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # a reused trial actor must not report the last run's peak

    tokenizer = load_tokenizer(cfg.model.text_encoder)
    data = load_task_data(cfg, tokenizer)  # every data error is raised here, before any training
    visual_fn, cells_dim, backbone = make_visual(cfg, data, device)
    release_gpu_memory(device)  # the feature store's build leaves cached blocks no trial step needs
    net = build_network(cfg, len(data.label_names), tokenizer, cells_dim).to(device)
    train_loader, dev_loader, test_loader = make_loaders(cfg, data)

    optimizer = make_optimizer(net, cfg, backbone, device)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    total_steps = cfg.train.epochs * len(train_loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.train.warmup * total_steps), total_steps)
    evaluate = Evaluator(data.task, data.label_names, getattr(data, "none_index", None))

    state = RunState()
    if resume_from is not None:
        ckpt = load_checkpoint(Path(resume_from))
        net.load_state_dict(ckpt["model"])
        if backbone is not None and "backbone" in ckpt:
            backbone.load_state_dict(ckpt["backbone"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = RunState(**ckpt["run_state"])
        _set_rng_state(ckpt["rng"])
        train_loader.generator.set_state(ckpt["loader_rng"])
        log.info("resumed from %s after epoch %d", resume_from, state.epoch)

    out.mkdir(parents=True, exist_ok=True)
    revision, versions = code_revision(), package_versions()  # once per run: git runs in a subprocess
    ckpt_dir = out / "checkpoint"
    best_dir = out / "best"
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        t0 = time.time()
        net.train()
        if backbone is not None:
            backbone.train()
        sums = torch.zeros(4, device=device)  # loss, ce, mix, kl: summed on device, read once per epoch
        steps = 0
        bar = _progress(cfg, len(train_loader), f"epoch {epoch}/{cfg.train.epochs}")
        for batch in train_loader:
            batch = _to_device(batch, device)
            with _autocast(device, amp):
                result = net(batch, visual_fn(batch))
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            if cfg.train.max_grad_norm > 0:  # 0: no clipping (the reference)
                torch.nn.utils.clip_grad_norm_(trained, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            parts = result.parts
            sums += torch.stack([result.loss.detach().float()] +
                                [parts.get(k, torch.zeros((), device=device)).detach().float().reshape(())
                                 for k in ("ce", "mix", "kl")])
            steps += 1
            if bar is not None:
                bar.update(1)
                if steps % 10 == 0 or steps == len(train_loader):
                    bar.set_postfix(loss=f"{sums[0].item() / steps:.4f}")
        if bar is not None:
            bar.close()
        means = (sums / max(steps, 1)).tolist()
        if not all(math.isfinite(x) for x in means):
            raise NonFiniteLoss(f"training loss is not finite in epoch {epoch} (loss={means[0]}, "
                                f"ce={means[1]}, mix={means[2]}, kl={means[3]}); lower train.lr or check the data")

        if backbone is not None:  # a fine-tuned or batch-statistics backbone evaluates on its running statistics
            backbone.eval()
        dev = evaluate(net, dev_loader, visual_fn, device, amp)
        test = evaluate(net, test_loader, visual_fn, device, amp)
        if dev["f1"] > state.best_dev_f1:
            state.best_dev_f1, state.best_epoch, state.test_at_best = dev["f1"], epoch, test
            if cfg.train.save_best:
                best_dir.mkdir(exist_ok=True)
                atomic_torch_save(net.state_dict(), best_dir / "model.pt")
        metrics: dict[str, float] = {"epoch": float(epoch)}
        metrics.update({f"dev_{k}": float(v) for k, v in dev.items()})
        metrics.update({f"test_{k}": float(v) for k, v in test.items()})
        metrics.update({"train_loss": means[0], "loss_ce": means[1], "loss_mix": means[2], "loss_kl": means[3],
                        "best_dev_f1": state.best_dev_f1, "best_epoch": float(state.best_epoch),
                        "test_f1_at_best": float(state.test_at_best["f1"]), "epoch_seconds": time.time() - t0})
        metrics.update(gpu_memory(device))
        state.history.append(metrics)
        state.epoch = epoch
        log.info("epoch %d/%d  loss %.4f  dev F1 %.2f  test F1 %.2f  (best dev %.2f @ %d)  %.1fs", epoch,
                 cfg.train.epochs, means[0], dev["f1"], test["f1"], state.best_dev_f1, state.best_epoch,
                 metrics["epoch_seconds"])

        saved: Path | None = None
        if cfg.train.save_checkpoint:
            ckpt_dir.mkdir(exist_ok=True)
            payload = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "run_state": state.__dict__, "rng": _rng_state(),
                       "loader_rng": train_loader.generator.get_state(), "config": cfg.flat()}
            if backbone is not None:
                payload["backbone"] = backbone.state_dict()
            atomic_torch_save(payload, ckpt_dir / STATE_FILE)
            saved = ckpt_dir
        result_doc = _metrics_doc(cfg, state, data, started, revision, versions)
        atomic_write_text(out / "metrics.json", json.dumps(result_doc, indent=2))
        if callback is not None:
            callback(metrics, saved)
    if state.epoch >= cfg.train.epochs and not (out / "metrics.json").is_file():
        # Resumed from the last epoch's checkpoint (a driver killed after the final report): nothing left
        # to train; the metrics come from the checkpoint's run state.
        atomic_write_text(out / "metrics.json",
                          json.dumps(_metrics_doc(cfg, state, data, started, revision, versions), indent=2))
    release_gpu_memory(device)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _metrics_doc(cfg: Config, state: RunState, data: Any, started: float, revision: str,
                 versions: dict[str, str]) -> dict[str, Any]:
    return {"task": cfg.task, "dataset": cfg.data.name, "seed": cfg.train.seed, "epochs_run": state.epoch,
            "best_epoch": state.best_epoch, "best_dev_f1": state.best_dev_f1, "test_at_best": state.test_at_best,
            "test_f1_at_best": state.test_at_best.get("f1"), "history": state.history,
            "missing_images": getattr(data, "missing_images", {}), "seconds": round(time.time() - started, 2),
            "config": cfg.flat(), "code_revision": revision, "packages": versions}


def _progress(cfg: Config, total: int, desc: str) -> Any:
    if not cfg.train.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file of trainer settings (sections data, model, i2srm, train)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted key, e.g. --set i2srm.delta=0.5 (repeatable)")
    parser.add_argument("--out", help="output folder (default results/runs/<data.name>-seed<seed>-<time>)")
    parser.add_argument("--resume", metavar="CHECKPOINT_DIR",
                        help="continue a run from its checkpoint folder (OUT/checkpoint) with its stored config; "
                             "--config/--set may then change only " + ", ".join(RUN_ONLY_KEYS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from model.data.types import DataError

    try:
        if args.resume:
            state_file = Path(args.resume) / STATE_FILE
            if not state_file.is_file():
                raise ConfigError(f"--resume {args.resume}: no {STATE_FILE} there (expected OUT/checkpoint).")
            cfg = resume_config(load_checkpoint(Path(args.resume))["config"], args.config, args.set,
                                f"--resume {args.resume}: ")
        else:
            cfg = load_config(args.config, args.set)
        out = user_path(args.out, "--out") if args.out else (
            Path(args.resume).parent if args.resume else
            Path("results/runs") / f"{cfg.data.name}-seed{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        result = train(cfg, out, resume_from=args.resume)
    except (ConfigError, DataError, InputError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"best dev F1 {result['best_dev_f1']:.2f} at epoch {result['best_epoch']}, "
          f"test F1 {result['test_f1_at_best']:.2f}; {result['seconds']:.0f}s; metrics in {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
