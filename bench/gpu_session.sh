#!/usr/bin/env bash
# The GPU checks still open (issues 15 and 14), in parts that each fit one device call
# (600 s at most). Each part writes its figures as JSON (bench/results.py's
# NAME-YYYY-MM-DD-DEVICE.json) into $OUT, prints where, and logs to $OUT/PART.log; a later
# step copies $OUT/*.json into bench/results/ and commits them. At most 3-5 files per part
# (the device tool brings back 8). Run from the repository root, one part per call, in this
# order (estimates for one H200 from resnet9's 0.68 s/epoch and the zoo's GFLOPs, docs/models.md):
#
#   part        est.    writes                               what
#   parity      ~4 min  compare_torch-*.json                 issue 15.1: 30 epochs, cifar_jax vs PyTorch eager,
#                                                            + PyTorch bf16 autocast/channels_last, seed 0
#   zoo         ~8 min  zoo-seed-*.json                      issue 15.2: 6 models x 10 epochs, seed recipe
#   speed       ~7 min  throughput-*, profile_step-*,        issue 14: throughput rows, per-variant step
#                       profile_step-no-autotune-*.json      times and kernel tables
#   parity2     ~6 min  compare_torch-seed1-*.json           seed 1, + torch.compile timing
#   zoo152      ~7 min  zoo-resnet152-*.json                 resnet152 (max_param_mb=0), 10 epochs
#   zoo_sgd     ~8 min  zoo-sgd-a-*.json                     SGD recipe: resnet9, resnet18, vgg16, mobilenet_v2
#   zoo_sgd2    ~6 min  zoo-sgd-b-*.json                     SGD recipe: efficientnet_b0, resnet50
#   fast        ~3-6 min fast_gpu-*, airbench_gpu-*.json     issue 24: configs/fast.py (a warm-up run, then
#                                                            SEEDS seeded runs, compiling apart) and
#                                                            airbench94 itself (the airbench 0.1.8 wheel, the
#                                                            machine's PyTorch) on the same JPEGs; goal: no less
#                                                            accurate and faster, <= 2 s per run, >= 93 %
#
# Every part has its own `timeout` and the zoo a --total-budget, so a call ends inside
# 600 s; a script stopped by its timeout (SIGTERM) still writes the JSON of what finished
# (with "stopped"). The zoo records each model's finished epochs; a model cut short says so.
# Expects .gpudata/cifar10-jpeg.tar.gz and .whl/ (bench/gpu_wheels.sh, run beforehand on
# the CPU machine; carry [".whl", ".gpudata"]); installs the wheels into /tmp/site when
# ml_collections or tensorboardX is missing (or airbench, where .whl/ exists). See
# docs/speed.md, "Running the GPU checks".
#
# SMOKE=1 runs every part on tiny synthetic shapes (a CPU check of this script's plumbing;
# the fast part writes airbench's data files only).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# airbench only where .whl/ exists: the fast part's SMOKE run on a CPU machine needs no airbench.
if ! $PY -c "import ml_collections, tensorboardX" 2>/dev/null \
   || { [ -d .whl ] && ! $PY -c "import airbench" 2>/dev/null; }; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
CACHE=/tmp/cifar_jax_c10_cache  # decoded images, shared by the parts while the machine stays warm
if [ "${SMOKE:-0}" = 1 ]; then
  cmp_data="--dataset synthetic --num-classes 10 --subset 256 --test-subset 128 --width 0.125 --batch-size 64 --epochs 2"
  zoo_data="--dataset synthetic --num-classes 10 --synthetic-train-size 256 --synthetic-test-size 128 --width 0.125 --batch-size 32"
  zoo_epochs=2
  tp_args="--train-size 256 --batch-size 64 --width 0.125 --epochs 1 --dtypes float32"
  prof_args="--train-size 256 --batch-size 32 --width 0.125 --steps 2 --repeats 1"
  prof_variants=base
