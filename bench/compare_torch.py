"""Side by side: cifar_jax and the seed's PyTorch loop (cifar_jax.reference) on the same data
with the same recipe; prints one table of per-epoch test accuracy and seconds per epoch,
then final accuracy, parameter count and checkpoint size for each.

    # CPU smoke (a minute or two on 2 cores):
    python bench/compare_torch.py --dataset synthetic --num-classes 10 --epochs 1 \\
        --subset 2048 --test-subset 512 --width 0.25
    # In full on a GPU (torch on cuda when available, JAX on its default device):
    python bench/compare_torch.py --dataset image_folder \\
        --data-dir ../shared/data/cifar10-jpeg.tar.gz --num-classes 10

Both see the same examples in the same order every epoch (a shared seeded permutation;
PyTorch keeps the last short batch, JAX pads it and masks the padding, which gives the same
gradients and BatchNorm statistics) and, unless --independent-init, start from the same
weights (PyTorch's init, converted with cifar_jax.convert). Their crop+flip draws differ.
The JAX side uses the library's create_train_state / train_step / eval_step, one jit call
per step with the data on the device (not the `cifar_jax.train` loop); the PyTorch side is
cifar_jax.reference.fit with the data on its device. "seconds" is the training part of an
epoch; JAX's first epoch includes compiling. Checkpoint size: PyTorch's
torch.save(model.state_dict()) file; JAX's params + batch_stats as a Flax msgpack file,
the same tensors (the state_dict also holds the running statistics).

PyTorch at its best, for a fair speed comparison (timing runs from the same initial weights
and data order): --torch-best adds a run with bf16 autocast and channels_last (the
evaluation stays float32); --torch-compile adds one more with the model under torch.compile
(its first epoch includes compiling). --torch-best-epochs sets their length (default: --epochs).

--json NAME writes bench/results/NAME-DATE-DEVICE.json (bench/results.py) with `jax` and
`torch` objects (and `torch_best`, a list, when asked), each with `test_acc` (final),
`best_test_acc`, `s_per_epoch` (median of epochs 1+), `first_epoch_s`, `params`,
`param_bytes` (float32), `checkpoint_bytes` and the per-epoch `history`; plus `speedup`
(torch s/epoch over jax s/epoch) and `acc_gap` (jax minus torch). If the process gets
SIGTERM (e.g. from `timeout`) the file is still written, with what finished and `stopped`.
"""
from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time

# Leave the GPU's memory to be shared: by default JAX takes 75 % of it at start-up.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import flax.serialization  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import results as bench_results  # noqa: E402
from cifar_jax import load_dataset  # noqa: E402
from cifar_jax.config import load_config_file, validate_config  # noqa: E402
from cifar_jax.convert import state_dict_to_variables  # noqa: E402
from cifar_jax.data import Dataset  # noqa: E402
from cifar_jax.errors import CifarJaxError  # noqa: E402
from cifar_jax.steps import create_train_state, eval_step, train_step  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar100", help="as --config.dataset (cifar100, cifar10, image_folder, synthetic, tfds:NAME)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--cache-dir", default="", help="image_folder's decoded-array cache ('' = ~/.cache/cifar_jax)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--subset", type=int, default=0, help="train on this many training images (a seeded random subset); 0 = all")
    p.add_argument("--test-subset", type=int, default=0, help="evaluate on this many test images; 0 = all")
    p.add_argument("--no-augment", action="store_true", help="turn crop + flip off on both sides")
    p.add_argument("--independent-init", action="store_true", help="each side its own random init (default: the same weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-device", default="", help="default: cuda if available, else cpu")
    p.add_argument("--torch-best", action="store_true", help="also time PyTorch with bf16 autocast + channels_last")
    p.add_argument("--torch-compile", action="store_true", help="also time that with torch.compile")
    p.add_argument("--torch-best-epochs", type=int, default=0, help="epochs of those runs (0 = --epochs)")
    bench_results.add_arguments(p)
    return p.parse_args(argv)


