"""`python -m cifar_jax.train --config configs/default.py --workdir runs/seed`

The outer loop: data to the device, compiled runs of steps (cifar_jax.epoch), evaluation,
logging. Side effects (files, printing, progress) live here; the steps are pure.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from cifar_jax import checkpoint, faults, hosts, report, run_files, workdir_lock, zoo
from cifar_jax import epoch as fast
from cifar_jax.config import parse_command_line, training_changes, validate_config
from cifar_jax.data import load_dataset
from cifar_jax.errors import CifarJaxError
from cifar_jax.steps import TrainState, create_train_state

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


def evaluate(state: TrainState, images, labels, batch_size: int, sharding=None) -> dict:
    """Exact loss and accuracy over a device-resident test set (one compiled call where
    the backend runs loops well, one per batch on CPU)."""
    order, mask = fast.pad_to_batches(jnp.arange(len(labels)), batch_size)
    if sharding is not None:
        order, mask = fast.replicate((order, mask), sharding.mesh)
    size = fast.scan_length(len(order), 1)
    results = [
        fast.eval_batches(state, images, labels, order[i : i + size], mask[i : i + size], sharding=sharding)
        for i in range(0, len(order), size)
    ]
    merged = {key: np.concatenate([r[key] for r in hosts.fetch(results)]) for key in results[0]}
    return {"loss": fast.weighted_mean(merged, "loss"), "accuracy": fast.weighted_mean(merged, "accuracy")}


def train_epoch(state, images, labels, order, mask, rng, calls: int, desc: str, sharding=None, stop=None):
    """One pass over the data in `calls` equal compiled runs of steps.

    The host stays one call ahead of the device: it waits for the previous call only to
    advance the progress bar, while the next is already queued. Each finished call's
    `finite` flags are checked then (no extra sync): a NaN/inf step raises _NonFinite
    unless the state skips such steps. A set `stop` (faults.StopRequest) ends the epoch at
    the next call boundary: the summary is then None and the state a partial epoch's.
    """
    steps, batch = order.shape
    order = order.reshape(calls, steps // calls, batch)
    mask = mask.reshape(calls, steps // calls, batch)
    results = []  # each finished call's metrics, on the host, fetched once

    def finish(metrics):  # waits for that call only
        results.append(hosts.fetch(metrics))
        _check_finite(state, results[-1], (len(results) - 1) * (steps // calls))
        bar.update(steps // calls)

    with tqdm(total=steps, desc=desc, leave=False, disable=not hosts.is_primary()) as bar:
        pending = None  # the metrics of the call the device is still running
        for call in range(calls):
            if stop and call:
                return state, None
            state, metrics = fast.train_steps(state, images, labels, order[call], mask[call], rng, sharding=sharding)
            if pending is not None:
                finish(pending)
            pending = metrics
        finish(pending)
    merged = {key: [x for r in results for x in r[key]] for key in results[0]}
    finite = np.asarray(merged.get("finite", np.ones(steps, bool)), bool)
    # Skipped (non-finite) steps count for nothing in the means.
    merged["count"] = np.where(finite, np.asarray(merged["count"], np.float64), 0.0)
    merged["loss"] = np.where(finite, np.asarray(merged["loss"], np.float64), 0.0)
    summary = {
        "loss": fast.weighted_mean(merged, "loss") if finite.any() else float("nan"),
        "accuracy": fast.weighted_mean(merged, "accuracy") if finite.any() else float("nan"),
        "last_lr": float(merged["learning_rate"][-1]),
        "skipped_steps": int(np.sum(~finite)),
    }
    return state, summary


class _NonFinite(Exception):
    def __init__(self, index: int, learning_rate: float):
        self.index, self.learning_rate = index, learning_rate


def _check_finite(state, metrics, first_index: int) -> None:
    """Raises _NonFinite (index within the epoch) at a call's first NaN/inf step."""
    if getattr(state, "skip_nonfinite", False):
        return
    bad = faults.first_nonfinite(metrics)
    if bad is not None:
        lr = float(np.asarray(metrics["learning_rate"]).reshape(-1)[bad])
        raise _NonFinite(first_index + bad, lr)


