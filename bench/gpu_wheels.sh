#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from the repository root, before a GPU session:
# gathers what `run`'s carry takes along, both folders git-ignored:
#   .whl/     the wheels cifar_jax needs that the GPU machine's image lacks (ml_collections,
#             tensorboardX; their own needs, absl-py, PyYAML, numpy, packaging, protobuf, are there),
#             and airbench 0.1.8 for gpu_session.sh's fast part (PyTorch; published as a source archive
#             only, so built into a pure-Python wheel here)
#   .gpudata/ cifar10-jpeg.tar.gz, the real CIFAR-10 JPEGs (from ../shared/data)
# Both are pure-Python wheels (py3-none-any): any pip here fetches the right files.
# On the GPU machine, start each command with (docs/speed.md, "Running the GPU checks"):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
mkdir -p .whl .gpudata
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl ml_collections tensorboardX
python3 -m pip wheel -q --no-deps -w .whl airbench==0.1.8
if [ ! -f .gpudata/cifar10-jpeg.tar.gz ]; then
  # ../shared beside the main checkout; ../../shared beside a worktree of /work/wt/NAME
  for src in "${CIFAR10_JPEG:-}" ../shared/data/cifar10-jpeg.tar.gz ../../shared/data/cifar10-jpeg.tar.gz; do
    [ -n "$src" ] && [ -f "$src" ] && { cp "$src" .gpudata/cifar10-jpeg.tar.gz; break; }
  done
fi
[ -f .gpudata/cifar10-jpeg.tar.gz ] || { echo "no cifar10-jpeg.tar.gz: set CIFAR10_JPEG=PATH" >&2; exit 1; }
ls -l .whl .gpudata
du -sh .whl .gpudata
