"""`python -m cifar_jax.train ... --dry-run`: what a run would do, without doing it.

Prints the resolved config, the model's size (from shapes: jax.eval_shape, nothing is
compiled), the data source and where it is (or the URL it would be downloaded from),
steps per epoch, devices and dtype, and what would happen to the workdir. Nothing is
trained, downloaded or written; the workdir is neither created nor locked. Exit status
0 when the run would start, 2 (with the reason as the last line, `error: ...`) when it
would be refused.
"""
from __future__ import annotations

import math
import pathlib
import sys

import jax

from cifar_jax import checkpoint, models, multistep, run_dir, workdir_lock
from cifar_jax.config import check_batch_size
from cifar_jax.config_help import ordered_items, shown
from cifar_jax.data.cifar_archive import VARIANTS, find_cifar
from cifar_jax.data.cifar_download import resolve_data_dir, resolve_url
from cifar_jax.errors import CifarJaxError

# (train, test) images and classes of the official archives.
CIFAR_SIZES = {"cifar10": (50_000, 10_000, 10), "cifar100": (50_000, 10_000, 100)}


class _Refused(Exception):
    """A reason the run would not start (the plan goes on, to show everything)."""


def plan(config, workdir: str) -> tuple[list[str], list[str]]:
    """(lines to print, reasons the run would be refused) for `config` and `workdir`."""
    lines = ["Dry run: nothing is trained, downloaded or written.", "Config:"]
    lines += [f"  {key}={shown(value)}" for key, value in ordered_items(config)]
    refusals: list[str] = []

    def section(title, describe):
        try:
            lines.append(f"{title}: {describe()}")
        except (_Refused, CifarJaxError) as refusal:
            lines.append(f"{title}: refused: {refusal}")
            refusals.append(str(refusal))

    section("Model", lambda: _model(config))
    sizes = {}
    section("Data", lambda: _data(config, sizes))
    section("Steps", lambda: _steps(config, sizes.get("train")))
    section("Devices", lambda: _devices(config))
    section("Workdir", lambda: _workdir(config, workdir))
    return lines, refusals


def dry_run(config, workdir: str) -> int:
    """Prints the plan; 0 if the run would start, else 2 with `error: REASON` on stderr."""
    lines, refusals = plan(config, workdir)
    print("\n".join(lines))
    if refusals:
        print(f"error: a run would be refused: {refusals[0]}", file=sys.stderr)
        return 2
    return 0


def _model(config) -> str:
    count = models.param_count(models.build(config.model, config.num_classes, config.width, config.dtype))
    size = count * 4
    text = (f"{config.model} width {config.width:g}, {config.num_classes} classes: {count:,} parameters, "
            f"{size / 1e6:.2f} MB ({size / 2**20:.1f} MiB) as float32")
    limit = config.max_param_mb
    if limit and limit > 0 and size / 1e6 > limit:
        raise _Refused(f"{text}, over max_param_mb={limit:g}; pick a smaller model or width, or raise "
                       "--config.max_param_mb (0 disables the limit)")
    return text


def _data(config, sizes: dict) -> str:
    name = config.dataset
    if name in CIFAR_SIZES:
        variant = VARIANTS[name]
        train, test, classes = CIFAR_SIZES[name]
        if config.num_classes != classes:
            raise _Refused(f"{name} has {classes} classes but num_classes={config.num_classes}; "
                           f"pass --config.num_classes={classes}")
        sizes["train"] = train
        data_dir = resolve_data_dir(config.data_dir)
        found = find_cifar(variant, data_dir)
        counts = f"{train:,} train / {test:,} test images"
        if found is not None:
            return f"{name} from {found} ({counts})"
        url = resolve_url(variant, config.data_url)
        if not config.download:
            raise _Refused(f"no {variant.archive} (or extracted {variant.folder}/) in {data_dir} and "
                           f"download=False: download {url} and put it at {data_dir / variant.archive}, "
                           "or pass --config.download=True")
        return (f"{name} is not in {data_dir}: a run would download {url} "
                f"({variant.size / 1e6:.0f} MB) to {data_dir / variant.archive} ({counts})")
    if name == "synthetic":
        sizes["train"] = config.synthetic_train_size
        return (f"synthetic, generated in memory: {config.synthetic_train_size:,} train / "
                f"{config.synthetic_test_size:,} test images, {config.num_classes} classes")
    if name == "image_folder":
        return _image_folder(config, sizes)
    if isinstance(name, str) and name.startswith("tfds:") and name[5:]:
        return _tfds(name[5:], config, sizes)
    from cifar_jax.data.types import DATASETS

    raise _Refused(f"unknown dataset {name!r}; pass --config.dataset= one of {', '.join(DATASETS)}")


