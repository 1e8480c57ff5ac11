#!/usr/bin/env python
"""Nuclear instance segmentation benchmark on DSB 2018 fluorescence images (issues 6 and 11).

Kromp et al. (2021) Tables I and III in spirit: two instance methods

* ``border``   — Kromp's U-Net: 3 classes background / interior / touching border, the U-Net
  border weight map (w0 = 10, sigma = 5), labels by seeded growth of the interiors;
* ``distance`` — the two-head U-Net of the in-silico-labelling paper: distance map (MSE) +
  foreground (BCE), labels by h-maxima watershed;

each trained with and without Kromp's artificial images (``fluoseg synth nuclei`` from the
training images only, added with ``data.extra_train``) and with and without scale
normalisation (``instance.target_diameter`` = median training nucleus diameter; inference
with ``--diameter auto``). Every network is scored on the fixed test split with
``fluoseg evaluate --task instance``.

Issue 11's rules: the unit of replication is an independently trained network, one per
(variant, seed) (``--seeds``, default 0,1,2; ``train.seed`` sets the initial weights, patch
sampling and augmentation, and each seed draws its own artificial images). The variant a
user should pick is the one with the best MEAN validation F1@0.5 over seeds; factor effects
are differences of means tested at the network level (Welch's t-test, Holm over the report),
rendered by ``bench/nuclei_report.py`` from ``bench/results/nuclei_units.csv`` (one row per
network) into ``nuclei.md``, ``nuclei.csv`` (the per-variant summary that ``bench/peers.py``
reads) and the README block.

Everything goes through the ``fluoseg`` command line, one run directory per network under
``bench/work/nuclei/<variant>/seed-<n>/`` (git-ignored). Finished steps are skipped on rerun
(they are detected by their files), an interrupted training is resumed, and the unit table is
regenerated from the cached evaluations after every network. CI never runs this script.

Sizing of the full run (8 variants x 3 seeds = 24 networks of 6 x 45 steps): a training step
took 1.25 s at 1 thread with the machine otherwise idle and 1.65-1.9 s at load average 3-4;
planned with 1.8 s/step, one network is ~8 min of steps + ~1 min of validation + ~1.5 min of
data preparation, prediction (two passes with ``--diameter auto``) and evaluation, i.e.
~10.5 min, and the grid ~4.3 h in one process at 1 thread. Two processes on the 2 cores of a
quiet machine (``--parallel 2``) take about half, ~2.1 h. ``--measure`` times a few steps now
and prints the estimate for this machine's load.

Usage::

    .venv/bin/python bench/nuclei.py --smoke                 # end-to-end check, 4 variants x 2 seeds
    .venv/bin/python bench/nuclei.py --measure               # time a few training steps, print the estimate
    nohup nice .venv/bin/python bench/nuclei.py --parallel 2 > bench/work/nuclei.log 2>&1 &   # the full run
    .venv/bin/python bench/nuclei.py --report                # nuclei.md, nuclei.csv, README from nuclei_units.csv
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _common import (
    DSB2018,
    RESULTS,
    WORK,
    accumulate,
    densest_window,
    dsb_manifest,
    dsb_split,
    dsb_target_diameter,
    epoch_rows,
    log,
    pooled_metric,
    predict_test_images,
    read_json,
    read_rows,
    recorded,
    rel,
    run_fluoseg,
    stop_children,
    terminate_child_on_sigterm,
    write_json,
    write_rows,
    write_text,
)

from nuclei_report import METHODS, SETUP, UNIT_FIELDS, render_report, variant_name

from fluoseg.io import read_image, read_labels

DEFAULT_WORK = WORK / "nuclei"
SMOKE_WORK = WORK / "nuclei_smoke"
UNITS_NAME = "nuclei_units.csv"

# ---- fixed benchmark settings (sizing: the module docstring) ---------------------------------
MODEL = {"name": "unet", "options": {"depth": 4, "base_filters": 16, "padding": "same"}}
PATCH, BATCH, LEARNING_RATE = 256, 4, 1e-3
EPOCHS, STEPS = 6, 45                                     # 270 steps per network
SEEDS = (0, 1, 2)                                         # issue 11: >= 3 independently trained networks per variant
# Sizing probe (2026-11-21, this 2-core CPU shared with other engineers, 1 thread): a training step
# (forward + backward + Adam, batch 4 of 256x256, 1.94 M parameters) took 1.25 s with the machine
# otherwise idle and 1.65-1.9 s at load average 3-4; a real 30-step epoch took 55-67 s including
# ~8 s of validation on the 36 whole validation images; preparing the 289 training images ~15 s;
# predicting the 36 test images 37 s (about twice that with --diameter auto); evaluating ~6 s.
PLANNED_STEP_S = 1.8
N_ARTIFICIAL = 100
INSTANCE = {
    "border": {"method": "border", "w0": 10.0, "sigma": 5.0, "min_size": 10},
    "distance": {"method": "distance", "alpha": 1.0, "h": 2.0, "threshold": 0.5, "min_size": 10},
}
# Smoke: the four variants that exercise every factor (art, scale, method) with 2 seeds each
SMOKE = {"epochs": 1, "steps": 2, "train": 12, "val": 2, "test": 3, "artificial": 4, "seeds": (0, 1),
         "variants": "border,border-art,border-scale,distance"}


@dataclass(frozen=True)
class Variant:
    """One training configuration of the 2 x 2 x 2 grid."""

    method: str
    artificial: bool = False
    scale: bool = False

    @property
    def name(self) -> str:
        return variant_name(self.method, self.artificial, self.scale)

    @classmethod
    def parse(cls, name: str) -> Variant:
        parts = name.strip().split("-")
        if parts[0] not in METHODS or not set(parts[1:]) <= {"art", "scale"}:
            raise SystemExit(f"unknown variant {name!r}; e.g. border, distance-art, border-scale, distance-art-scale")
        return cls(parts[0], "art" in parts, "scale" in parts)


ALL_VARIANTS = [Variant(m, a, s) for a, s in ((False, False), (True, False), (False, True), (True, True)) for m in METHODS]


def unit_dir(work: Path, variant: Variant, seed: int | None) -> Path:
    """A network's folder: ``WORK/<variant>/seed-<n>``; ``seed`` None is the one-network layout of
    ``bench/train_zoo.py`` (``WORK/<variant>``)."""
    return work / variant.name if seed is None else work / variant.name / f"seed-{seed}"


def unit_label(variant: Variant, seed: int | None) -> str:
    return variant.name if seed is None else f"{variant.name} seed {seed}"


# ---- data: artificial images (split, manifest and target diameter: _common) ---------------

def artificial_images(work: Path, manifest: Path, train_ids: list[str], n_images: int, threads: int,
                      seed: int = 0) -> Path:
    """Kromp's artificial images made from the training images only (``fluoseg synth nuclei``), once per seed.

    Seed 0 keeps the folder ``artificial/`` (``bench/peers.py`` and ``bench/train_zoo.py`` use it);
    other seeds get ``artificial-seed-<n>/``, so each replicate draws its own images.
    """
    out = work / ("artificial" if seed == 0 else f"artificial-seed-{seed}")
    if (out / "manifest.yaml").is_file():
        return out / "manifest.yaml"
    log(f"artificial images (seed {seed}): {n_images} from {len(train_ids)} training images (fluoseg synth nuclei)")
    wall = run_fluoseg(["synth", "nuclei", "--data", manifest, "--out", out, "--samples", ",".join(train_ids),
                        "--n-images", n_images, "--seed", seed, "--overwrite"], work / f"{out.name}.log",
                       threads=threads)
    log(f"artificial images (seed {seed}) done in {wall:.0f} s")
    return out / "manifest.yaml"


# ---- one network: train, predict, evaluate ---------------------------------------------------

@dataclass
class Settings:
    data: Path
    work: Path
    results: Path
    epochs: int
    steps: int
    threads: int
    device: str
    n_artificial: int
    smoke: bool
    seeds: tuple[int, ...] = SEEDS


def variant_config(variant: Variant, *, manifest: Path, split: dict[str, list[str]], artificial: Path | None,
                   diameter: float | None, epochs: int, steps: int, threads: int, device: str,
                   seed: int = 0) -> dict[str, Any]:
    """The ``fluoseg train`` config of a variant and seed (peers.py trains the same with its own epochs/steps)."""
    instance = dict(INSTANCE[variant.method])
    if variant.scale:
        instance["target_diameter"] = diameter
    return {
        "data": {"manifest": str(manifest), "extra_train": [str(artificial)] if variant.artificial else [],
                 "split": {"val": split["val"], "test": split["test"]}},
        "task": "instance",
        "instance": instance,
        "model": MODEL,
        "train": {"epochs": epochs, "steps_per_epoch": steps, "batch_size": BATCH, "patch_size": PATCH,
                  "learning_rate": LEARNING_RATE, "seed": seed, "device": device, "num_threads": threads},
    }


def train_variant(variant: Variant, settings: Settings, config: dict[str, Any], seed: int | None = None) -> None:
    """Train one network into ``unit_dir(...)/run``: skipped when finished, resumed when interrupted."""
    from fluoseg.run import RunDir

    name = unit_label(variant, seed)
    vdir = unit_dir(settings.work, variant, seed)
    run = vdir / "run"
    if RunDir(run).is_finished(settings.epochs):
        log(f"{name}: training done, skipped")
        return
    config_path = vdir / "train.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    if run.exists() and config_path.is_file() and config_path.read_text() != text:
        raise RuntimeError(f"{name}: {run} was started with another configuration (e.g. other --epochs/"
                           f"--steps); delete {vdir} or use another --work folder")
    write_text(config_path, text)
    args = ["train", config_path, "--out", run, "--quiet"]
    if RunDir(run).config_path.is_file():
        args.append("--resume")
        log(f"{name}: resuming training after epoch {len(epoch_rows(run))}/{settings.epochs}")
    elif run.exists():
        args.append("--overwrite")
    seen = [len(epoch_rows(run))]
    log(f"{name}: training {settings.epochs} epochs x {settings.steps} steps x batch {config['train']['batch_size']} "
        f"({settings.threads} thread(s))")

    def progress() -> None:
        rows = epoch_rows(run)
        for row in rows[seen[0]:]:
            log(f"{name}: epoch {row['epoch']}/{settings.epochs} loss {float(row['train_loss']):.4f} "
                f"val F1@0.5 {float(row['val_score']):.3f}{' *' if row['best'] == '1' else ''} "
                f"({float(row['seconds']):.0f} s)")
        seen[0] = max(seen[0], len(rows))

    with recorded(lambda seconds: accumulate(vdir / "timing.json", train_wall_s=seconds, train_invocations=1)):
        wall = run_fluoseg(args, vdir / "train.log", threads=settings.threads, poll=progress)
    log(f"{name}: training finished in {wall / 60:.1f} min")


def predict_variant(variant: Variant, settings: Settings, test_ids: list[str], seed: int | None = None) -> None:
    """Predict the test images with one network (``--diameter auto`` for the scale-normalised variants)."""
    predict_test_images(unit_label(variant, seed), unit_dir(settings.work, variant, seed), settings.data / "images",
                        test_ids, device=settings.device, threads=settings.threads,
                        extra=["--diameter", "auto"] if variant.scale else [])


def evaluate_variant(variant: Variant, settings: Settings, truth: Path, seed: int | None = None) -> None:
    """Score one network's test predictions (``fluoseg evaluate --task instance``), once."""
    name = unit_label(variant, seed)
    vdir = unit_dir(settings.work, variant, seed)
    if (vdir / "eval.csv").is_file():
        log(f"{name}: evaluation done, skipped")
        return
    run_fluoseg(["evaluate", "--task", "instance", "--pred", vdir / "pred", "--truth", truth, "--out", vdir / "eval.csv"],
                vdir / "evaluate.log", threads=settings.threads)
    summary = summarise(variant, settings, seed)
    log(f"{name}: F1@0.5 {summary['f1_at_0.5']:.3f}  AJI {summary['aji']:.3f}  "
        f"mAcc {summary['accuracy_mean_0.5_0.95']:.3f}  (validation F1@0.5 {summary['best_val_f1_at_0.5']:.3f})")


