"""`python -m cifar_jax.evaluate --workdir DIR [--step N | --best | --torch-weights FILE] [--json]`

Restores a checkpoint of the run in DIR (default: the latest) with the config that run
saved, evaluates it on the test split of that config's dataset, prints top-1 and top-5
accuracy, per-class accuracy, the parameter count and the size on disk of the saved
parameters, and writes the confusion figure DIR/confusion-stepN.png (and the figures and
that image to DIR/tensorboard/). With --torch-weights, evaluates a PyTorch
state_dict of the seed's ResNet9 instead (converted by cifar_jax.convert), with DIR's
config (or --config FILE's) giving the dataset, classes and width.
"""
from __future__ import annotations

import functools
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import checkpoint
from cifar_jax.augment import TTA_LEVELS
from cifar_jax.cli_common import ArgumentParser, quiet_orbax
from cifar_jax.errors import CifarJaxError
from cifar_jax.invocation import command
from cifar_jax.run_layout import confusion_file
# The loop's fixed-size padded batching (one compiled shape for every batch).
from cifar_jax.multistep import fitted_eval_batch, pad_to_batches
from cifar_jax.models import parameter_summary
from cifar_jax.steps import create_model, inference_logits

DESCRIPTION = (
    "Evaluate a checkpoint of the run in --workdir (default: its latest) on the test split of "
    "that run's dataset, with the config the run saved: top-1 and top-5 accuracy, loss, per-class "
    "accuracy, the parameter count and the size of the saved parameters; writes the confusion "
    "figure to the workdir. With --torch-weights, evaluates a PyTorch state_dict of the seed's "
    "ResNet9 instead.")


@functools.partial(jax.jit, static_argnames=("model", "mean", "std", "image_size", "tta_level"))
def _logits_on_indices(variables, images, indices, *, model, mean, std, image_size, tta_level=0):
    return inference_logits(model.apply, variables, images[indices], mean, std, image_size, tta_level)


def compute_logits(variables, config, images: np.ndarray, batch_size: int, tta_level=None) -> np.ndarray:
    """float32 (N, classes) logits of uint8 NHWC `images`, in inference mode, with
    `batch_size`-sized padded batches (one compilation whatever N is); normalised and
    resized to `config.image_size` on the device, as the train and eval steps do. A
    `batch_size` above N is cut to N (one batch either way, without padding memory).
    `tta_level` (default: `config.tta_level`): 0 the images alone; 1 and 2 the mean of the
    test-time views' logits (mirror; mirror and translations: cifar_jax.augment.tta_logits)."""
    tta_level = config.tta_level if tta_level is None else tta_level
    if tta_level not in TTA_LEVELS:
        raise CifarJaxError(f"tta level {tta_level!r}: use 0 (none), 1 (mirror) or 2 (mirror and translate)")
    model = create_model(config)
    indices, mask = pad_to_batches(jnp.arange(len(images)), fitted_eval_batch(batch_size, len(images)))
    device_images = jax.device_put(images)
    outputs = [
        _logits_on_indices(variables, device_images, batch, model=model,
                           mean=tuple(config.mean), std=tuple(config.std),
                           image_size=config.image_size, tta_level=tta_level)
        for batch in indices
    ]
    logits = np.concatenate(jax.device_get(outputs))
    return logits[np.asarray(mask).reshape(-1)]


def top_k_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean (N,): the label is among the k highest logits (ties broken by index)."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, int64 (classes, classes): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def _torch_variables(path, workdir, config_file):
    """(variables, config, info) of a PyTorch state_dict file, for `--torch-weights`."""
    from cifar_jax.config import load_config_file
    from cifar_jax.convert import load_torch_weights

    config = load_config_file(config_file) if config_file else checkpoint.load_run_config(workdir)
    if config.model != "resnet9":
        raise CifarJaxError(f"--torch-weights converts the seed's ResNet9 only, not model={config.model}")
    variables = load_torch_weights(path, num_classes=config.num_classes, width=config.width)
    info = {"path": str(path), "step": None, "epoch": None, "param_bytes": pathlib.Path(path).stat().st_size}
    return variables, config, info


