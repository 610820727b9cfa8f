"""Every model of the zoo trained through `cifar_jax.train.train_and_evaluate`, each in its
own process with a time limit: test accuracy, s/epoch, compile s and peak device memory.

    # GPU: the seed recipe, 10 epochs, on the CIFAR-10 JPEGs (issue 15's zoo table)
    python bench/zoo_bench.py --dataset image_folder --data-dir .gpudata/cifar10-jpeg.tar.gz \\
        --num-classes 10 --cache-dir /tmp/c10 --recipe seed --epochs 10 --total-budget 540 --json zoo-seed
    # CPU check: two small models, synthetic data, one epoch, narrow
    python bench/zoo_bench.py --models resnet9,vgg16 --dataset synthetic --num-classes 10 \\
        --epochs 1 --width 0.125 --synthetic-train-size 256 --synthetic-test-size 128 --json zoo --out-dir /tmp

--models: comma-separated names (default: every model `cifar-jax models --list` names),
each optionally NAME:SECONDS, its own time limit (default --timeout). --recipe: `seed`
(configs/default.py with config.model=NAME) or `sgd` (configs/sgd.py, the zoo's usual SGD
recipe, its cosine spread over --epochs), or both, comma-separated. resnet152 runs with
max_param_mb=0 (it is over the seed's 100 MB budget). Checkpoints: only the last epoch is
saved; the compilation cache is off unless --xla-cache-dir (compile_s is a cold compile).

Each (model, recipe) runs in a child process (peak memory is that model's alone; a crash or
a timeout stops only that model). The figures come from the run's metrics.jsonl, so a run
stopped by its limit still gives the epochs it finished. Rows: `model`, `recipe`, `epochs`
(finished), `epochs_planned`, `test_acc` (last finished epoch), `best_test_acc`,
`s_per_epoch` (median training seconds of the epochs after the first), `first_epoch_s`,
`compile_s` (first epoch minus s_per_epoch: compiling, plus the first transfers), `peak_bytes`
(device.memory_stats()["peak_bytes_in_use"] at the end of the child; null where the
backend has no memory stats or the child did not finish), `params`, `wall_s` (the child
process: start-up, data, compiling, training, evaluation) and `error` when it failed.
--total-budget stops starting models (recorded as skipped) once it is spent; SIGTERM writes
the rows so far.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import results as bench_results  # noqa: E402

RECIPES = {"seed": "configs/default.py", "sgd": "configs/sgd.py"}
NO_BUDGET = ("resnet152",)  # over the seed's 100 MB: trained with max_param_mb=0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="", help="NAME[:SECONDS],... (default: every model of cifar_jax.models)")
    p.add_argument("--recipe", default="seed", help="seed, sgd or seed,sgd")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dataset", default="synthetic", help="as --config.dataset (image_folder, synthetic, cifar10, ...)")
    p.add_argument("--data-dir", default="")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--cache-dir", default="", help="image_folder's decoded-array cache, shared by the children")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=0, help="0: the recipe's")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--synthetic-train-size", type=int, default=2048)
    p.add_argument("--synthetic-test-size", type=int, default=512)
    p.add_argument("--xla-cache-dir", default="", help="persistent compilation cache ('' = off: cold compiles)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per model (its child process)")
    p.add_argument("--total-budget", type=float, default=0, help="seconds for all models; 0 = no limit")
    p.add_argument("--workdir-root", default="", help="the runs' folders (default: a temporary folder, removed)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    bench_results.add_arguments(p)
    return p.parse_args(argv)


def model_list(spec: str, default_timeout: float) -> list[tuple[str, float]]:
    if not spec:
        from cifar_jax.models import MODELS  # the registry; imports jax/flax, compiles nothing

        return [(name, default_timeout) for name in MODELS]
    out = []
    for entry in spec.split(","):
        name, _, seconds = entry.strip().partition(":")
        out.append((name, float(seconds) if seconds else default_timeout))
    return out


def child_config(job: dict):
    from cifar_jax.config import load_config_file

    config = load_config_file(str(REPO / RECIPES[job["recipe"]]))
    config.model = job["model"]
    config.dataset, config.data_dir, config.num_classes = job["dataset"], job["data_dir"], job["num_classes"]
    config.cache_dir = job["cache_dir"]
    config.synthetic_train_size, config.synthetic_test_size = job["synthetic_train_size"], job["synthetic_test_size"]
    config.width, config.dtype, config.num_epochs = job["width"], job["dtype"], job["epochs"]
    if job["batch_size"]:
        config.batch_size = job["batch_size"]
    config.xla_cache_dir = job["xla_cache_dir"]
    config.checkpoint_every_epochs, config.keep_checkpoints = job["epochs"], 1  # save the last epoch only
    if job["model"] in NO_BUDGET:
        config.max_param_mb = 0.0
    return config


def run_child(job: dict) -> int:
    """In the child process: train, then write params and peak_bytes to job["out"]."""
    import jax

    from cifar_jax.models import parameter_summary
    from cifar_jax.train import train_and_evaluate

    config = child_config(job)
    state = train_and_evaluate(config, job["workdir"])
    jax.block_until_ready(state.params)
    stats = jax.local_devices()[0].memory_stats() or {}
    info = {"params": int(parameter_summary(state.params)[0]), "peak_bytes": stats.get("peak_bytes_in_use"),
            "batch_size": config.batch_size, "max_param_mb": config.max_param_mb}
    pathlib.Path(job["out"]).write_text(json.dumps(info))
    return 0


def figures_from_metrics(workdir: pathlib.Path) -> dict:
    path = workdir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not records:
        return {"epochs": 0}
    seconds = [r["train_seconds"] for r in records]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else None
    return {
        "epochs": len(records),
        "test_acc": records[-1]["test_acc"],
        "best_test_acc": max(r["test_acc"] for r in records),
        "s_per_epoch": steady,
        "first_epoch_s": seconds[0],
        "compile_s": None if steady is None else max(0.0, seconds[0] - steady),
        "train_s_per_epoch": seconds,
    }


class Stopped(Exception):
    pass


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_one(args, root: pathlib.Path, model: str, recipe: str, timeout: float) -> dict:
    tag = f"{model}-{recipe}"
    workdir, out, log = root / tag, root / f"{tag}.json", root / f"{tag}.log"
    shutil.rmtree(workdir, ignore_errors=True)
    job = {"model": model, "recipe": recipe, "workdir": str(workdir), "out": str(out), "epochs": args.epochs,
           **{k: getattr(args, k) for k in ("dataset", "data_dir", "num_classes", "cache_dir", "width", "dtype",
                                             "batch_size", "synthetic_train_size", "synthetic_test_size",
                                             "xla_cache_dir")}}
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    row = {"model": model, "recipe": recipe, "epochs_planned": args.epochs}
    start = time.perf_counter()
    error = None
    with open(log, "w") as f:
        try:
            code = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], stdout=f,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
            if code:
                error = f"exit {code}: " + _tail(log, 1)  # the exception's line
        except subprocess.TimeoutExpired:
            error = f"timeout after {timeout:.0f} s"
        except Stopped as why:  # subprocess.run has killed the child
            error, row["stopped"] = f"stopped by {why}", str(why)
    row["wall_s"] = time.perf_counter() - start
    row.update(figures_from_metrics(workdir))
    row.update({"params": None, "peak_bytes": None})
    if out.is_file():
        row.update(json.loads(out.read_text()))
    if error:
        row["error"] = error
        print(f"--- {tag} failed ({error}); the end of its log:\n{_tail(log)}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(json.loads(args.child))
    recipes = args.recipe.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        print(f"error: unknown recipe {unknown}; choose from {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    jobs = [(m, r, t) for r in recipes for m, t in model_list(args.models, args.timeout)]
    root = pathlib.Path(args.workdir_root or tempfile.mkdtemp(prefix="zoo_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    began, rows, stopped = time.perf_counter(), [], None
    signal.signal(signal.SIGTERM, _stop)
    print(f"{'model':<16} {'recipe':<6} {'epochs':>6} {'test acc':>8} {'s/epoch':>8} {'compile s':>9} "
          f"{'peak MB':>8} {'wall s':>7}", flush=True)
    try:
        for model, recipe, timeout in jobs:
            left = args.total_budget - (time.perf_counter() - began) if args.total_budget else timeout
            if left < 20:
                rows.append({"model": model, "recipe": recipe, "epochs_planned": args.epochs, "epochs": 0,
                             "error": "skipped: --total-budget spent"})
                print(f"{model:<16} {recipe:<6} skipped: --total-budget spent", flush=True)
                continue
            row = run_one(args, root, model, recipe, min(timeout, left))
            rows.append(row)
            if "stopped" in row:
                raise Stopped(row.pop("stopped"))

            def fmt(key, spec, scale=1.0):
                return format(row[key] / scale, spec) if row.get(key) is not None else "-"

            print(f"{model:<16} {recipe:<6} {row['epochs']:>6} {fmt('test_acc', '8.4f')} {fmt('s_per_epoch', '8.3f')} "
                  f"{fmt('compile_s', '9.1f')} {fmt('peak_bytes', '8.0f', 1e6)} {row['wall_s']:>7.1f}"
                  + (f"  ({row['error'][:100]})" if "error" in row else ""), flush=True)
    except Stopped as why:
        stopped = str(why)
        print(f"stopped by {stopped}: writing the rows so far", file=sys.stderr, flush=True)
    finally:
        if not args.workdir_root:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        figures = {
            "rows": rows,
            "settings": {k: v for k, v in vars(args).items() if k not in ("child", "json", "out_dir")},
            "epochs_note": f"{args.epochs} epochs per model planned; a row's `epochs` is what finished",
            "s_per_epoch_method": "median training seconds of the epochs after the first (evaluation excluded)",
            "compile_s_method": "first epoch's training seconds minus s_per_epoch (the train step's compile; "
                                "the eval step compiles after, outside train_seconds)",
            "peak_bytes_method": "jax.local_devices()[0].memory_stats()['peak_bytes_in_use'] after training, per process",
        }
        if stopped:
            figures["stopped"] = stopped
        bench_results.report(bench_results.write_result(args.json, figures, out_dir=args.out_dir))
    return 1 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
