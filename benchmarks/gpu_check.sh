#!/usr/bin/env bash
# One short GPU check of the trainer and the study platform (a few minutes on one GPU):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default results/benchmarks/gpu_check; PYTHON=... to pick python)
#
# 1. the trainer on CUDA under bf16 autocast (train.amp): 50 timed training steps after 5 warm-up steps
#    (resnet50 at 224 px, synthetic MNER, MiniLM, batch 16), with the visual feature store
#    (model.feature_cache=on) and recomputing the frozen ResNet every step (off): samples/s of each, the
#    store's one-off build time, the peak GPU memory allocated while building the store and, apart, while
#    training (benchmarks/perf.py's throughput(), which clips gradients only where the trainer does);
# 2. a 4-trial study (mixup.yaml: 4 values of i2srm.delta, 1 seed, 2 epochs at 224 px) with
#    resources.gpus=0.25 on one GPU: each trial's peak GPU memory as the trainer records it (gpu_peak_mib,
#    torch's reserved memory; nvidia-smi's per-process list is empty in containers) and whether the 4 trials
#    ran at once (their run intervals, from Ray Tune's result.json, all overlap).
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
    r = throughput({**common, "model.feature_cache": mode}, steps=50, warmup=5)
    rows["store" if mode == "on" else "recompute"] = r
    print(f"  {'store' if mode == 'on' else 'recompute'}: {r['samples_per_s']:.1f} samples/s over {r['samples']} "
          f"samples (bf16 autocast {r['amp']}), visual set-up {r['setup_s']:.1f} s (peak GPU memory "
          f"{r['build_peak_gpu_mib']:.0f} MiB), training peak GPU memory {r['peak_gpu_mib']:.0f} MiB", flush=True)
rows["store_vs_recompute"] = rows["store"]["samples_per_s"] / rows["recompute"]["samples_per_s"]
print(f"  store / recompute: {rows['store_vs_recompute']:.2f}x")
json.dump(rows, open(sys.argv[1], "w"), indent=2)
EOF

echo "== 2. 4-trial study, resources.gpus=0.25 on one GPU"
rm -rf "$OUT/study"
status=0
"$PY" study/run.py --space mixup.yaml --name gpu-check --results-dir "$OUT/study" \
    --set "seeds=[1]" --set "search.i2srm.delta={grid: [0.0, 0.25, 0.5, 0.7]}" --set train.epochs=2 \
    --set model.image_size=224 --set train.device=cuda --set resources.gpus=0.25 --set resources.cpus=1 \
    --set max_concurrent=4 || status=$?
"$PY" - "$OUT" "$status" <<'EOF'
import json, sys
from pathlib import Path

out, status = Path(sys.argv[1]), int(sys.argv[2])
study = out / "study" / "gpu-check"
intervals, peaks = [], []
for path in sorted((study / "ray").rglob("result.json")):
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    if rows:
        intervals.append((rows[-1]["timestamp"] - rows[-1]["time_total_s"], rows[-1]["timestamp"]))
        peaks.append(max((r.get("gpu_peak_mib") or 0.0) for r in rows))
overlap = len(intervals) == 4 and max(s for s, _ in intervals) < min(e for _, e in intervals)
doc = {"study_exit": status, "trials": len(intervals), "trial_intervals": intervals,
       "gpu_peak_mib_per_trial": peaks, "ran_at_once": overlap,
       "trainer": json.loads((out / "trainer.json").read_text())}
(out / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n")
print(f"  study exit {status}; {len(intervals)} trials; peak GPU memory per trial (MiB reserved, gpu_peak_mib): "
      f"{', '.join(f'{v:.0f}' for v in peaks) or 'none recorded'}")
print(f"  4 trials at once: {'yes' if overlap else 'no'} (their run intervals all overlap: {overlap})")
print(f"wrote {out / 'gpu_check.json'}")
sys.exit(0 if status == 0 and doc["ran_at_once"] else 1)
EOF
