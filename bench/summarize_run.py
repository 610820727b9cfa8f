"""Summarise a training run's metrics.jsonl: final accuracy and seconds per epoch.

    python bench/summarize_run.py runs/seed

Epoch 0 includes XLA compilation; the steady-state figure is the median of the other
epochs' training seconds (evaluation excluded), so one noisy epoch does not move it.
"""
import json
import pathlib
import statistics
import sys


def summarize(workdir: str) -> dict:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    steady = [r["train_seconds"] for r in records[1:]] or [records[0]["train_seconds"]]
    median = statistics.median(steady)
    return {
        "epochs": len(records),
        "final_test_acc": records[-1]["test_acc"],
        "best_test_acc": max(r["test_acc"] for r in records),
        "median_train_seconds_per_epoch": median,
        "epoch0_train_seconds_incl_compile": records[0]["train_seconds"],
        "median_epoch_seconds_incl_eval": statistics.median(r["epoch_seconds"] for r in records[1:] or records),
    }


if __name__ == "__main__":
    for key, value in summarize(sys.argv[1]).items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
