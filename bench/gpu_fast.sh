#!/usr/bin/env bash
# configs/fast.py against airbench94 on one GPU, one device call (600 s at most), issue 24:
#   1. bench/fast_gpu.py     configs/fast.py, a warm-up run then SEEDS seeded runs on the CIFAR-10
#                            JPEGs: fast_gpu-DATE-DEVICE.json (accuracy mean and spread, time per
#                            run with compiling apart)                            ~2-4 min
#   2. bench/airbench_gpu.py airbench94 (the airbench 0.1.8 wheel, the machine's PyTorch) on the
#                            same images: airbench_gpu-DATE-DEVICE.json           ~1-2 min
# Goal (issue 24): no less accurate than airbench94 on these images and faster, <= 2 s per run
# (median of >= 5 seeds, compiling apart); >= 93 % the floor.
#
# Before the call, HERE: bash bench/gpu_wheels.sh (.whl/ with ml_collections, tensorboardX and
# airbench; .gpudata/cifar10-jpeg.tar.gz). Then one `run` call with carry [".whl", ".gpudata"] and
# timeout_s 600:
#   bash bench/gpu_fast.sh
# JSON files go to $OUT (the device tool brings them back); copy them into bench/results/ and commit.
# SMOKE=1 runs step 1 on tiny synthetic shapes and writes step 2's data files only (CPU plumbing).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_fast}
mkdir -p "$OUT"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
if ! $PY -c "import ml_collections, tensorboardX, airbench" 2>/dev/null && [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
CACHE=/tmp/cifar_jax_c10_cache  # decoded images, shared by both steps (and by gpu_session.sh's parts)
log="$OUT/gpu_fast.log"
{
  echo "### gpu_fast ($(date -u +%FT%TZ))"
  nvidia-smi -L 2>/dev/null
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"
} 2>&1 | tee -a "$log"
start=$(date +%s)
if [ "${SMOKE:-0}" = 1 ]; then
  timeout 300 $PY bench/fast_gpu.py --smoke --seeds 2 --json fast_gpu-smoke --out-dir "$OUT" 2>&1 | tee -a "$log"
  timeout 120 $PY bench/airbench_gpu.py --smoke --prepare-only --work-dir /tmp/airbench_smoke 2>&1 | tee -a "$log"
else
  DATA=.gpudata/cifar10-jpeg.tar.gz
  [ -f "$DATA" ] || { echo "missing $DATA (bench/gpu_wheels.sh; carry .gpudata)" >&2; exit 1; }
  timeout 330 $PY bench/fast_gpu.py --data "$DATA" --cache-dir "$CACHE" --seeds "${SEEDS:-5}" \
    --json fast_gpu --out-dir "$OUT" 2>&1 | tee -a "$log"
  timeout 200 $PY bench/airbench_gpu.py --data "$DATA" --cache-dir "$CACHE" --seeds "${SEEDS:-5}" \
    --json airbench_gpu --out-dir "$OUT" 2>&1 | tee -a "$log"
fi
echo "### gpu_fast: $(( $(date +%s) - start )) s; JSON in $OUT:" | tee -a "$log"
ls -1 "$OUT"/*.json 2>/dev/null | tee -a "$log"
echo "Copy them into bench/results/ and commit: cp $OUT/*.json bench/results/"
