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
and resumes interrupted trainings. ``--report`` rebuilds ``bench/results/architectures.md``
from the cached results. CI never runs this script.

Usage::

    .venv/bin/python bench/architectures.py --smoke            # end-to-end check, a few minutes
    nohup .venv/bin/python bench/architectures.py > bench/work/architectures.log 2>&1 &   # full run
    .venv/bin/python bench/architectures.py --report           # rebuild the results from the caches
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    BENCH,
    DSB2018,
    RESULTS,
    WORK,
    accumulate,
    epoch_rows,
    log,
    read_json,
    read_rows,
    vessels_manifest,
    write_json,
    write_text,
    write_yaml,
)

DEFAULT_WORK = WORK / "architectures"
SMOKE_WORK = WORK / "architectures_smoke"
NOTES = BENCH / "notes" / "architectures.md"

ARCHS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unet": ("unet", {"depth": 4, "base_filters": 16, "padding": "same"}, "U-Net (MS-ME)"),
    "unet-resnet34": ("unet-encoder", {"encoder": "resnet34"}, "U-Net ResNet34"),
    "unetpp-resnet34": ("unetpp", {"encoder": "resnet34"}, "U-Net++ ResNet34"),
    "fcn-resnet34": ("fcn", {"encoder": "resnet34"}, "FCN ResNet34 (OS 8)"),
    "deeplabv3-resnet34": ("deeplabv3", {"encoder": "resnet34", "output_stride": 16}, "DeepLabv3 ResNet34 (OS 16)"),
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
# 128x128 -> ~0.24 s at 192x192, ~1 s at 384x384. Full run: 2 datasets x 2 folds x 80 steps x 6.1 s
# = 33 min of architecture training; predictions (1 + 8 TTA passes) 60 dsb images x 5 networks
# ~11 min and 8 vessels5 samples ~6 min; ISL 1 + 24 U-Net trainings x 80-120 steps x 0.45 s ~ 17 min +
# 1320 predictions ~ 4 min; data, validation and start-up ~ 5 min: about 75 min at 1 thread.
SIZING_NOTE = ("Planned from a probe at load ~3.5 on the 2 shared cores, 1 thread: training steps of batch 4 x "
               "128x128 take 0.43 s (U-Net), 1.0 s (U-Net ResNet34), 1.7 s (U-Net++), 1.9 s (FCN) and 1.0 s "
               "(DeepLabv3), so about 75 min in all.")


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
    name, options, _ = ARCHS[arch]
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


# ---- report -------------------------------------------------------------------------------------

INSTANCE_COLUMNS = (("F1@0.5", "f1_at_0.5"), ("Acc@0.5", "accuracy_at_0.5"), ("AJI", "aji"),
                    ("mAcc 0.5:0.95", "accuracy_mean_0.5_0.95"))
SEMANTIC_COLUMNS = (("F1 sinusoids", "f1_sinusoids"), ("F1 arteries", "f1_arteries"), ("mean F1", "mean_f1"),
                    ("mean IoU", "mean_iou"))


def _cell(summary: dict[tuple[str, str, str], dict[str, str]], size: str, config: str, metric: str) -> str:
    row = summary.get((size, config, metric))
    if row is None:
        return "–"
    mean, sd = float(row["mean"]), float(row["sd"])
    return f"{mean:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{mean:.3f}"


def _summary(folder: Path, suffix: str) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["train_size"], r["config"], r["metric"]): r for r in read_rows(folder / f"summary{suffix}.csv")}


def _timing(folder: Path, config: str, size: str = "all", suffix: str = "") -> dict[str, float]:
    """Mean over folds of train seconds, parameters and inference seconds per image."""
    base = folder / config if size == "all" else folder / config / f"n{size}"
    records = [read_json(p) for p in sorted(base.glob(f"fold*/timing{suffix}.json"))]
    if not records:
        return {}
    return {"train_s": float(np.mean([r["train_seconds"] for r in records])), "params": records[0]["parameters"],
            "infer_s": float(np.sum([r["predict_seconds"] for r in records]) / np.sum([r["n_test"] for r in records]))}


