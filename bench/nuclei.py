#!/usr/bin/env python
"""Nuclear instance segmentation benchmark on DSB 2018 fluorescence images (issue 6, deliverable 6).

Kromp et al. (2021) Tables I and III in spirit: two instance methods

* ``border``   — Kromp's U-Net: 3 classes background / interior / touching border, the U-Net
  border weight map (w0 = 10, sigma = 5), labels by seeded growth of the interiors;
* ``distance`` — the two-head U-Net of the in-silico-labelling paper: distance map (MSE) +
  foreground (BCE), labels by h-maxima watershed;

each trained with and without Kromp's artificial images (``fluoseg synth nuclei`` from the
training images only, added with ``data.extra_train``) and with and without scale
normalisation (``instance.target_diameter`` = median training nucleus diameter; inference
with ``--diameter auto``). Every run is scored on the fixed test split with
``fluoseg evaluate --task instance``.

Everything goes through the ``fluoseg`` command line, one run directory per variant under
``bench/work/nuclei/`` (git-ignored). Finished steps are skipped on rerun (they are detected
by their files), an interrupted training is resumed, and the tables in ``bench/results/``
are regenerated from the cached evaluation CSVs. CI never runs this script.

Usage::

    .venv/bin/python bench/nuclei.py --smoke                 # end-to-end check, a few minutes
    .venv/bin/python bench/nuclei.py --measure               # time a few training steps only
    nohup .venv/bin/python bench/nuclei.py > bench/work/nuclei.log 2>&1 &   # the full run
    .venv/bin/python bench/nuclei.py --report                # rebuild tables/figures from caches
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _common import (
    DSB2018,
    DSB_SPLIT,
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
    terminate_child_on_sigterm,
    write_json,
    write_rows,
    write_text,
)

from fluoseg.io import read_image, read_labels

DEFAULT_WORK = WORK / "nuclei"
SMOKE_WORK = WORK / "nuclei_smoke"

# ---- fixed benchmark settings (the sizing is explained in bench/results/nuclei.md) ----------
MODEL = {"name": "unet", "options": {"depth": 4, "base_filters": 16, "padding": "same"}}
PATCH, BATCH, LEARNING_RATE = 256, 4, 1e-3
EPOCHS, STEPS = 6, 45                                     # full run: 270 steps per variant (sizing below)
# Sizing probe (2026-11-21, this 2-core CPU shared with other engineers, 1 thread): a training step
# (forward + backward + Adam, batch 4 of 256x256, 1.94 M parameters) took 1.25 s with the machine
# otherwise idle and 1.65-1.9 s at load average 3-4; a real 30-step epoch took 55-67 s including
# ~8 s of validation on the 36 whole validation images; preparing the 289 training images ~15 s;
# predicting the 36 test images 37 s (about twice that with --diameter auto); evaluating ~6 s.
# Planned with 1.8 s/step: 8 x 270 x 1.8 s = 65 min of steps + ~20 min other = ~85 min.
PROBE_NOTE = ("Sizing probe before the run (1 thread, machine shared with other jobs): 1.25 s/step with the machine "
              "otherwise idle, 1.65-1.9 s/step at load average 3-4; a 30-step epoch took 55-67 s including ~8 s of "
              "validation; prediction of the 36 test images 37 s (about twice with `--diameter auto`). Planned with "
              "1.8 s/step: 8 variants x 270 steps = 65 min of steps + ~20 min other = ~85 min.")
N_ARTIFICIAL = 100
INSTANCE = {
    "border": {"method": "border", "w0": 10.0, "sigma": 5.0, "min_size": 10},
    "distance": {"method": "distance", "alpha": 1.0, "h": 2.0, "threshold": 0.5, "min_size": 10},
}
METHODS = ("border", "distance")
SMOKE = {"epochs": 1, "steps": 2, "train": 12, "val": 2, "test": 3, "artificial": 4}

# Columns of the markdown table: (header, csv column, format)
TABLE = (
    ("F1@0.5", "f1_at_0.5", "{:.3f}"),
    ("Acc@0.5", "accuracy_at_0.5", "{:.3f}"),
    ("F1@0.75", "f1_at_0.75", "{:.3f}"),
    ("mAcc 0.5:0.95", "accuracy_mean_0.5_0.95", "{:.3f}"),
    ("AJI", "aji", "{:.3f}"),
    ("US rate", "us_rate", "{:.3f}"),
    ("OS rate", "os_rate", "{:.3f}"),
    ("train (min)", "train_wall_min", "{:.1f}"),
    ("infer (s/img)", "infer_s_per_image", "{:.2f}"),
    ("params", "params", "{:,.0f}"),
)


@dataclass(frozen=True)
class Variant:
    """One training configuration of the 2 x 2 x 2 grid."""

    method: str
    artificial: bool = False
    scale: bool = False

    @property
    def name(self) -> str:
        return "-".join([self.method] + (["art"] if self.artificial else []) + (["scale"] if self.scale else []))

    @classmethod
    def parse(cls, name: str) -> Variant:
        parts = name.strip().split("-")
        if parts[0] not in METHODS or not set(parts[1:]) <= {"art", "scale"}:
            raise SystemExit(f"unknown variant {name!r}; e.g. border, distance-art, border-scale, distance-art-scale")
        return cls(parts[0], "art" in parts, "scale" in parts)


ALL_VARIANTS = [Variant(m, a, s) for a, s in ((False, False), (True, False), (False, True), (True, True)) for m in METHODS]


# ---- data: artificial images (split, manifest and target diameter: _common) ---------------

def artificial_images(work: Path, manifest: Path, train_ids: list[str], n_images: int, threads: int) -> Path:
    """Kromp's artificial images made from the training images only (``fluoseg synth nuclei``), once."""
    out = work / "artificial"
    if (out / "manifest.yaml").is_file():
        return out / "manifest.yaml"
    log(f"artificial images: {n_images} from {len(train_ids)} training images (fluoseg synth nuclei)")
    wall = run_fluoseg(["synth", "nuclei", "--data", manifest, "--out", out, "--samples", ",".join(train_ids),
                        "--n-images", n_images, "--seed", 0, "--overwrite"], work / "artificial.log", threads=threads)
    log(f"artificial images done in {wall:.0f} s")
    return out / "manifest.yaml"