def make_config(args):
    config = load_config_file(str(REPO / "configs" / "default.py"))
    config.dataset, config.data_dir, config.num_classes = args.dataset, args.data_dir, args.num_classes
    config.cache_dir = args.cache_dir
    config.num_epochs, config.batch_size, config.width = args.epochs, args.batch_size, args.width
    config.augment, config.seed = not args.no_augment, args.seed
    validate_config(config)
    return config


def subset(data: Dataset, train: int, test: int, seed: int) -> Dataset:
    rng = np.random.default_rng([seed, 12345])
    keep_train = np.sort(rng.permutation(len(data.train_labels))[:train]) if train else slice(None)
    keep_test = np.sort(rng.permutation(len(data.test_labels))[:test]) if test else slice(None)
    return Dataset(data.train_images[keep_train], data.train_labels[keep_train],
                   data.test_images[keep_test], data.test_labels[keep_test], data.class_names)


@functools.partial(jax.jit, donate_argnums=0)
def _train_on_indices(state, images, labels, idx, mask, rng):
    return train_step(state, {"image": images[idx], "label": labels[idx], "mask": mask}, rng)


@jax.jit
def _eval_on_indices(state, images, labels, idx, mask):
    return eval_step(state, {"image": images[idx], "label": labels[idx], "mask": mask})