def _paired(folder: Path, metric: str, config: str, size: str = "all", *, suffix_a: str = "", suffix_b: str = "",
            reference: str | None = None) -> str:
    """Paired per-sample difference config(suffix_a) - reference(suffix_b) with Wilcoxon stars."""
    from fluoseg.metrics.stats import paired_wilcoxon

    def scores(suffix: str, name: str) -> dict[str, float]:
        return {r["sample"]: float(r["value"]) for r in read_rows(folder / f"per_sample{suffix}.csv")
                if r["config"] == name and r["metric"] == metric and r["train_size"] == size}

    a, b = scores(suffix_a, config), scores(suffix_b, reference or config)
    units = [s for s in a if s in b and np.isfinite(a[s]) and np.isfinite(b[s])]
    if not units:
        return "–"
    result = paired_wilcoxon([a[s] for s in units], [b[s] for s in units])
    return f"{result.mean_difference:+.3f} {result.significance}"


def arch_section(work: Path, part: str, title: str, columns: tuple[tuple[str, str], ...], key: str,
                 archs: list[str]) -> list[str]:
    folder = work / part
    plain, tta = _summary(folder, ""), _summary(folder, "_tta")
    if not plain:
        return [f"## {title}", "", "(not run yet)", ""]
    lines = [f"## {title}", "", "Mean ± sd over the 2 folds of the scores pooled over each fold's test images. "
             "The paired tests below use per-image scores, where a class absent from both truth and prediction "
             "scores 1, so their differences need not match the pooled means.", "",
             "| network | TTA | " + " | ".join(c for c, _ in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for arch in archs:
        for suffix, summary in (("", plain), ("_tta", tta)):
            if summary:
                cells = [_cell(summary, "all", arch, metric) for _, metric in columns]
                lines.append(f"| {ARCHS[arch][2]} | {'yes' if suffix else 'no'} | " + " | ".join(cells) + " |")
    label = next(c for c, m in columns if m == key)
    lines += ["", f"Paired per-image differences of {label} (two-sided Wilcoxon; * p <= 0.05, ** p <= 0.01, "
              "*** p <= 0.001, n.s.): each network vs the MS-ME U-Net, and TTA vs no TTA.", "",
              "| network | vs U-Net | vs U-Net, both TTA | TTA vs no TTA | parameters | train (s/fold) | "
              "infer (s/image) | infer TTA (s/image) |", "|---|---|---|---|---|---|---|---|"]
    for arch in archs:
        timing, timing_tta = _timing(folder, arch), _timing(folder, arch, suffix="_tta")
        if not timing:
            continue
        versus = "–" if arch == "unet" else _paired(folder, key, arch, reference="unet")
        versus_tta = "–" if arch == "unet" else _paired(folder, key, arch, suffix_a="_tta", suffix_b="_tta",
                                                         reference="unet")
        gain = _paired(folder, key, arch, suffix_a="_tta", suffix_b="") if tta else "–"
        infer_tta = f"{timing_tta['infer_s']:.2f}" if timing_tta else "–"
        lines.append(f"| {ARCHS[arch][2]} | {versus} | {versus_tta} | {gain} | {timing['params'] / 1e6:.2f} M | "
                     f"{timing['train_s']:.0f} | {timing['infer_s']:.2f} | {infer_tta} |")
    return lines + [""]


ISL_PARTS = {  # part -> (title, columns, how the fine-tuned network starts)
    "isl": ("instance segmentation, border method", INSTANCE_COLUMNS[:3],
            "all but the output layer (3 softmax classes: a fresh head)"),
    "isl_semantic": ("the paper's set-up: nucleus foreground, one sigmoid output, Jaccard loss",
                     (("F1 nuclei", "f1_nuclei"), ("IoU nuclei", "mean_iou")),
                     "all layers, the output behind the shifted sigmoid of the paper's eq. (1), "
                     "f(x) = 1 / (1 + exp(-(x - 0.5)))"),
}


def isl_section(work: Path, plan: Plan) -> list[str]:
    pretext_rows = epoch_rows(work / "isl" / "pretext")
    best = [r for r in pretext_rows if r.get("best") == "1"]
    pearson = f"{float(best[-1]['val_pearson_DNA']):.3f}" if best else "–"
    lines = ["## In-silico-labelling pretraining vs from scratch (dsb2018)", "",
             f"Pretext: degraded -> clean dsb2018 image, {plan.pretext_images} images, {plan.pretext_epochs} x "
             f"{plan.steps} steps, intensities normalised to [0, 1] (1-99.8 percentiles); validation Pearson "
             f"correlation of the kept epoch {pearson}. Fine-tuning: the same U-Net from the pretext weights or from "
             f"scratch, on N nested training images per fold, {plan.epochs} x {plan.steps} steps, 2 folds of a "
             f"{plan.isl_images}-image pool. Δ: mean paired per-image difference ISL - scratch with two-sided "
             "Wilcoxon stars.", ""]
    for part, (title, columns, start) in ISL_PARTS.items():
        folder = work / part
        summary = _summary(folder, "")
        lines += [f"### {title[0].upper()}{title[1:]}", ""]
        if not summary:
            lines += ["(not run yet)", ""]
            continue
        lines += [f"ISL network starts from {start}.", "",
                  "| N | " + " | ".join(f"{c} scratch | {c} ISL | Δ" for c, _ in columns) + " |",
                  "|---|" + "---|---|---|" * len(columns)]
        for size in dict.fromkeys(r_size for r_size, _, _ in summary):
            cells = []
            for _, metric in columns:
                cells += [_cell(summary, size, "scratch", metric), _cell(summary, size, "isl-pretrained", metric),
                          _paired(folder, metric, "isl-pretrained", size, reference="scratch")]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def write_report(work: Path, plan: Plan, archs: list[str], threads: int, path: Path, *, smoke: bool) -> Path:
    import torch

    wall = read_json(work / "wall.json", {})
    total = sum(wall.values()) / 60
    lines = ["# Architectures and ISL pretraining on CPU", "",
             f"Generated by `bench/architectures.py` on {datetime.now().strftime('%Y-%m-%d')} "
             f"({'SMOKE RUN: meaningless numbers' if smoke else 'full run'}); torch {torch.__version__}, "
             f"{threads} thread(s) on a 2-core CPU shared with other jobs. Wall time of all parts: {total:.0f} min "
             f"({', '.join(f'{k} {v / 60:.1f}' for k, v in wall.items())} min).", "",
             "Setup: 2-fold cross-validation by image (dsb2018) or sample (vessels5) with the same folds for "
             "every network (`fluoseg crossval`), test images predicted with and without test-time augmentation "
             "(8 flips/rotations). Networks from random initialisation (no pretrained ImageNet/COCO weights are "
             f"reachable here), Adam lr {plan.learning_rate:g}, batch {plan.batch} of {plan.patch}x{plan.patch} "
             f"patches, {plan.epochs} epochs x {plan.steps} steps, the task's loss (border: weighted 3-class CE; "
             "semantic: MS-ME log-weighted CE), best validation score kept. dsb2018: "
             f"{plan.dsb_images} images, centre crops {plan.crop}x{plan.crop}. vessels5: 8 samples at "
             f"{plan.vessels_pixel_um:g} µm/px. Training time is the summed epoch time (validation included); "
             "inference time per image includes tiling, activation and decoding. These are short CPU trainings: "
             "the numbers compare the architectures at equal, small budgets, not at convergence.", "",
             SIZING_NOTE, ""]
    lines += arch_section(work, "dsb", "dsb2018_fluo: nuclear instance segmentation (border method)", INSTANCE_COLUMNS,
                          "f1_at_0.5", archs)
    lines += arch_section(work, "vessels", "vessels5: semantic segmentation of sinusoids and arteries",
                          SEMANTIC_COLUMNS, "mean_f1", archs)
    lines += isl_section(work, plan)
    if NOTES.is_file() and not smoke:  # the judgement a person adds after reading the tables
        lines += [NOTES.read_text().strip(), ""]
    lines += ["Raw results: `bench/work/architectures*/{dsb,vessels,isl,isl_semantic}/` (`per_sample*.csv`, `per_fold*.csv`, "
              "`summary*.csv`, `comparison*.csv`, per-fold `timing*.json`).", ""]
    return write_text(path, "\n".join(lines))


# ---- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny end-to-end check (a few minutes); work and "
                        "results in bench/work/architectures_smoke/")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {FULL.epochs}; smoke {SMOKE.epochs})")
    parser.add_argument("--steps", type=int, help=f"steps per epoch (default {FULL.steps}; smoke {SMOKE.steps})")
    parser.add_argument("--archs", help=f"comma-separated networks (default all: {','.join(ARCHS)})")
    parser.add_argument("--parts", default="dsb,vessels,isl", help="parts to run (default dsb,vessels,isl)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--work", type=Path, help="work folder (default bench/work/architectures[_smoke])")
    parser.add_argument("--report", action="store_true", help="only rebuild the report from the cached results")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    plan = SMOKE if args.smoke else FULL
    plan = replace(plan, epochs=args.epochs or plan.epochs, steps=args.steps or plan.steps)
    archs = [a.strip() for a in args.archs.split(",")] if args.archs else list(ARCHS)
    unknown = [a for a in archs if a not in ARCHS]
    parts = [p.strip() for p in args.parts.split(",")]
    if unknown or not set(parts) <= {"dsb", "vessels", "isl"}:
        raise SystemExit(f"unknown networks {unknown} or parts {parts}; networks: {list(ARCHS)}, "
                         "parts: dsb,vessels,isl")
    work = (args.work or (SMOKE_WORK if args.smoke else DEFAULT_WORK)).resolve()
    report = (work / "results" / "architectures.md") if args.smoke else RESULTS / "architectures.md"
    settings = work / "plan.json"
    as_json = json.loads(json.dumps(asdict(plan)))  # tuples become lists, as in plan.json
    if settings.is_file() and read_json(settings)["plan"] != as_json and not args.report:
        raise SystemExit(f"{work} holds a run with other settings ({read_json(settings)['plan']}); "
                         "use another --work or delete it")
    smoke = bool(read_json(settings, {}).get("smoke", args.smoke))
    if args.report:
        plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in read_json(settings)["plan"].items()})
        write_report(work, plan, archs, args.threads, report, smoke=smoke)
        log(f"report: {report}")
        return 0
    write_json(settings, {"plan": asdict(plan), "threads": args.threads, "smoke": args.smoke})
    log(f"plan: {asdict(plan)}; networks {archs}; parts {parts}; {args.threads} thread(s); work {work}")

    started = time.perf_counter()
    pools = dsb_pools(plan)
    dsb = prepare_dsb(work, "arch", pools["arch"], plan.crop)
    vessels = vessels_manifest(work / "data" / "vessels5" / "manifest.yaml")
    configs = arch_configs(work, plan, archs, dsb, vessels)
    add_wall(work, "data", time.perf_counter() - started)
    if "dsb" in parts:
        run_part(work, "dsb", configs["dsb"], plan, tta_too=True)
        write_report(work, plan, archs, args.threads, report, smoke=smoke)
    if "vessels" in parts:
        run_part(work, "vessels", configs["vessels"], plan, tta_too=True)
        write_report(work, plan, archs, args.threads, report, smoke=smoke)
    if "isl" in parts:
        started = time.perf_counter()
        pretext_manifest = prepare_dsb(work, "pretext", pools["pretext"], plan.crop, pretext=True)
        isl_manifest = prepare_dsb(work, "isl", pools["isl"], plan.crop)
        add_wall(work, "data", time.perf_counter() - started)
        pretext_run = pretext(work, plan, pretext_manifest)
        for part in ("isl", "isl_semantic"):
            run_part(work, part, isl_configs(work, plan, isl_manifest, pretext_run, part), plan, tta_too=False,
                     train_sizes=plan.train_sizes)
            write_report(work, plan, archs, args.threads, report, smoke=smoke)
    write_report(work, plan, archs, args.threads, report, smoke=smoke)
    log(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
