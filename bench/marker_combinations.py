#!/usr/bin/env python
"""Marker-combination benchmark on vessels5: the MS-ME paper's Figs. 2-3 and Supplementary Table 3.

Methods (all the MS-ME U-Net, scaled down; see ``--depth``/``--base-filters``):

* ``MZ``     Marker Zero: missing markers are zeros, no sampling;
* ``MS``     Marker Sampling (r_drop = 0.5);
* ``MS-ME``  MS with Marker Excite after the encoder, bottleneck and decoder blocks;
* ``MS-SE``  MS with Squeeze-and-Excitation at the same places;
* ``HeMIS``  per-marker backends, mean/variance abstraction, U-Net frontend (half the filters);
* ``UB``     upper bound: one Marker-Zero U-Net per marker combination, trained on that
             combination only (a subset of the 31 combinations, fewer steps; see ``--ub-*``).

Every method is trained with 4-fold cross-validation by sample (``kfold_splits``, seed 0: 5
training, 1 validation and 2 test samples per fold, every sample once in test, the same
folds for every method) and evaluated on all 31 marker combinations of its test samples
(``fluoseg experiment crossval``). Paired differences against MS and against UB use the
paper's unit, a (class, combination, fold) with pixel counts pooled over the fold's test
samples (n = 31 x 4 = 124 per class), and the two-sided Wilcoxon signed-rank test.

Sizing: the samples are cropped (``--crop``, default 384 px: one 572-px tile at inference)
at the window holding the most pixels of the rarest class (arteries; the centre when a
sample has none), and every network trains ``--epochs x --steps`` batches of ``--batch``
patches of ``--patch`` px. Defaults are chosen to finish in about 90 minutes on 2 CPU
cores at 1 thread; the estimate printed at start is measured on this machine.

Everything is resumable: ``bench/work/marker_combinations/`` holds one folder per
(method, fold) (``<METHOD>/fold<k>/``, and ``UB/fold<k>/<combination>/``); finished
trainings and evaluations are skipped, an interrupted training resumes from its last
epoch, and the report is rebuilt from the cached CSVs. CI never runs this script.

Usage::

    .venv/bin/python bench/marker_combinations.py --smoke        # end-to-end check, ~2 minutes
    .venv/bin/python bench/marker_combinations.py --estimate     # measure, print the estimate, stop
    nohup .venv/bin/python bench/marker_combinations.py > bench/work/marker_combinations.log 2>&1 &
    .venv/bin/python bench/marker_combinations.py --report       # rebuild the report from caches
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    RESULTS,
    WORK,
    densest_window,
    log,
    log_tail,
    read_json,
    rel,
    run_logged,
    terminate_child_on_sigterm,
    vessels_manifest,
    write_json,
    write_text,
)

METHODS = ("MZ", "MS", "MS-ME", "MS-SE", "HeMIS", "UB")
# Upper-bound subset: the artery marker alone, the paper's poor m_15 (its Fig. 3h), a good pair, all five.
UB_COMBINATIONS = "m_4,m_15,m_24,m_12345"
# Measured ratio of a real training step (patch sampling, augmentation, per-epoch validation
# included) to the bare network step the profile times: 0.57 s vs 0.40 s on 2 busy cores.
OVERHEAD = 1.4

DEFAULTS = {"epochs": 10, "steps": 25, "batch": 2, "patch": 316, "depth": 4, "base_filters": 16, "crop": 384,
            "tile": 572, "lr": 5e-4, "ub_epochs": 4, "ub_combinations": UB_COMBINATIONS, "folds": 4}
SMOKE = {"epochs": 1, "steps": 2, "batch": 2, "patch": 60, "depth": 2, "base_filters": 4, "crop": 80, "tile": 132,
         "lr": 1e-3, "ub_epochs": 1, "ub_combinations": "m_2,m_12345", "folds": 4}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, help="dataset manifest (default: vessels5, written into the work folder)")
    p.add_argument("--work", type=Path, help="work folder (default bench/work/marker_combinations[_smoke])")
    p.add_argument("--results", type=Path, help="folder of the report (default bench/results; smoke: WORK/results)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    size = p.add_argument_group("sizing (defaults: the full run; --smoke: a tiny one)")
    size.add_argument("--smoke", action="store_true", help="tiny networks and crops: checks the pipeline in ~2 min")
    size.add_argument("--epochs", type=int, help=f"epochs per model (default {DEFAULTS['epochs']})")
    size.add_argument("--steps", type=int, help=f"batches per epoch (default {DEFAULTS['steps']})")
    size.add_argument("--batch", type=int, help=f"patches per batch (default {DEFAULTS['batch']})")
    size.add_argument("--patch", type=int, help=f"training input patch in px (default {DEFAULTS['patch']})")
    size.add_argument("--depth", type=int, help=f"U-Net poolings (default {DEFAULTS['depth']})")
    size.add_argument("--base-filters", type=int, help=f"U-Net first-block filters (default {DEFAULTS['base_filters']})")
    size.add_argument("--crop", type=int, help=f"crop samples to CROP x CROP px, 0 = whole (default {DEFAULTS['crop']})")
    size.add_argument("--tile", type=int, help=f"inference input tile in px (default {DEFAULTS['tile']})")
    size.add_argument("--lr", type=float, help=f"Adam learning rate (default {DEFAULTS['lr']})")
    size.add_argument("--folds", type=int, help=f"cross-validation folds (default {DEFAULTS['folds']})")
    size.add_argument("--ub-combinations", help="UB combination codes, a number N (N spread over the 31), or 'all' "
                      f"(default {UB_COMBINATIONS})")
    size.add_argument("--ub-epochs", type=int, help=f"epochs per UB model (default {DEFAULTS['ub_epochs']})")
    run = p.add_argument_group("execution")
    run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    run.add_argument("--budget-minutes", type=float, default=90.0, help="warn when the estimate exceeds this")
    run.add_argument("--estimate", action="store_true", help="measure and print the estimate, then stop")
    run.add_argument("--report", action="store_true", help="only rebuild the report from finished results")
    run.add_argument("--quiet", action="store_true", help="no progress bars (progress lines still print)")
    run.add_argument("--profile-method", help=argparse.SUPPRESS)  # internal: one profiling subprocess
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    args.name = "marker_combinations_smoke" if args.smoke else "marker_combinations"
    args.work = args.work or WORK / args.name
    args.results = args.results or (args.work / "results" if args.smoke else RESULTS)
    return args


# ---- data ------------------------------------------------------------------------------------

def prepare_data(args: argparse.Namespace) -> Path:
    """The manifest to train on: the original, or crops written once into the work folder."""
    import tifffile
    import yaml

    from fluoseg.data.manifest import load_manifest

    if not args.crop:
        return args.manifest.resolve()
    folder = args.work / "data" / f"crop{args.crop}"
    manifest = folder / "manifest.yaml"
    if manifest.is_file():
        return manifest
    data = load_manifest(args.manifest)
    classes = list(data.classes)
    masks = {s.id: s.read_masks(classes, tuple(s.read_image(lazy=True).spatial_shape)) for s in data.samples}
    totals = np.sum([m.reshape(len(classes), -1).sum(1) for m in masks.values()], axis=0)
    rarest = int(np.argmin(totals))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    crops = {}
    for sample in data.samples:
        y, x = densest_window(masks[sample.id][rarest] > 0, args.crop)
        window = (slice(None), slice(y, y + args.crop), slice(x, x + args.crop))
        image = np.asarray(sample.read_image().array)[window]
        tifffile.imwrite(folder / "images" / f"{sample.id}.tif", image, photometric="minisblack")
        tifffile.imwrite(folder / "masks" / f"{sample.id}.tif", masks[sample.id][window], photometric="minisblack")
        crops[sample.id] = {"y": int(y), "x": int(x), "size": args.crop}
    write_json(folder / "crops.json", {"rarest_class": classes[rarest], "crops": crops})
    pixel = data.samples[0].pixel_size
    raw = {"root": ".", "markers": list(data.markers), "classes": classes,
           "pixel_size_um": float(pixel[0]) if pixel else None, "images": "images/*.tif", "masks": "masks/{id}.tif"}
    comment = f"# {args.crop}-px crops of {args.manifest.resolve()} at the windows richest in {classes[rarest]}\n"
    write_text(manifest, comment + yaml.safe_dump(raw, sort_keys=False))  # last: marks the crops as complete
    log(f"data: {len(crops)} crops of {args.crop} px in {folder} (windows richest in {classes[rarest]})")
    return manifest


# ---- configurations --------------------------------------------------------------------------

def model_section(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The network of a method (UB: the MZ network; run_upper_bound enforces MZ and no attention)."""
    unet = {"depth": args.depth, "base_filters": args.base_filters, "padding": "valid"}
    if method == "HeMIS":
        # Half the filters in backends and frontend: HeMIS is the small model of the paper's Supp. Table 3,
        # and its five full-resolution backends would otherwise cost 2.5x an MS step.
        half = max(4, args.base_filters // 2)
        return {"name": "hemis", "options": {"depth": args.depth, "base_filters": half, "backend_filters": half,
                                             "padding": "valid"}}
    extra = {"MZ": {"marker_input": "mz"}, "UB": {"marker_input": "mz"}, "MS": {"marker_input": "ms"},
             "MS-ME": {"marker_input": "ms", "attention": "me"}, "MS-SE": {"marker_input": "ms", "attention": "se"}}
    return {"name": "unet", "options": {**unet, **extra[method]}}


def method_config(method: str, args: argparse.Namespace, manifest: Path) -> Any:
    from fluoseg.config import RunConfig

    epochs = args.ub_epochs if method == "UB" else args.epochs
    return RunConfig.model_validate({
        "data": {"manifest": str(manifest), "split": {"seed": 0}},
        "model": model_section(method, args),
        "preprocess": {"normalization": "gaussian", "pixel_size_um": 1.0},
        "train": {"class_mode": "joint", "epochs": epochs, "steps_per_epoch": args.steps, "batch_size": args.batch,
                  "patch_size": args.patch, "learning_rate": args.lr, "seed": 0, "device": args.device,
                  "val_tile_size": args.tile, "num_threads": args.threads},
    })


def ub_selection(args: argparse.Namespace) -> dict[str, Any]:
    """``run_upper_bound`` keywords for ``--ub-combinations``."""
    spec = str(args.ub_combinations).strip()
    if spec == "all":
        return {}
    if spec.isdigit():
        return {"max_combinations": int(spec)}
    return {"combinations": spec}


# ---- computational profile (Supplementary Table 3) ---------------------------------------------

def profile_in_process(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Parameters, median training / inference time per batch and peak memory of one network.

    Runs in its own process so that ``ru_maxrss`` (the peak resident set size) belongs to
    this network alone: training steps on random batches of the benchmark's size with the
    log-weighted cross-entropy and Adam, then inference on single tiles.
    """
    import torch

    from fluoseg.models import build_model, count_parameters

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    section = model_section(method, args)
    model = build_model(section["name"], in_channels=5, out_channels=3, **section["options"])
    size = model.valid_input_size(args.patch)
    out = model.output_size(size)
    tile = model.valid_input_size(args.tile)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    x = torch.randn(args.batch, 5, size, size)
    available = torch.ones(args.batch, 5)
    target = torch.randint(0, 3, (args.batch, out, out))
    weights = torch.tensor([0.5, 1.5, 3.0])
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train_times = []
    model.train()
    for step in range(6):  # the first step warms up allocators and kernels and is not timed
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x, available), target, weight=weights)
        loss.backward()
        optimizer.step()
        if step:
            train_times.append(time.perf_counter() - started)
    train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.eval()
    infer_times = []
    tile_x = torch.randn(1, 5, tile, tile)
    with torch.inference_mode():
        for step in range(4):
            started = time.perf_counter()
            model(tile_x, torch.ones(1, 5))
            if step:
                infer_times.append(time.perf_counter() - started)
    return {"method": method, "parameters": count_parameters(model), "patch": size, "tile": tile,
            "train_s_per_batch": statistics.median(train_times), "infer_s_per_tile": statistics.median(infer_times),
            "baseline_rss_mib": baseline / 1024, "peak_rss_mib": train_peak / 1024,
            "threads": args.threads}


def profile(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The cached profile of a method's network, measured in a subprocess when missing."""
    path = args.work / "profile" / f"{'MZ' if method == 'UB' else method}.json"
    if not path.is_file():
        command = [sys.executable, str(Path(__file__).resolve()), "--profile-method", path.stem, "--work",
                   str(args.work), "--threads", str(args.threads)] + sizing_flags(args)
        log_path = path.with_suffix(".log")
        if run_logged(command, log_path, threads=args.threads).code != 0:
            raise SystemExit(f"profiling {path.stem} failed; log {rel(log_path)}:\n{log_tail(log_path)}")
    return read_json(path)


def sizing_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--batch", str(args.batch), "--patch", str(args.patch), "--depth", str(args.depth), "--base-filters",
             str(args.base_filters), "--tile", str(args.tile), "--lr", str(args.lr)]
    return flags + (["--smoke"] if args.smoke else [])


# ---- estimate ----------------------------------------------------------------------------------

def tiles_per_image(args: argparse.Namespace, method: str, shape: tuple[int, int]) -> int:
    from fluoseg.models import build_model
    from fluoseg.tiling import geometry_for, plan_tiles

    section = model_section(method, args)
    model = build_model(section["name"], in_channels=5, out_channels=3, **section["options"])
    return len(plan_tiles(shape, geometry_for(model, args.tile)))


def estimate(args: argparse.Namespace, manifest: Path, profiles: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Seconds of the work not finished yet, per method, from the measured per-batch times.

    Per (method, fold): training batches x time per batch, plus one validation prediction
    per epoch and 31 combinations x test samples predictions, each ``tiles`` x time per
    tile, times the measured overhead of the real training loop (``OVERHEAD``).
    """
    from fluoseg.data.manifest import load_manifest
    from fluoseg.experiments.upper_bound import plan_upper_bound

    data = load_manifest(manifest)
    shape = tuple(data.samples[0].read_image(lazy=True).spatial_shape)
    n_test = len(data.samples) / args.folds
    seconds: dict[str, float] = {}
    for method in args.methods:
        p = profiles[method]
        tiles = tiles_per_image(args, method, shape) * p["infer_s_per_tile"]
        if method == "UB":
            plans = plan_upper_bound(method_config("UB", args, manifest), folds=args.folds, **ub_selection(args))
            pending = [1 for plan in plans for g in plan.chosen
                       if not (args.work / "UB" / f"fold{plan.fold}" / data_code(data, g) / "combinations.csv").is_file()]
            per_unit = args.ub_epochs * (args.steps * p["train_s_per_batch"] + tiles) + n_test * tiles
            seconds[method] = OVERHEAD * len(pending) * per_unit
            continue
        pending = [k for k in range(args.folds) if not (args.work / method / f"fold{k}" / "combinations.csv").is_file()]
        per_unit = args.epochs * (args.steps * p["train_s_per_batch"] + tiles) + n_test * 31 * tiles
        seconds[method] = OVERHEAD * len(pending) * per_unit
    return seconds


def data_code(data: Any, combination: tuple[str, ...]) -> str:
    from fluoseg.markers import MarkerPanel

    return MarkerPanel(data.markers).subset_code(combination)


# ---- running -----------------------------------------------------------------------------------

def run_methods(args: argparse.Namespace, manifest: Path) -> None:
    """Cross-validate every method on the same folds, then the upper bound.

    The methods share one cross-validation folder (``WORK/folds.json``, units in
    ``WORK/<method>/fold<k>/``), so their folds are checked to be the same;
    ``crossval_combinations`` would also rewrite ``WORK/combinations.csv`` with the rows of
    the last method only, so :func:`collect` reads the units' tables instead.
    """
    from fluoseg.experiments.combinations import CombinationScorer
    from fluoseg.experiments.crossval import run_crossval
    from fluoseg.experiments.upper_bound import run_upper_bound

    for method in args.methods:
        started = time.perf_counter()
        log(f"== {method}")
        config = method_config(method, args, manifest)
        if method == "UB":
            run_upper_bound(config, args.work / "UB", folds=args.folds, epochs=args.ub_epochs, tile_size=args.tile,
                            progress=not args.quiet, log=lambda m: log(f"UB {m}"), **ub_selection(args))
        else:
            run_crossval({method: config}, args.work, CombinationScorer(method=method, tile_size=args.tile),
                         folds=args.folds, seed=config.data.split.seed, progress=not args.quiet, log=log)
        log(f"== {method} done in {(time.perf_counter() - started) / 60:.1f} min")


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Result rows of every finished (method, fold) unit."""
    from fluoseg.experiments.combinations import CombinationScorer
    from fluoseg.experiments.results import read_results

    paths = [p for method in METHODS if method != "UB"
             for p in sorted((args.work / method).glob(f"fold*/{CombinationScorer.RESULTS}"))]
    upper_bound = args.work / "UB" / "upper_bound.csv"
    return read_results(paths + ([upper_bound] if upper_bound.is_file() else []))


# ---- report ------------------------------------------------------------------------------------

def fmt(value: float, spec: str = ".3f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def comparison(rows: list[dict[str, Any]], reference: str, args: argparse.Namespace,
               classes: list[str]) -> tuple[list[str], str | None]:
    """Markdown lines of the paired tests against ``reference`` and the boxplot's file name."""
    from fluoseg.experiments.compare import difference_tests, paired_differences
    from fluoseg.experiments.plots import difference_boxplot

    if reference not in {r["method"] for r in rows}:
        return [f"_No {reference} results yet._"], None
    differences = paired_differences(rows, reference, unit="fold")
    if not differences:
        return [f"_No unit shared with {reference}._"], None
    tests = difference_tests(differences, unit="fold")
    png = f"{args.name}_vs_{reference}.png"
    difference_boxplot(differences, tests, args.results / png, reference=reference, classes=classes)
    lines = ["| method | class | n | mean diff | median diff | p (Wilcoxon) | sig |", "|---|---|---:|---:|---:|---:|---|"]
    for t in tests:
        lines.append(f"| {t['method']} | {t['class']} | {t['n']} | {fmt(t['mean_difference'], '+.4f')} | "
                     f"{fmt(t['median_difference'], '+.4f')} | {fmt(t['p_value'], '.3g')} | {t['stars']} |")
    return lines, png


def write_report(args: argparse.Namespace, manifest: Path, profiles: dict[str, dict[str, Any]],
                 wall_seconds: float | None) -> Path:
    from fluoseg.experiments.results import SUMMARY_FIELDS, mean_table, summarize, write_csv

    import torch

    rows = collect(args)
    args.results.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    from fluoseg.data.manifest import load_manifest

    present = {r["class"] for r in rows}
    classes = [c for c in load_manifest(manifest).classes if c in present]
    pooled = _pooled(rows)
    write_csv(summarize(pooled), args.results / f"{args.name}_summary.csv", SUMMARY_FIELDS)
    ub_codes = {r["combination"] for r in rows if r["method"] == "UB"}
    means = mean_table(pooled)
    on_ub = mean_table([r for r in pooled if r["combination"] in ub_codes])
    lines = [f"# Marker combinations on vessels5{' (SMOKE RUN: tiny settings, numbers meaningless)' if args.smoke else ''}",
             "",
             f"Generated by `bench/marker_combinations.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
             + (f" after {wall_seconds / 60:.1f} min of work in this invocation" if wall_seconds else "") + ".",
             "",
             "## Setting", ""]
    lines += settings_lines(args, manifest, torch.__version__)
    lines += ["", "## Mean F1 per method and class", "",
              "Over every (combination, fold) unit, F1 from the pixel counts pooled over the fold's 2 test samples "
              "(mean ± sd, n units). UB covers only its combinations; the last columns restrict every method to "
              "those combinations for a like-for-like view.", ""]
    header = "| method | " + " | ".join(f"{c} (all)" for c in classes) + " | " + " | ".join(
        f"{c} (UB combos)" for c in classes) + " |"
    lines += [header, "|---|" + "---:|" * (2 * len(classes))]
    for m in methods:
        cells = [f"{fmt(means[m, c][0])} ± {fmt(means[m, c][1])} (n={means[m, c][2]})" if (m, c) in means else "n/a"
                 for c in classes]
        cells += [f"{fmt(on_ub[m, c][0])} (n={on_ub[m, c][2]})" if (m, c) in on_ub else "n/a" for c in classes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for reference, text in (("MS", "Paired differences F1(method) − F1(MS)"),
                            ("UB", "Paired differences F1(method) − F1(UB), on UB's combinations")):
        table, png = comparison(rows, reference, args, classes)
        lines += ["", f"## {text}", "",
                  "Two-sided Wilcoxon signed-rank test over (class, combination, fold) units; `all` pools both "
                  "classes as the paper does. * p ≤ 0.05, ** p ≤ 0.01, *** p ≤ 0.001.", ""] + table
        if png:
            lines += ["", f"![F1 relative to {reference}]({png})"]
    lines += ["", "## Per combination (mean F1 over the folds)", ""] + per_combination_lines(pooled, methods, classes)
    lines += ["", "## Computational cost (cf. Supplementary Table 3)", ""] + cost_lines(args, profiles, rows)
    lines += ["", "## Notes", ""] + notes_lines(args)
    path = args.results / f"{args.name}.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _pooled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from fluoseg.experiments.results import pool_samples

    return pool_samples(rows)


def settings_lines(args: argparse.Namespace, manifest: Path, torch_version: str) -> list[str]:
    ub = ub_selection(args)
    ub_text = ("all trainable combinations" if not ub else f"{ub['max_combinations']} combinations spread over the 31"
               if "max_combinations" in ub else f"combinations {ub['combinations']}")
    return [
        f"- Data: `{rel(args.manifest)}` → `{rel(manifest)}`" + (f" ({args.crop}×{args.crop} px crops at the windows richest in "
                                                     "the rarest class)" if args.crop else " (whole samples)"),
        f"- {args.folds}-fold cross-validation by sample (`kfold_splits`, seed 0), same folds for every method; "
        "each method evaluated on all 31 marker combinations of its test samples.",
        f"- U-Net: depth {args.depth}, {args.base_filters} base filters, valid padding, no normalisation; HeMIS: "
        f"{max(4, args.base_filters // 2)} backend filters, 2 backend layers, U-Net frontend with "
        f"{max(4, args.base_filters // 2)} base filters. One joint network for both classes (the paper trains one "
        "per class).",
        f"- Training: {args.epochs} epochs × {args.steps} steps = {args.epochs * args.steps} batches of {args.batch} "
        f"patches of {args.patch} px, Adam lr {args.lr}, log-weighted cross-entropy, flips/rotations/intensity "
        "jitter, model selection by best validation mean F1 (once per epoch).",
        f"- UB: {ub_text}, {args.ub_epochs} epochs × {args.steps} steps = {args.ub_epochs * args.steps} batches per "
        "model (fewer than the other methods, for time), Marker-Zero U-Net trained and validated only on its "
        "combination.",
        f"- Inference: overlap-tile with {args.tile}-px input tiles. CPU: {os.cpu_count()} cores, "
        f"{args.threads} torch thread(s), torch {torch_version}, Python {platform.python_version()}.",
    ]


def per_combination_lines(pooled: list[dict[str, Any]], methods: list[str], classes: list[str]) -> list[str]:
    from fluoseg.experiments.results import combination_sort_key

    means: dict[tuple[str, str, str], list[float]] = {}
    names: dict[str, tuple[int, str, str]] = {}
    for r in pooled:
        means.setdefault((r["method"], r["class"], r["combination"]), []).append(float(r["f1"]))
        names[r["combination"]] = (*combination_sort_key(r), r["markers"])
    lines = ["| combination | markers | " + " | ".join(f"{m} {c[:4]}." for c in classes for m in methods) + " |",
             "|---|---|" + "---:|" * (len(classes) * len(methods))]
    for code in sorted(names, key=lambda c: names[c][:2]):
        cells = [fmt(float(np.mean(means[m, c, code]))) if (m, c, code) in means else "" for c in classes
                 for m in methods]
        lines.append(f"| {code} | {names[code][2]} | " + " | ".join(cells) + " |")
    return lines


def cost_lines(args: argparse.Namespace, profiles: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"Median over 5 training batches ({args.batch} × {args.patch}² px, after one warm-up) and 3 inference "
             f"tiles (1 × {args.tile}² px), {args.threads} thread(s) on CPU, each network in its own process; peak "
             "memory is that process's peak resident set size (`resource.getrusage`), the increase is over the "
             "process after imports and model construction. Training wall time is the measured total per model "
             "(training + per-epoch validation) in this benchmark.", "",
             "| method | parameters (×10⁶) | training (ms/batch) | inference (ms/tile) | peak RSS (MiB) | "
             "increase (MiB) | wall time per model (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method in [m for m in METHODS if m in profiles]:
        p = profiles[method]
        walls = wall_times(args, method)
        params = f"{p['parameters'] / 1e6:.3f}"
        if method == "UB":
            n = len({r["combination"] for r in rows if r["method"] == "UB"}) or 31
            params = f"{params} per model × {n} trained (× 31 for the full UB: {31 * p['parameters'] / 1e6:.2f})"
        lines.append(f"| {method} | {params} | {1000 * p['train_s_per_batch']:.0f} | {1000 * p['infer_s_per_tile']:.0f} "
                     f"| {p['peak_rss_mib']:.0f} | {p['peak_rss_mib'] - p['baseline_rss_mib']:.0f} | "
                     f"{fmt(float(np.mean(walls)) if walls else float('nan'), '.0f')} |")
    return lines


def wall_times(args: argparse.Namespace, method: str) -> list[float]:
    folder = args.work / method
    records = folder.glob("fold*/*/run/trained.json") if method == "UB" else folder.glob("fold*/run/trained.json")
    return [seconds for seconds in (read_json(p).get("seconds") for p in records) if seconds]


def notes_lines(args: argparse.Namespace) -> list[str]:
    return [
        "- vessels5 is simulated (see `../shared/data/README.md`); arteries are rare and absent from some samples, "
        "so their per-fold F1 is noisy.",
        "- Deviations from the paper, for a CPU budget: far fewer training steps (the paper trains 200 epochs), a "
        "smaller U-Net, crops, one joint network for both classes, and an upper bound on a subset of combinations "
        "with fewer steps than the other methods (which favours the other methods against UB).",
        "- Rebuild this report from the cached results with `--report`; rerunning the benchmark skips finished "
        "(method, fold) units.",
    ]


# ---- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile_method:  # internal: the subprocess measuring one network
        path = args.work / "profile" / f"{args.profile_method}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, profile_in_process(args.profile_method, args))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    terminate_child_on_sigterm()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    args.manifest = args.manifest or vessels_manifest(args.work / "data" / "vessels5" / "manifest.yaml")
    log(f"work folder {args.work}; methods {args.methods}")
    manifest = prepare_data(args)
    profiles = {m: profile(m, args) for m in args.methods}
    if not args.report:
        seconds = estimate(args, manifest, profiles)
        total = sum(seconds.values()) / 60
        for method, s in seconds.items():
            p = profiles[method]
            log(f"estimate {method}: {s / 60:.1f} min left ({1000 * p['train_s_per_batch']:.0f} ms per training batch, "
                f"{1000 * p['infer_s_per_tile']:.0f} ms per inference tile)")
        verdict = "within" if total <= args.budget_minutes else "OVER"
        log(f"estimated remaining time {total:.0f} min at {args.threads} thread(s), {verdict} the budget of "
            f"{args.budget_minutes:.0f} min" + ("" if total <= args.budget_minutes else
                                                 " (reduce --steps/--epochs, --methods or --ub-combinations)"))
        if args.estimate:
            return 0
        run_methods(args, manifest)
    report = write_report(args, manifest, profiles, time.perf_counter() - started)
    log(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