def _padded_batches(order: np.ndarray, batch_size: int):
    """(indices, mask) of each batch, the last padded to batch_size (one compiled shape)."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        mask = np.arange(batch_size) < len(idx)
        yield np.resize(idx, batch_size), mask  # np.resize repeats idx to fill; masked out


def jax_evaluate(state, images, labels, batch_size: int) -> float:
    correct = 0.0
    for idx, mask in _padded_batches(np.arange(len(labels)), batch_size):
        metrics = _eval_on_indices(state, images, labels, jnp.asarray(idx), jnp.asarray(mask))
        correct += float(metrics["accuracy"]) * float(metrics["count"])
    return correct / len(labels)


def run_jax(config, data: Dataset, orders, init_variables, seed: int):
    n = len(data.train_labels)
    steps_per_epoch = math.ceil(n / config.batch_size)
    state = create_train_state(jax.random.key(seed), config, steps_per_epoch, data.train_images.shape[1:])
    if init_variables is not None:
        state = state.replace(params=init_variables["params"], batch_stats=init_variables["batch_stats"],
                              opt_state=state.tx.init(init_variables["params"]))
    images, labels = jax.device_put(data.train_images), jax.device_put(data.train_labels)
    test_images, test_labels = jax.device_put(data.test_images), jax.device_put(data.test_labels)
    rng = jax.random.key(seed + 1)
    history = []
    for epoch in range(config.num_epochs):
        jax.block_until_ready(state)
        start = time.perf_counter()
        for idx, mask in _padded_batches(orders(epoch), config.batch_size):
            state, metrics = _train_on_indices(state, images, labels, jnp.asarray(idx), jnp.asarray(mask), rng)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - start
        accuracy = jax_evaluate(state, test_images, test_labels, config.eval_batch_size)
        history.append({"epoch": epoch, "test_acc": accuracy, "seconds": seconds})
        print(f"  jax   epoch {epoch}: test_acc {accuracy:.4f} ({seconds:.2f}s)", flush=True)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return {
        "history": history,
        "parameters": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "checkpoint_bytes": len(flax.serialization.to_bytes(jax.device_get(variables))),
        "device": str(jax.devices()[0].device_kind),
    }


def run_torch(config, data: Dataset, orders, model, device: str, seed: int):
    import torch

    from cifar_jax import reference as ref

    def report(epoch, record):
        print(f"  torch epoch {epoch}: test_acc {record['test_acc']:.4f} ({record['seconds']:.2f}s)", flush=True)

    model, history = ref.fit(config, data, device=device, seed=seed, model=model, orders=orders, on_epoch=report)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.pth"
        torch.save(model.state_dict(), path)
        size = path.stat().st_size
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    return {"history": history, "parameters": ref.count_parameters(model), "checkpoint_bytes": size, "device": name}


def run_torch_best(config, data: Dataset, orders, init_state_dict, device: str, seed: int, epochs: int,
                   compile_model: bool):
    """The seed's loop in PyTorch with bf16 autocast and channels_last (and torch.compile):
    the same steps as cifar_jax.reference.train_step, timed; evaluation in float32."""
    import torch
    import torch.nn.functional as F

    from cifar_jax import reference as ref

    config = copy.deepcopy(config)
    config.num_epochs = epochs
    torch.manual_seed(seed)
    model = ref.build_model(config)
    model.load_state_dict(init_state_dict)
    model = model.to(device).to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_model else model
    images = torch.as_tensor(data.train_images, device=device)
    labels = torch.as_tensor(data.train_labels, device=device).long()
    test_images = torch.as_tensor(data.test_images, device=device)
    test_labels = torch.as_tensor(data.test_labels, device=device).long()
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    optimizer, scheduler = ref.make_optimizer(model, config, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(seed)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    mode = "bf16 autocast + channels_last" + (" + torch.compile" if compile_model else "")
    history = []
    for epoch in range(epochs):
        ref._synchronize(device)
        start = time.perf_counter()
        order = torch.as_tensor(np.asarray(orders(epoch)), device=device)
        model.train()
        for first in range(0, len(order), config.batch_size):
            idx = order[first : first + config.batch_size]
            x = ref.preprocess(images[idx], config.mean, config.std, config.augment, generator)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type, dtype=torch.bfloat16):
                loss = F.cross_entropy(forward(x), labels[idx])
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
        ref._synchronize(device)
        seconds = time.perf_counter() - start
        test = ref.evaluate(model, test_images, test_labels, config)
        history.append({"epoch": epoch, "test_acc": test["accuracy"], "seconds": seconds})
        print(f"  torch ({mode}) epoch {epoch}: test_acc {test['accuracy']:.4f} ({seconds:.2f}s)", flush=True)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    return {"mode": mode, "history": history, "parameters": ref.count_parameters(model), "device": name}


def per_epoch_seconds(history) -> float:
    """Median training seconds of the epochs after the first (the first compiles), or of all."""
    later = [h["seconds"] for h in history[1:]] or [h["seconds"] for h in history]
    return statistics.median(later)


def summary(side: dict) -> dict:
    """A side's figures for the JSON file."""
    history = side["history"]
    out = {
        "test_acc": history[-1]["test_acc"] if history else None,
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "s_per_epoch": per_epoch_seconds(history) if history else None,
        "first_epoch_s": history[0]["seconds"] if history else None,
        "epochs": len(history),
        "params": side.get("parameters"),
        "param_bytes": 4 * side["parameters"] if side.get("parameters") else None,
    }
    for key in ("checkpoint_bytes", "device", "mode"):
        if key in side:
            out[key] = side[key]
    out["history"] = [{k: h[k] for k in ("epoch", "test_acc", "seconds")} for h in history]
    return out