# ---- results ---------------------------------------------------------------------------------

def pooled_rows(eval_csv: Path) -> list[dict[str, str]]:
    """The rows of ``fluoseg evaluate`` pooled over all test images."""
    from fluoseg.metrics.semantic import ALL_IMAGES

    return [r for r in read_rows(eval_csv) if r["image"] == ALL_IMAGES]


def summarise(variant: Variant, settings: Settings, seed: int | None = None) -> dict[str, Any]:
    """One network's row of ``nuclei_units.csv`` (needs its finished evaluation); also kept as ``summary.json``."""
    from fluoseg.run import RunDir

    vdir = unit_dir(settings.work, variant, seed)
    run = RunDir.open(vdir / "run")
    rows = pooled_rows(vdir / "eval.csv")
    timing = read_json(vdir / "timing.json", {})
    config = yaml.safe_load((vdir / "train.yaml").read_text())
    best = max(epoch_rows(run.path), key=lambda r: float(r["val_score"]))  # the kept epoch: best on validation
    summary = {
        "setup": SETUP, "smoke": int(settings.smoke),
        "variant": variant.name, "method": variant.method, "artificial": int(variant.artificial),
        "scale": int(variant.scale), "seed": config["train"]["seed"],
        "target_diameter": config["instance"].get("target_diameter", ""),
        "f1_at_0.5": pooled_metric(rows, "f1", 0.5),
        "accuracy_at_0.5": pooled_metric(rows, "accuracy", 0.5),
        "f1_at_0.75": pooled_metric(rows, "f1", 0.75),
        "accuracy_mean_0.5_0.95": pooled_metric(rows, "accuracy_mean_over_thresholds"),
        "aji": pooled_metric(rows, "aji"),
        "us_rate": pooled_metric(rows, "us_rate"),
        "os_rate": pooled_metric(rows, "os_rate"),
        "precision_at_0.5": pooled_metric(rows, "precision", 0.5),
        "recall_at_0.5": pooled_metric(rows, "recall", 0.5),
        "pq_at_0.5": pooled_metric(rows, "pq", 0.5),
        "f1_mean_0.5_0.95": pooled_metric(rows, "f1_mean_over_thresholds"),
        "aji_cellpose": pooled_metric(rows, "aji_cellpose"),
        "kromp_precision": pooled_metric(rows, "kromp_precision"),
        "kromp_recall": pooled_metric(rows, "kromp_recall"),
        "pixel_dice": pooled_metric(rows, "pixel_dice"),
        "n_true": pooled_metric(rows, "n_true"),
        "n_pred": pooled_metric(rows, "n_pred"),
        "test_images": len({r["image"] for r in read_rows(vdir / "eval.csv")}) - 1,
        "n_artificial": settings.n_artificial if variant.artificial else "",
        "epochs": config["train"]["epochs"], "steps_per_epoch": config["train"]["steps_per_epoch"],
        "batch_size": config["train"]["batch_size"], "patch_size": config["train"]["patch_size"],
        "threads": config["train"]["num_threads"],
        "best_epoch": int(best["epoch"]), "best_val_f1_at_0.5": float(best["val_score"]),
        "train_wall_min": timing.get("train_wall_s", math.nan) / 60,
        "train_epochs_min": run.train_seconds() / 60,
        "infer_wall_s": timing.get("predict_wall_s", math.nan),
        "infer_s_per_image": timing.get("predict_wall_s", math.nan) / max(timing.get("predict_images", 0), 1),
        "infer_s_per_megapixel": timing.get("predict_wall_s", math.nan) / max(timing.get("predict_megapixels", 0), 1e-9),
        "params": run.parameter_count(),
    }
    write_json(vdir / "summary.json", summary)
    return summary