else
  DATA=.gpudata/cifar10-jpeg.tar.gz
  [ -f "$DATA" ] || { echo "missing $DATA (bench/gpu_wheels.sh; carry .gpudata)" >&2; exit 1; }
  cmp_data="--dataset image_folder --data-dir $DATA --num-classes 10 --cache-dir $CACHE"
  zoo_data="--dataset image_folder --data-dir $DATA --num-classes 10 --cache-dir $CACHE"
  zoo_epochs=${ZOO_EPOCHS:-10}
  tp_args="--epochs 3"
  prof_args=""
  prof_variants=${PROFILE_VARIANTS:-base,bf16,sgd,flat_adam,no_mask,flax_bn,highest,no_augment,batch2x,eval}
fi
JSON="--out-dir $OUT"

part_parity() {
  timeout 420 $PY bench/compare_torch.py $cmp_data --seed 0 --torch-best --json compare_torch $JSON
}

part_parity2() {
  timeout 540 $PY bench/compare_torch.py $cmp_data --seed 1 --torch-best --torch-compile --json compare_torch-seed1 $JSON
}

# zoo PARTNAME RECIPE MODELS: MODELS is NAME:SECONDS,... (each model's own limit)
zoo() {
  timeout 570 $PY bench/zoo_bench.py $zoo_data --recipe "$2" --epochs "$zoo_epochs" --models "$3" \
    --total-budget "${ZOO_BUDGET:-530}" --json "$1" $JSON
}

part_zoo() {  # ~440 s: resnet9 ~30, resnet18 ~70, vgg16 ~50, mobilenet_v2 ~60, efficientnet_b0 ~90, resnet50 ~140
  zoo zoo-seed seed "${MODELS:-resnet9:90,resnet18:130,vgg16:100,mobilenet_v2:120,efficientnet_b0:150,resnet50:220}"
}

part_zoo152() {  # ~23 s/epoch by GFLOPs (34x resnet9's), + compile
  zoo zoo-resnet152 seed "${MODELS:-resnet152:525}"
}

part_zoo_sgd() {  # batch 128: twice the steps of the seed recipe
  zoo zoo-sgd-a sgd "${MODELS:-resnet9:100,resnet18:150,vgg16:110,mobilenet_v2:140}"
}

part_zoo_sgd2() {
  zoo zoo-sgd-b sgd "${MODELS:-efficientnet_b0:200,resnet50:300}"
}

part_speed() {
  timeout 180 $PY bench/throughput.py $tp_args --json throughput $JSON
  timeout 240 $PY bench/profile_step.py $prof_args --variants "$prof_variants" --trace /tmp/cifar_jax_trace \
    --json profile_step $JSON
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" timeout 100 $PY bench/profile_step.py $prof_args \
    --variants base,bf16 --json profile_step-no-autotune $JSON
}

part_fast() {
  if [ "${SMOKE:-0}" = 1 ]; then
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 300 $PY bench/fast_gpu.py --smoke --seeds 2 --json fast_gpu-smoke $JSON
    timeout 120 $PY bench/airbench_gpu.py --smoke --prepare-only --work-dir /tmp/airbench_smoke
  else
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 330 $PY bench/fast_gpu.py --data "$DATA" --cache-dir "$CACHE" \
      --seeds "${SEEDS:-5}" --json fast_gpu $JSON
    timeout 200 $PY bench/airbench_gpu.py --data "$DATA" --cache-dir "$CACHE" --seeds "${SEEDS:-5}" \
      --json airbench_gpu $JSON
  fi
}

for part in "${@:-parity}"; do
  if ! declare -F "part_$part" > /dev/null; then
    echo "unknown part $part: parity, zoo, speed, parity2, zoo152, zoo_sgd, zoo_sgd2, fast" >&2
    exit 2
  fi
  log="$OUT/$part.log"
  {
    echo "### $part ($(date -u +%FT%TZ))"
    nvidia-smi -L 2>/dev/null
    $PY -c "import jax; print('jax', jax.__version__, jax.devices())"
  } 2>&1 | tee -a "$log"
  start=$(date +%s)
  "part_$part" 2>&1 | tee -a "$log"
  echo "### $part: $(( $(date +%s) - start )) s; JSON in $OUT:" | tee -a "$log"
  ls -1 "$OUT"/*.json 2>/dev/null | tee -a "$log"
done
echo "Copy them into bench/results/ and commit: cp $OUT/*.json bench/results/"
