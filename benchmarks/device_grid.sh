#!/usr/bin/env bash
# One grid on the device with the five methods of the paper's figures, timed and watched: `nvidia-smi dmon`
# samples SM utilisation each second while it runs; then benchmarks/device_summary.py reports wall time, cell
# times, upstream training images/s and utilisation into $OUT/summary.txt, and the records go back as
# $OUT/results.tgz. Called by device_check.sh (digits) and device_pacs.sh (PACS) with the task's arguments:
#   OUT=... DEVICE=cuda LIMIT=420 bash benchmarks/device_grid.sh -t TASK --k ... --seeds ... [--data-dir D]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lorabench-device}; DEVICE=${DEVICE:-cuda}; LIMIT=${LIMIT:-420}; S="$OUT/summary.txt"
STORE=$(mktemp -d /tmp/lorabench-store.XXXX)  # a fresh adapter store: upstream training is part of the figure
T0=$(date +%s)
DMON=""
if command -v nvidia-smi > /dev/null; then nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 & DMON=$!; fi
timeout "$LIMIT" python3 -m lorabench.cli run -m classifier_tuning,uniform_composition,learned_composition,lora,full_finetune \
  "$@" --device "$DEVICE" --cache-dir "$STORE" --results-dir "$OUT/results" > "$OUT/grid.log" 2>&1
RC=$?; WALL=$(( $(date +%s) - T0 ))
[ -n "$DMON" ] && kill "$DMON"
echo "== grid $* (exit $RC$([ $RC = 124 ] && echo ", stopped at its ${LIMIT} s limit"))" | tee -a "$S"
python3 benchmarks/device_summary.py "$OUT/results" --dmon "$OUT/dmon.txt" --wall "$WALL" --store "$STORE" 2>&1 \
  | tee -a "$S"
[ -d "$OUT/results" ] && tar -czf "$OUT/results.tgz" -C "$OUT" results && rm -rf "$OUT/results"