def finished_units(settings: Settings) -> list[tuple[Variant, int]]:
    """Every (variant, seed) of the work folder with a finished evaluation (any seed, not only this run's)."""
    units = []
    for variant in ALL_VARIANTS:
        seeds = [int(d.name.removeprefix("seed-")) for d in (settings.work / variant.name).glob("seed-*")
                 if (d / "eval.csv").is_file()]
        units += [(variant, seed) for seed in sorted(seeds)]
    return units


def planned_variants(plan: str, settings: Settings) -> list[Variant]:
    """The grid, or the reduced plan: both baselines, then the variants of the method with the better
    MEAN validation F1@0.5 over the seeds (chosen on validation, never test)."""
    if plan == "grid":
        return list(ALL_VARIANTS)
    baselines = [Variant(m) for m in METHODS]
    scores = {}
    for v in baselines:
        values = [read_json(unit_dir(settings.work, v, seed) / "summary.json") for seed in settings.seeds]
        if all(values):
            scores[v.method] = float(np.mean([value["best_val_f1_at_0.5"] for value in values]))
    if len(scores) < len(METHODS):
        return baselines
    better = max(METHODS, key=lambda m: scores[m])
    return baselines + [Variant(better, True, False), Variant(better, False, True), Variant(better, True, True)]


