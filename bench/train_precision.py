#!/usr/bin/env python
"""Training step time in float32 and in bfloat16 mixed precision (``train.precision``).

``train.precision: bfloat16`` runs the forward pass under torch's autocast with the output
layers in float32, keeps weights, gradients and Adam's state in float32 (what
``fluoseg.train.trainer`` does). This benchmark times one optimisation step (forward, loss,
backward, Adam) of the shipped ``nuclei`` network (U-Net depth 4, same padding) and of the
same network with twice the filters (a lever of issue 12), on a batch of 4 patches of 256²,
in both precisions, alternating in one process: the median of ``--repeats`` steps after a
warm-up. The loss is the mean squared error against a fixed random target (the distance
task's loss costs a negligible share of a step next to the U-Net). The 1-minute load
average is recorded beside every row: run it on a quiet machine.

It measures speed only. Whether bfloat16 training reaches float32's accuracy is a question
for a training run (tests/train/test_trainer.py checks that a small network learns a
separable problem in both precisions).

Outputs ``bench/results/train_precision.csv`` and ``train_precision.md`` (``--report`` renders
the Markdown from the CSV alone).

Usage::

    PYTHONPATH=src .venv/bin/python bench/train_precision.py     # ~3 min on 2 cores
    PYTHONPATH=src .venv/bin/python bench/train_precision.py --report
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from _common import RESULTS, git_commit, log, read_rows, rel, write_rows, write_text
from precision import cpu_line

PRECISIONS = ("float32", "bfloat16")
WIDTHS = (16, 32)      # base filters: the shipped network and the twice-as-wide lever
BATCH, PATCH = 4, 256  # bench/nuclei.py's training batch
CSV = RESULTS / "train_precision.csv"
REPORT = RESULTS / "train_precision.md"


def step_seconds(base_filters: int, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds per optimisation step, per precision, the two alternating in this process."""
    import torch

    from fluoseg.predictor import keep_output_layers_float32
    from fluoseg.run import ModelSpec
    from fluoseg.zoo import get

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shipped = get("nuclei").metadata()["model"]
    spec = ModelSpec(shipped["name"], {**shipped["options"], "base_filters": base_filters}, shipped["in_channels"],
                     shipped["out_channels"])
    models, optimizers = {}, {}
    for precision in PRECISIONS:
        model = spec.build().to(memory_format=torch.channels_last)
        if precision == "bfloat16":
            keep_output_layers_float32(model)
        models[precision] = model.train()
        optimizers[precision] = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(BATCH, spec.in_channels, PATCH, PATCH).contiguous(memory_format=torch.channels_last)
    availability = torch.ones(BATCH, spec.in_channels)
    target = torch.randn(BATCH, spec.out_channels, PATCH, PATCH)

    def step(precision: str) -> float:
        model, optimizer = models[precision], optimizers[precision]
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = torch.nn.functional.mse_loss(model(images, availability), target)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    for precision in PRECISIONS:  # warm-up: oneDNN picks and caches its kernels
        step(precision)
        step(precision)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for precision in PRECISIONS:
            times[precision].append(step(precision))
    return {p: statistics.median(t) for p, t in times.items()}


def measure(threads: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for width in WIDTHS:
        log(f"base filters {width}: {repeats} steps per precision")
        seconds = step_seconds(width, threads, repeats)
        load = os.getloadavg()[0]
        for precision, value in seconds.items():
            rows.append({"base_filters": width, "precision": precision, "seconds_per_step": round(value, 4),
                         "speedup": round(seconds["float32"] / value, 3), "batch": BATCH, "patch": PATCH,
                         "threads": threads, "repeats": repeats, "load_average": round(load, 2),
                         "commit": git_commit()})
    return rows


def render(rows: list[dict[str, str]], cpu: str) -> str:
    lines = ["# Training step time: float32 vs bfloat16 mixed precision", "",
             f"Rendered by `bench/train_precision.py --report` from `{rel(CSV)}` (commit {rows[0]['commit']}). "
             f"One optimisation step (forward, loss, backward, Adam) of the shipped `nuclei` U-Net and of the same "
             f"network with twice the filters, batch {rows[0]['batch']} × {rows[0]['patch']}², "
             f"{rows[0]['threads']} threads, median of {rows[0]['repeats']} steps after a warm-up, the precisions "
             f"alternating in one process. {cpu}", "",
             "| base filters | precision | s per step | speed-up over float32 | load average |",
             "|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['base_filters']} | {r['precision']} | {float(r['seconds_per_step']):.3f} | "
                     f"x{float(r['speedup']):.2f} | {r['load_average']} |")
    slower = [r for r in rows if r["precision"] == "bfloat16" and float(r["speedup"]) < 1]
    if slower:
        lines += ["", f"bfloat16 is slower here (x{min(float(r['speedup']) for r in slower):.2f} at worst): without "
                  "bfloat16 in hardware torch emulates it, so `train.precision: auto` trains in float32 on such a CPU "
                  "and fluoseg warns when `bfloat16` is asked for explicitly. Its gain on a CPU with AMX/AVX-512 BF16 "
                  "is to be measured there (`bench/train_precision.py`)."]
    lines += ["", "Speed only: bfloat16 training's accuracy against float32's is not measured here "
              "(`train.precision` stays `float32` by default)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per precision (default 7)")
    parser.add_argument("--report", action="store_true", help="only render the Markdown from the CSV")
    args = parser.parse_args(argv)
    if not args.report:
        write_rows(CSV, measure(args.threads, args.repeats))
    write_text(REPORT, render(read_rows(CSV), cpu_line()))
    log(f"wrote {rel(REPORT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