def _torch_source(path) -> str:
    """"torch-NAME" for a --torch-weights file NAME.pth, as a safe part of a file name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", pathlib.Path(path).stem)[:64]
    return f"torch-{stem}"


def evaluate_run(workdir, step=None, best=False, batch_size=None, confusion_png=True,
                 torch_weights=None, config_file=None, tensorboard=None, tta_level=None) -> dict:
    """Evaluates one checkpoint of `workdir` on its config's test split; see the module doc.

    Returns the figures printed by the command (`top1`, `top5`, `loss`, `params`,
    `param_bytes`, `step`, `epoch`, `per_class`, ...) and writes the confusion figure
    (cifar_jax.confusion) to WORKDIR/confusion-stepN.png (confusion-torch-NAME.png for
    --torch-weights NAME.pth) unless `confusion_png` is False, and (`tensorboard`, by default as `confusion_png`)
    the figures and that image to WORKDIR/tensorboard at the checkpoint's epoch (not for
    --torch-weights). `tta_level` (default: the run's `tta_level`) averages the logits of
    test-time views (0 none, 1 mirror, 2 mirror and translations; cifar_jax.augment.tta_logits).
    Raises CifarJaxError for unusable input, before writing anything.
    """
    from cifar_jax.data import load_dataset  # readers are heavy; only when evaluating

    if batch_size is not None and batch_size < 1:
        raise CifarJaxError(f"--batch-size {batch_size} must be a positive integer")
    if torch_weights:
        variables, config, info = _torch_variables(torch_weights, workdir, config_file)
    else:
        info = checkpoint.checkpoint_info(workdir, step=step, best=best)
        variables, config = checkpoint.restore(workdir, step=info["step"], variables_only=True)
    data = load_dataset(config)
    labels = np.asarray(data.test_labels)
    tta_level = config.tta_level if tta_level is None else tta_level
    logits = compute_logits(variables, config, data.test_images, batch_size or config.eval_batch_size, tta_level)
    predictions = logits.argmax(axis=1)
    matrix = confusion_matrix(predictions, labels, data.num_classes)
    counts = matrix.sum(axis=1)
    per_class = np.divide(np.diag(matrix), counts, out=np.full(len(counts), np.nan), where=counts > 0)
    count, size = parameter_summary(variables["params"])
    result = {
        "workdir": str(workdir) if workdir else None,  # None: --torch-weights with --config only
        "checkpoint": info["path"],
        "step": info["step"],
        "epoch": info["epoch"],
        "dataset": config.dataset,
        "num_test": int(len(labels)),
        "tta_level": int(tta_level),
        "top1": float(top_k_correct(logits, labels, 1).mean()),
        "top5": float(top_k_correct(logits, labels, min(5, data.num_classes)).mean()),
        "loss": cross_entropy(logits, labels),
        "params": int(count),
        "param_float32_bytes": int(size),
        "param_bytes": info["param_bytes"],
        "per_class": {name: (None if np.isnan(a) else float(a))
                      for name, a in zip(data.class_names, per_class)},
    }
    if confusion_png and workdir:
        from cifar_jax.confusion import write_confusion

        path = pathlib.Path(workdir) / confusion_file(_torch_source(torch_weights) if torch_weights else info["step"])
        result["confusion_png"] = str(write_confusion(path, matrix, data.class_names))
    if (confusion_png if tensorboard is None else tensorboard) and workdir and not torch_weights:
        from cifar_jax.tensorboard import write_evaluation

        events = write_evaluation(workdir, result, result.get("confusion_png"))
        if events is not None:
            result["tensorboard"] = str(events)
    return result


def format_report(result: dict) -> str:
    size = result["param_bytes"]
    lines = [
        f"Checkpoint: {result['checkpoint']}"
        + ("" if result["step"] is None else f" (step {result['step']}, epoch {result['epoch']})"),
        f"Model: {result['params']:,} parameters; saved params on disk: {size:,} bytes "
        f"({size / 1e6:.2f} MB, {size / 2**20:.2f} MiB)",
        f"Test set: {result['num_test']:,} images of {result['dataset']}"
        + (f", test-time augmentation level {result['tta_level']}" if result.get("tta_level") else ""),
        f"top-1 accuracy: {result['top1']:.4f}",
        f"top-5 accuracy: {result['top5']:.4f}",
        f"test loss: {result['loss']:.4f}",
        "Per-class accuracy:",
    ]
    items = [f"{name[:18]:<18} {'   n/a' if acc is None else f'{acc:6.1%}'}"
             for name, acc in result["per_class"].items()]
    for start in range(0, len(items), 4):
        lines.append("  " + "   ".join(items[start : start + 4]))
    if "confusion_png" in result:
        lines.append(f"Confusion matrix, per-class accuracy and most confused pairs: {result['confusion_png']}")
    if "tensorboard" in result:
        lines.append(f"TensorBoard events: {result['tensorboard']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=command("evaluate"), description=DESCRIPTION)
    parser.add_argument("--workdir", help="the --workdir of a training run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="the train step of a checkpoint (default: latest)")
    which.add_argument("--best", action="store_true", help="the checkpoint with the best test accuracy")
    which.add_argument("--torch-weights", help="a PyTorch state_dict (.pth) of the seed's ResNet9")
    parser.add_argument("--config", help="with --torch-weights and no --workdir: a config file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch-size", type=int, help="default: the run's eval_batch_size")
    parser.add_argument("--tta", type=int, choices=TTA_LEVELS, metavar="LEVEL",
                        help="test-time augmentation: 0 none, 1 mirror, 2 mirror and translated views "
                             "(default: the run's tta_level)")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if not args.workdir and not (args.torch_weights and args.config):
            parser.error("pass --workdir DIR (or --torch-weights FILE with --config FILE)")
        quiet_orbax()
        result = evaluate_run(args.workdir, args.step, args.best, args.batch_size,
                              torch_weights=args.torch_weights, config_file=args.config, tta_level=args.tta)
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