def collect(settings: Settings, plan_note: str) -> None:
    """Write the unit table (and the pooled metrics, the overlay figures) from the work folder, then render
    the report from the written table, as ``--report`` does."""
    units = finished_units(settings)
    if not units:
        log("no finished evaluation yet: no report")
        return
    results = settings.results
    results.mkdir(parents=True, exist_ok=True)
    rows = [summarise(v, settings, seed) for v, seed in units]
    write_rows(results / UNITS_NAME, rows, fields=UNIT_FIELDS)
    write_rows(results / "nuclei_pooled_metrics.csv",
               [{"variant": v.name, "seed": seed, "metric": r["metric"], "threshold": r["threshold"],
                 "value": r["value"]}
                for v, seed in units for r in pooled_rows(unit_dir(settings.work, v, seed) / "eval.csv")],
               fields=["variant", "seed", "metric", "threshold", "value"])
    first_seed = {}
    for v, seed in units:
        first_seed.setdefault(v, seed)
    figures = overlay_figures(settings, [(v.name, unit_dir(settings.work, v, seed)) for v, seed in first_seed.items()])
    report = render_report(results / UNITS_NAME, results, readme=not settings.smoke, plan_note=plan_note)
    log(f"report: {rel(report)} ({len(rows)} network(s) of {len(first_seed)} variant(s)), {rel(results / UNITS_NAME)}, "
        f"{len(figures)} overlay figure(s)")


