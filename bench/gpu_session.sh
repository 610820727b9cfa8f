#!/usr/bin/env bash
# The GPU checks still open, in parts that each fit one device call (600 s at most).
# A session has 15 device minutes including a 1-2 minute start, so run them in this
# order, one call each, and stop when the budget runs short:
#
#   bash bench/gpu_session.sh parity    # ~2 min: issue 4's 30-epoch table
#   bash bench/gpu_session.sh models    # ~6 min: issue 6's per-model comparison
#   bash bench/gpu_session.sh profile   # ~4 min: where the step's time goes (speed follow-up)
#
# parity:  bench/compare_torch.py, the full 30-epoch seed recipe on the CIFAR-10 JPEGs,
#          cifar_jax next to cifar_jax.reference (PyTorch), same data order and init.
# models:  every model of cifar_jax.zoo under the 100 MB budget, MODEL_EPOCHS epochs
#          (default 5) of the seed recipe on the CIFAR-10 JPEGs; accuracy, s/epoch, size.
#          MODELS="name:timeout_s ..." and TRAIN_EXTRA="--config.KEY=VALUE ..." override
#          the list and the runs (a CPU check of this script uses the synthetic data).
# profile: bench/profile_step.py over PROFILE_VARIANTS (default: the most telling ones
#          first), with kernel tables of base and bf16; then base and bf16 again with XLA's
#          autotuning off (how much of the compile time autotuning takes).
#
# Run from the repository root on the GPU machine with its preinstalled JAX stack and
# PYTHONPATH set to the checkout (and to ml_collections, see docs/speed.md); expects
# .gpudata/cifar10-jpeg.tar.gz (not committed). Logs and tables go to $OUT.
set -uo pipefail
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
DATA=.gpudata/cifar10-jpeg.tar.gz
CACHE=/tmp/cifar_jax_c10_cache  # decoded images, shared by the parts
train_data="--config.dataset=image_folder --config.data_dir=$DATA --config.num_classes=10 --config.cache_dir=$CACHE"
nvidia-smi -L > "$OUT/gpu.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__)" >> "$OUT/gpu.txt" 2>&1

part_parity() {
  timeout 240 python3 bench/compare_torch.py --dataset image_folder --data-dir "$DATA" \
    --num-classes 10 --cache-dir "$CACHE" 2>&1 | tee "$OUT/compare_torch.txt"
}

part_profile() {
  variants=${PROFILE_VARIANTS:-base,bf16,sgd,flat_adam,no_mask,flax_bn,highest,no_augment,batch2x,eval}
  timeout 240 python3 bench/profile_step.py --variants "$variants" --trace /tmp/cifar_jax_trace 2>&1 \
    | tee "$OUT/profile_step.txt"
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" timeout 60 python3 bench/profile_step.py \
    --variants base,bf16 2>&1 | tee "$OUT/profile_step_no_autotune.txt"
}

part_models() {
  epochs=${MODEL_EPOCHS:-5}
  timeout 60 python3 -m cifar_jax.zoo --list > "$OUT/zoo_list.txt" 2>&1
  # model:seconds allowed (compile grows with depth)
  for entry in ${MODELS:-resnet9:50 resnet18:70 resnet50:120 vgg16:60 mobilenet_v2:90 efficientnet_b0:120}; do
    model=${entry%%:*}
    config=configs/$model.py
    [ "$model" = resnet9 ] && config=configs/default.py
    workdir=/tmp/cifar_jax_models/$model
    rm -rf "$workdir"
    start=$(date +%s)
    timeout "${entry##*:}" python3 -m cifar_jax.train --config "$config" --workdir "$workdir" $train_data \
      --config.num_epochs="$epochs" ${TRAIN_EXTRA:-} > "$OUT/model_$model.log" 2>&1
    echo "== $model: exit $?, process wall $(( $(date +%s) - start )) s" | tee -a "$OUT/models.txt"
    if [ -f "$workdir/metrics.jsonl" ]; then
      python3 bench/summarize_run.py "$workdir" | tee -a "$OUT/models.txt"
      python3 -c "import sys; from cifar_jax import checkpoint; print('param_bytes', checkpoint.checkpoint_info(sys.argv[1])['param_bytes'])" \
        "$workdir" 2>&1 | tail -1 | tee -a "$OUT/models.txt"
    fi
  done
}

for part in "${@:-parity}"; do
  echo "### $part ($(date -u +%H:%M:%S))" | tee -a "$OUT/parts.txt"
  "part_$part"
done
