#!/usr/bin/env python
"""Marker-combination benchmark on vessels5: the MS-ME paper's Figs. 2-3 and Supplementary Table 3.

Methods (all the MS-ME U-Net, scaled down; see ``--depth``/``--base-filters``):

* ``MZ``     Marker Zero: missing markers are zeros, no sampling;
* ``MS``     Marker Sampling (r_drop = 0.5);
* ``MS-ME``  MS with Marker Excite after the encoder, bottleneck and decoder blocks;
* ``MS-SE``  MS with Squeeze-and-Excitation at the same places;
* ``HeMIS``  per-marker backends, mean/variance abstraction, U-Net frontend (half the filters);
* ``UB``     upper bound: one Marker-Zero U-Net per marker combination, trained on that
             combination only, with as many training batches as the other methods (a subset
             of the 31 combinations; see ``--ub-*``);
* ``MS-ME-4x`` the MS-ME network trained with 4x the batches, and ``UB-4x`` the UB networks
             trained with 4x the batches (issue 11, item 3: does longer training close the gap
             between MS-ME and UB?); MS-ME-4x is compared with UB-4x (equal steps) and with UB
             (equal total compute: one network against UB's four per fold), never with MS;
* probes of why MS-ME trails UB at equal steps (issue 11, item 3), each the MS-ME network with
  one change and MS-ME's batches: ``MS-ME-r25`` / ``MS-ME-r75`` (r_drop 0.25 / 0.75: which
  panels sampling draws how often), ``MS-ME-2w`` (twice the filters), ``MS-ME-BD`` (Marker
  Excite after bottleneck and decoder only); see ``PROBES`` in the report module. They are
  compared with MS-ME and with UB in a family of tests of their own.

Every method is trained with 4-fold cross-validation by sample (``kfold_splits``, seed 0: 5
training, 1 validation and 2 test samples per fold, every sample once in test, the same
folds for every method and training seed) and evaluated on all 31 marker combinations of its
test samples (``fluoseg experiment crossval``). ``--seeds 0,1,2`` repeats every training
with other initialisations and batches on the same folds.

Statistics (issue 11; ``bench/marker_combinations_report.py``): the unit is an independently
trained network, a (fold, seed). Per network and class, F1 is pooled over the fold's test
samples per combination and averaged over the combinations; methods are compared by paired
t-tests over the networks they share, against MS on all combinations and against UB on the
combinations UB was trained for, per class and for both classes, with Holm's correction
over every test of the report and n beside every star. MS-ME − UB, MS-ME-4x − UB and
MS-ME-4x − UB-4x are also tabled per trained combination with every network's value (issue 11,
item 3).

Outputs: ``bench/results/marker_combinations_units.csv`` (one row per network, combination
and class: method, fold, seed, combination, markers, class, tp, fp, fn, f1, batches), the
run record ``marker_combinations_run.json`` (settings, cost profile, wall times), the report
``marker_combinations.md`` and the README block between ``<!-- markers:begin ... -->`` and
``<!-- markers:end -->``. ``--report`` renders the report and the README block from the CSV
alone (the run record adds settings and cost when present); without the CSV both say the
numbers are pending.

Sizing: the samples are cropped (``--crop``, default 384 px: one 572-px tile at inference)
at the window holding the most pixels of the rarest class (arteries; the centre when a
sample has none), and every network trains ``--epochs x --steps`` batches of ``--batch``
patches of ``--patch`` px (UB: ``--ub-epochs``, by default ``--epochs``). The estimate
printed at start is measured on this machine.

Full run and its duration: one seed, 5 methods x 4 folds x 250 batches, UB 4
combinations x 4 folds x 250 batches, MS-ME-4x 4 folds x 1000 batches and UB-4x 4
combinations x 4 folds x 1000 batches. The run of 2026-12-02 (all but UB-4x) took 132 min of
work at 1 thread on 2 cores shared by two such processes: 107 s per UB network, 131-198 s per
other network, 614 s per MS-ME-4x network; UB-4x adds 16 networks of ~430 s (about 2 h).
The probes add 16 MS-ME-sized networks (MS-ME-2w about 4x the cost of each of the others).
``--estimate`` measures it on the machine at hand. Each further seed adds as much again.

Everything is resumable: ``bench/work/marker_combinations/seed<s>/`` holds one folder per
(method, fold) (``<METHOD>/fold<k>/``, and ``UB/fold<k>/<combination>/``, likewise UB-4x); finished
trainings and evaluations are skipped, an interrupted training resumes from its last
epoch. The per-unit CSV is rebuilt from every finished unit of the work folder. CI never
runs this script.

Usage::

    PYTHONPATH=src .venv/bin/python bench/marker_combinations.py --smoke       # end-to-end check, ~2 min
    PYTHONPATH=src .venv/bin/python bench/marker_combinations.py --estimate    # measure, print the estimate, stop
    nohup env OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/marker_combinations.py \\
        > bench/work/marker_combinations.log 2>&1 &                             # the full run, ~4 h
    PYTHONPATH=src .venv/bin/python bench/marker_combinations.py --report      # report + README block from the CSV
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
    ROOT,
    WORK,
    accumulate,
    densest_window,
    fill_readme_block,
    git_commit,
    log,
    log_tail,
    read_json,
    read_rows,
    recorded,
    rel,
    run_logged,
    terminate_child_on_sigterm,
    vessels_manifest,
    write_json,
    write_rows,
    write_text,
)
from marker_combinations_report import FOCUS, LONGER, LONGER_FACTOR, LONGER_UB, METHODS, PROBES, UPPER_BOUNDS

# Upper-bound subset: the artery marker alone, the paper's poor m_15 (its Fig. 3h), a good pair, all five.
UB_COMBINATIONS = "m_4,m_15,m_24,m_12345"
# Measured ratio of a real training step (patch sampling, augmentation, per-epoch validation
# included) to the bare network step the profile times: 0.57 s vs 0.40 s on 2 busy cores.
OVERHEAD = 1.4

DEFAULTS = {"epochs": 10, "steps": 25, "batch": 2, "patch": 316, "depth": 4, "base_filters": 16, "crop": 384,
            "tile": 572, "lr": 5e-4, "ub_combinations": UB_COMBINATIONS, "folds": 4}
SMOKE = {"epochs": 1, "steps": 2, "batch": 2, "patch": 60, "depth": 2, "base_filters": 4, "crop": 80, "tile": 132,
         "lr": 1e-3, "ub_combinations": "m_2,m_12345", "folds": 4}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, help="dataset manifest (default: vessels5, written into the work folder)")
    p.add_argument("--work", type=Path, help="work folder (default bench/work/marker_combinations[_smoke])")
    p.add_argument("--results", type=Path, help="folder of the report (default bench/results; smoke: WORK/results)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds; each trains every network again "
                   "on the same folds (default 0)")
    size = p.add_argument_group("sizing (defaults: the full run; --smoke: a tiny one)")
    size.add_argument("--smoke", action="store_true", help="tiny networks and crops: checks the pipeline in minutes")
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
    size.add_argument("--ub-epochs", type=int, help="epochs per UB model (default --epochs: equal training steps)")
    run = p.add_argument_group("execution")
    run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    run.add_argument("--budget-minutes", type=float, default=120.0, help="warn when the estimate exceeds this")
    run.add_argument("--estimate", action="store_true", help="measure and print the estimate, then stop")
    run.add_argument("--report", action="store_true", help="only render the report and README block from the CSV")
    run.add_argument("--quiet", action="store_true", help="no progress bars (progress lines still print)")
    run.add_argument("--profile-method", help=argparse.SUPPRESS)  # internal: one profiling subprocess
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.ub_epochs is None:
        args.ub_epochs = args.epochs
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    try:
        args.seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: write comma-separated integers, e.g. 0,1,2")
    if not args.seeds:
        p.error("--seeds is empty: give at least one seed, e.g. 0")
    args.name = "marker_combinations_smoke" if args.smoke else "marker_combinations"
    args.work = args.work or WORK / args.name
    args.results = args.results or (args.work / "results" if args.smoke else RESULTS)
    return args


def seed_work(args: argparse.Namespace, seed: int) -> Path:
    """The work folder of one training seed (its own cross-validation and UB folders)."""
    return args.work / f"seed{seed}"


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

def network_of(method: str) -> str:
    """The method whose network a method trains: UB and UB-4x the MZ network, MS-ME-4x the MS-ME network."""
    return {"UB": "MZ", LONGER_UB: "MZ", LONGER: "MS-ME"}.get(method, method)


def epochs_of(method: str, args: argparse.Namespace) -> int:
    """Training epochs of a method's networks (UB: ``--ub-epochs``; the longer arms LONGER_FACTOR x as many)."""
    epochs = args.ub_epochs if method in UPPER_BOUNDS else args.epochs
    return epochs * (LONGER_FACTOR if method in (LONGER, LONGER_UB) else 1)


