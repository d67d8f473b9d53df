#!/usr/bin/env bash
# What the device runs with: the GPU, and each package the checks import with its version and where it came from
# (one import at a time, so a failing one names itself).
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
for m in torch pyarrow datasets pydantic lorabench; do
  python3 -c "import $m; print('$m', getattr($m, '__version__', ''), $m.__file__)" 2>&1 | tail -n 1
done
python3 -c "import torch; print('cuda available:', torch.cuda.is_available())" 2>&1 | tail -n 1