def overlay_figures(settings: Settings, networks: list[tuple[str, Path]], n_images: int = 3) -> list[Path]:
    """Image with truth (green) and predicted (magenta) contours for a few test images, one panel per network.

    ``networks``: (panel title, the network's folder with ``pred/`` and ``eval.csv``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    available = [(name, folder) for name, folder in networks if (folder / "pred").is_dir()]
    if not available:
        return []
    test_ids = sorted(p.name.split(".")[0] for p in (available[0][1] / "pred").glob("*.tif"))
    chosen = pick_examples(settings.data, test_ids, n_images)
    per_image_f1 = {}
    for name, folder in available:
        for r in read_rows(folder / "eval.csv"):
            if r["metric"] == "f1" and r["threshold"] == "0.5":
                per_image_f1[(name, r["image"])] = float(r["value"])
    paths = []
    crop = 200  # shown at about one screen pixel per image pixel, so one-pixel contours stay visible
    for image_id in chosen:
        image = np.asarray(read_image(settings.data / "images" / f"{image_id}.tif").array, dtype=np.float32)[0]
        truth = read_labels(settings.data / "labels" / f"{image_id}.tif")
        y, x = densest_window(truth > 0, crop)
        window = (slice(y, y + crop), slice(x, x + crop))
        low, high = np.percentile(image[window], (1, 99.8))
        gray = np.clip((image[window] - low) / max(high - low, 1e-6), 0, 1)
        truth_edges = find_boundaries(truth[window], mode="outer")  # truth outside, prediction inside the object
        columns = min(4, len(available))
        rows = math.ceil(len(available) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False,
                                 layout="constrained")
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (name, folder) in zip(axes.ravel(), available):
            pred = read_labels(folder / "pred" / f"{image_id}.tif")
            rgb = np.repeat(gray[..., None], 3, axis=2)
            rgb[truth_edges] = (0.1, 1.0, 0.1)
            rgb[find_boundaries(pred[window], mode="inner")] = (1.0, 0.1, 1.0)
            ax.imshow(rgb, interpolation="nearest")
            f1 = per_image_f1.get((name, image_id), math.nan)
            ax.set_title(f"{name}: F1@0.5 {f1:.2f}", fontsize=7)
        fig.suptitle(f"{image_id} ({image.shape[0]}x{image.shape[1]})", fontsize=9)
        path = settings.results / f"nuclei_overlay_{image_id}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        from PIL import Image  # a 64-colour palette keeps the committed figures small

        Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
        paths.append(path)
    return paths


def pick_examples(data: Path, test_ids: list[str], n_images: int) -> list[str]:
    """The most crowded small image, the image with the largest nuclei, and the largest image."""
    from fluoseg.instance.scale import estimate_diameter_from_labels

    stats = []
    for i in test_ids:
        labels = read_labels(data / "labels" / f"{i}.tif")
        n = len(np.unique(labels)) - 1
        stats.append((i, labels.size, n / labels.size, estimate_diameter_from_labels(labels) if n else 0.0))
    chosen: list[str] = []
    for key in (lambda s: s[2], lambda s: s[3], lambda s: s[1]):
        for s in sorted(stats, key=key, reverse=True):
            if s[0] not in chosen:
                chosen.append(s[0])
                break
    return chosen[:n_images]


# ---- sizing ----------------------------------------------------------------------------------

def measure_steps(settings: Settings, n_steps: int) -> dict[str, Any]:
    """Time a few training steps of the benchmark's network (3 output channels, border loss); cached."""
    path = settings.work / "sizing.json"
    cached = read_json(path)
    if cached is not None and cached.get("threads") == settings.threads and cached.get("n_steps") == n_steps:
        return cached
    import torch
    import torch.nn.functional as F

    from fluoseg.models import build_model

    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    model = build_model(MODEL["name"], in_channels=1, out_channels=3, **MODEL["options"])
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    x = torch.randn(BATCH, 1, PATCH, PATCH)
    target = torch.randint(0, 3, (BATCH, PATCH, PATCH))
    times = []
    for _ in range(n_steps + 1):  # the first step warms up
        started = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    sizing = {"step_s": float(np.median(times[1:])), "steps_s": [round(t, 3) for t in times[1:]],
              "n_steps": n_steps, "threads": settings.threads, "batch": BATCH, "patch": PATCH,
              "load": f"1-min load average {os.getloadavg()[0]:.1f} while measuring",
              "params": int(sum(p.numel() for p in model.parameters()))}
    write_json(path, sizing)
    return sizing