def parameter_summary(params) -> tuple[int, int]:
    """(number of parameters, bytes they occupy)."""
    leaves = jax.tree.leaves(params)
    return sum(x.size for x in leaves), sum(x.size * x.dtype.itemsize for x in leaves)


def _check_workdir(workdir: str, config) -> pathlib.Path:
    """The workdir as a Path; refuses a file, or a run trained with a different config."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise CifarJaxError(f"workdir {workdir} is a file; pass a directory to --workdir")
    saved_file = path / CONFIG_FILE
    if saved_file.exists():
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CifarJaxError(f"{saved_file} is not readable JSON ({type(error).__name__}); restore it "
                                "from a copy of the run, or pass a new --workdir") from None
        if not isinstance(saved, dict):
            raise CifarJaxError(f"{saved_file} does not hold a config object; pass a new --workdir")
        changed = training_changes(saved, json.loads(config.to_json()))
        if changed:
            raise CifarJaxError(
                f"workdir {workdir} holds a run with a different config ({', '.join(changed)}); "
                "rerun with the same config to resume, or pass a new --workdir"
            )
    elif (path / METRICS_FILE).exists():
        raise CifarJaxError(
            f"workdir {workdir} holds metrics but no {CONFIG_FILE}; pass a new --workdir"
        )
    return path


def _keep_metrics_before(path: pathlib.Path, epoch: int) -> None:
    """Drops metric lines of epochs that a resumed run will train again."""
    file = path / METRICS_FILE
    if file.exists():
        lines = [line for line in file.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] < epoch]
        if kept != lines:
            run_files.write_text_atomically(file, "".join(line + "\n" for line in kept))


def enable_compilation_cache(cache_dir: str) -> None:
    """Turns on JAX's persistent compilation cache in `cache_dir`, so a rerun of the same
    config loads its compiled steps instead of compiling them. A cache directory set
    through JAX's own config or JAX_COMPILATION_CACHE_DIR wins; "" turns this off."""
    if cache_dir and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))


def train_and_evaluate(config, workdir: str) -> TrainState:
    """Trains as `config` says, evaluating on the test set after every epoch.

    Writes `config.json` (the resolved config), `metrics.jsonl` (one line per epoch),
    checkpoints (cifar_jax.checkpoint) and `curves.png` into `workdir`, and returns the
    final train state. A workdir that holds checkpoints of the same config is resumed
    from its newest intact one. Uses every device: with more than one, batches are split
    over them and the state is replicated; after jax.distributed.initialize(), the
    devices of every process (cifar_jax.hosts; process 0 writes the files).
    """
    validate_config(config)
    zoo.check_param_budget(config)  # max_param_mb, from shapes only: before anything is written
    path = _check_workdir(workdir, config)
    primary = hosts.is_primary()  # with several processes, only process 0 writes files
    created = primary and not path.exists()
    if primary:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise run_files.write_error(path, error) from None
    # One training run per workdir, taken before the slow parts.
    lock = workdir_lock.acquire(path) if primary else None
    try:
        _check_workdir(workdir, config)  # again: the previous owner may have just written it
        state = _run(config, path)
    finally:
        if lock is not None:
            workdir_lock.release(lock)
        if created:  # a run that failed before writing anything leaves no empty workdir
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds if empty
    if primary:
        report.write_curves(path)
    return state


