#!/usr/bin/env bash
# Issue 26's GPU checks as prepared commands for a lent GPU machine (15 minutes of device time in all):
#   here:   bash benchmarks/device_wheels.sh        # wheels the machine lacks, into .whl/ (about 21 MB)
#   device: run(command="GRID=none bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=300)
#           then at once (a machine stays warm 30 s) device_pacs.sh: see there
# 1. the wheels installed into .site/ (ignored: it stays on the warm machine for the next call, device_pacs.sh);
# 2. the tests that need or concern the device (views on the device vs the CPU, bf16, the non-finite check);
# 3. benchmarks/bench_pipeline.py's CUDA rows (full upstream step vs the bare step, target >= 0.85);
# 4. inference throughput at batch 64 ... 1024 (is training.EVAL_BATCH_CUDA = 512 right?);
# 5. unless GRID=none: a digits grid on the GPU (full profile, 5 methods x K 1,5 x seeds 0-2, upstream training
#    included) with SM utilisation sampled every second: the stand-in for the PACS grid where device_pacs.sh
#    cannot follow (PACS and the weights together exceed the 64 MiB one call carries).
# What comes back ($OUT): summary.txt, tests.log, bench.txt, evalbatch.txt, and with a grid grid.log, dmon.txt,
# results.tgz. A CPU dry run of the mechanics, here (the wheels are for the device's Python 3.12):
#   DEVICE=cpu QUICK=1 NO_WHEELS=1 OUT=/tmp/devout bash benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lorabench-device}; DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-}; GRID=${GRID:-digits}
mkdir -p "$OUT"; export PYTHONUNBUFFERED=1 LORABENCH_CACHE=/tmp/lorabench-cache
S="$OUT/summary.txt"
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl > /dev/null 2>&1; then
  rm -rf .site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .whl/*.whl \
    || { echo "wheel install failed" | tee "$S"; exit 1; }
  # datasets 5.2.0 needs pyarrow >= 24; with an older pyarrow (>= 21) the 5.0.0 wheel from .whl/alt replaces it
  if ! python3 -c "import sys, pyarrow; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)"; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/alt/*.whl
  fi
fi
[ -d .site ] && export PYTHONPATH=$PWD/.site
bash benchmarks/device_env.sh | tee "$S"

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

if [ "$GRID" != none ]; then
  if [ -n "$QUICK" ]; then G="--profile smoke --k 1 --seeds 0"; else G="--k 1,5 --seeds 0,1,2"; fi
  OUT="$OUT" DEVICE="$DEVICE" LIMIT=420 bash benchmarks/device_grid.sh -t digits $G
fi
