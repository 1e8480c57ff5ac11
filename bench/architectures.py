#!/usr/bin/env python
"""Architecture comparison and in-silico-labelling pretraining benchmark (issue 4, deliverable 7).

In the spirit of the transfer-learning study (U-Net, TTA U-Net, U-Net++, FCN, DeepLabv3 on
fluorescence images) and the in-silico-labelling (ISL) paper (pretrained vs untrained
U-Net fine-tuned on 1 to 500 images), on this CPU:

1. **Architectures** on two datasets, 3-fold cross-validation by image/sample (``fluoseg
   crossval``; the same folds for every architecture), each predicted without and with
   test-time augmentation (8 flips/rotations; the TTA pass reuses the trained folds):

   - ``dsb2018_fluo``, instance segmentation (``instance.method: border``, Kromp et al.'s
     3-class U-Net targets): 60 images, centre crops of 192x192 (not resized), so each fold
     trains on 39, validates on 1 and tests 20;
   - ``vessels5``, semantic (sinusoids, arteries): the 8 samples resampled to 2 µm/px
     (384x384; ``preprocess.pixel_size_um: 2``), so each fold trains on 4 or 5, validates
     on 1 and tests 3 or 2; predictions are resampled back and scored at 1 µm/px.

   Networks: the MS-ME U-Net (depth 4, 16 base filters, same padding, no batch
   normalisation), U-Net on ResNet34 (``unet-encoder``), U-Net++ (ResNet34), FCN (ResNet34,
   output stride 8 as torchvision's) and DeepLabv3 (ResNet34, output stride 16). All start
   from random weights (no ImageNet weights can be downloaded here), train with Adam
   (lr 1e-3), the task's own loss, batch 4 of 128x128 patches, and keep the epoch with the
   best validation score.

2. **ISL pretraining** (``task: regression`` + ``model.init_from``). Pretext: restore a
   *degraded* dsb2018 image (Gaussian blur sigma 2 px plus Gaussian noise of 10% of the
   1-99.8 percentile range) to the clean one, on 100 dsb2018 images disjoint from those
   used below, with intensities normalised to [0, 1]. Then the same U-Net, from the
   pretext weights or from scratch, is fine-tuned on N = 1, 10 and 50 images (nested
   subsets; ``fluoseg crossval --train-sizes``) of a pool of 110 other dsb2018 crops, in
   3 folds (36-37 test images each), twice: for instance segmentation (border method, fresh
   output layer) and in the paper's own set-up (nucleus foreground, one sigmoid output,
   Jaccard loss), where the pretext output layer is kept behind the paper's shifted
   sigmoid (``init_head: auto`` -> ``shifted-sigmoid``).

Everything is resumable: the work folder (``bench/work/architectures/``, git-ignored) holds
the prepared data, configs and one crossval folder per part; rerunning skips finished folds
and resumes interrupted trainings. After each part the run writes the per-unit table
``bench/results/architectures_units.csv`` (per-fold scores, timings, settings) and renders
``bench/results/architectures.md`` and the README block from it (``architectures_report.py``:
fold as the unit, paired t-tests, Holm over the whole report); ``--report`` re-renders both
from the committed table alone. CI never runs this script.

Usage::

    .venv/bin/python bench/architectures.py --smoke            # end-to-end check, a few minutes
    nohup .venv/bin/python bench/architectures.py > bench/work/architectures.log 2>&1 &   # full run
    .venv/bin/python bench/architectures.py --report           # re-render from the committed table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from architectures_report import README_BEGIN, README_END, UNIT_FIELDS, readme_block, render
from _common import (
    BENCH,
    DSB2018,
    RESULTS,
    WORK,
    accumulate,
    epoch_rows,
    fill_readme_block,
    log,
    read_json,
    read_rows,
    rel,
    vessels_manifest,
    write_json,
    write_rows,
    write_text,
    write_yaml,
)

DEFAULT_WORK = WORK / "architectures"
SMOKE_WORK = WORK / "architectures_smoke"
NOTES = BENCH / "notes" / "architectures.md"
UNITS_NAME = "architectures_units.csv"

# Network key -> registry name and options; the report's labels are architectures_report.NETWORKS.
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet": ("unet", {"depth": 4, "base_filters": 16, "padding": "same"}),
    "unet-resnet34": ("unet-encoder", {"encoder": "resnet34"}),
    "unetpp-resnet34": ("unetpp", {"encoder": "resnet34"}),
    "fcn-resnet34": ("fcn", {"encoder": "resnet34"}),
    "deeplabv3-resnet34": ("deeplabv3", {"encoder": "resnet34", "output_stride": 16}),
}
# The ISL part normalises to [0, 1] (1-99.8 percentiles), so the pretext predicts intensities in
# the range the paper's shifted sigmoid f(x) = 1 / (1 + exp(-(x - 0.5))) is centred on.
ISL_PREPROCESS = {"normalization": "percentile"}


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run (the full run, or the smoke check)."""

    dsb_images: int = 60          # architecture comparison pool
    isl_images: int = 110         # fine-tuning pool of the ISL part (3 folds -> 72-73 training images)
    pretext_images: int = 100     # pretext pool (disjoint from both)
    crop: int = 192               # centre crop of the dsb2018 images
    vessels_pixel_um: float = 2.0
    patch: int = 128
    batch: int = 4
    epochs: int = 4
    steps: int = 20
    pretext_epochs: int = 6
    train_sizes: tuple[int, ...] = (1, 10, 50)
    folds: int = 3                # issue 11: any effect the README claims rests on >= 3 folds
    learning_rate: float = 1e-3