def _run(config, path: pathlib.Path) -> TrainState:
    """Everything of train_and_evaluate between taking the workdir's lock and releasing it."""
    enable_compilation_cache(config.xla_cache_dir)
    mesh = fast.data_mesh()
    fast.check_divisible(config.batch_size, mesh, "batch_size")
    fast.check_divisible(config.eval_batch_size, mesh, "eval_batch_size")
    start = time.perf_counter()
    data = load_dataset(config)  # also checks num_classes against the data
    num_train = len(data.train_labels)
    say(
        f"Data: {config.dataset}, {num_train} train / {len(data.test_labels)} test "
        f"images of {data.train_images.shape[1:]}, {data.num_classes} classes "
        f"({time.perf_counter() - start:.1f}s to load)"
    )

    steps_per_epoch = math.ceil(num_train / config.batch_size)
    init_rng, augment_rng, data_key = jax.random.split(jax.random.key(config.seed), 3)
    state = create_train_state(init_rng, config, steps_per_epoch, data.train_images.shape[1:])
    count, size = parameter_summary(state.params)
    devices = "1 device" if mesh is None else f"{mesh.size} devices, data parallel"
    if hosts.multi_process():
        devices += f" over {jax.process_count()} processes"
    say(f"Model: {config.get('model', 'resnet9')} width {config.width}, {count:,} parameters, "
          f"{size / 1e6:.2f} MB ({size / 2**20:.1f} MiB) as float32; {config.dtype} compute on {devices}")

    if hosts.is_primary():
        run_files.write_text_atomically(path / CONFIG_FILE, config.to_json(indent=2))
    checkpoints = checkpoint.open_manager(path, config)
    try:
        with faults.catch_signals() as stop:
            return _train_epochs(config, path, data, state, checkpoints, mesh, augment_rng, data_key, stop)
    finally:
        checkpoint.close(checkpoints)  # waits for the last save to reach the disk


def _train_epochs(config, path, data, state, checkpoints, mesh, augment_rng, data_key, stop=None):
    """The epochs still to train: from the newest intact checkpoint on, or from 0.

    On SIGINT/SIGTERM (`stop`), stops at the next compiled-call boundary, makes sure the
    last completed epoch is checkpointed (a partial epoch is dropped: a rerun trains it
    again from its start) and raises faults.TrainingInterrupted. On a NaN/inf step (and
    skip_nonfinite_steps off), raises faults.NonFiniteError before anything is saved.
    """
    start_epoch = 0
    last_saved = None  # (epoch, step) of the newest checkpoint this run can resume from
    unsaved = None  # a copy of the last completed epoch's state, when the policy skipped it
    resume = checkpoint.restore_latest_for_resume(checkpoints, state)
    if resume is not None:
        last_saved = (resume.next_epoch - 1, resume.step)
        state, start_epoch = resume.state, resume.next_epoch
        augment_rng, data_key = resume.rngs["augment"], resume.rngs["data"]
        say(f"Resuming after epoch {start_epoch - 1} (step {resume.step}) from {checkpoints.directory}")
    if hosts.is_primary():
        _keep_metrics_before(path, start_epoch)
    num_train = len(data.train_labels)
    steps_per_epoch = math.ceil(num_train / config.batch_size)

    state, augment_rng, data_key = fast.replicate((state, augment_rng, data_key), mesh)
    train_images, train_labels, test_images, test_labels = fast.replicate(
        (data.train_images, data.train_labels, data.test_images, data.test_labels), mesh
    )
    sharding = fast.batch_sharding(mesh)
    calls = steps_per_epoch // fast.scan_length(steps_per_epoch, config.progress_updates)
    rngs = {"augment": augment_rng, "data": data_key}
    for epoch in range(start_epoch, config.num_epochs):
        if stop:
            _stop(stop, checkpoints, unsaved, last_saved, rngs, data, steps_per_epoch)
        epoch_start = time.perf_counter()
        order, mask = fast.epoch_order(data_key, epoch, num_train, config.batch_size)
        try:
            state, train = train_epoch(
                state, train_images, train_labels, order, mask, augment_rng, calls, f"epoch {epoch}", sharding,
                stop,
            )
        except _NonFinite as bad:
            checkpoint.wait(checkpoints)
            raise _nonfinite_error(bad, epoch * steps_per_epoch, epoch, last_saved, checkpoints) from None
        if train is None:  # stopped mid-epoch: that epoch is dropped
            _stop(stop, checkpoints, unsaved, last_saved, rngs, data, steps_per_epoch)
        train_seconds = time.perf_counter() - epoch_start
        test = evaluate(state, test_images, test_labels, config.eval_batch_size, sharding)
        record = _epoch_record(epoch, state, train, test, train_seconds, time.perf_counter() - epoch_start)
        _log_epoch(path, record)
        if checkpoint.save(
            checkpoints, state, epoch, record,
            rngs=rngs, class_names=data.class_names,
            steps_per_epoch=steps_per_epoch,
        ):
            last_saved, unsaved = (epoch, epoch * steps_per_epoch + steps_per_epoch), None
        else:  # kept in case a signal comes in the next epoch (only when saving every N > 1)
            unsaved = (checkpoint.device_copy(state), epoch, record)
    if stop:
        _stop(stop, checkpoints, unsaved, last_saved, rngs, data, steps_per_epoch)
    return state