def _image_folder(config, sizes: dict) -> str:
    from cifar_jax.data import image_folder

    if not config.data_dir:
        raise _Refused("dataset=image_folder needs --config.data_dir=PATH: a folder or .tar/.tar.gz/.zip "
                       f"archive laid out as {image_folder.LAYOUT}")
    source = pathlib.Path(config.data_dir).expanduser().absolute()
    if not source.exists():
        raise _Refused(f"image_folder data_dir {source} does not exist")
    if source.is_file() and not source.name.lower().endswith(image_folder.ARCHIVE_SUFFIXES):
        raise _Refused(f"image_folder data_dir {source} is not a folder or a .tar, .tar.gz, .tgz or .zip archive")
    # Names only (a folder's files, an archive's member list): nothing is decoded, no cache written.
    layout = image_folder.archive_layout(source) if source.is_file() else image_folder.folder_layout(source)
    train = sum(len(files) for files in layout["train"].values())
    test = sum(len(files) for files in layout["test"].values())
    classes = len(layout["train"])
    sizes["train"] = train
    kind = "archive " if source.is_file() else ""
    text = f"image_folder {kind}{source}: {train:,} train / {test:,} test images, {classes} classes"
    if classes != config.num_classes:
        raise _Refused(f"{text}, but num_classes={config.num_classes}; pass --config.num_classes={classes}")
    return text


def _tfds(name: str, config, sizes: dict) -> str:
    where = str(pathlib.Path(config.data_dir).expanduser().absolute()) if config.data_dir else None
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=where)
        if builder.is_prepared():
            splits = builder.info.splits
            sizes["train"] = splits["train"].num_examples
            return (f"tfds:{name} in {builder.data_dir}: {splits['train'].num_examples:,} train / "
                    f"{splits['test'].num_examples:,} test images")
    except ImportError:
        raise _Refused(f'dataset tfds:{name} needs TFDS: run pip install "cifar-jax[tfds]"') from None
    except Exception as error:  # TFDS fails in many ways: the run's own message will say which
        return f"tfds:{name}: TFDS cannot describe it here ({type(error).__name__}); train size unknown"
    if not config.download:
        raise _Refused(f"tfds:{name} is not prepared in {where or 'the TFDS default data_dir'} and download=False")
    return f"tfds:{name} is not prepared in {where or 'the TFDS default data_dir'}: a run would let TFDS prepare it"


def _steps(config, num_train) -> str:
    if not num_train:
        return f"unknown until the data is read (batch {config.batch_size}, {config.num_epochs} epochs)"
    check_batch_size(config.batch_size, num_train)
    per_epoch = math.ceil(num_train / config.batch_size)
    last = num_train - (per_epoch - 1) * config.batch_size
    return (f"{per_epoch:,} per epoch (batch {config.batch_size}"
            + ("" if last == config.batch_size else f", the last one {last} images, padded and masked")
            + f"), {per_epoch * config.num_epochs:,} in {config.num_epochs} epochs")


def _devices(config) -> str:
    devices = jax.devices()
    mesh = multistep.data_mesh(devices)
    multistep.check_divisible(config.batch_size, mesh, "batch_size")
    multistep.check_divisible(config.eval_batch_size, mesh, "eval_batch_size")
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devices})
    text = f"{len(devices)} {jax.default_backend()} device{'s' if len(devices) > 1 else ''} ({', '.join(kinds)})"
    if mesh is not None:
        text += f", data parallel: {config.batch_size // mesh.size} images per device per step"
    if jax.process_count() > 1:
        text += f", over {jax.process_count()} processes"
    return text + f"; {config.dtype} compute (parameters and BatchNorm statistics float32)"


def _workdir(config, workdir: str) -> str:

    path = pathlib.Path(workdir)
    if not path.exists():
        return f"{workdir} is new: a run creates it and starts at epoch 0"
    run_dir.check_workdir(workdir, config)
    held = workdir_lock.holder(workdir)
    if held is not None:
        raise _Refused(held)
    try:
        info = checkpoint.checkpoint_info(workdir)
    except CifarJaxError:
        info = None  # no config.json, no checkpoints folder, or no checkpoint in it
    if info is None:
        metrics = path / run_dir.METRICS_FILE
        dropped = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        return (f"{workdir} exists with no checkpoint: a run starts at epoch 0"
                + (f" (and drops the {dropped} lines of its metrics.jsonl)" if dropped else ""))
    next_epoch = info["epoch"] + 1
    if next_epoch >= config.num_epochs:
        return (f"{workdir} holds the finished run (checkpoint step {info['step']}, epoch {info['epoch']}): "
                "a run trains nothing (a larger --config.num_epochs trains it longer)")
    return (f"{workdir}: a run resumes after epoch {info['epoch']} at step {info['step']} from {info['path']} "
            f"and trains epochs {next_epoch}..{config.num_epochs - 1} (a damaged newest checkpoint would be "
            "skipped for an older one)")
