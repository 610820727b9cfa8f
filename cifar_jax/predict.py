"""`python -m cifar_jax.predict --workdir DIR [--step N | --best] IMAGE...`

Prints the 5 most likely classes, with probabilities, for each image file, using a
checkpoint of the run in DIR (default: the latest). Images of any size and mode are
accepted: each is converted to RGB and resized to 32x32 with Pillow's bilinear filter
(`cifar_jax.data.pixels.to_rgb32`, the step the data layer applies to image folders),
then normalised with the run's mean and std and, for a run with `image_size` other than
32 (a pretrained model), resized to it on the device as in training (cifar_jax.evaluate.
compute_logits). Every file is read before the model is
restored; one that is not an image ends the command with a one-line error (exit 2).
"""
from __future__ import annotations

import pathlib
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifar_jax import checkpoint
from cifar_jax.data.pixels import to_rgb32
from cifar_jax.cli_common import ArgumentParser, quiet_orbax
from cifar_jax.errors import CifarJaxError
from cifar_jax.evaluate import compute_logits
from cifar_jax.invocation import command

TOP_K = 5
DESCRIPTION = (
    "Print the 5 most likely classes, with probabilities, of each image file, using a checkpoint "
    "of the run in --workdir (default: its latest). Images of any size and mode are converted to "
    "RGB and resized to 32x32, as the data layer does for image folders.")


def read_image(path) -> tuple[np.ndarray, str]:
    """(32, 32, 3) uint8 array of an image file, and a description of the original."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise CifarJaxError(f"{path} does not exist or is not a file; pass image files")
    try:
        with Image.open(file) as image:
            image.load()
            described = f"{image.width}x{image.height} {image.mode}"
            return to_rgb32(image), described
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CifarJaxError(f"{path} is not an image Pillow can read ({reason})") from None


def _class_names(workdir, info: dict, config) -> list[str]:
    if info.get("class_names"):
        return list(info["class_names"])
    try:  # checkpoints saved without class names: ask the dataset
        from cifar_jax.data import load_dataset

        return list(load_dataset(config).class_names)
    except CifarJaxError:
        return [f"class {i}" for i in range(config.num_classes)]


def predict(workdir, paths: Sequence[str], step: Optional[int] = None, best: bool = False, k: int = TOP_K):
    """For each path, (description, [(class name, probability), ...] best first)."""
    images, described = zip(*(read_image(path) for path in paths)) if paths else ((), ())
    info = checkpoint.checkpoint_info(workdir, step=step, best=best)
    variables, config = checkpoint.restore(workdir, step=info["step"], variables_only=True)
    names = _class_names(workdir, info, config)
    logits = compute_logits(variables, config, np.stack(images), batch_size=16)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    results = []
    for description, row in zip(described, probabilities):
        top = np.argsort(-row, kind="stable")[: min(k, len(row))]
        results.append((description, [(names[i], float(row[i])) for i in top]))
    return info, results


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=command("predict"), description=DESCRIPTION)
    parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="the train step of a checkpoint (default: latest)")
    which.add_argument("--best", action="store_true", help="the checkpoint with the best test accuracy")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        quiet_orbax()
        info, results = predict(args.workdir, args.images, args.step, args.best)
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Checkpoint: {info['path']} (step {info['step']}, epoch {info['epoch']})")
    for path, (description, top) in zip(args.images, results):
        print(f"{path} ({description}, resized to 32x32 RGB):")
        for name, probability in top:
            print(f"  {name:<24} {probability:7.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
