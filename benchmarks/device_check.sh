#!/usr/bin/env bash
# Issue 26's GPU checks as one prepared command for a lent GPU machine (15 minutes of device time in all):
#   here:   bash benchmarks/device_wheels.sh        # wheels the machine lacks, into .whl/ (about 21 MB)
#   device: run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
# 1. the tests that need or concern the device (views on the device vs the CPU, bf16, the non-finite check);
# 2. benchmarks/bench_pipeline.py's CUDA rows (full upstream step vs the bare step, target >= 0.85);
# 3. a grid on the GPU with SM utilisation sampled every second (digits, full profile, 5 methods x K 1,5 x seeds
#    0-2 with its upstream training: PACS and the weights together do not fit in the 64 MiB that travels);
# 4. inference throughput at batch 64 ... 1024 (is training.EVAL_BATCH_CUDA = 512 right?).
# What comes back ($OUT, at most 8 files): summary.txt, tests.log, bench.txt, grid.log, dmon.txt, evalbatch.txt,
# results.tgz. A CPU dry run of the mechanics, here (the wheels are for the device's Python 3.12):
#   DEVICE=cpu QUICK=1 NO_WHEELS=1 OUT=/tmp/devout bash benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lorabench-device}; DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-}
mkdir -p "$OUT"; export PYTHONUNBUFFERED=1 LORABENCH_CACHE=/tmp/lorabench-cache
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee "$OUT/summary.txt"; exit 1; }
  export PYTHONPATH=/tmp/site
  # datasets 5.2.0 needs pyarrow >= 24; with an older pyarrow (>= 21) the 5.0.0 wheel from .whl/alt goes first
  if ! python3 -c "import sys, pyarrow; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)"; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-alt .whl/alt/*.whl \
      && export PYTHONPATH=/tmp/site-alt:/tmp/site
  fi
fi
S="$OUT/summary.txt"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  for m in torch pyarrow datasets pydantic lorabench; do  # one at a time: a failing import names itself
    python3 -c "import $m; print('$m', getattr($m, '__version__', ''), $m.__file__)" 2>&1 | tail -n 1
  done
  python3 -c "import torch; print('cuda available:', torch.cuda.is_available())"
} 2>&1 | tee "$S"

step() { echo "== $1: $(( $(date +%s) - T0 )) s" | tee -a "$S"; }
T0=$(date +%s)
python3 -m pytest -q -p no:cacheprovider tests/test_protocol.py tests/test_lora_exactness.py \
  -k "device or bf16 or precision or non_finite or crop_boxes or batched_views" > "$OUT/tests.log" 2>&1
tail -n 1 "$OUT/tests.log" | tee -a "$S"; step "tests"

T0=$(date +%s)
if [ -n "$QUICK" ]; then B="--rounds 1 --steps 1"; else B="--rounds 5 --steps 10"; fi
python3 benchmarks/bench_pipeline.py --devices "$DEVICE" $B > "$OUT/bench.txt" 2>&1
grep "^|" "$OUT/bench.txt" | tee -a "$S"; step "pipeline benchmark"

T0=$(date +%s)
if [ -n "$QUICK" ]; then G="--profile smoke --k 1 --seeds 0"; else G="--k 1,5 --seeds 0,1,2"; fi
DMON=""
if command -v nvidia-smi > /dev/null; then nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 & DMON=$!; fi
timeout 420 python3 -m lorabench.cli run -m classifier_tuning,uniform_composition,learned_composition,lora,full_finetune \
  -t digits $G --device "$DEVICE" --results-dir "$OUT/results" > "$OUT/grid.log" 2>&1
echo "grid exit $?" | tee -a "$S"
[ -n "$DMON" ] && kill "$DMON"
step "digits grid (upstream included)"
python3 - "$OUT" >> "$S" 2>&1 <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
recs = [json.loads(p.read_text()) for p in (out / "results").rglob("*.json")]
print(f"{len(recs)} records; cell seconds: sum {sum(r['timings']['total_s'] for r in recs):.1f}, "
      f"max {max((r['timings']['total_s'] for r in recs), default=0):.1f}; precision {sorted({r['config']['precision'] for r in recs})}")
dmon = out / "dmon.txt"
if dmon.is_file():
    sm = [int(l.split()[1]) for l in dmon.read_text().splitlines() if l.strip() and not l.startswith("#") and l.split()[1].isdigit()]
    print(f"SM utilisation over {len(sm)} s: mean {statistics.mean(sm):.1f} %, max {max(sm)} %" if sm else "no dmon samples")
PY
tar -czf "$OUT/results.tgz" -C "$OUT" results && rm -rf "$OUT/results"

T0=$(date +%s)
python3 - "$DEVICE" "$QUICK" > "$OUT/evalbatch.txt" 2>&1 <<'PY'
import sys, time, torch
import lorabench.training as training
from lorabench.backbones import create_backbone
from lorabench.data import Split
device, quick = sys.argv[1], bool(sys.argv[2])
bb = create_backbone("efficientnet_lite0", device)
n = 256 if quick else 4096
split = Split(key="evalbatch", inputs={"pixels": torch.randint(0, 256, (n, 3, 128, 128), dtype=torch.uint8)},
              labels=torch.zeros(n, dtype=torch.long), num_classes=7, modality="image", meta={"image_size": 224})
for bs in ([64, 256] if quick else [64, 256, 512, 1024]):
    training.extract_features(bb, split, cache=False, batch_size=bs)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    training.extract_features(bb, split, cache=False, batch_size=bs)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"batch {bs}: {n / (time.perf_counter() - t):.0f} images/s (224 px, features, {bb.precision})")
PY
cat "$OUT/evalbatch.txt" | tee -a "$S"; step "inference batch sizes"
