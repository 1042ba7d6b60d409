"""Performance benchmark of the trainer and the study platform, in one run on one config and data.

    python benchmarks/perf.py [--quick] [--device auto|cpu|cuda] [--out results/benchmarks/perf.json]
                              [--steps N] [--warmup N] [--reference-steps N] [--work-dir DIR]
                              [--parts throughput,equality,study] [--text-encoder NAME_OR_FOLDER]

Everything runs on the synthetic MNER benchmark (generated under the work dir) with the offline
MiniLM text encoder (``--text-encoder`` names another, e.g. a tiny one for a smoke test); it prints a
table and writes the numbers to ``--out`` as JSON. Four parts:

1. Training throughput (samples/s), visual feature store vs recomputing the features every step,
   for each backbone (resnet18, resnet50) at the synthetic recipe's image size (64 px) and at the
   reference's 224 px. Both modes train on the same batches (the loader's seeded order), and the
   clock covers ``--steps`` optimizer steps after ``--warmup`` untimed ones: visual features,
   forward, backward, gradient clipping, AdamW step. On CUDA the steps run under bf16 autocast
   (``train.amp``) and the clock waits for the device.
   * ``store`` (``model.feature_cache=on``): a batch's features are one ``index_select`` from the
     precomputed store; the one-off time to build the store (cold) is reported apart
     (``store_build_s``), as it is paid once per node, not per step.
   * ``off`` (``model.feature_cache=off``): every step decodes, resizes and normalises the batch's
     images (whole image + the crops that exist, in the training process) and runs the frozen ResNet
     forward without gradients: the trainer's own path when the store is off.
   * ``reference``: what the reference code does every step (``ReferenceVisual`` below): the whole
     image and ``data.max_objects`` crop slots, missing crops as zero images, through the ResNet in
     training mode with gradients flowing back into it (its parameters keep ``requires_grad``; they are
     left out of the optimizer, so never updated). This is the issue's baseline; ``ratio`` is store vs
     reference, ``ratio_off`` store vs off. The reference mode runs ``reference_steps`` timed steps
     (a ResNet-50 step at 224 px takes tens of seconds on 2 cores).
2. Equality: one short trial (``train()``, same seed, same epochs) with and without the store; the
   dev and test F1 of every epoch must be equal (frozen backbone in eval mode); the exit status is 1
   if they are not. These two trials run without autocast, also on CUDA (under bf16 the online path
   would compute the backbone in bf16 and the store in fp32). Each trial runs in a child process
   that also reports its own peak RSS (``VmHWM`` of /proc/self/status; ``ru_maxrss`` would report
   the benchmark process's own peak, which Linux carries over fork and exec) and, on CUDA, the peak
   GPU memory allocated: part 4.
3. Platform overhead: ``python study/run.py --space mixup.yaml`` with 4 trials (2 deltas x 2 seeds,
   2 slots) of the shipped recipe (75% synthetic MNER, 3 epochs: about a minute each here).
   Overhead % = (wall time - sum of the trials' ``wall_seconds`` / parallel slots) / wall time,
   slots = min(max_concurrent, trials). Startup: seconds from the command to the first
   ``trials/<id>/trial.json`` (written when Ray starts the trial), and to the first recorded epoch.
4. Peak memory (RSS) of one trial, store and off.

``--parts`` runs some of them (``equality`` includes the memory figures); the JSON then holds only those.
``--quick`` shrinks everything (resnet18 at 64 px only, tiny data, 2 steps, a 2-trial study of one
epoch on 5% data) for a smoke test. Timings depend on the machine's load: measure on a quiet one.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "results" / "benchmarks" / "perf.json"
PARTS = ("throughput", "equality", "study")


@dataclass(frozen=True)
class Plan:
    """The sizes of one benchmark run (full or ``--quick``)."""
    backbones: tuple[str, ...]
    image_sizes: tuple[int, ...]
    synthetic_size: float       # 1.0 = 400/100/100 samples
    batch_size: int
    steps: int
    warmup: int
    reference_steps: int
    trial_epochs: int
    study_epochs: int
    study_synthetic_size: float  # the study's trials: about a minute each in the full plan, as the issue asks
    study_deltas: tuple[float, ...]
    study_seeds: tuple[int, ...]
    study_slots: int
    text_encoder: str | None = None  # None: the recipe's (the shipped MiniLM); --text-encoder sets another


FULL = Plan(backbones=("resnet18", "resnet50"), image_sizes=(64, 224), synthetic_size=0.25, batch_size=16,
            steps=20, warmup=3, reference_steps=4, trial_epochs=2, study_epochs=3, study_synthetic_size=0.75,
            study_deltas=(0.0, 0.7), study_seeds=(1, 2), study_slots=2)
QUICK = Plan(backbones=("resnet18",), image_sizes=(64,), synthetic_size=0.05, batch_size=4, steps=2, warmup=1,
             reference_steps=1, trial_epochs=1, study_epochs=1, study_synthetic_size=0.05, study_deltas=(0.0, 0.7),
             study_seeds=(1,), study_slots=2)


def base_overrides(plan: Plan, device: str) -> dict[str, Any]:
    encoder = {"model.text_encoder": plan.text_encoder} if plan.text_encoder else {}
    return {"data.name": "synthetic-mner", "data.synthetic_size": plan.synthetic_size,
            "train.batch_size": plan.batch_size, "train.device": device, "train.amp": True,
            "train.progress": False, "train.save_checkpoint": False, "train.save_best": False, **encoder}


# ------------------------------------------------------------------------------------ 1. throughput

def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ReferenceVisual:
    """The reference's visual step: every slot (missing crops as zero images) through the ResNet, in
    training mode, with autograd recording it so that the loss back-propagates into the backbone."""

    def __init__(self, online: Any, max_objects: int) -> None:
        self.online, self.slots = online, 1 + max_objects
        features = online.backbone
        features.frozen = False                 # the reference calls model.train() on it every epoch
        features.net.requires_grad_(True)       # and never switches its gradients off (not in the optimizer)
        features.train()

    def __call__(self, image_keys: list[list[str]], device: Any) -> Any:
        import torch

        from model.visual import VisualFeatures

        loader, backbone = self.online.loader, self.online.backbone
        size = loader.load(image_keys[0][0]).shape
        images, mask = [], torch.zeros(len(image_keys), self.slots, dtype=torch.bool)
        for b, keys in enumerate(image_keys):
            present = keys[: self.slots]
            images.extend(loader.load(k) for k in present)
            images.extend(torch.zeros(size) for _ in range(self.slots - len(present)))
            mask[b, : len(present)] = True
        backbone.to(device)
        cells, logits = backbone(torch.stack(images).to(device))               # [B * (1 + K), P, C], [.., 1000]
        b = len(image_keys)
        return VisualFeatures(cells=cells.view(b, self.slots, *cells.shape[1:]),
                              logits=logits.view(b, self.slots, -1)[:, 0], mask=mask.to(device))


def throughput(overrides: dict[str, Any], steps: int, warmup: int, reference: bool = False) -> dict[str, Any]:
    """Samples/s of ``steps`` training steps after ``warmup``, and the visual setup time.

    ``reference``: features as the reference computes them (``ReferenceVisual``; needs the store off)."""
    import torch

    from model.config import build_config
    from model.data import load_task_data
    from model.features import build_visual_provider
    from model.network import build_network
    from model.train import (_autocast, load_tokenizer, make_loaders, make_optimizer, pick_device,
                             release_gpu_memory, seed_everything, use_amp)

    cfg = build_config(overrides)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    amp = use_amp(cfg, device)
    tokenizer = load_tokenizer(cfg.model.text_encoder)
    data = load_task_data(cfg, tokenizer)
    t0 = time.perf_counter()
    provider, cells_dim, backbone = build_visual_provider(cfg, data, device)
    if reference:
        provider = ReferenceVisual(provider, cfg.data.max_objects)

    def visual_fn(batch: dict[str, Any]) -> Any:
        return provider(batch["image_keys"], device)
    _sync(device)
    setup_s = time.perf_counter() - t0
    build_peak_gpu_mib = _peak_gpu_mib(device)
    release_gpu_memory(device)  # as train() does: the steps' peak below excludes building the store
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net = build_network(cfg, len(data.label_names), tokenizer, cells_dim).to(device)
    train_loader = make_loaders(cfg, data)[0]
    # The same batches in both modes: the loader's order comes from train.seed; epochs repeat as needed.
    batches = list(itertools.islice(itertools.chain.from_iterable(itertools.repeat(train_loader)),
                                    warmup + steps))
    optimizer = make_optimizer(net, cfg, backbone, device)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    net.train()
    samples, start = 0, 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with _autocast(device, amp):
            out = net(batch, visual_fn(batch))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.train.max_grad_norm > 0:  # as train(): 0 means no clipping (clip_grad_norm_ to 0 zeroes gradients)
            torch.nn.utils.clip_grad_norm_(trained, cfg.train.max_grad_norm)
        optimizer.step()
        if i >= warmup:
            samples += len(batch["image_keys"])
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"samples_per_s": samples / elapsed, "seconds": elapsed, "samples": samples, "setup_s": setup_s,
            "device": str(device), "amp": amp, "peak_gpu_mib": _peak_gpu_mib(device),
            "build_peak_gpu_mib": build_peak_gpu_mib}


def _peak_gpu_mib(device: Any) -> float | None:
    """torch's peak allocated GPU memory since the last reset (MiB); None off CUDA."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def run_throughput(plan: Plan, device: str, work: Path, steps: int, warmup: int,
                   reference_steps: int) -> list[dict[str, Any]]:
    rows = []
    for backbone in plan.backbones:
        for size in plan.image_sizes:
            common = {**base_overrides(plan, device), "model.backbone": backbone, "model.image_size": size,
                      "model.feature_cache_dir": str(work / "features")}
            store = throughput({**common, "model.feature_cache": "on"}, steps, warmup)
            off = throughput({**common, "model.feature_cache": "off"}, steps, warmup)
            ref = throughput({**common, "model.feature_cache": "off"}, reference_steps, min(warmup, 1),
                             reference=True)
            rows.append({"backbone": backbone, "image_size": size, "steps": steps, "warmup": warmup,
                         "reference_steps": reference_steps,
                         "batch_size": plan.batch_size, "device": store["device"], "amp": store["amp"],
                         "store_samples_per_s": store["samples_per_s"], "off_samples_per_s": off["samples_per_s"],
                         "reference_samples_per_s": ref["samples_per_s"],
                         "ratio": store["samples_per_s"] / ref["samples_per_s"],
                         "ratio_off": store["samples_per_s"] / off["samples_per_s"],
                         "store_build_s": store["setup_s"]})
            print(f"  {backbone} {size}px: store {store['samples_per_s']:.1f}/s, off {off['samples_per_s']:.1f}/s, "
                  f"reference {ref['samples_per_s']:.1f}/s", flush=True)
    return rows