class Stopped(Exception):
    """SIGTERM arrived (e.g. from `timeout`): write what finished."""


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def table(results, config, data, args) -> str:
    jax_r, torch_r = results["jax"], results["torch"]
    lines = [
        f"same data: {config.dataset} ({len(data.train_labels)} train / {len(data.test_labels)} test images, "
        f"{config.num_classes} classes), batch {config.batch_size}, {config.num_epochs} epochs, width {config.width:g}, "
        f"augment {'on' if config.augment else 'off'}, {'independent' if args.independent_init else 'the same'} initial weights",
        f"jax: {jax_r['device']} (jax {jax.__version__}); torch: {torch_r['device']} (torch {results['torch_version']})",
        "",
        f"{'epoch':>5} | {'jax test acc':>12} | {'jax s':>7} | {'torch test acc':>14} | {'torch s':>7}",
        f"{'-' * 5}-+-{'-' * 12}-+-{'-' * 7}-+-{'-' * 14}-+-{'-' * 7}",
    ]
    for j, t in zip(jax_r["history"], torch_r["history"]):
        star = "*" if j["epoch"] == 0 else " "
        lines.append(f"{j['epoch']:>5} | {j['test_acc']:>12.4f} | {j['seconds']:>6.2f}{star} | {t['test_acc']:>14.4f} | {t['seconds']:>7.2f}")

    per_epoch = per_epoch_seconds

    lines += [
        "",
        f"{'':<38} | {'jax':>14} | {'torch':>14}",
        f"{'final test accuracy':<38} | {jax_r['history'][-1]['test_acc']:>14.4f} | {torch_r['history'][-1]['test_acc']:>14.4f}",
        f"{'best test accuracy':<38} | {max(h['test_acc'] for h in jax_r['history']):>14.4f} | "
        f"{max(h['test_acc'] for h in torch_r['history']):>14.4f}",
        f"{'seconds per epoch (median' + (', epochs 1+)' if len(jax_r['history']) > 1 else ')'):<38} | "
        f"{per_epoch(jax_r['history']):>14.2f} | {per_epoch(torch_r['history']):>14.2f}",
        f"{'parameters':<38} | {jax_r['parameters']:>14,} | {torch_r['parameters']:>14,}",
        f"{'checkpoint bytes':<38} | {jax_r['checkpoint_bytes']:>14,} | {torch_r['checkpoint_bytes']:>14,}",
        "",
        "* includes compiling the train and eval steps. Checkpoints: JAX params + batch_stats as a Flax",
        "  msgpack file; PyTorch torch.save(model.state_dict()).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch

        from cifar_jax import reference as ref
    except ImportError:
        print("error: PyTorch is needed: pip install 'cifar-jax[torch]'", file=sys.stderr)
        return 2
    try:
        config = make_config(args)
        data = subset(load_dataset(config), args.subset, args.test_subset, args.seed)
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = len(data.train_labels)
    orders = lambda epoch: np.random.default_rng([args.seed, epoch]).permutation(n)  # noqa: E731

    torch.manual_seed(args.seed)
    model = ref.build_model(config)
    init_state_dict = copy.deepcopy(model.state_dict())
    init = None if args.independent_init else state_dict_to_variables(model.state_dict(), config.num_classes, config.width)
    results, stopped = {"torch_version": torch.__version__}, None
    signal.signal(signal.SIGTERM, _stop)
    try:
        print(f"training cifar_jax on {jax.devices()[0].platform} ...", flush=True)
        results["jax"] = run_jax(config, data, orders, init, args.seed)
        print(f"training the PyTorch reference on {device} ...", flush=True)
        results["torch"] = run_torch(config, data, orders, model, device, args.seed)
        print()
        print(table(results, config, data, args), flush=True)
        best_epochs = args.torch_best_epochs or args.epochs
        for compile_model in [False] * args.torch_best + [True] * args.torch_compile:
            print(f"timing PyTorch at its best on {device}{' with torch.compile' if compile_model else ''} ...", flush=True)
            results.setdefault("torch_best", []).append(
                run_torch_best(config, data, orders, init_state_dict, device, args.seed, best_epochs, compile_model))
    except Stopped as why:
        stopped = str(why)
        print(f"stopped by {stopped}: writing what finished", file=sys.stderr, flush=True)
    if args.json:
        figures = {side: summary(results[side]) for side in ("jax", "torch") if side in results}
        if "torch_best" in results:
            figures["torch_best"] = [summary(run) for run in results["torch_best"]]
        if "jax" in figures and "torch" in figures:
            figures["speedup"] = figures["torch"]["s_per_epoch"] / figures["jax"]["s_per_epoch"]
            figures["acc_gap"] = figures["jax"]["test_acc"] - figures["torch"]["test_acc"]
        if stopped:
            figures["stopped"] = stopped
        figures["settings"] = {
            **vars(args), "torch_device": device, "train_images": n, "test_images": len(data.test_labels),
            "same_init": not args.independent_init,
            "jax_loop": "one jit call per step, data on the device (not the cifar_jax.train loop)",
            "s_per_epoch_method": "median training seconds of epochs 1+ (evaluation excluded)",
        }
        bench_results.report(bench_results.write_result(args.json, figures, out_dir=args.out_dir))
    return 1 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