# ---- one variant: train, predict, evaluate ---------------------------------------------------

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


def variant_config(variant: Variant, *, manifest: Path, split: dict[str, list[str]], artificial: Path | None,
                   diameter: float | None, epochs: int, steps: int, threads: int, device: str) -> dict[str, Any]:
    """The ``fluoseg train`` config of a variant (peers.py trains the same with its own epochs/steps)."""
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
                  "learning_rate": LEARNING_RATE, "seed": 0, "device": device, "num_threads": threads},
    }


def train_variant(variant: Variant, settings: Settings, config: dict[str, Any]) -> None:
    from fluoseg.run import RunDir

    vdir = settings.work / variant.name
    run = vdir / "run"
    if RunDir(run).is_finished(settings.epochs):
        log(f"{variant.name}: training done, skipped")
        return
    config_path = vdir / "train.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    if run.exists() and config_path.is_file() and config_path.read_text() != text:
        raise RuntimeError(f"{variant.name}: {run} was started with another configuration (e.g. other --epochs/"
                           f"--steps); delete {vdir} or use another --work folder")
    write_text(config_path, text)
    args = ["train", config_path, "--out", run, "--quiet"]
    if RunDir(run).config_path.is_file():
        args.append("--resume")
        log(f"{variant.name}: resuming training after epoch {len(epoch_rows(run))}/{settings.epochs}")
    elif run.exists():
        args.append("--overwrite")
    seen = [len(epoch_rows(run))]
    log(f"{variant.name}: training {settings.epochs} epochs x {settings.steps} steps x batch {BATCH} "
        f"({settings.threads} thread(s))")

    def progress() -> None:
        rows = epoch_rows(run)
        for row in rows[seen[0]:]:
            log(f"{variant.name}: epoch {row['epoch']}/{settings.epochs} loss {float(row['train_loss']):.4f} "
                f"val F1@0.5 {float(row['val_score']):.3f}{' *' if row['best'] == '1' else ''} "
                f"({float(row['seconds']):.0f} s)")
        seen[0] = max(seen[0], len(rows))

    with recorded(lambda seconds: accumulate(vdir / "timing.json", train_wall_s=seconds, train_invocations=1)):
        wall = run_fluoseg(args, vdir / "train.log", threads=settings.threads, poll=progress)
    log(f"{variant.name}: training finished in {wall / 60:.1f} min")


