#!/usr/bin/env python
"""float32 against bfloat16 inference of the shipped ``nuclei`` model (issue 12, a speed lever).

On CPUs with AMX or AVX-512 BF16, oneDNN runs bfloat16 convolutions in hardware;
``fluoseg predict --precision bfloat16`` (and ``auto``, the default, on such a CPU) runs the
network under torch's autocast while its output layer, the activations and the decoding stay
float32. This benchmark measures what that buys and costs for the shipped model, with an
ablation arm (accuracy only) that leaves the output layer in bfloat16 as well:

* **accuracy**: the validation and test images of ``bench/splits/dsb2018_fluo.json``
  predicted as ``fluoseg predict nuclei`` does (``--diameter auto``, the shipped tuned
  decoding), in each precision, scored pooled over the images. Whether bfloat16 loses
  accuracy is read on the validation images; the test rows are reported and choose nothing.
* **speed**: ``predict_labels`` on mosaics of test images (1024², 2048²: auto diameter,
  decoding, blank check included) and the network alone on one 572² tile, median of
  ``--repeats`` runs after a warm-up, the two precisions alternating in one process on
  ``--threads`` threads; the 1-minute load average is recorded beside every row (other jobs
  slow a 2-core machine down: run it on a quiet one).

Outputs: ``bench/results/precision_accuracy.csv``, ``precision_speed.csv`` and
``precision.md``. Each measurement is cached in ``bench/work/precision/`` (a rerun skips it;
``--overwrite`` measures again); ``--report`` renders the Markdown from the CSVs alone.

Usage::

    PYTHONPATH=src .venv/bin/python bench/precision.py            # ~5 min on 2 cores
    PYTHONPATH=src .venv/bin/python bench/precision.py --report
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    DSB2018,
    RESULTS,
    WORK,
    dsb_split,
    git_commit,
    log,
    prediction_cache,
    read_json,
    read_rows,
    rel,
    write_json,
    write_rows,
    write_text,
    zoo_version,
)
from train_zoo import SCORES, ZOO_NAME, mosaic_of_test_images, shipped_scores

PRECISIONS = ("float32", "bfloat16")
BFLOAT16_HEAD = "bfloat16-head"
"""Ablation arm (accuracy only): bfloat16 with the output layers in bfloat16 too, i.e. without
:func:`fluoseg.predictor.keep_output_layers_float32` (what ``--precision bfloat16`` did before it)."""
ARMS = (*PRECISIONS, BFLOAT16_HEAD)
PARTS = ("val", "test")
SIZES = (1024, 2048)
TILE = 572
ACCURACY_CSV = RESULTS / "precision_accuracy.csv"
SPEED_CSV = RESULTS / "precision_speed.csv"
REPORT_MD = RESULTS / "precision.md"
HEADLINE = "F1@0.5"


def accuracy_rows(data: Path, work: Path, split: dict[str, list[str]], overwrite: bool) -> list[dict[str, Any]]:
    """Pooled scores per (precision, part), each cached in ``work`` (named by :func:`_common.prediction_cache`)."""
    from unittest import mock

    rows, version = [], zoo_version()
    for part in PARTS:
        for arm in ARMS:
            path = work / f"accuracy_{part}_{arm}.json"
            scores = None if overwrite else read_json(path)
            if scores is None:
                started = time.perf_counter()
                if arm == BFLOAT16_HEAD:  # the ablation: leave the output layers to autocast as well
                    with mock.patch("fluoseg.predictor.keep_output_layers_float32", lambda model: None):
                        scores = shipped_scores(data, split, part, "bfloat16")
                else:
                    scores = shipped_scores(data, split, part, arm)
                write_json(path, scores)
                log(f"accuracy {part} {arm}: {HEADLINE} {scores[HEADLINE]:.4f} "
                    f"({time.perf_counter() - started:.0f} s)")
            rows += [{"part": part, "images": len(split[part]), "precision": arm, "metric": metric,
                      "value": round(float(value), 4), "zoo_version": version} for metric, value in scores.items()]
    return rows


def _seconds(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def speed_rows(data: Path, work: Path, split: dict[str, list[str]], threads: int, repeats: int,
               overwrite: bool) -> list[dict[str, Any]]:
    """Median seconds per (what, precision), the precisions alternating; cached as one measurement."""
    path = work / f"speed_{threads}threads.json"
    cached = None if overwrite else read_json(path)
    if cached is not None:
        return cached
    import numpy as np
    import torch

    from fluoseg import Segmenter
    from fluoseg.predictor import make_batch_predictor
    from fluoseg.tiling import geometry_for

    torch.set_num_threads(threads)
    segmenter = Segmenter.pretrained(ZOO_NAME, device="cpu")
    member = segmenter.members[0]
    size = geometry_for(member.model, TILE).input_size
    tile = np.random.default_rng(0).normal(size=(1, len(member.panel), size, size)).astype(np.float32)
    available = np.ones(len(member.panel), np.float32)
    cases: dict[tuple[str, str], tuple[Callable[[], Any], int]] = {}  # (what, precision) -> (run, pixels)
    for precision in PRECISIONS:
        predict = make_batch_predictor(member.model, available, member.task.activate, precision=precision)
        cases[f"network, one {size}x{size} tile", precision] = (lambda p=predict: p(tile), size * size)
    for side in SIZES:
        mosaic = mosaic_of_test_images(data, split, side)[None]
        for precision in PRECISIONS:
            cases[f"labels, {side}x{side} mosaic", precision] = (
                lambda m=mosaic, p=precision: segmenter.predict_labels(m, precision=p), side * side)
    for run, _ in cases.values():  # warm-up: first calls build oneDNN kernels
        run()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    for _ in range(repeats):  # alternate, so a burst of load hits both precisions alike
        for key, (run, _) in cases.items():
            times[key].append(_seconds(run))
    rows = []
    for (what, precision), (_, pixels) in cases.items():
        median = statistics.median(times[what, precision])
        rows.append({"what": what, "precision": precision, "threads": threads, "repeats": repeats,
                     "median_s": round(median, 4), "mp_per_s": round(pixels / 1e6 / median, 3),
                     "load_average": round(os.getloadavg()[0], 1)})
        log(f"speed {what} {precision}: {median:.3f} s ({rows[-1]['mp_per_s']} MP/s)")
    write_json(path, rows)
    return rows


def cpu_line() -> str:
    from fluoseg.device import NATIVE_BFLOAT16_CPU_FLAGS, cpu_flags

    native = sorted(cpu_flags() & NATIVE_BFLOAT16_CPU_FLAGS)
    return (f"CPU: {os.cpu_count()} cores; bfloat16 in hardware: {', '.join(native) if native else 'no'} "
            "(`/proc/cpuinfo` flags amx_bf16 / avx512_bf16).")


def render(accuracy: list[dict[str, str]], speed: list[dict[str, str]], cpu: str) -> str:
    """The Markdown report from the two CSVs' rows."""
    value = {(r["part"], r["precision"], r["metric"]): float(r["value"]) for r in accuracy}
    images = {r["part"]: r["images"] for r in accuracy}
    lines = ["# float32 against bfloat16 inference of the shipped `nuclei` model", "",
             "Rendered by `bench/precision.py --report` from `bench/results/precision_accuracy.csv` and "
             "`precision_speed.csv`. In bfloat16 the network runs under torch's autocast; its output layer, the "
             "activations and the decoding stay float32 (`fluoseg predict --precision bfloat16`, and `auto`, the "
             f"default, on a CPU like this one). `{BFLOAT16_HEAD}` is an ablation: the output layer in bfloat16 too. "
             + cpu, "",
             "## Accuracy", "",
             "Predicted as `fluoseg predict nuclei` does (auto diameter, shipped decoding), pooled over the images. "
             "The decision reads the validation columns; test is reported only.", "",
             "| metric | " + " | ".join(f"{part} ({images.get(part, '?')} images) {a}" for part in PARTS for a in ARMS)
             + " | " + " | ".join(f"{part} Δ {a}" for part in PARTS for a in ARMS[1:]) + " |",
             "|---|" + "---:|" * (len(PARTS) * (2 * len(ARMS) - 1))]
    for metric, _, _ in SCORES:
        cells = [f"{value[part, a, metric]:.4f}" if (part, a, metric) in value else "" for part in PARTS
                 for a in ARMS]
        deltas = [f"{value[part, a, metric] - value[part, 'float32', metric]:+.4f}"
                  if (part, a, metric) in value and (part, "float32", metric) in value else ""
                  for part in PARTS for a in ARMS[1:]]
        lines.append(f"| {metric} | " + " | ".join(cells + deltas) + " |")
    lines += ["", "## Speed", "",
              "Median seconds over the repeats after a warm-up, the precisions alternating in one process; the "
              "load average (1 min) says how busy the machine was.", "",
              "| what | threads | repeats | float32 (s) | bfloat16 (s) | speed-up | float32 MP/s | bfloat16 MP/s | load |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["what"], r["threads"], r["precision"]): r for r in speed}
    for what, threads in dict.fromkeys((r["what"], r["threads"]) for r in speed):
        full, reduced = by.get((what, threads, "float32")), by.get((what, threads, "bfloat16"))
        if full is None or reduced is None:
            continue
        lines.append(f"| {what} | {threads} | {full['repeats']} | {float(full['median_s']):.3f} | "
                     f"{float(reduced['median_s']):.3f} | {float(full['median_s']) / float(reduced['median_s']):.2f}x | "
                     f"{full['mp_per_s']} | {reduced['mp_per_s']} | {full['load_average']} |")
    base = value.get(("val", "float32", HEADLINE))
    for arm, what in (("bfloat16", "bfloat16 (output layer float32)"), (BFLOAT16_HEAD, "bfloat16 with a bfloat16 "
                                                                        "output layer")):
        if base is not None and ("val", arm, HEADLINE) in value:
            lines += ["", f"On the validation images {what} changes {HEADLINE} by "
                      f"{value['val', arm, HEADLINE] - base:+.4f} ({base:.4f} → {value['val', arm, HEADLINE]:.4f})."]
    return "\n".join(lines) + "\n"


def report() -> Path:
    if not ACCURACY_CSV.is_file() or not SPEED_CSV.is_file():
        raise SystemExit(f"{rel(ACCURACY_CSV)} or {rel(SPEED_CSV)} missing: run bench/precision.py first")
    record = read_json(RESULTS / "precision_run.json", {})
    return write_text(REPORT_MD, render(read_rows(ACCURACY_CSV), read_rows(SPEED_CSV),
                                        record.get("cpu", "CPU: not recorded.")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--data", type=Path, default=DSB2018)
    parser.add_argument("--work", type=Path, default=WORK / "precision")
    parser.add_argument("--overwrite", action="store_true", help="measure again instead of reading the cache")
    parser.add_argument("--report", action="store_true", help="only render precision.md from the CSVs")
    args = parser.parse_args(argv)
    if args.report:
        log(f"report: {rel(report())}")
        return 0
    work = args.work / prediction_cache()  # a re-exported, re-tuned or differently predicting model: no stale caches
    work.mkdir(parents=True, exist_ok=True)
    split = dsb_split(args.data)
    write_rows(ACCURACY_CSV, accuracy_rows(args.data, work, split, args.overwrite))
    write_rows(SPEED_CSV, speed_rows(args.data, work, split, args.threads, args.repeats, args.overwrite))
    write_json(RESULTS / "precision_run.json", {"cpu": cpu_line(), "commit": git_commit()})
    log(f"report: {rel(report())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