def _epoch_record(epoch: int, state, train: dict, test: dict, train_seconds: float, epoch_seconds: float) -> dict:
    """The epoch's line of metrics.jsonl."""
    return {
        "epoch": epoch,
        "step": int(hosts.local_value(state.step)),
        "last_lr": train["last_lr"],
        "train_loss": train["loss"],
        "train_acc": train["accuracy"],
        "skipped_steps": train["skipped_steps"],
        "test_loss": test["loss"],
        "test_acc": test["accuracy"],
        "train_seconds": train_seconds,
        "epoch_seconds": epoch_seconds,
    }


def _log_epoch(path: pathlib.Path, record: dict) -> None:
    """Prints the seed's epoch line and appends the record to metrics.jsonl."""
    say(
        f"Epoch [{record['epoch']}], last_lr: {record['last_lr']:.5f}, train_loss: {record['train_loss']:.4f}, "
        f"test_loss: {record['test_loss']:.4f}, test_acc: {record['test_acc']:.4f} "
        f"({record['epoch_seconds']:.2f}s)"
        + (f", skipped {record['skipped_steps']} non-finite steps" if record["skipped_steps"] else "")
    )
    if hosts.is_primary():
        run_files.append_line(path / METRICS_FILE, json.dumps(record))


def _nonfinite_error(bad: _NonFinite, first_step: int, epoch: int, last_saved, checkpoints) -> faults.NonFiniteError:
    where = (f"checkpoint step {last_saved[1]} (epoch {last_saved[0]}) in {checkpoints.directory}; "
             "a rerun resumes from it" if last_saved else "none (no epoch finished)")
    return faults.NonFiniteError(
        f"loss or gradients became NaN/inf at step {first_step + bad.index} "
        f"(epoch {epoch}, learning rate {bad.learning_rate:.6g}); stopped without saving that "
        f"state; last good checkpoint: {where}; lower --config.learning_rate or set "
        "--config.skip_nonfinite_steps=true to skip such steps"
    )


def _stop(stop, checkpoints, unsaved, last_saved, rngs, data, steps_per_epoch):
    """Saves the last completed epoch if the policy had skipped it; raises TrainingInterrupted."""
    if unsaved is not None:
        state, epoch, record = unsaved
        checkpoint.save(checkpoints, state, epoch, record, rngs=rngs, class_names=data.class_names,
                        steps_per_epoch=steps_per_epoch, force=True)
        last_saved = (epoch, (epoch + 1) * steps_per_epoch)
    checkpoint.wait(checkpoints)
    if last_saved is None:
        where = "no epoch had finished, so nothing was saved; rerun the same command to start again"
    else:
        where = (f"checkpoint step {last_saved[1]} (after epoch {last_saved[0]}) is in "
                 f"{checkpoints.directory}; rerun the same command to resume")
    raise faults.TrainingInterrupted(stop.signum, f"interrupted by {stop.name}: {where}")


def say(text: str) -> None:
    """Prints a line of the run's log (above the progress bar), in the primary process only."""
    if hosts.is_primary():
        tqdm.write(text)


def main(argv: list[str] | None = None) -> int:
    try:
        hosts.initialize_from_env()  # several processes: JAX_NUM_PROCESSES etc. (cifar_jax.hosts)
        config, workdir = parse_command_line(sys.argv[1:] if argv is None else argv)
        train_and_evaluate(config, workdir)
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except faults.TrainingInterrupted as stopped:
        print(stopped, file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:  # Ctrl-C before training started (data loading, compiling)
        print("interrupted by SIGINT before training started; nothing was saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