def predict_variant(variant: Variant, settings: Settings, test_ids: list[str]) -> None:
    predict_test_images(variant.name, settings.work / variant.name, settings.data / "images", test_ids,
                        device=settings.device, threads=settings.threads,
                        extra=["--diameter", "auto"] if variant.scale else [])


def evaluate_variant(variant: Variant, settings: Settings, truth: Path) -> None:
    vdir = settings.work / variant.name
    if (vdir / "eval.csv").is_file():
        log(f"{variant.name}: evaluation done, skipped")
        return
    run_fluoseg(["evaluate", "--task", "instance", "--pred", vdir / "pred", "--truth", truth, "--out", vdir / "eval.csv"],
                vdir / "evaluate.log", threads=settings.threads)
    summary = summarise(variant, settings)
    log(f"{variant.name}: F1@0.5 {summary['f1_at_0.5']:.3f}  AJI {summary['aji']:.3f}  "
        f"mAcc {summary['accuracy_mean_0.5_0.95']:.3f}")


# ---- results ---------------------------------------------------------------------------------

def pooled_rows(eval_csv: Path) -> list[dict[str, str]]:
    """The rows of ``fluoseg evaluate`` pooled over all test images."""
    from fluoseg.metrics.semantic import ALL_IMAGES

    return [r for r in read_rows(eval_csv) if r["image"] == ALL_IMAGES]