def model_section(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The network of a method (UB: the MZ network; run_upper_bound enforces MZ and no attention)."""
    method = network_of(method)
    unet = {"depth": args.depth, "base_filters": args.base_filters, "padding": "valid"}
    if method == "HeMIS":
        # Half the filters in backends and frontend: HeMIS is the small model of the paper's Supp. Table 3,
        # and its five full-resolution backends would otherwise cost 2.5x an MS step.
        half = max(4, args.base_filters // 2)
        return {"name": "hemis", "options": {"depth": args.depth, "base_filters": half, "backend_filters": half,
                                             "padding": "valid"}}
    extra = {"MZ": {"marker_input": "mz"}, "UB": {"marker_input": "mz"}, "MS": {"marker_input": "ms"},
             "MS-ME": {"marker_input": "ms", "attention": "me"}, "MS-SE": {"marker_input": "ms", "attention": "se"}}
    if method in PROBES:  # MS-ME with one change
        changes = dict(PROBES[method].unet)
        unet["base_filters"] *= changes.pop("base_filters_factor", 1)
        return {"name": "unet", "options": {**unet, **extra[FOCUS], **changes}}
    return {"name": "unet", "options": {**unet, **extra[method]}}


def method_config(method: str, args: argparse.Namespace, manifest: Path, seed: int = 0) -> Any:
    """The run config of a method's networks; ``seed`` seeds initialisation and batches (the folds stay seed 0)."""
    from fluoseg.config import RunConfig

    epochs = epochs_of(method, args)
    return RunConfig.model_validate({
        "data": {"manifest": str(manifest), "split": {"seed": 0}},
        "model": model_section(method, args),
        "preprocess": {"normalization": "gaussian", "pixel_size_um": 1.0},
        "train": {"class_mode": "joint", "epochs": epochs, "steps_per_epoch": args.steps, "batch_size": args.batch,
                  "patch_size": args.patch, "learning_rate": args.lr, "seed": seed, "device": args.device,
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
    path = args.work / "profile" / f"{network_of(method)}.json"
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

    Per (method, fold, seed): training batches x time per batch, plus one validation prediction
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
        if method in UPPER_BOUNDS:
            plans = plan_upper_bound(method_config(method, args, manifest), folds=args.folds, **ub_selection(args))
            pending = [1 for seed in args.seeds for plan in plans for g in plan.chosen
                       if not (seed_work(args, seed) / method / f"fold{plan.fold}" / data_code(data, g)
                               / "combinations.csv").is_file()]
            per_unit = epochs_of(method, args) * (args.steps * p["train_s_per_batch"] + tiles) + n_test * tiles
        else:
            pending = [1 for seed in args.seeds for k in range(args.folds)
                       if not (seed_work(args, seed) / method / f"fold{k}" / "combinations.csv").is_file()]
            per_unit = epochs_of(method, args) * (args.steps * p["train_s_per_batch"] + tiles) + n_test * 31 * tiles
        seconds[method] = OVERHEAD * len(pending) * per_unit
    return seconds


def data_code(data: Any, combination: tuple[str, ...]) -> str:
    from fluoseg.markers import MarkerPanel

    return MarkerPanel(data.markers).subset_code(combination)


# ---- running -----------------------------------------------------------------------------------

def run_methods(args: argparse.Namespace, manifest: Path) -> None:
    """Cross-validate every method on the same folds, then the upper bound, per training seed.

    The methods of a seed share one cross-validation folder (``seed<s>/folds.json``, units in
    ``seed<s>/<method>/fold<k>/``), so their folds are checked to be the same;
    ``crossval_combinations`` would also rewrite ``seed<s>/combinations.csv`` with the rows of
    the last method only, so :func:`collect` reads the units' tables instead.
    """
    from fluoseg.experiments.combinations import CombinationScorer
    from fluoseg.experiments.crossval import run_crossval
    from fluoseg.experiments.upper_bound import run_upper_bound

    for seed in args.seeds:
        work = seed_work(args, seed)
        for method in args.methods:
            started = time.perf_counter()
            log(f"== seed {seed} {method}")
            config = method_config(method, args, manifest, seed)
            if method in UPPER_BOUNDS:
                run_upper_bound(config, work / method, folds=args.folds, epochs=epochs_of(method, args),
                                method=method, tile_size=args.tile, progress=not args.quiet,
                                log=lambda m, method=method: log(f"{method} {m}"), **ub_selection(args))
            else:
                run_crossval({method: config}, work, CombinationScorer(method=method, tile_size=args.tile),
                             folds=args.folds, seed=config.data.split.seed, progress=not args.quiet, log=log)
            log(f"== seed {seed} {method} done in {(time.perf_counter() - started) / 60:.1f} min")


def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-unit rows of every finished (method, fold, seed): counts pooled over the fold's test samples.

    One row per network, combination and class (``UNIT_FIELDS``); the seed and the training
    batches are those the network's run recorded (``run/trained.json``), not the flags of
    this invocation, so a table never misstates how a cached network was trained.
    """
    from fluoseg.experiments.combinations import CombinationScorer
    from fluoseg.experiments.results import pool_samples, read_results

    units: list[dict[str, Any]] = []
    classes: dict[str, int] = {}  # in the order of the evaluation (the manifest's)
    for seed in args.seeds:
        work = seed_work(args, seed)
        paths = [p for method in METHODS
                 for p in sorted((work / method).glob(f"fold*/{'*/' if method in UPPER_BOUNDS else ''}"
                                                      f"{CombinationScorer.RESULTS}"))]
        for path in paths:
            train = read_json(path.parent / "run" / "trained.json")["config"]["train"]
            for row in pool_samples(read_results(path)):
                classes.setdefault(row["class"], len(classes))
                units.append({**{k: row[k] for k in ("method", "fold", "combination", "markers", "class", "tp", "fp",
                                                     "fn", "f1")},
                              "seed": int(train["seed"]), "batches": int(train["epochs"]) * int(train["steps_per_epoch"])})
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(units, key=lambda r: (order[r["method"]], r["seed"], r["fold"], classes[r["class"]],
                                        len(r["combination"]), r["combination"]))


def wall_times(args: argparse.Namespace, method: str) -> list[float]:
    """Training wall seconds of each finished network of a method (from the runs' ``trained.json``)."""
    pattern = "fold*/*/run/trained.json" if method in UPPER_BOUNDS else "fold*/run/trained.json"
    records = [p for seed in args.seeds for p in (seed_work(args, seed) / method).glob(pattern)]
    return [seconds for seconds in (read_json(p).get("seconds") for p in records) if seconds]


def run_record(args: argparse.Namespace, manifest: Path, profiles: dict[str, dict[str, Any]],
               units: list[dict[str, Any]]) -> dict[str, Any]:
    """Settings, environment, cost profile and wall times of the run (the report's non-statistical parts)."""
    import torch

    settings = {key: getattr(args, key) for key in ("epochs", "steps", "batch", "patch", "depth", "base_filters",
                                                     "crop", "tile", "lr", "folds", "ub_combinations", "ub_epochs",
                                                     "threads", "seeds")}
    settings.update(manifest=rel(args.manifest), data=rel(manifest), cpus=os.cpu_count(), torch=torch.__version__,
                    python=platform.python_version(), commit=git_commit())
    cost = []
    for method in [m for m in METHODS if m in profiles]:
        walls = wall_times(args, method)
        models = len({(r["seed"], r["fold"], r["combination"] if method in UPPER_BOUNDS else "")
                      for r in units if r["method"] == method})
        cost.append({**{k: profiles[method][k] for k in ("parameters", "train_s_per_batch", "infer_s_per_tile",
                                                         "peak_rss_mib", "baseline_rss_mib")},
                     "method": method, "models": models, "threads": args.threads,
                     "wall_s_per_model": float(np.mean(walls)) if walls else float("nan")})
    wall = read_json(args.work / "wall.json", {}).get("seconds", 0.0)
    return {"written": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "settings": settings, "cost": cost,
            "wall_minutes": wall / 60}


# ---- outputs -----------------------------------------------------------------------------------

def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The per-unit CSV, run record, report and (smoke) README-block file of this run."""
    return {"units": args.results / f"{args.name}_units.csv", "record": args.results / f"{args.name}_run.json",
            "report": args.results / f"{args.name}.md", "block": args.results / f"{args.name}_readme_block.md"}


SIZING = ("epochs", "steps", "batch", "patch", "depth", "base_filters", "crop", "tile", "lr", "folds",
          "ub_combinations", "ub_epochs")


def network_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    """The trained network a per-unit row belongs to (a UB network is also one per trained combination)."""
    return (row["method"], int(row["seed"]), int(row["fold"]),
            row["combination"] if row["method"] in UPPER_BOUNDS else "")


def merge_previous(units: list[dict[str, Any]], record: dict[str, Any], paths: dict[str, Path]
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Keep the networks of the existing outputs that this work folder does not hold.

    A work folder is a cache that can be lost (a fresh checkout) while its committed per-unit
    CSV stays: a run of one more method then adds its networks to the table instead of
    replacing it. Rows are only merged when the sizing settings agree, since the report
    compares methods trained alike; otherwise this stops and names the differing settings.
    """
    previous = read_json(paths["record"], {})
    old_rows = read_rows(paths["units"]) if paths["units"].is_file() else []
    have = {network_key(r) for r in units}
    kept = [r for r in old_rows if network_key(r) not in have]
    if not kept:
        return units, record
    old_settings = previous.get("settings", {})
    differ = [k for k in SIZING if k in old_settings and old_settings[k] != record["settings"][k]]
    if differ:
        raise SystemExit(f"{rel(paths['units'])}: its networks were trained with other settings "
                         "(" + ", ".join(f"{k} {old_settings[k]} vs {record['settings'][k]}" for k in differ) + "); "
                         "pass --results to a new folder, or the same sizing flags")
    log(f"kept {len(kept)} rows of {len({network_key(r) for r in kept})} networks from {rel(paths['units'])} "
        "that the work folder lacks")
    order = {m: i for i, m in enumerate(METHODS)}
    merged = sorted([*units, *kept], key=lambda r: (order[r["method"]], int(r["seed"]), int(r["fold"])))
    profiled = {c["method"] for c in record["cost"]}
    cost = [*record["cost"], *({"threads": old_settings.get("threads"), **c} for c in previous.get("cost", [])
                               if c["method"] not in profiled)]
    threads = sorted({c["threads"] for c in cost if c.get("threads") is not None})
    settings = {**record["settings"],
                "threads": threads[0] if len(threads) == 1 else " or ".join(map(str, threads)) + " (per method)",
                "seeds": sorted({*old_settings.get("seeds", []), *record["settings"]["seeds"]}),
                "earlier_commits": sorted({*old_settings.get("earlier_commits", []),
                                           *([old_settings["commit"]] if "commit" in old_settings else [])})}
    return merged, {**record, "settings": settings,
                    "cost": sorted(cost, key=lambda c: order[c["method"]]),
                    "wall_minutes": record["wall_minutes"] + previous.get("wall_minutes", 0.0)}


def write_outputs(args: argparse.Namespace, manifest: Path, profiles: dict[str, dict[str, Any]]) -> None:
    """The per-unit CSV and the run record from the work folder (with the networks of the
    existing outputs it lacks, see :func:`merge_previous`), then the report from them."""
    from marker_combinations_report import UNIT_FIELDS

    units = collect(args)
    paths = output_paths(args)
    units, record = merge_previous(units, run_record(args, manifest, profiles, units), paths)
    write_rows(paths["units"], units, UNIT_FIELDS)
    write_json(paths["record"], record)
    log(f"units: {rel(paths['units'])} ({len(units)} rows), run record {rel(paths['record'])}")


def report(args: argparse.Namespace) -> Path:
    """Render the report and the README block from the per-unit CSV (and the run record, if any).

    Without a per-unit CSV both say the numbers are pending. A smoke run writes its README
    block next to its report instead of into README.md.
    """
    from marker_combinations_report import (
        OLD_SUMMARY,
        README_BEGIN,
        README_END,
        readme_block,
        readme_pending_block,
        render,
        render_pending,
        typed,
    )

    paths = output_paths(args)
    rows = typed(read_rows(paths["units"]))
    if rows:
        source = rel(paths["units"])
        text = render(rows, read_json(paths["record"]), source=source, smoke=args.smoke)
        block = readme_block(rows, source=source)
    else:
        old = read_rows(ROOT / OLD_SUMMARY)
        text, block = render_pending(old), readme_pending_block(old)
        log(f"no {rel(paths['units'])}: the report and the README block say the numbers are pending")
    write_text(paths["report"], text)
    if args.smoke:
        write_text(paths["block"], block)
        log(f"README block (smoke, README.md untouched): {rel(paths['block'])}")
    else:
        fill_readme_block(README_BEGIN, README_END, block)
        log("README.md: marker-combinations block updated")
    return paths["report"]


# ---- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:  # from the committed CSV alone: no torch, no data, no work folder needed
        log(f"report: {rel(report(args))}")
        return 0
    if args.profile_method:  # internal: the subprocess measuring one network
        path = args.work / "profile" / f"{args.profile_method}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, profile_in_process(args.profile_method, args))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    terminate_child_on_sigterm()
    args.work.mkdir(parents=True, exist_ok=True)
    args.manifest = args.manifest or vessels_manifest(args.work / "data" / "vessels5" / "manifest.yaml")
    log(f"work folder {args.work}; methods {args.methods}; seeds {args.seeds}")
    manifest = prepare_data(args)
    profiles = {m: profile(m, args) for m in args.methods}
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
    with recorded(lambda s: accumulate(args.work / "wall.json", seconds=s)):
        run_methods(args, manifest)
    write_outputs(args, manifest, profiles)
    log(f"report: {rel(report(args))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