def estimate_minutes(n_units: int, n_seeds: int, epochs: int, steps: int, step_s: float) -> tuple[float, float]:
    """(training-step minutes, other minutes) of ``n_units`` networks in one process.

    Other, per network (probe above): ~0.4 min start-up and data preparation, ~0.17 min
    validation per epoch, ~1.1 min prediction (0.6, or ~1.5 with --diameter auto) and
    evaluation; ~0.5 min synthesis of the artificial images per seed.
    """
    return n_units * epochs * steps * step_s / 60, n_units * (1.5 + epochs * 0.17) + 0.5 * n_seeds


def plan_note(n_units: int, n_seeds: int, epochs: int, steps: int, *, step_s: float = PLANNED_STEP_S,
              measured: str = "") -> str:
    """The sizing sentence of the report and the log: networks, steps, and the wall-time estimate."""
    train, other = estimate_minutes(n_units, n_seeds, epochs, steps, step_s)
    source = measured or f"{step_s:.2f} s per step, planned from the probe on this 2-core CPU at 1 thread under load"
    return (f"Sizing: {n_units} networks x {epochs} epochs x {steps} steps at {source}: about {train:.0f} min of "
            f"training steps + {other:.0f} min of data preparation, validation, prediction and evaluation = "
            f"{(train + other) / 60:.1f} h in one process; two at a time on a quiet 2-core machine (`--parallel 2`, "
            f"1 thread each) about {(train + other) / 60 / 2:.1f} h.")


