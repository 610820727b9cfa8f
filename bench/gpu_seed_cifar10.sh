#!/usr/bin/env bash
# The seed recipe (30 epochs, 10 classes) on the real CIFAR-10 JPEGs, on one GPU, with
# logs in $OUT. Expects the archive at .gpudata/cifar10-jpeg.tar.gz (not committed).
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
rm -rf /tmp/seed_c10
start=$(date +%s)
timeout 480 python3 -m cifar_jax.train --config configs/default.py --workdir /tmp/seed_c10 \
  --config.dataset=image_folder --config.data_dir=.gpudata/cifar10-jpeg.tar.gz \
  --config.num_classes=10 --config.cache_dir=/tmp/seed_c10_cache 2>&1 | tee "$OUT/train.log"
echo "process wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/train.log"
cp /tmp/seed_c10/metrics.jsonl "$OUT/metrics.jsonl"
python3 bench/summarize_run.py /tmp/seed_c10 | tee "$OUT/summary.txt"
