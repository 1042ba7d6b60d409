#!/usr/bin/env bash
# One short GPU check of the trainer and the study platform (a few minutes on one GPU):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default results/benchmarks/gpu_check; PYTHON=... to pick python)
#
# 1. the trainer on CUDA under bf16 autocast (train.amp): 50 timed training steps after 5 warm-up steps
#    (resnet50 at 224 px, synthetic MNER, MiniLM, batch 16), with the visual feature store
#    (model.feature_cache=on) and recomputing the frozen ResNet every step (off): samples/s of each, the
#    store's one-off build time and the peak GPU memory allocated (benchmarks/perf.py's throughput());
# 2. a 4-trial study (mixup.yaml: 4 values of i2srm.delta, 1 seed, 2 epochs at 224 px) with
#    resources.gpus=0.25 on one GPU: the GPU memory of each trial process (nvidia-smi, sampled every 0.5 s,
#    CUDA context included) and whether the 4 trials ran at once (their run intervals, from Ray Tune's
#    result.json, all overlap; the most processes nvidia-smi listed on the GPU together is printed beside it).
#
# Writes OUT_DIR/gpu_check.json. Exit status: 0 all ran and the 4 trials ran at once; 1 a check failed;
# 2 no CUDA device (checked first, in seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-results/benchmarks/gpu_check}
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# the trials' start and end times below are read from Ray Tune's result.json, which the study turns off by default
export TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'EOF' || exit 2
import sys
import torch
if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees none "
          f"(torch.cuda.is_available() is False); run this on a machine with an NVIDIA GPU.", file=sys.stderr)
    sys.exit(2)
print(f"gpu_check: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF
if ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check: nvidia-smi not found (it gives the GPU memory per trial)" >&2
    exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export I2SRM_CACHE="$OUT/cache"

echo "== 1. trainer on CUDA, bf16, 50 steps: feature store vs recompute at 224 px"
"$PY" - "$OUT/trainer.json" <<'EOF'
import json, sys
import torch
from benchmarks.perf import throughput

common = {"data.name": "synthetic-mner", "model.backbone": "resnet50", "model.image_size": 224,
          "train.batch_size": 16, "train.device": "cuda", "train.amp": True, "train.progress": False,
          "train.save_checkpoint": False, "train.save_best": False}
rows = {}
for mode in ("on", "off"):
    torch.cuda.reset_peak_memory_stats()
    r = throughput({**common, "model.feature_cache": mode}, steps=50, warmup=5)
    r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    rows["store" if mode == "on" else "recompute"] = r
    print(f"  {'store' if mode == 'on' else 'recompute'}: {r['samples_per_s']:.1f} samples/s over {r['samples']} "
          f"samples (bf16 autocast {r['amp']}), visual set-up {r['setup_s']:.1f} s, peak GPU memory "
          f"{r['peak_gpu_mib']:.0f} MiB", flush=True)
rows["store_vs_recompute"] = rows["store"]["samples_per_s"] / rows["recompute"]["samples_per_s"]
print(f"  store / recompute: {rows['store_vs_recompute']:.2f}x")
json.dump(rows, open(sys.argv[1], "w"), indent=2)
EOF

echo "== 2. 4-trial study, resources.gpus=0.25 on one GPU"
rm -rf "$OUT/study"
( while :; do t=$(date +%s.%N)
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null | sed "s/^/$t, /"
    sleep 0.5; done ) > "$OUT/gpu_memory.csv" &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
status=0
"$PY" study/run.py --space mixup.yaml --name gpu-check --results-dir "$OUT/study" \
    --set "seeds=[1]" --set "search.i2srm.delta={grid: [0.0, 0.25, 0.5, 0.7]}" --set train.epochs=2 \
    --set model.image_size=224 --set train.device=cuda --set resources.gpus=0.25 --set resources.cpus=1 \
    --set max_concurrent=4 || status=$?
kill $SAMPLER 2>/dev/null || true
"$PY" - "$OUT" "$status" <<'EOF'
import json, sys
from collections import defaultdict
from pathlib import Path

out, status = Path(sys.argv[1]), int(sys.argv[2])
study = out / "study" / "gpu-check"
intervals = []
for path in sorted((study / "ray").rglob("result.json")):
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    if rows:
        intervals.append((rows[-1]["timestamp"] - rows[-1]["time_total_s"], rows[-1]["timestamp"]))
peak, at = defaultdict(float), defaultdict(set)
for line in (out / "gpu_memory.csv").read_text().splitlines():
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 3 and parts[1].isdigit():
        peak[parts[1]] = max(peak[parts[1]], float(parts[2]))
        at[parts[0]].add(parts[1])
together = max((len(p) for p in at.values()), default=0)
overlap = len(intervals) == 4 and max(s for s, _ in intervals) < min(e for _, e in intervals)
doc = {"study_exit": status, "trials": len(intervals), "trial_intervals": intervals,
       "gpu_mib_per_process": dict(peak), "max_processes_on_gpu_at_once": together,
       "ran_at_once": overlap,
       "trainer": json.loads((out / "trainer.json").read_text())}
(out / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n")
print(f"  study exit {status}; {len(intervals)} trials; GPU memory per trial process (MiB, nvidia-smi): "
      f"{', '.join(f'{v:.0f}' for v in peak.values()) or 'none seen'}")
print(f"  4 trials at once: {'yes' if overlap else 'no'} (their run intervals all overlap: {overlap}); most "
      f"processes nvidia-smi listed on the GPU together: {together} (0: it lists none in this container)")
print(f"wrote {out / 'gpu_check.json'}")
sys.exit(0 if status == 0 and doc["ran_at_once"] else 1)
EOF
