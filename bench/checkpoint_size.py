"""Size on disk of the saved parameters of the default model, and the cost of a save.

    python bench/checkpoint_size.py [--config configs/default.py] [--saves 5]

Builds the config's train state (fresh init: the params item is stored uncompressed, so
trained weights give the same size), saves it through cifar_jax.checkpoint as the loop
does, and reports the parameter count, `param_bytes` (the bytes of the files Orbax wrote
for the `params` item, what `python -m cifar_jax.evaluate` prints), the same for the
whole checkpoint, `du -sh`-style figures, and how long `save` blocks the loop.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from cifar_jax import checkpoint  # noqa: E402
from cifar_jax.config import load_config_file  # noqa: E402
from cifar_jax.steps import create_train_state  # noqa: E402

SEED_PARAMS = 7_598_820  # the seed's ResNet9 at 100 classes; "29M" by du -h of its state_dict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    config = load_config_file(args.config)
    with config.unlocked():
        config.num_epochs = max(config.num_epochs, args.saves)
    steps_per_epoch = math.ceil(50_000 / config.batch_size)
    state = create_train_state(jax.random.key(0), config, steps_per_epoch)
    count = sum(x.size for x in jax.tree.leaves(state.params))
    rngs = {"augment": jax.random.key(1), "data": jax.random.key(2)}
    print(f"jax {jax.__version__}, orbax-checkpoint {ocp.__version__}, {jax.devices()[0].platform}")
    with tempfile.TemporaryDirectory() as workdir:
        (pathlib.Path(workdir) / checkpoint.CONFIG_FILE).write_text(config.to_json(indent=2))
        blocking = []
        with checkpoint.open_manager(workdir, config) as checkpoints:
            for epoch in range(args.saves):
                state = state.replace(step=jnp.asarray((epoch + 1) * steps_per_epoch, jnp.int32))
                jax.block_until_ready(state)
                start = time.perf_counter()
                checkpoint.save(checkpoints, state, epoch, {"test_acc": 0.1 * epoch}, rngs=rngs)
                blocking.append(time.perf_counter() - start)
                time.sleep(1.0)  # an epoch's worth of training while the save finishes
        info = checkpoint.checkpoint_info(workdir)
        folder = pathlib.Path(info["path"])
        whole = checkpoint.directory_bytes(folder)
        du = subprocess.run(["du", "-sh", str(folder / "params")], capture_output=True, text=True).stdout.split()[0]
        size = info["param_bytes"]
        print(f"parameters: {count:,} (seed: {SEED_PARAMS:,}); float32: {count * 4:,} bytes")
        print(f"params item on disk: {size:,} bytes = {size / 1e6:.2f} MB = {size / 2**20:.2f} MiB "
              f"(du -sh: {du}); seed state_dict: {SEED_PARAMS * 4 / 1e6:.2f} MB = "
              f"{SEED_PARAMS * 4 / 2**20:.2f} MiB (du -h: 29M); ratio {size / (SEED_PARAMS * 4):.4f}")
        print(f"whole checkpoint (params, batch_stats, Adam state, step, keys, meta): {whole:,} bytes "
              f"= {whole / 2**20:.2f} MiB")
        print("save() blocking seconds:", ", ".join(f"{t:.3f}" for t in blocking),
              "(first includes the manager's setup)")


if __name__ == "__main__":
    main()
