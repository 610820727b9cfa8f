"""TensorBoard event files in WORKDIR/tensorboard/, written with tensorboardX's protos
(no TensorFlow). View them with `pip install tensorboard; tensorboard --logdir WORKDIR/tensorboard`.

metrics.jsonl stays the source of truth. A training run, each time it starts (fresh,
resumed or rerun), deletes its own event files and rewrites every epoch that
metrics.jsonl holds, then appends each epoch after its metrics line: a resumed run
continues the same curves with no duplicate points. Scalars are indexed by epoch:

    train/loss, train/accuracy, test/loss, test/accuracy, optimizer/lr, optimizer/beta1
    (Adam's beta1 or SGD's momentum), speed/images_per_second, speed/epoch_seconds

`evaluate` writes its own file per evaluated checkpoint (replaced when the same step is
evaluated again): evaluate/top1, evaluate/top5, evaluate/loss, evaluate/per_class/<class>
and the confusion matrix image, at the checkpoint's epoch.

Writes are synchronous, one append per epoch (no writer thread, nothing to close). An
error writing them (disk full, read-only folder) prints one warning line and stops the
TensorBoard files only: they are a view of metrics.jsonl, rebuilt on the next start, so
stopping a run for them would lose training for nothing. (A failure to write
metrics.jsonl or config.json still ends the run, exit 2.)
"""
from __future__ import annotations

import io
import os
import pathlib
import socket
import struct
import sys
import time

from cifar_jax.run_layout import TENSORBOARD_DIR

TRAIN_SUFFIX = ".train"  # the training run's event file: events.out.tfevents.<time>.<host>.train
# (tag, metrics.jsonl key): the per-epoch scalars read straight from a record.
SCALARS = (
    ("train/loss", "train_loss"),
    ("train/accuracy", "train_acc"),
    ("test/loss", "test_loss"),
    ("test/accuracy", "test_acc"),
    ("optimizer/lr", "last_lr"),
    ("optimizer/beta1", "last_beta1"),
    ("speed/epoch_seconds", "epoch_seconds"),
)


_PROTOS = None


def _protos():
    """tensorboardX's event and summary protos. tensorboardX's package __init__ tries
    `import torch` (to accept torch tensors, which this module never passes): hidden
    when torch is not already loaded, since it costs seconds of start-up (0.6 s against
    about 7 s measured on a loaded 2-core machine with torch installed)."""
    global _PROTOS
    if _PROTOS is not None:
        return _PROTOS
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.record_writer import masked_crc32c
    finally:
        if hide:
            sys.modules.pop("torch", None)
    _PROTOS = event_pb2, summary_pb2, masked_crc32c
    return _PROTOS


def _record(data: bytes, masked_crc32c) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class EventFile:
    """An event file that each `write` appends to (and closes again). The first OSError
    prints one warning line to stderr; every later write is skipped."""

    def __init__(self, directory, suffix: str):
        self.directory = pathlib.Path(directory)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}{suffix}"
        self.path = self.directory / name
        self.failed = False
        self._started = False

    def write(self, step: int, values: list, wall_time: float | None = None) -> None:
        """Appends one event at `step` holding `values` (summary_pb2.Summary.Value)."""
        if self.failed or not values:
            return
        event_pb2, summary_pb2, crc = _protos()
        events = []
        if not self._started:  # TensorBoard expects the file_version event first
            events.append(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        events.append(event_pb2.Event(wall_time=time.time() if wall_time is None else wall_time, step=step,
                                      summary=summary_pb2.Summary(value=values)))
        data = b"".join(_record(event.SerializeToString(), crc) for event in events)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as file:
                file.write(data)
        except OSError as error:
            self.warn(error)
            return
        self._started = True

    def warn(self, error: OSError) -> None:
        self.failed = True
        reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
        print(f"warning: cannot write TensorBoard events to {self.directory} ({reason}); training goes on "
              "without them (metrics.jsonl has every epoch; the next start rewrites them)", file=sys.stderr)


def scalar(tag: str, value) -> object:
    _, summary_pb2, _ = _protos()
    return summary_pb2.Summary.Value(tag=tag, simple_value=float(value))


def png_image(tag: str, png: bytes) -> object:
    """An image value from PNG bytes (as written to disk: shown as is)."""
    from PIL import Image

    _, summary_pb2, _ = _protos()
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        channels = len(image.getbands())
    return summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
        height=height, width=width, colorspace=channels, encoded_image_string=png))


def epoch_values(record: dict, num_train: int | None) -> list:
    """The scalars of one metrics.jsonl record (keys it lacks are left out)."""
    values = [scalar(tag, record[key]) for tag, key in SCALARS if record.get(key) is not None]
    if num_train and record.get("train_seconds"):
        values.append(scalar("speed/images_per_second", num_train / record["train_seconds"]))
    return values


class TrainingCurves:
    """The training run's per-epoch scalars (`add_epoch`), rebuilt from `records` (the
    metrics.jsonl lines kept when the run starts) on creation. Disabled (a no-op) when
    `enabled` is False: processes other than the primary write no files."""

    def __init__(self, workdir, num_train: int, records: list[dict], enabled: bool = True):
        self.num_train = num_train
        self.file = None
        if not enabled:
            return
        directory = pathlib.Path(workdir) / TENSORBOARD_DIR
        self.file = EventFile(directory, TRAIN_SUFFIX)
        try:
            for old in directory.glob(f"events.out.tfevents.*{TRAIN_SUFFIX}"):
                old.unlink()
        except OSError as error:
            self.file.warn(error)
        for record in records:
            self.add_epoch(record)

    def add_epoch(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(int(record["epoch"]), epoch_values(record, self.num_train),
                            wall_time=None)


def write_evaluation(workdir, result: dict, confusion_png: pathlib.Path | None = None) -> pathlib.Path | None:
    """Adds an evaluation of one checkpoint (evaluate_run's result) at its epoch, in a file
    of its own that replaces an earlier evaluation of the same step; the file's path, or
    None when nothing could be written (one warning line)."""
    directory = pathlib.Path(workdir) / TENSORBOARD_DIR
    suffix = f".evaluate-step{result['step']}"
    file = EventFile(directory, suffix)
    try:
        for old in directory.glob(f"events.out.tfevents.*{suffix}"):
            old.unlink()
    except OSError as error:
        file.warn(error)
        return None
    values = [scalar(f"evaluate/{key}", result[key]) for key in ("top1", "top5", "loss")]
    values += [scalar(f"evaluate/per_class/{name.replace('/', '_')}", accuracy)
               for name, accuracy in result["per_class"].items() if accuracy is not None]
    if confusion_png is not None:
        try:
            values.append(png_image("evaluate/confusion", pathlib.Path(confusion_png).read_bytes()))
        except OSError as error:
            file.warn(error)
            return None
    file.write(int(result["epoch"]), values)
    return None if file.failed else file.path
