#!/usr/bin/env bash
# GPU speed check for the seed recipe: bench/throughput.py (plain loop vs compiled
# epoch, float32 and bfloat16), then the full 30-epoch CLI run on the CIFAR-10 JPEGs
# three times: cold (decode + compile), again (image cache + XLA cache warm), bfloat16.
# Expects .gpudata/cifar10-jpeg.tar.gz (not committed); logs go to $OUT.
set -uo pipefail
OUT=${OUT:-runs/gpu_speed}
mkdir -p "$OUT"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
nvidia-smi -L > "$OUT/gpu.txt"
timeout 150 python3 bench/throughput.py --epochs ${BENCH_EPOCHS:-5} 2>&1 | tee "$OUT/throughput.txt"
data="--config.dataset=image_folder --config.data_dir=.gpudata/cifar10-jpeg.tar.gz --config.num_classes=10"
caches="--config.cache_dir=/tmp/c10cache --config.xla_cache_dir=/tmp/xla_cache"
rm -rf /tmp/c10cache /tmp/xla_cache
for run in fp32_cold fp32_warm bf16; do
  extra=""
  [ "$run" = bf16 ] && extra="--config.dtype=bfloat16"
  rm -rf "/tmp/$run"
  start=$(date +%s%N)
  timeout 150 python3 -m cifar_jax.train --config configs/default.py --workdir "/tmp/$run" $data $caches $extra > "$OUT/$run.log" 2>&1
  echo "== $run: process wall $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee -a "$OUT/summary.txt"
  python3 bench/summarize_run.py "/tmp/$run" | tee -a "$OUT/summary.txt"
done
