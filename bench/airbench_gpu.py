"""airbench94 itself (the `airbench` package, 0.1.8, PyTorch) on the same CIFAR-10 JPEGs as
bench/fast_gpu.py: several seeded runs, each timed from the model's creation to the TTA
accuracy, after a warm-up run (cuDNN's autotuning); writes mean and spread of the accuracy and
the time per run (docs/fast.md). Needs a CUDA GPU (airbench puts its data and model there).

    python bench/airbench_gpu.py --data .gpudata/cifar10-jpeg.tar.gz --seeds 5 --json airbench_gpu
    python bench/airbench_gpu.py --prepare-only --smoke     # CPU: the data files alone

airbench reads `cifar10/train.pt` and `cifar10/test.pt` (relative to the working folder: it
downloads CIFAR-10 there when they are missing, which the GPU machine cannot): this script
writes them from the decoded JPEG archive (cifar_jax's image_folder reader, the arrays
bench/fast_gpu.py trains on) into --work-dir, changes into it, and only then imports airbench.
Its `train94(train_loader, run=..., verbose=False)` trains 9.9 epochs of batch 1024 (whitening
init included) and returns the model; `evaluate(model, test_loader, tta_level=2)` is the TTA
accuracy. airbench's own timer counts the whitening init, training and TTA evaluation (CUDA
events); here the wall clock also counts making the model and the optimizer (milliseconds).

--json NAME writes bench/results/NAME-DATE-DEVICE.json: `runs` (seed, test_acc, train_s, eval_s,
total_s), `acc_mean`, `acc_std`, `acc_min`, `acc_max`, `total_s_median`, `train_s_median`,
`airbench_version`, `torch_version`, and the settings. A SIGTERM still writes what finished.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import pathlib
import signal
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import results as bench_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".gpudata/cifar10-jpeg.tar.gz", help="the CIFAR-10 JPEG archive")
    p.add_argument("--cache-dir", default="", help="image_folder's decoded-array cache ('' = ~/.cache/cifar_jax)")
    p.add_argument("--work-dir", default="/tmp/airbench_work", help="where cifar10/train.pt and test.pt go")
    p.add_argument("--seeds", type=int, default=5, help="timed runs (after one warm-up run)")
    p.add_argument("--prepare-only", action="store_true", help="write the .pt files and stop")
    p.add_argument("--smoke", action="store_true", help="synthetic images instead of the archive")
    bench_results.add_arguments(p)
    return p.parse_args(argv)


def prepare(args) -> pathlib.Path:
    """Writes WORK/cifar10/{train,test}.pt as airbench's CifarLoader saves them: uint8 NHWC images,
    int64 labels, class names."""
    import torch

    from cifar_jax import load_dataset
    from cifar_jax.config import load_config_file

    config = load_config_file("fast")
    if args.smoke:
        config.dataset, config.synthetic_train_size, config.synthetic_test_size = "synthetic", 2048, 500
    else:
        config.dataset, config.data_dir, config.cache_dir = "image_folder", args.data, args.cache_dir
    data = load_dataset(config)
    folder = pathlib.Path(args.work_dir) / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        torch.save({"images": torch.as_tensor(images), "labels": torch.as_tensor(labels).long(),
                    "classes": list(data.class_names)}, folder / f"{split}.pt")
    print(f"wrote {folder}/train.pt ({len(data.train_labels)} images) and test.pt ({len(data.test_labels)})",
          flush=True)
    return pathlib.Path(args.work_dir)


class Stopped(Exception):
    pass


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = prepare(args)
    if args.prepare_only:
        return 0
    import torch

    if not torch.cuda.is_available():
        print("error: airbench needs a CUDA GPU", file=sys.stderr)
        return 2
    os.chdir(work)  # airbench reads cifar10/*.pt from the working folder
    import airbench

    def sync():
        torch.cuda.synchronize()

    train_loader = airbench.CifarLoader("cifar10", train=True, batch_size=1024, aug=dict(flip=True, translate=2),
                                        altflip=True)
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)

    def one_run(seed: int, epochs=None) -> dict:
        torch.manual_seed(seed)
        sync()
        start = time.perf_counter()
        kwargs = {} if epochs is None else {"epochs": epochs}
        model = airbench.train94(train_loader=train_loader, run=seed, verbose=False, **kwargs)
        sync()
        trained = time.perf_counter()
        accuracy = airbench.evaluate(model, test_loader, tta_level=2)
        sync()
        done = time.perf_counter()
        accuracy_tta0 = airbench.evaluate(model, test_loader, tta_level=0)
        return {"seed": seed, "test_acc": accuracy, "test_acc_tta0": accuracy_tta0, "train_s": trained - start,
                "eval_s": done - trained, "total_s": done - start}

    signal.signal(signal.SIGTERM, _stop)
    runs, warmup, stopped = [], None, None
    try:
        warmup = one_run(1000, epochs=1)
        print(f"warm-up (1 epoch): {warmup['total_s']:.1f} s", flush=True)
        for seed in range(args.seeds):
            run = one_run(seed)
            runs.append(run)
            print(f"seed {seed}: test acc {run['test_acc']:.4f} (without TTA {run['test_acc_tta0']:.4f}); "
                  f"{run['total_s']:.2f} s = train {run['train_s']:.2f} + TTA eval {run['eval_s']:.2f}", flush=True)
    except Stopped as why:
        stopped = str(why)
        print(f"stopped by {stopped}: writing what finished", file=sys.stderr, flush=True)
    figures = {"runs": runs, "warmup": warmup, "airbench_version": importlib.metadata.version("airbench"),
               "torch_version": torch.__version__, "gpu": torch.cuda.get_device_name()}
    if runs:
        accs = [r["test_acc"] for r in runs]
        figures.update({
            "acc_mean": statistics.fmean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "acc_min": min(accs), "acc_max": max(accs),
            "acc_tta0_mean": statistics.fmean(r["test_acc_tta0"] for r in runs),
            "total_s_median": statistics.median(r["total_s"] for r in runs),
            "train_s_median": statistics.median(r["train_s"] for r in runs),
        })
        print(f"{len(runs)} runs: test acc {figures['acc_mean']:.4f} +- {figures['acc_std']:.4f}; median "
              f"{figures['total_s_median']:.2f} s per run", flush=True)
    if stopped:
        figures["stopped"] = stopped
    if args.json:
        figures["settings"] = {**vars(args), "timing": "wall clock per run: airbench.train94 (model, whitening "
                                                       "init, 9.9 epochs) + evaluate(tta_level=2), after a warm-up"}
        out_dir = pathlib.Path(args.out_dir)
        out_dir = out_dir if out_dir.is_absolute() else REPO / out_dir
        device = {"kind": torch.cuda.get_device_name(), "platform": "gpu", "count": torch.cuda.device_count()}
        bench_results.report(bench_results.write_result(args.json, figures, out_dir=out_dir, device=device))
    return 1 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