def summarise(variant: Variant, settings: Settings) -> dict[str, Any]:
    """One row of nuclei.csv for a variant with a finished evaluation."""
    from fluoseg.run import RunDir

    vdir = settings.work / variant.name
    run = RunDir.open(vdir / "run")
    rows = pooled_rows(vdir / "eval.csv")
    timing = read_json(vdir / "timing.json", {})
    config = yaml.safe_load((vdir / "train.yaml").read_text())
    epochs = epoch_rows(run.path)
    best = max(epochs, key=lambda r: float(r["val_score"]))
    summary = {
        "variant": variant.name, "method": variant.method, "artificial": int(variant.artificial),
        "scale": int(variant.scale),
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


def planned_variants(plan: str, settings: Settings) -> list[Variant]:
    """The grid, or the reduced plan: both baselines, then the variants of the method with the better
    validation F1@0.5."""
    if plan == "grid":
        return list(ALL_VARIANTS)
    baselines = [Variant(m) for m in METHODS]
    scores = {}
    for v in baselines:
        summary = read_json(settings.work / v.name / "summary.json")
        if summary is not None:
            scores[v.method] = summary["best_val_f1_at_0.5"]  # chosen on validation, not on test
    if len(scores) < len(METHODS):
        return baselines
    better = max(METHODS, key=lambda m: scores[m])
    return baselines + [Variant(better, True, False), Variant(better, False, True), Variant(better, True, True)]


def write_report(settings: Settings, plan: str, sizing: dict[str, Any] | None) -> None:
    summaries = []
    for variant in ALL_VARIANTS:
        if (settings.work / variant.name / "eval.csv").is_file():
            summaries.append(summarise(variant, settings))
    if not summaries:
        log("no finished evaluation yet: no report")
        return
    results = settings.results
    results.mkdir(parents=True, exist_ok=True)
    write_rows(results / "nuclei.csv", summaries)
    write_rows(results / "nuclei_pooled_metrics.csv",
               [{"variant": s["variant"], "metric": r["metric"], "threshold": r["threshold"], "value": r["value"]}
                for s in summaries for r in pooled_rows(settings.work / s["variant"] / "eval.csv")],
               fields=["variant", "metric", "threshold", "value"])
    figures = overlay_figures(settings, [Variant.parse(s["variant"]) for s in summaries])
    write_text(results / "nuclei.md", markdown(settings, plan, sizing, summaries, figures))
    log(f"report: {results / 'nuclei.md'} ({len(summaries)} variant(s)), {results / 'nuclei.csv'}, "
        f"{len(figures)} overlay figure(s)")


def markdown(settings: Settings, plan: str, sizing: dict[str, Any] | None, summaries: list[dict[str, Any]],
             figures: list[Path]) -> str:
    split = read_json(DSB_SPLIT)
    first = summaries[0]
    diameter = read_json(settings.work / "target_diameter.json", {})
    lines = [
        "# Nuclear instance segmentation on DSB 2018 fluorescence (Kromp et al. Tables I and III in spirit)",
        "",
        f"Generated by `bench/nuclei.py` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the "
        f"cached evaluations in `{rel(settings.work)}/`." + (" **SMOKE RUN: numbers are meaningless.**" if settings.smoke else ""),
        "",
        "## Set-up",
        "",
        f"- Data: `{settings.data}` (361 2D uint8 images, 256x256 to 1040x1388). Fixed split "
        f"`bench/splits/dsb2018_fluo.json`: {len(split['train'])} train / {len(split['val'])} val / "
        f"{len(split['test'])} test images, seeded, stratified by image shape"
        + (f" (smoke: subsets of it, {first['test_images']} test images)." if settings.smoke else "."),
        f"- Model: U-Net depth {MODEL['options']['depth']}, {MODEL['options']['base_filters']} base filters, "
        f"{MODEL['options']['padding']} padding, no normalisation layers ({first['params'] / 1e6:.2f} M parameters). "
        f"Adam lr {LEARNING_RATE:g}, {first['patch_size']}x{first['patch_size']} patches, batch {first['batch_size']}, "
        f"{first['epochs']} epochs x {first['steps_per_epoch']} steps, flips/rot90/intensity jitter, "
        f"per-image Gaussian standardisation; best epoch by validation F1@0.5 (whole validation images, tiled).",
        f"- `border`: Kromp's 3-class U-Net (background / interior / touching border), U-Net border weight map "
        f"w0 = {INSTANCE['border']['w0']:g}, sigma = {INSTANCE['border']['sigma']:g}; labels by seeded growth of interiors.",
        f"- `distance`: distance-map (MSE) + foreground (BCE) heads, alpha = {INSTANCE['distance']['alpha']:g}; "
        f"h-maxima watershed with h = {INSTANCE['distance']['h']:g} px, foreground threshold "
        f"{INSTANCE['distance']['threshold']:g}. Both: objects under {INSTANCE['border']['min_size']} px removed.",
        f"- `-art`: plus {settings.n_artificial} artificial 256x256 images (`fluoseg synth nuclei`, Kromp's generator "
        "without the pix2pix refinement, default grid 5x5) made from the training images only.",
        f"- `-scale`: every training/validation image rescaled so its mean nucleus diameter becomes "
        f"{diameter.get('target_diameter', '?')} px (median over training images of the per-image mean "
        f"equivalent-circle diameter; per-image means range {diameter.get('range', '?')} px); test images with "
        "`fluoseg predict --diameter auto` (diameter from a first pass at the original scale), labels resized back.",
        f"- Timing: {first['threads']} thread(s) per process (`train.num_threads`, `OMP_NUM_THREADS` for prediction) "
        "on a 2-core CPU shared with other jobs. *train* = wall time of `fluoseg train` (data preparation, "
        "training steps and per-epoch validation); *infer* = wall time of `fluoseg predict` per test image "
        "(model loading, tiled prediction, decoding; two passes with `--diameter auto`).",
        f"- Plan: {'full 2x2x2 grid' if plan == 'grid' else 'reduced: both baselines, then the artificial/scale variants of the better method (by validation F1@0.5)'}.",
        "",
        "## Results (test split, pooled over images)",
        "",
        "| variant | " + " | ".join(h for h, _, _ in TABLE) + " |",
        "|---|" + "---:|" * len(TABLE),
    ]
    for s in summaries:
        cells = [fmt.format(s[key]) if not (isinstance(s[key], float) and math.isnan(s[key])) else "–"
                 for _, key, fmt in TABLE]
        lines.append(f"| {s['variant']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "F1 = 2TP/(2TP+FP+FN) and accuracy = TP/(TP+FP+FN) (StarDist's \"accuracy\", Cellpose's \"AP\") from "
        "one-to-one IoU matching at the given IoU threshold, TP/FP/FN summed over the test images; mAcc = accuracy "
        "averaged over IoU 0.50:0.05:0.95; AJI = Kumar et al. (pooled as sum C / sum U); US/OS rate = Kromp et al. "
        "under-/over-segmentation rates. `nuclei.csv` has more columns (precision, recall, PQ, Kromp's counts, "
        "best epoch, times); `nuclei_pooled_metrics.csv` every pooled metric of `fluoseg evaluate`.",
        "",
    ]
    effects = factor_effects(summaries)
    if effects:
        lines += ["## Effect of each factor (difference on the test split)", "",
                  "| method | factor | other factor | ΔF1@0.5 | ΔmAcc | ΔAJI |", "|---|---|---|---:|---:|---:|"]
        lines += effects + [""]
    if sizing:
        lines += ["## Sizing", "", PROBE_NOTE, "", sizing_text(sizing, summaries), ""]
    if figures:
        lines += ["## Examples", "",
                  "Test images with truth contours (green) and predicted contours (magenta); large images are cropped.",
                  ""]
        lines += [f"![{f.stem}]({f.name})" for f in figures] + [""]
    lines += ["## Reproduce", "", "```bash", "nohup .venv/bin/python bench/nuclei.py > bench/work/nuclei.log 2>&1 &",
              ".venv/bin/python bench/nuclei.py --report   # tables and figures from the cached evaluations", "```", ""]
    return "\n".join(lines)


def factor_effects(summaries: list[dict[str, Any]]) -> list[str]:
    by_name = {s["variant"]: s for s in summaries}
    lines = []
    for method in METHODS:
        for factor, other in (("art", "scale"), ("scale", "art")):
            for with_other in (False, True):
                base = Variant(method, artificial=(factor == "scale" and with_other), scale=(factor == "art" and with_other))
                changed = Variant(method, artificial=True if factor == "art" else base.artificial,
                                  scale=True if factor == "scale" else base.scale)
                a, b = by_name.get(base.name), by_name.get(changed.name)
                if a is None or b is None:
                    continue
                label = {"art": "artificial images", "scale": "scale normalisation"}
                lines.append(f"| {method} | +{label[factor]} | {'with' if with_other else 'without'} {label[other]} | "
                             f"{b['f1_at_0.5'] - a['f1_at_0.5']:+.3f} | "
                             f"{b['accuracy_mean_0.5_0.95'] - a['accuracy_mean_0.5_0.95']:+.3f} | "
                             f"{b['aji'] - a['aji']:+.3f} |")
    return lines


def sizing_text(sizing: dict[str, Any], summaries: list[dict[str, Any]]) -> str:
    measured = sizing.get("step_s")
    text = (f"Measured before the run: one training step (batch {sizing['batch']} of {sizing['patch']}x{sizing['patch']}, "
            f"forward + backward + Adam) takes {measured:.2f} s at {sizing['threads']} thread(s) "
            f"(median of {sizing['n_steps']} steps, {sizing.get('load', '?')}). "
            f"Estimate for {sizing['variants']} variants x {sizing['epochs']} epochs x {sizing['steps']} steps: "
            f"{sizing['estimate_train_min']:.0f} min of training steps + about {sizing['estimate_other_min']:.0f} min of "
            f"data preparation, validation, prediction and evaluation = {sizing['estimate_total_min']:.0f} min.")
    done = [s for s in summaries if not math.isnan(s["train_wall_min"])]
    if done:
        total = sum(s["train_wall_min"] + s["infer_wall_s"] / 60 for s in done)
        text += (f" Actual: {total:.0f} min for the {len(done)} variant(s) reported here (training + prediction wall "
                 "time).")
    return text


def overlay_figures(settings: Settings, variants: list[Variant], n_images: int = 3) -> list[Path]:
    """Image with truth (green) and predicted (magenta) contours for a few test images, one panel per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    available = [v for v in variants if (settings.work / v.name / "pred").is_dir()]
    if not available:
        return []
    test_ids = sorted(p.name.split(".")[0] for p in (settings.work / available[0].name / "pred").glob("*.tif"))
    chosen = pick_examples(settings.data, test_ids, n_images)
    per_image_f1 = {}
    for v in available:
        for r in read_rows(settings.work / v.name / "eval.csv"):
            if r["metric"] == "f1" and r["threshold"] == "0.5":
                per_image_f1[(v.name, r["image"])] = float(r["value"])
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
        for ax, v in zip(axes.ravel(), available):
            pred = read_labels(settings.work / v.name / "pred" / f"{image_id}.tif")
            rgb = np.repeat(gray[..., None], 3, axis=2)
            rgb[truth_edges] = (0.1, 1.0, 0.1)
            rgb[find_boundaries(pred[window], mode="inner")] = (1.0, 0.1, 1.0)
            ax.imshow(rgb, interpolation="nearest")
            f1 = per_image_f1.get((v.name, image_id), math.nan)
            ax.set_title(f"{v.name}: F1@0.5 {f1:.2f}", fontsize=7)
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

def measure_steps(settings: Settings, n_steps: int, n_variants: int) -> dict[str, Any]:
    """Time a few training steps of the benchmark's network (3 output channels, border loss)."""
    path = settings.work / "sizing.json"
    cached = read_json(path)
    if cached is not None and cached.get("threads") == settings.threads and cached.get("n_steps") == n_steps:
        return _with_estimate(cached, settings, n_variants)
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
    return _with_estimate(sizing, settings, n_variants)


def _with_estimate(sizing: dict[str, Any], settings: Settings, n_variants: int) -> dict[str, Any]:
    sizing = dict(sizing)
    train_min = n_variants * settings.epochs * settings.steps * sizing["step_s"] / 60
    # Per variant (probe above): ~0.4 min start-up and data preparation, ~0.17 min validation per
    # epoch, ~1.1 min prediction (0.6, or ~1.5 with --diameter auto) and evaluation; 0.5 min synthesis.
    other_min = n_variants * (1.5 + settings.epochs * 0.17) + 0.5
    sizing.update(variants=n_variants, epochs=settings.epochs, steps=settings.steps,
                  estimate_train_min=train_min, estimate_other_min=other_min, estimate_total_min=train_min + other_min)
    return sizing


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated variants to run, e.g. border,distance-art-scale "
                        f"(all: {', '.join(v.name for v in ALL_VARIANTS)})")
    parser.add_argument("--plan", choices=("grid", "reduced"),
                        help="grid (default): all 8 variants; reduced: both baselines, then the artificial/scale "
                        "variants of the method with the better validation F1 (default for --report: the plan of "
                        "the last run in the work folder)")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {EPOCHS}; smoke {SMOKE['epochs']})")
    parser.add_argument("--steps", type=int, help=f"steps per epoch (default {STEPS}; smoke {SMOKE['steps']})")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per fluoseg process (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--n-artificial", type=int, help=f"artificial images (default {N_ARTIFICIAL})")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny end-to-end check: {SMOKE['train']} train / {SMOKE['val']} val / {SMOKE['test']} "
                        f"test images, {SMOKE['epochs']} epoch x {SMOKE['steps']} steps, work and results in "
                        f"{rel(SMOKE_WORK)}/")
    parser.add_argument("--measure", action="store_true", help="only time a few training steps and print the estimate")
    parser.add_argument("--measure-steps", type=int, default=5, help="steps timed by the sizing measurement")
    parser.add_argument("--report", action="store_true", help="only regenerate the results from the cached evaluations")
    parser.add_argument("--data", type=Path, default=DSB2018, help="dsb2018_fluo folder (images/, labels/)")
    parser.add_argument("--work", type=Path, help=f"work folder (default {rel(DEFAULT_WORK)})")
    parser.add_argument("--results", type=Path, help=f"results folder (default {rel(RESULTS)})")
    args = parser.parse_args(argv)

    terminate_child_on_sigterm()
    work = (args.work or (SMOKE_WORK if args.smoke else DEFAULT_WORK)).resolve()
    settings = Settings(
        data=args.data.resolve(), work=work,
        results=(args.results or (work / "results" if args.smoke else RESULTS)).resolve(),
        epochs=args.epochs or (SMOKE["epochs"] if args.smoke else EPOCHS),
        steps=args.steps or (SMOKE["steps"] if args.smoke else STEPS),
        threads=args.threads, device=args.device,
        n_artificial=args.n_artificial or (SMOKE["artificial"] if args.smoke else N_ARTIFICIAL), smoke=args.smoke)
    work.mkdir(parents=True, exist_ok=True)
    last_run = read_json(work / "run_settings.json", {})
    if args.report:  # describe the run that produced the cached results, not the defaults
        args.plan = args.plan or last_run.get("plan")
        settings.epochs = args.epochs or last_run.get("epochs", settings.epochs)
        settings.steps = args.steps or last_run.get("steps", settings.steps)
        settings.n_artificial = args.n_artificial or last_run.get("n_artificial", settings.n_artificial)
    args.plan = args.plan or "grid"
    only = [Variant.parse(n) for n in args.only.split(",")] if args.only else None
    n_variants = len(only) if only else (8 if args.plan == "grid" else 5)
    if not args.report and not args.measure:
        write_json(work / "run_settings.json", {"plan": args.plan, "epochs": settings.epochs, "steps": settings.steps,
                                                "n_artificial": settings.n_artificial, "threads": settings.threads,
                                                "only": args.only})
    sizing = measure_steps(settings, 2 if args.smoke else args.measure_steps, n_variants)
    log(f"sizing: {sizing['step_s']:.2f} s/step at {settings.threads} thread(s); estimate {n_variants} variants x "
        f"{settings.epochs} x {settings.steps} steps = {sizing['estimate_train_min']:.0f} min training + "
        f"~{sizing['estimate_other_min']:.0f} min other = ~{sizing['estimate_total_min']:.0f} min")
    if args.measure:
        return 0
    if args.report:
        write_report(settings, args.plan, sizing)
        return 0

    split = dsb_split(settings.data, sizes=SMOKE if args.smoke else None)
    manifest = dsb_manifest(work / "manifest.yaml", settings.data, split["train"] + split["val"] + split["test"])
    diameter = dsb_target_diameter(work, settings.data, split["train"])
    log(f"target diameter for scale normalisation: {diameter} px")

    failures = []
    done: set[str] = set()
    while True:
        planned = only if only else planned_variants(args.plan, settings)
        todo = [v for v in planned if v.name not in done]
        if not todo:
            break
        for variant in todo:
            done.add(variant.name)
            try:
                artificial = (artificial_images(work, manifest, split["train"], settings.n_artificial, settings.threads)
                              if variant.artificial else None)
                config = variant_config(variant, manifest=manifest, split=split, artificial=artificial,
                                        diameter=diameter, epochs=settings.epochs, steps=settings.steps,
                                        threads=settings.threads, device=settings.device)
                train_variant(variant, settings, config)
                predict_variant(variant, settings, split["test"])
                evaluate_variant(variant, settings, settings.data / "labels")
            except Exception as error:  # noqa: BLE001 - one failed variant must not stop the others
                log(f"{variant.name}: FAILED: {error}")
                failures.append(variant.name)
            write_report(settings, args.plan, sizing)
    if failures:
        log(f"failed variants: {', '.join(failures)} (rerun the same command to retry)")
        return 1
    log("all done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
