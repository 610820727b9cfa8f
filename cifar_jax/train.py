"""`cifar-jax train --config default --workdir runs/seed` (or `python -m cifar_jax.train ...`)

The training loop, `train_and_evaluate`: set up, then for each epoch train (compiled runs
of steps, cifar_jax.multistep), evaluate, log, save. Side effects (files, printing,
signals) live here; the steps are pure.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Optional

import jax
from tqdm import tqdm

from cifar_jax import (checkpoint, faults, hosts, models, multistep, report, run_dir, run_files, run_summary,
                       tensorboard, workdir_lock)
from cifar_jax.config import check_batch_size, resolve_config, split_command_line, validate_config
from cifar_jax.data import load_dataset
from cifar_jax.errors import CifarJaxError
from cifar_jax.models import parameter_summary
from cifar_jax.steps import TrainState, create_train_state, init_from_data



def train_and_evaluate(config, workdir: str) -> TrainState:
    """Trains as `config` says, evaluating on the test set after every epoch.

    A workdir that holds checkpoints of the same config is resumed from its newest intact
    one. Uses every device: with more than one, batches are split over them and the state
    is replicated; after jax.distributed.initialize(), the devices of every process
    (cifar_jax.hosts; process 0 writes the files).

    Args:
      config: a run config (configs/default.py's keys), validated here.
      workdir: the run's folder; receives `config.json` (the resolved config),
        `metrics.jsonl` (one line per epoch), `checkpoints/` (cifar_jax.checkpoint),
        `tensorboard/` and `curves.png`. A run already trained for `config.num_epochs`
        trains nothing (a larger num_epochs trains the epochs it lacks). The end prints a
        summary: accuracy, speed, these paths (cifar_jax.run_summary).

    Returns:
      The final TrainState.

    Raises:
      CifarJaxError: a bad config, data or workdir (one line, before training).
      faults.NonFiniteError: a NaN/inf step (unless `skip_nonfinite_steps`); that state
        is not saved.
      faults.TrainingInterrupted: SIGINT/SIGTERM; the last finished epoch is saved first.
    """
    started = time.perf_counter()
    validate_config(config)
    models.check_param_budget(config)  # max_param_mb, from shapes only: before anything is written
    trained = []  # the records of the epochs this call trains
    with _own_workdir(workdir, config) as path:
        # Set up: devices, data, the model and its optimizer, the checkpoints.
        enable_compilation_cache(config.xla_cache_dir)
        mesh = multistep.data_mesh()
        multistep.check_divisible(config.batch_size, mesh, "batch_size")
        multistep.check_divisible(config.eval_batch_size, mesh, "eval_batch_size")
        data = _load_data(config)
        num_train = len(data.train_labels)
        check_batch_size(config.batch_size, num_train)  # before anything is written: the workdir goes again
        steps_per_epoch = math.ceil(num_train / config.batch_size)
        init_rng, augment_rng, data_key = jax.random.split(jax.random.key(config.seed), 3)
        state = create_train_state(init_rng, config, steps_per_epoch, data.train_images.shape[1:])
        # A data-dependent init (airbench94's whitening conv), before the first step; a resumed
        # run's checkpoint replaces it.
        state = init_from_data(state, config, data.train_images)
        _log_model(config, state, mesh)
        if hosts.is_primary():
            run_files.write_text_atomically(path / run_dir.CONFIG_FILE, config.to_json(indent=2))
        # Closing the checkpoints waits for the last save to reach the disk.
        with checkpoint.open_manager(path, config) as checkpoints, faults.catch_signals() as stop:
            run = RunContext(path, checkpoints, stop, steps_per_epoch, data.class_names,
                             rngs={"augment": augment_rng, "data": data_key})
            state, start_epoch = _resume(run, state)
            if start_epoch >= config.num_epochs and hosts.is_primary():
                say(run_summary.already_complete(path, start_epoch, run.last_saved[1], config.num_epochs))
            run.curves = tensorboard.TrainingCurves(path, num_train, _metric_records(path), hosts.is_primary())
            state, run.rngs = multistep.replicate((state, run.rngs), mesh)
            train_images, train_labels, test_images, test_labels = multistep.replicate(
                (data.train_images, data.train_labels, data.test_images, data.test_labels), mesh)
            sharding = multistep.batch_sharding(mesh)
            calls = steps_per_epoch // multistep.scan_length(steps_per_epoch, config.progress_updates)

            for epoch in range(start_epoch, config.num_epochs):
                if stop:
                    _interrupt(run)
                # Train: one pass in `calls` compiled calls.
                epoch_start = time.perf_counter()
                order, mask = multistep.epoch_order(run.rngs["data"], epoch, num_train, config.batch_size)
                try:
                    state, train = multistep.train_epoch(
                        state, train_images, train_labels, order, mask, run.rngs["augment"], calls,
                        f"epoch {epoch}", sharding, stop)
                except multistep.NonFiniteStep as bad:
                    raise _nonfinite_error(run, bad, epoch) from None
                if train is None:  # stopped mid-epoch: that epoch is dropped
                    _interrupt(run)
                train_seconds = time.perf_counter() - epoch_start
                # Evaluate, log, save.
                test = multistep.evaluate_dataset(state, test_images, test_labels, config.eval_batch_size,
                                                  sharding)
                record = _epoch_record(epoch, state, train, test, train_seconds,
                                       time.perf_counter() - epoch_start)
                _log_epoch(path, record)
                trained.append(record)
                run.curves.add_epoch(record)  # WORKDIR/tensorboard, after metrics.jsonl has the epoch
                _save_epoch(run, state, epoch, record)
            if stop:
                _interrupt(run)
    if hosts.is_primary():
        report.write_curves(path)
        records = _metric_records(path)
        if records:
            say(run_summary.summary(path, records, config.num_epochs, trained, time.perf_counter() - started,
                                    num_train))
    return state


@dataclasses.dataclass
class RunContext:
    """What the loop's helpers share: where the run writes, and what it has saved."""

    path: pathlib.Path
    checkpoints: checkpoint.RunCheckpoints
    stop: faults.StopRequest  # set by SIGINT/SIGTERM
    steps_per_epoch: int
    class_names: tuple
    rngs: dict  # "augment" and "data" keys, saved with every checkpoint
    last_saved: Optional[tuple] = None  # (epoch, step) of the newest checkpoint a rerun resumes from
    unsaved: Optional[tuple] = None  # (state copy, epoch, record) of an epoch the policy did not save
    curves: Optional[tensorboard.TrainingCurves] = None  # WORKDIR/tensorboard, rebuilt from metrics.jsonl


@contextlib.contextmanager
def _own_workdir(workdir: str, config):
    """The workdir as a Path, checked, created and locked while the run lasts (one
    training run per workdir); a run that fails before writing anything leaves no
    empty workdir behind."""
    path = run_dir.check_workdir(workdir, config)
    primary = hosts.is_primary()  # with several processes, only process 0 writes files
    # The folders this run creates (the workdir and any missing parents), innermost first.
    created = [p for p in (path, *path.absolute().parents) if not p.exists()] if primary else []
    if primary:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise run_files.write_error(path, error) from None
    lock = workdir_lock.acquire(path) if primary else None  # taken before the slow parts
    try:
        run_dir.check_workdir(workdir, config)  # again: the previous owner may have just written it
        yield path
    finally:
        if lock is not None:
            workdir_lock.release(lock)
        for folder in created:
            try:
                folder.rmdir()  # only succeeds if empty
            except OSError:
                break


def _load_data(config):
    """The config's dataset (which also checks num_classes against the data), logged."""
    start = time.perf_counter()
    data = load_dataset(config)
    say(
        f"Data: {config.dataset}, {len(data.train_labels)} train / {len(data.test_labels)} test "
        f"images of {data.train_images.shape[1:]}, {data.num_classes} classes "
        f"({time.perf_counter() - start:.1f}s to load)"
    )
    return data


def _log_model(config, state: TrainState, mesh) -> None:
    """Logs the model's size, the compute dtype and the devices."""
    count, size = parameter_summary(state.params)
    devices = "1 device" if mesh is None else f"{mesh.size} devices, data parallel"
    if hosts.multi_process():
        devices += f" over {jax.process_count()} processes"
    say(f"Model: {config.model} width {config.width}, {count:,} parameters, "
        f"{size / 1e6:.2f} MB ({size / 2**20:.1f} MiB) as float32; {config.dtype} compute on {devices}")


def _resume(run: RunContext, state: TrainState) -> tuple[TrainState, int]:
    """(state, first epoch to train): from the newest intact checkpoint, else (state, 0).
    Drops the metric lines of the epochs that will be trained again."""
    start_epoch = 0
    resume = checkpoint.restore_latest_for_resume(run.checkpoints, state)
    if resume is not None:
        run.last_saved = (resume.next_epoch - 1, resume.step)
        state, start_epoch = resume.state, resume.next_epoch
        run.rngs = {"augment": resume.rngs["augment"], "data": resume.rngs["data"]}
        if start_epoch < run.checkpoints.num_epochs:  # else: already complete (said by the caller)
            say(f"Resuming after epoch {start_epoch - 1} (step {resume.step}) from {run.checkpoints.directory}")
    if hosts.is_primary():
        run_dir.keep_metrics_before(run.path, start_epoch)
    return state, start_epoch


def _save_epoch(run: RunContext, state: TrainState, epoch: int, record: dict) -> None:
    """Checkpoints the epoch when the policy says so (every N-th epoch and the last);
    otherwise keeps a copy on the device, saved if a signal stops the next epoch."""
    if checkpoint.save(run.checkpoints, state, epoch, record, rngs=run.rngs, class_names=run.class_names,
                       steps_per_epoch=run.steps_per_epoch):
        run.last_saved, run.unsaved = (epoch, (epoch + 1) * run.steps_per_epoch), None
    else:
        run.unsaved = (checkpoint.device_copy(state), epoch, record)


def _interrupt(run: RunContext):
    """On SIGINT/SIGTERM: saves the last completed epoch if the policy had skipped it (a
    partial epoch is dropped: a rerun trains it again), then raises TrainingInterrupted."""
    last_saved = run.last_saved
    if run.unsaved is not None:
        state, epoch, record = run.unsaved
        checkpoint.save(run.checkpoints, state, epoch, record, rngs=run.rngs, class_names=run.class_names,
                        steps_per_epoch=run.steps_per_epoch, force=True)
        last_saved = (epoch, (epoch + 1) * run.steps_per_epoch)
    checkpoint.wait(run.checkpoints)
    if last_saved is None:
        where = "no epoch had finished, so nothing was saved; rerun the same command to start again"
    else:
        where = (f"checkpoint step {last_saved[1]} (after epoch {last_saved[0]}) is in "
                 f"{run.checkpoints.directory}; rerun the same command to resume")
    raise faults.TrainingInterrupted(run.stop.signum, f"interrupted by {run.stop.name}: {where}")


def _nonfinite_error(run: RunContext, bad: multistep.NonFiniteStep, epoch: int) -> faults.NonFiniteError:
    """The one-line error for a NaN/inf step, once the saves in flight are on disk."""
    checkpoint.wait(run.checkpoints)
    last_saved = run.last_saved
    where = (f"checkpoint step {last_saved[1]} (epoch {last_saved[0]}) in {run.checkpoints.directory}; "
             "a rerun resumes from it" if last_saved else "none (no epoch finished)")
    return faults.NonFiniteError(
        f"loss or gradients became NaN/inf at step {epoch * run.steps_per_epoch + bad.index} "
        f"(epoch {epoch}, learning rate {bad.learning_rate:.6g}); stopped without saving that "
        f"state; last good checkpoint: {where}; lower --config.learning_rate or set "
        "--config.skip_nonfinite_steps=true to skip such steps"
    )


def _epoch_record(epoch: int, state, train: dict, test: dict, train_seconds: float, epoch_seconds: float) -> dict:
    """The epoch's line of metrics.jsonl."""
    return {
        "epoch": epoch,
        "step": int(hosts.local_value(state.step)),
        "last_lr": train["last_lr"],
        "last_beta1": _last_beta1(state),
        "train_loss": train["loss"],
        "train_acc": train["accuracy"],
        "skipped_steps": train["skipped_steps"],
        "test_loss": test["loss"],
        "test_acc": test["accuracy"],
        "train_seconds": train_seconds,
        "epoch_seconds": epoch_seconds,
    }


def _last_beta1(state) -> Optional[float]:
    """The momentum of the last update: Adam's beta1 (`b1`) or SGD's `momentum`."""
    hyperparams = getattr(state.opt_state, "hyperparams", {})
    value = hyperparams.get("b1", hyperparams.get("momentum"))
    return None if value is None else float(hosts.local_value(value))


def _metric_records(path: pathlib.Path) -> list[dict]:
    """The epochs metrics.jsonl holds (none if it is absent or unreadable)."""
    try:
        return report.read_metrics(path) if (path / run_dir.METRICS_FILE).is_file() else []
    except CifarJaxError:
        return []


def _log_epoch(path: pathlib.Path, record: dict) -> None:
    """Prints the seed's epoch line and appends the record to metrics.jsonl."""
    say(
        f"Epoch [{record['epoch']}], last_lr: {record['last_lr']:.5f}, train_loss: {record['train_loss']:.4f}, "
        f"test_loss: {record['test_loss']:.4f}, test_acc: {record['test_acc']:.4f} "
        f"({record['epoch_seconds']:.2f}s)"
        + (f", skipped {record['skipped_steps']} non-finite steps" if record["skipped_steps"] else "")
    )
    if hosts.is_primary():
        run_files.append_line(path / run_dir.METRICS_FILE, json.dumps(record))


def enable_compilation_cache(cache_dir: str) -> None:
    """Turns on JAX's persistent compilation cache in `cache_dir`, so a rerun of the same
    config loads its compiled steps instead of compiling them. A cache directory set
    through JAX's own config or JAX_COMPILATION_CACHE_DIR wins; "" turns this off."""
    if cache_dir and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))


def say(text: str) -> None:
    """Prints a line of the run's log (above the progress bar), in the primary process only."""
    if hosts.is_primary():
        tqdm.write(text)


def main(argv: list[str] | None = None) -> int:
    """The command: 0 when done, 2 on a one-line error, 128 + N on signal N."""
    try:
        line = split_command_line(sys.argv[1:] if argv is None else argv)
        if line.list_configs:
            from cifar_jax.config_help import list_configs

            print(list_configs())
            return 0
        if line.help:
            from cifar_jax.config_help import train_help

            print(train_help(line.config))
            return 0
        hosts.initialize_from_env()  # several processes: JAX_NUM_PROCESSES etc. (cifar_jax.hosts)
        config = resolve_config(line)
        if line.dry_run:
            from cifar_jax.dry_run import dry_run

            return dry_run(config, line.workdir)
        train_and_evaluate(config, line.workdir)
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