FULL = Plan()
SMOKE = Plan(dsb_images=8, isl_images=12, pretext_images=6, crop=128, vessels_pixel_um=4.0, patch=64, batch=2,
             epochs=1, steps=2, pretext_epochs=1, train_sizes=(1, 4))
# Sizing (2026-11, this 2-core CPU shared with other jobs, load ~3.5, 1 thread): one training step
# of batch 4 x 128x128 takes 0.43 s (U-Net), 1.0 (U-Net ResNet34), 1.7 (U-Net++), 1.9 (FCN OS 8)
# and 1.0 s (DeepLabv3 OS 16): 6.1 s for the five. Inference of one 192x192 image 0.06-0.17 s at
# 128x128 -> ~0.24 s at 192x192, ~1 s at 384x384. Full run: 2 datasets x 3 folds x 80 steps x 6.1 s
# = 49 min of architecture training; predictions (1 + 8 TTA passes) 60 dsb images x 5 networks
# ~11 min and 8 vessels5 samples ~6 min; ISL 1 + 36 U-Net trainings x 80-120 steps x 0.45 s ~ 25 min +
# 1320 predictions ~ 4 min; data, validation and start-up ~ 5 min: about 100 min at 1 thread. The 2-fold
# run took 30 min at 2 threads, so expect ~50-70 min for 3 folds.


def same_plan(stored: dict[str, Any], plan: dict[str, Any]) -> bool:
    """Whether a work folder's plan is this one; the ISL sizes may differ (their subsets are nested)."""
    return {k: v for k, v in stored.items() if k != "train_sizes"} == {k: v for k, v in plan.items()
                                                                        if k != "train_sizes"}


def add_wall(work: Path, part: str, seconds: float) -> None:
    """Accumulate the wall time of each part over (possibly interrupted) invocations."""
    accumulate(work / "wall.json", **{part: seconds})


# ---- data ---------------------------------------------------------------------------------------