# ------------------------------------------------------------------------- 2 + 4. equality and memory

def peak_rss_mib() -> float:
    """This process's peak resident memory since it started its program (exec), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def child_trial(spec: str) -> int:
    """In a child process: one ``train()`` run; print its per-epoch F1 and this process's peak memory."""
    import torch

    from model.config import build_config
    from model.train import train

    args = json.loads(spec)
    cfg = build_config(args["overrides"])
    t0 = time.perf_counter()
    doc = train(cfg, args["out_dir"])
    out = {"history": [{k: h[k] for k in ("epoch", "dev_f1", "test_f1", "epoch_seconds")} for h in doc["history"]],
           "seconds": time.perf_counter() - t0,
           "peak_rss_mib": peak_rss_mib(),
           "peak_gpu_mib": (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None)}
    print("PERF-TRIAL " + json.dumps(out), flush=True)
    return 0


def run_trial(overrides: dict[str, Any], out_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    spec = json.dumps({"overrides": overrides, "out_dir": str(out_dir)})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-trial", spec],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PERF-TRIAL ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"trial with {overrides} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("PERF-TRIAL "):])


def run_equality(plan: Plan, device: str, work: Path, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    # fp32 on CUDA too: under bf16 autocast the online path computes the backbone in bf16 while the store
    # holds fp32 features, so the two would differ by the backbone's bf16 rounding, not by the store.
    common = {**base_overrides(plan, device), "model.backbone": plan.backbones[0], "train.amp": False,
              "model.feature_cache_dir": str(work / "features"), "train.epochs": plan.trial_epochs}
    store = run_trial({**common, "model.feature_cache": "on"}, work / "trial-store", env)
    off = run_trial({**common, "model.feature_cache": "off"}, work / "trial-off", env)
    pairs = list(zip(store["history"], off["history"]))
    equal = len(store["history"]) == len(off["history"]) and all(
        a["dev_f1"] == b["dev_f1"] and a["test_f1"] == b["test_f1"] for a, b in pairs)
    diff = max((abs(a[k] - b[k]) for a, b in pairs for k in ("dev_f1", "test_f1")), default=0.0)
    equality = {"epochs": plan.trial_epochs, "backbone": plan.backbones[0], "amp": False, "equal": equal,
                "max_abs_f1_diff": diff,
                "store": [{k: a[k] for k in ("epoch", "dev_f1", "test_f1")} for a in store["history"]],
                "off": [{k: b[k] for k in ("epoch", "dev_f1", "test_f1")} for b in off["history"]],
                "store_trial_s": store["seconds"], "off_trial_s": off["seconds"]}
    memory = {"peak_rss_mib": store["peak_rss_mib"], "peak_rss_mib_off": off["peak_rss_mib"],
              "peak_gpu_mib": store["peak_gpu_mib"], "peak_gpu_mib_off": off["peak_gpu_mib"]}
    return equality, memory


# ------------------------------------------------------------------------------- 3. study overhead

def _watch(study_dir: Path, t0: float, marks: dict[str, float], stop: threading.Event) -> None:
    """Note when the first trial record and the first epoch record appear (polled every 0.1 s)."""
    trials = study_dir / "trials"

    def nonempty(path: Path) -> bool:
        try:
            return path.stat().st_size > 0
        except OSError:  # replaced or removed between the listing and the stat
            return False

    while not stop.is_set():
        if "first_trial_s" not in marks and any(trials.glob("*/trial.json")):
            marks["first_trial_s"] = time.perf_counter() - t0
        if "first_epoch_s" not in marks and any(nonempty(p) for p in trials.glob("*/epochs.jsonl")):
            marks["first_epoch_s"] = time.perf_counter() - t0
        if len(marks) == 2:
            return
        stop.wait(0.1)


def run_study(plan: Plan, device: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    results = work / "studies"
    name = "perf-study"
    grid = "[" + ", ".join(str(d) for d in plan.study_deltas) + "]"
    sets = [f"train.epochs={plan.study_epochs}", f"data.synthetic_size={plan.study_synthetic_size}",
            f"train.batch_size={plan.batch_size}", f"train.device={device}", "train.progress=false",
            f"search.i2srm.delta={{grid: {grid}}}", "seeds=[" + ", ".join(map(str, plan.study_seeds)) + "]",
            f"max_concurrent={plan.study_slots}"]
    if device == "cuda":
        sets.append(f"resources.gpus={1 / plan.study_slots:g}")
    if plan.text_encoder:
        sets.append(f"model.text_encoder={plan.text_encoder}")
    cmd = [sys.executable, str(ROOT / "study" / "run.py"), "--space", "mixup.yaml", "--name", name,
           "--results-dir", str(results)] + [a for s in sets for a in ("--set", s)]
    study_dir = results / name
    marks: dict[str, float] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    watcher = threading.Thread(target=_watch, args=(study_dir, t0, marks, stop), daemon=True)
    watcher.start()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"study failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    from study.records import read_runs

    records = read_runs(study_dir, with_epochs=False)
    trial_s = sum(r.wall_seconds for r in records)
    epoch_s = 0.0
    for r in records:
        path = study_dir / "trials" / r.trial_id / "epochs.jsonl"
        if path.is_file():
            epoch_s += sum(json.loads(ln).get("epoch_seconds", 0.0) for ln in path.read_text().splitlines() if ln)
    slots = max(1, min(plan.study_slots, len(records)))
    ideal = trial_s / slots
    return {"command": " ".join(cmd[1:]), "trials": len(records), "slots": slots, "wall_seconds": wall,
            "sum_trial_seconds": trial_s, "sum_epoch_seconds": epoch_s,
            "overhead_pct": 100.0 * (wall - ideal) / wall,
            "overhead_pct_vs_epochs": 100.0 * (wall - epoch_s / slots) / wall,
            "first_trial_s": marks.get("first_trial_s"), "first_epoch_s": marks.get("first_epoch_s"),
            "statuses": sorted({r.status for r in records})}


# ------------------------------------------------------------------------------------------ report

def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(result: dict[str, Any]) -> None:
    if "throughput" in result:
        print_throughput(result["throughput"])
    if "equality" in result:
        print_equality(result["equality"], result["memory"])
    if "study" in result:
        print_study(result["study"])


def print_throughput(rows: list[dict[str, Any]]) -> None:
    print("\nTraining throughput (samples/s; off = images decoded + frozen ResNet forward every step; reference ="
          " every slot through the ResNet with back-propagation, as the reference code does)")
    print(f"{'backbone':<10}{'px':>5}{'store':>9}{'off':>9}{'reference':>11}{'store/ref':>11}{'store/off':>11}"
          f"{'store build s':>15}")
    for r in rows:
        print(f"{r['backbone']:<10}{r['image_size']:>5}{r['store_samples_per_s']:>9.1f}"
              f"{r['off_samples_per_s']:>9.1f}{r['reference_samples_per_s']:>11.1f}{r['ratio']:>11.2f}"
              f"{r['ratio_off']:>11.2f}{r['store_build_s']:>15.1f}")


def print_equality(eq: dict[str, Any], m: dict[str, Any]) -> None:
    print(f"\nShort trial ({eq['epochs']} epochs, {eq['backbone']}): F1 equal with and without the store: "
          f"{eq['equal']}")
    for a, b in zip(eq["store"], eq["off"]):
        print(f"  epoch {int(a['epoch'])}: dev F1 {a['dev_f1']:.4f} / {b['dev_f1']:.4f}   "
              f"test F1 {a['test_f1']:.4f} / {b['test_f1']:.4f}   (store / off)")
    print(f"\nPeak RSS of one trial: {m['peak_rss_mib']:.0f} MiB with the store, {m['peak_rss_mib_off']:.0f} MiB off"
          + (f"; peak GPU {m['peak_gpu_mib']:.0f} / {m['peak_gpu_mib_off']:.0f} MiB" if m["peak_gpu_mib"] else ""))


def print_study(st: dict[str, Any]) -> None:
    print(f"\nStudy ({st['trials']} trials, {st['slots']} slots): wall {st['wall_seconds']:.1f} s, "
          f"trials {st['sum_trial_seconds']:.1f} s -> platform overhead {st['overhead_pct']:.1f} % "
          f"({st['overhead_pct_vs_epochs']:.1f} % counting epochs only); first trial started after "
          f"{_fmt(st['first_trial_s'])} s, first epoch recorded after {_fmt(st['first_epoch_s'])} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/perf.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output (default %(default)s)")
    parser.add_argument("--steps", type=int, help="timed training steps per throughput measurement")
    parser.add_argument("--warmup", type=int, help="untimed steps before them")
    parser.add_argument("--reference-steps", type=int, help="timed steps of the reference mode (slow)")
    parser.add_argument("--work-dir", help="keep data, stores and study records here (default: a temp folder, "
                        "deleted afterwards)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated parts to run, of %(default)s (default: all)")
    parser.add_argument("--text-encoder", help="model.text_encoder of every part (a hub name or a saved encoder "
                        "folder; default: the recipe's, the shipped MiniLM)")
    parser.add_argument("--child-trial", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_trial:
        return child_trial(args.child_trial)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts {args.parts!r}: expected a comma-separated list of {', '.join(PARTS)}")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible", file=sys.stderr)
        return 2
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    plan = QUICK if args.quick else FULL
    if args.text_encoder:
        plan = dataclasses.replace(plan, text_encoder=args.text_encoder)
    steps = args.steps if args.steps is not None else plan.steps
    warmup = args.warmup if args.warmup is not None else plan.warmup
    reference_steps = args.reference_steps if args.reference_steps is not None else plan.reference_steps
    work = Path(args.work_dir).absolute() if args.work_dir else Path(tempfile.mkdtemp(prefix="i2srm-perf-"))
    work.mkdir(parents=True, exist_ok=True)
    # Everything (synthetic data, encoded data, feature stores) under the work dir: cold caches, nothing shared.
    os.environ["I2SRM_CACHE"] = str(work / "cache")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.time()
    result: dict[str, Any] = {"quick": args.quick, "device": device, "host": platform.node(), "cpus": os.cpu_count(),
                              "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                              "plan": plan.__dict__, "parts": parts}
    try:
        if "throughput" in parts:
            print(f"throughput ({device}, {steps} steps after {warmup} warm-up, batch {plan.batch_size})",
                  flush=True)
            result["throughput"] = run_throughput(plan, device, work, steps, warmup, reference_steps)
        if "equality" in parts:
            print("equality and memory trials", flush=True)
            result["equality"], result["memory"] = run_equality(plan, device, work, env)
        if "study" in parts:
            print("study", flush=True)
            result["study"] = run_study(plan, device, work, env)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    result["total_seconds"] = time.time() - started
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"\nwritten {out}")
    return 0 if result.get("equality", {"equal": True})["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