# ---- main ------------------------------------------------------------------------------------

def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2); distinct non-negative integers."""
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise SystemExit(f"--seeds: comma-separated integers, e.g. 0,1,2 ({error})") from error
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(f"--seeds: distinct non-negative integers, got {text!r}")
    return seeds


def run_units(settings: Settings, only: list[Variant] | None, plan: str, parallel: int, note: str) -> list[str]:
    """Train, predict and evaluate every planned (variant, seed), ``parallel`` networks at a time; the unit
    table and report are rewritten after each network. Returns the failed networks."""
    split = dsb_split(settings.data, sizes=SMOKE if settings.smoke else None)
    manifest = dsb_manifest(settings.work / "manifest.yaml", settings.data,
                            split["train"] + split["val"] + split["test"])
    diameter = dsb_target_diameter(settings.work, settings.data, split["train"])
    log(f"target diameter for scale normalisation: {diameter} px")
    failures: list[str] = []
    done: set[tuple[str, int]] = set()
    report_lock = threading.Lock()  # one thread at a time writes the table, figures and README
    artificial: dict[int, Path] = {}

    def run_unit(variant: Variant, seed: int) -> None:
        name = unit_label(variant, seed)
        fresh = not (unit_dir(settings.work, variant, seed) / "eval.csv").is_file()
        try:
            if variant.artificial and seed not in artificial:
                raise RuntimeError(f"no artificial images for seed {seed} (see the log above)")
            config = variant_config(variant, manifest=manifest, split=split, artificial=artificial.get(seed),
                                    diameter=diameter, epochs=settings.epochs, steps=settings.steps,
                                    threads=settings.threads, device=settings.device, seed=seed)
            train_variant(variant, settings, config, seed)
            predict_variant(variant, settings, split["test"], seed)
            evaluate_variant(variant, settings, settings.data / "labels", seed)
        except Exception as error:  # noqa: BLE001 - one failed network must not stop the others
            log(f"{name}: FAILED: {error}")
            failures.append(name)
        if fresh:  # a new evaluation (or a failure): the table and report follow at once
            with report_lock:
                collect(settings, note)

    while True:
        planned = only if only else planned_variants(plan, settings)
        # seed-major: a partial run has every variant at n=1, then n=2, ... rather than some variants complete
        todo = [(v, seed) for seed in settings.seeds for v in planned if (v.name, seed) not in done]
        if not todo:
            break
        done.update((v.name, seed) for v, seed in todo)
        for seed in sorted({seed for v, seed in todo if v.artificial}):  # here, so workers never race on one folder
            try:
                artificial[seed] = artificial_images(settings.work, manifest, split["train"], settings.n_artificial,
                                                     settings.threads, seed=seed)
            except Exception as error:  # noqa: BLE001 - the variants without artificial images can still run
                log(f"artificial images (seed {seed}): FAILED: {error}")
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(run_unit, v, seed) for v, seed in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # SIGTERM or Ctrl-C: no queued network starts, no running one goes on
                stop_children()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    collect(settings, note)  # also when every network was cached: the report follows the code
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated variants to run, e.g. border,distance-art-scale "
                        f"(all: {', '.join(v.name for v in ALL_VARIANTS)}; smoke default: {SMOKE['variants']})")
    parser.add_argument("--plan", choices=("grid", "reduced"),
                        help="grid (default): all 8 variants; reduced: both baselines, then the artificial/scale "
                        "variants of the method with the better mean validation F1@0.5 over the seeds")
    parser.add_argument("--seeds", help="comma-separated training seeds, one independently trained network per "
                        f"variant and seed (default {','.join(map(str, SEEDS))}; smoke "
                        f"{','.join(map(str, SMOKE['seeds']))})")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {EPOCHS}; smoke {SMOKE['epochs']})")
    parser.add_argument("--steps", type=int, help=f"steps per epoch (default {STEPS}; smoke {SMOKE['steps']})")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per fluoseg process (default 1)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="networks trained/predicted at the same time, each a fluoseg process with --threads "
                        "threads (default 1; 2 on a quiet 2-core machine)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--n-artificial", type=int, help=f"artificial images (default {N_ARTIFICIAL})")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny end-to-end check: {SMOKE['train']} train / {SMOKE['val']} val / {SMOKE['test']} "
                        f"test images, {SMOKE['epochs']} epoch x {SMOKE['steps']} steps, variants {SMOKE['variants']} "
                        f"x seeds {','.join(map(str, SMOKE['seeds']))}, work and results in {rel(SMOKE_WORK)}/")
    parser.add_argument("--measure", action="store_true", help="only time a few training steps and print the estimate")
    parser.add_argument("--measure-steps", type=int, default=5, help="steps timed by the sizing measurement")
    parser.add_argument("--report", action="store_true",
                        help="only render nuclei.md, nuclei.csv and the README block from the results folder's "
                        f"{UNITS_NAME} (no work folder needed)")
    parser.add_argument("--data", type=Path, default=DSB2018, help="dsb2018_fluo folder (images/, labels/)")
    parser.add_argument("--work", type=Path, help=f"work folder (default {rel(DEFAULT_WORK)})")
    parser.add_argument("--results", type=Path, help=f"results folder (default {rel(RESULTS)}; smoke: WORK/results)")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        raise SystemExit("--parallel: at least 1")

    terminate_child_on_sigterm()
    work = (args.work or (SMOKE_WORK if args.smoke else DEFAULT_WORK)).resolve()
    seeds = parse_seeds(args.seeds) if args.seeds else (SMOKE["seeds"] if args.smoke else SEEDS)
    settings = Settings(
        data=args.data.resolve(), work=work,
        results=(args.results or (work / "results" if args.smoke else RESULTS)).resolve(),
        epochs=args.epochs or (SMOKE["epochs"] if args.smoke else EPOCHS),
        steps=args.steps or (SMOKE["steps"] if args.smoke else STEPS),
        threads=args.threads, device=args.device,
        n_artificial=args.n_artificial or (SMOKE["artificial"] if args.smoke else N_ARTIFICIAL), smoke=args.smoke,
        seeds=seeds)
    plan = args.plan or "grid"
    names = args.only or (SMOKE["variants"] if args.smoke and not args.plan else None)
    only = [Variant.parse(n) for n in names.split(",")] if names else None
    n_units = (len(only) if only else (len(ALL_VARIANTS) if plan == "grid" else 5)) * len(seeds)
    note = plan_note(n_units, len(seeds), settings.epochs, settings.steps)
    if args.report:  # from the committed table alone: no work folder, no torch
        report = render_report(settings.results / UNITS_NAME, settings.results, readme=not args.smoke, plan_note=note)
        log(f"report: {rel(report)} from {rel(settings.results / UNITS_NAME)}"
            + ("" if args.smoke else " and README.md"))
        return 0

    work.mkdir(parents=True, exist_ok=True)
    if args.measure:
        sizing = measure_steps(settings, args.measure_steps)
        log(plan_note(n_units, len(seeds), settings.epochs, settings.steps, step_s=sizing["step_s"],
                      measured=f"{sizing['step_s']:.2f} s per step measured now ({sizing['load']})"))
        return 0
    write_json(work / "run_settings.json", {"plan": plan, "only": names, "seeds": list(seeds),
                                            "epochs": settings.epochs, "steps": settings.steps,
                                            "n_artificial": settings.n_artificial, "threads": settings.threads,
                                            "parallel": args.parallel})
    log(f"{n_units} networks ({len(seeds)} seeds: {', '.join(map(str, seeds))}); {note}")
    failures = run_units(settings, only, plan, args.parallel, note)
    if failures:
        log(f"failed networks: {', '.join(failures)} (rerun the same command to retry)")
        return 1
    log("all done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