def dsb_pools(plan: Plan) -> dict[str, list[str]]:
    """Disjoint, seeded image pools of dsb2018_fluo: architecture, ISL fine-tuning, pretext.

    Only images whose centre crop holds at least one nucleus are used (as the ISL paper
    kept only images with a nucleus): an empty crop would score 1 for predicting nothing.
    """
    import tifffile

    ids = sorted(p.name.split(".")[0] for p in (DSB2018 / "images").glob("*.tif"))
    a, b, c = plan.dsb_images, plan.isl_images, plan.pretext_images
    order = []
    for k in np.random.default_rng(0).permutation(len(ids)):
        if centre_crop(tifffile.imread(DSB2018 / "labels" / f"{ids[k]}.tif"), plan.crop).any():
            order.append(ids[k])
        if len(order) == a + b + c:
            break
    else:
        raise SystemExit(f"dsb2018_fluo has {len(order)} usable images, fewer than the {a + b + c} the plan needs")
    return {"arch": sorted(order[:a]), "isl": sorted(order[a:a + b]), "pretext": sorted(order[a + b:])}


def centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    y0, x0 = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return array[y0:y0 + size, x0:x0 + size]


def degrade(image: np.ndarray, seed: int) -> np.ndarray:
    """The pretext input: blurred (sigma 2 px) plus Gaussian noise of 10% of the intensity range."""
    from scipy.ndimage import gaussian_filter

    values = image.astype(np.float32)
    low, high = np.percentile(values, (1.0, 99.8))
    noisy = gaussian_filter(values, 2.0) + np.random.default_rng(seed).normal(0.0, 0.1 * max(high - low, 1.0),
                                                                                values.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def prepare_dsb(work: Path, name: str, ids: list[str], crop: int, *, pretext: bool = False) -> Path:
    """Crops (and for the pretext, degraded/clean pairs) with a manifest, written once."""
    import tifffile
    from skimage.segmentation import relabel_sequential

    folder = work / "data" / f"dsb_{name}"
    manifest = folder / "manifest.yaml"
    if manifest.is_file():
        return manifest
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for k, image_id in enumerate(ids):
        image = centre_crop(tifffile.imread(DSB2018 / "images" / f"{image_id}.tif"), crop)
        if pretext:
            tifffile.imwrite(folder / "images" / f"{image_id}.tif", np.stack([degrade(image, k), image]),
                             photometric="minisblack")
        else:  # instance labels, and their foreground as the one-class mask of the semantic set-up
            (folder / "labels").mkdir(exist_ok=True)
            (folder / "masks").mkdir(exist_ok=True)
            labels = centre_crop(tifffile.imread(DSB2018 / "labels" / f"{image_id}.tif"), crop)
            tifffile.imwrite(folder / "images" / f"{image_id}.tif", image)
            tifffile.imwrite(folder / "labels" / f"{image_id}.tif", relabel_sequential(labels)[0].astype(np.uint16))
            tifffile.imwrite(folder / "masks" / f"{image_id}.tif", (labels > 0).astype(np.uint8))
    content = {"markers": ["degraded", "DNA"] if pretext else ["DNA"], "images": "images/*.tif"}
    if not pretext:
        content.update(labels="labels/{id}.tif", classes=["nuclei"], masks="masks/{id}.tif")
    write_yaml(manifest, content)  # last: marks the folder as complete
    return manifest


# ---- configs ------------------------------------------------------------------------------------

def train_section(plan: Plan, *, epochs: int | None = None, val_tile: int) -> dict[str, Any]:
    return {"epochs": epochs or plan.epochs, "steps_per_epoch": plan.steps, "batch_size": plan.batch,
            "patch_size": plan.patch, "learning_rate": plan.learning_rate, "val_tile_size": val_tile, "seed": 0,
            "device": "cpu"}


def model_section(arch: str) -> dict[str, Any]:
    name, options = ARCHS[arch]
    return {"name": name, "options": dict(options)}


def arch_configs(work: Path, plan: Plan, archs: list[str], dsb: Path, vessels: Path) -> dict[str, list[Path]]:
    instance = {"method": "border", "w0": 10.0, "sigma": 5.0, "min_size": 10}
    vessel_tile = int(round(768 / plan.vessels_pixel_um))  # the whole resampled sample in one tile
    configs: dict[str, list[Path]] = {"dsb": [], "vessels": []}
    for arch in archs:
        configs["dsb"].append(write_yaml(work / "configs" / "dsb" / f"{arch}.yaml", {
            "data": {"manifest": str(dsb)}, "task": "instance", "instance": instance, "model": model_section(arch),
            "train": train_section(plan, val_tile=plan.crop)}))
        configs["vessels"].append(write_yaml(work / "configs" / "vessels" / f"{arch}.yaml", {
            "data": {"manifest": str(vessels)}, "task": "semantic", "model": model_section(arch),
            "preprocess": {"pixel_size_um": plan.vessels_pixel_um},
            "train": train_section(plan, val_tile=vessel_tile)}))
    return configs


# ---- the parts ----------------------------------------------------------------------------------

def run_part(work: Path, part: str, configs: list[Path], plan: Plan, *, tta_too: bool,
             train_sizes: tuple[int, ...] | None = None) -> None:
    from fluoseg.experiments.config_comparison import compare_configs

    for tta in ((False, True) if tta_too else (False,)):
        started = time.perf_counter()
        log(f"{part}: cross-validation of {len(configs)} config(s){' with TTA' if tta else ''}")
        try:
            compare_configs(configs, work / part, folds=plan.folds, seed=0, train_sizes=train_sizes, tta=tta,
                            progress=sys.stderr.isatty(), log=lambda line: log(f"{part}: {line}"))
        finally:
            add_wall(work, f"{part}{'_tta' if tta else ''}", time.perf_counter() - started)


def pretext(work: Path, plan: Plan, manifest: Path) -> Path:
    """Train the ISL pretext network (degraded -> clean), resuming an interrupted run."""
    from fluoseg.config import load_config
    from fluoseg.run import RunDir
    from fluoseg.train.trainer import train

    config = write_yaml(work / "configs" / "isl" / "pretext.yaml", {
        "data": {"manifest": str(manifest), "split": {"val_fraction": 0.1, "seed": 0}}, "task": "regression",
        "regression": {"targets": ["DNA"], "loss": "l1"}, "model": model_section("unet"),
        "preprocess": ISL_PREPROCESS,
        "train": train_section(plan, epochs=plan.pretext_epochs, val_tile=plan.crop)})
    run = work / "isl" / "pretext"
    if RunDir(run).is_finished(plan.pretext_epochs):
        log("isl: pretext network trained before, skipped")
        return run
    started = time.perf_counter()
    resume = RunDir(run).config_path.is_file()
    log(f"isl: pretext training (degraded -> clean) on {plan.pretext_images} images{', resuming' if resume else ''}")
    try:
        train(load_config(config), run, resume=resume, overwrite=not resume, progress=sys.stderr.isatty())
    finally:
        add_wall(work, "isl_pretext", time.perf_counter() - started)
    return run


def isl_configs(work: Path, plan: Plan, manifest: Path, pretext_run: Path, part: str) -> list[Path]:
    """From-scratch and ISL-pretrained fine-tuning configs of one ISL part.

    ``isl``: instance segmentation (border method; the pretext head cannot serve 3 softmax
    classes, so ``init_head: auto`` gives a fresh head). ``isl_semantic``: the paper's own
    set-up, nucleus foreground with one sigmoid output and the Jaccard loss, where ``auto``
    keeps the pretext head behind the shifted sigmoid of its eq. (1).
    """
    if part == "isl":
        task = {"task": "instance", "instance": {"method": "border", "w0": 10.0, "sigma": 5.0, "min_size": 10}}
    else:
        task = {"task": "semantic"}
    base = {"data": {"manifest": str(manifest)}, **task, "model": model_section("unet"), "preprocess": ISL_PREPROCESS,
            "train": dict(train_section(plan, val_tile=plan.crop), **({} if part == "isl" else {"loss": "jaccard"}))}
    pretrained = dict(base, model=dict(base["model"], init_from=str(pretext_run)))
    return [write_yaml(work / "configs" / part / "scratch.yaml", base),
            write_yaml(work / "configs" / part / "isl-pretrained.yaml", pretrained)]


# ---- the per-unit table -------------------------------------------------------------------------

def _timing_rows(folder: Path, part: str, network: str, tta: bool) -> list[dict[str, Any]]:
    """Per fold: parameters and training seconds (the trained run, once), inference seconds per test image."""
    suffix = "_tta" if tta else ""
    rows = []
    for path in sorted((folder / network).glob(f"**/fold*/timing{suffix}.json")):
        record = read_json(path)
        size = path.parent.parent.name[1:] if path.parent.parent.name.startswith("n") else "all"
        values = {"predict_seconds_per_image": record["predict_seconds"] / max(record["n_test"], 1)}
        if not tta:
            values.update(parameters=record["parameters"], train_seconds=record["train_seconds"])
        rows += [{"part": part, "network": network, "tta": "yes" if tta else "no", "train_size": size,
                  "fold": path.parent.name.removeprefix("fold"), "metric": metric, "value": value}
                 for metric, value in values.items()]
    return rows


def collect_units(work: Path, plan: Plan, threads: int, *, smoke: bool) -> list[dict[str, Any]]:
    """The table behind the report: per-fold scores and timings of every part, and the run's settings.

    Scores are crossval's ``per_fold[_tta].csv`` (each fold's score pooled over its test
    images); part ``run`` holds the plan, thread count, wall seconds per part and the pretext
    network's validation Pearson correlation (:mod:`architectures_report`).
    """
    rows: list[dict[str, Any]] = []
    for part in ("dsb", "vessels", "isl", "isl_semantic"):
        for tta in (False, True):
            path = work / part / f"per_fold{'_tta' if tta else ''}.csv"
            if not path.is_file():
                continue
            scores = read_rows(path)
            rows += [{"part": part, "network": r["config"], "tta": "yes" if tta else "no",
                      "train_size": r["train_size"], "fold": r["fold"], "metric": r["metric"], "value": r["value"]}
                     for r in scores]
            for network in dict.fromkeys(r["config"] for r in scores):
                rows += _timing_rows(work / part, part, network, tta)
    settings = {f"plan_{k}": v for k, v in asdict(plan).items() if isinstance(v, (int, float))}
    settings.update(threads=threads, smoke=int(smoke),
                    **{f"wall_seconds_{k}": round(v, 1) for k, v in read_json(work / "wall.json", {}).items()})
    best = [r for r in epoch_rows(work / "isl" / "pretext") if r.get("best") == "1"]
    if best:
        settings["pretext_val_pearson"] = float(best[-1]["val_pearson_DNA"])
    rows += [{"part": "run", "network": "", "tta": "", "train_size": "", "fold": "", "metric": k, "value": v}
             for k, v in settings.items()]
    return rows


def render_report(units: Path, report: Path, *, readme: bool) -> Path:
    """The report (and the README block) from the per-unit table alone."""
    rows = read_rows(units)
    notes = NOTES.read_text(encoding="utf-8") if readme and NOTES.is_file() else ""
    write_text(report, render(rows, notes))
    if readme:
        fill_readme_block(README_BEGIN, README_END, readme_block(rows))
    return report


def write_units(work: Path, plan: Plan, threads: int, units: Path, report: Path, *, smoke: bool) -> None:
    """Collect the table from the work folder, then render from the written table (as ``--report`` does)."""
    write_rows(units, collect_units(work, plan, threads, smoke=smoke), fields=UNIT_FIELDS)
    render_report(units, report, readme=not smoke)


# ---- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny end-to-end check (a few minutes); work and "
                        "results in bench/work/architectures_smoke/")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {FULL.epochs}; smoke {SMOKE.epochs})")
    parser.add_argument("--steps", type=int, help=f"steps per epoch (default {FULL.steps}; smoke {SMOKE.steps})")
    parser.add_argument("--archs", help=f"comma-separated networks (default all: {','.join(ARCHS)})")
    parser.add_argument("--train-sizes", help="comma-separated ISL training-set sizes (default "
                        f"{','.join(map(str, FULL.train_sizes))}); the subsets are nested and do not depend on the "
                        "other sizes, so a run can be cut to its smaller sizes and extended later")
    parser.add_argument("--parts", default="dsb,vessels,isl", help="parts to run (default dsb,vessels,isl)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--work", type=Path, help="work folder (default bench/work/architectures[_smoke])")
    parser.add_argument("--report", action="store_true", help="only render the report (and the README block) from "
                        "the per-unit table bench/results/architectures_units.csv (smoke: the work folder's)")
    args = parser.parse_args(argv)

    work = (args.work or (SMOKE_WORK if args.smoke else DEFAULT_WORK)).resolve()
    results = (work / "results") if args.smoke else RESULTS
    units, report = results / UNITS_NAME, results / "architectures.md"
    if args.report:
        if not units.is_file():
            raise SystemExit(f"{rel(units)} does not exist; run the benchmark first (see --help)")
        log(f"report: {rel(render_report(units, report, readme=not args.smoke))} from {rel(units)}")
        return 0

    import torch

    torch.set_num_threads(args.threads)
    plan = SMOKE if args.smoke else FULL
    sizes = tuple(int(n) for n in args.train_sizes.split(",")) if args.train_sizes else plan.train_sizes
    plan = replace(plan, epochs=args.epochs or plan.epochs, steps=args.steps or plan.steps, train_sizes=sizes)
    archs = [a.strip() for a in args.archs.split(",")] if args.archs else list(ARCHS)
    unknown = [a for a in archs if a not in ARCHS]
    parts = [p.strip() for p in args.parts.split(",")]
    if unknown or not set(parts) <= {"dsb", "vessels", "isl"}:
        raise SystemExit(f"unknown networks {unknown} or parts {parts}; networks: {list(ARCHS)}, "
                         "parts: dsb,vessels,isl")
    settings = work / "plan.json"
    as_json = json.loads(json.dumps(asdict(plan)))  # tuples become lists, as in plan.json
    if settings.is_file() and not same_plan(read_json(settings)["plan"], as_json):
        raise SystemExit(f"{work} holds a run with other settings ({read_json(settings)['plan']}); "
                         "use another --work or delete it")
    write_json(settings, {"plan": asdict(plan), "threads": args.threads, "smoke": args.smoke})
    log(f"plan: {asdict(plan)}; networks {archs}; parts {parts}; {args.threads} thread(s); work {work}")

    def record() -> None:
        write_units(work, plan, args.threads, units, report, smoke=args.smoke)

    started = time.perf_counter()
    pools = dsb_pools(plan)
    dsb = prepare_dsb(work, "arch", pools["arch"], plan.crop)
    vessels = vessels_manifest(work / "data" / "vessels5" / "manifest.yaml")
    configs = arch_configs(work, plan, archs, dsb, vessels)
    add_wall(work, "data", time.perf_counter() - started)
    if "dsb" in parts:
        run_part(work, "dsb", configs["dsb"], plan, tta_too=True)
        record()
    if "vessels" in parts:
        run_part(work, "vessels", configs["vessels"], plan, tta_too=True)
        record()
    if "isl" in parts:
        started = time.perf_counter()
        pretext_manifest = prepare_dsb(work, "pretext", pools["pretext"], plan.crop, pretext=True)
        isl_manifest = prepare_dsb(work, "isl", pools["isl"], plan.crop)
        add_wall(work, "data", time.perf_counter() - started)
        pretext_run = pretext(work, plan, pretext_manifest)
        for part in ("isl", "isl_semantic"):
            run_part(work, part, isl_configs(work, plan, isl_manifest, pretext_run, part), plan, tta_too=False,
                     train_sizes=plan.train_sizes)
            record()
    record()
    log(f"table: {rel(units)}; report: {rel(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
