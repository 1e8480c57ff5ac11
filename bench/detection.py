#!/usr/bin/env python
"""Detection models against pixel classifiers on DSB 2018 fluorescence nuclei (issue 15, deliverable 5).

Models, each trained through ``fluoseg train`` on the fixed split ``bench/splits/dsb2018_fluo.json``
with the same patches, batch and epochs and an equal CPU budget for training steps
(``--budget-minutes``, default 30 per model: the seconds per step of each model are measured by
two short probe trainings, and its steps per epoch fill the budget; ``--steps`` gives every model
the same step count instead, as ``--smoke`` does), predicted with ``fluoseg predict`` and scored with ``fluoseg evaluate --task instance``:

* ``maskrcnn``        — Mask R-CNN (ResNet-18 FPN, narrow heads for a CPU budget), full supervision;
* ``lacss``           — LACSS (ResNet-18), full supervision (instance masks);
* ``lacss-points``    — LACSS from one point per nucleus plus the foreground (``fluoseg points``);
* ``lacss-points-10`` — the same from 10 % of the training images;
* ``deepcell``        — DeepCell's 3-class pixel classifier (31 px window) with the ``border`` decoding;
* ``unet-distance``   — fluoseg's distance U-Net of ``bench/nuclei.py``.

Every model's decoding is tuned on the validation images by F1@0.5 (``fluoseg tune``: h, threshold
and smallest object of the pixel classifiers, the detection score threshold of the detectors,
whose mask threshold stays 0.5). Everything runs as ``fluoseg`` commands with one work
folder per model under ``bench/work/detection/`` (git-ignored); finished steps are skipped
on rerun, an interrupted training resumes, and the report is rebuilt from the cached
evaluations.

Usage::

    .venv/bin/python bench/detection.py --smoke          # end-to-end check, a few minutes
    nohup .venv/bin/python bench/detection.py > bench/work/detection.log 2>&1 &   # the full run
    .venv/bin/python bench/detection.py --report         # rebuild the tables from the caches
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from _common import (
    DSB2018,
    DSB_MARKER,
    RESULTS,
    WORK,
    accumulate,
    dsb_manifest,
    dsb_split,
    epoch_rows,
    log,
    pooled_metric,
    predict_test_images,
    read_json,
    read_rows,
    rel,
    run_fluoseg,
    terminate_child_on_sigterm,
    write_json,
    write_rows,
    write_text,
)

DEFAULT_WORK = WORK / "detection"
SMOKE_WORK = WORK / "detection_smoke"

PATCH, BATCH, LEARNING_RATE = 256, 4, 1e-3
EPOCHS, STEPS = 6, 45
BUDGET_MINUTES = 30.0
"""Training-step CPU time per model in the full run."""
PROBE_STEPS = (2, 6)
"""Steps of the two probe trainings whose time difference gives a model's seconds per step."""
SMOKE = {"epochs": 1, "steps": 2, "train": 10, "val": 2, "test": 2}
POINTS_FRACTION = 0.1

DETECTOR_INSTANCE = {"min_score": 0.5, "threshold": 0.5, "min_size": 10, "tile_overlap": 96}
MODELS: dict[str, dict[str, Any]] = {
    "maskrcnn": {"name": "maskrcnn", "options": {
        "encoder": "resnet18", "fpn_channels": 64, "representation_size": 256, "mask_channels": 64,
        "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 500,
        "detections_per_image": 500}},
    "lacss": {"name": "lacss", "options": {
        "depth": "resnet18", "fpn_channels": 64, "lpn_channels": [64, 64], "shared_channels": [64, 64],
        "patch_channels": 32, "crop_size": 48, "min_score": 0.05}},  # proposals down to 0.05, as Mask R-CNN's boxes
    "deepcell": {"name": "deepcell", "options": {"window": 31, "padding": "same"}},
    "unet": {"name": "unet", "options": {"depth": 4, "base_filters": 16, "padding": "same"}},
}


@dataclass(frozen=True)
class Variant:
    """One model of the comparison: its network, instance settings and training data."""

    name: str
    model: str
    instance: dict[str, Any]
    points: bool = False
    fraction: float = 1.0

    @property
    def detector(self) -> bool:
        """Detection models score their objects (COCO AP); pixel classifiers do not."""
        return self.model in ("maskrcnn", "lacss")


VARIANTS = (
    Variant("maskrcnn", "maskrcnn", DETECTOR_INSTANCE),
    Variant("lacss", "lacss", DETECTOR_INSTANCE),
    Variant("lacss-points", "lacss", {**DETECTOR_INSTANCE, "supervision": "points"}, points=True),
    Variant("lacss-points-10", "lacss", {**DETECTOR_INSTANCE, "supervision": "points"}, points=True,
            fraction=POINTS_FRACTION),
    Variant("deepcell", "deepcell", {"method": "border", "w0": 10.0, "sigma": 5.0, "min_size": 10}),
    Variant("unet-distance", "unet", {"method": "distance", "alpha": 1.0, "h": 2.0, "threshold": 0.5, "min_size": 10}),
)
BY_NAME = {v.name: v for v in VARIANTS}

TABLE = (
    ("AP@0.5", "ap_at_0.5", "{:.3f}"),
    ("F1@0.5", "f1_at_0.5", "{:.3f}"),
    ("F1@0.75", "f1_at_0.75", "{:.3f}"),
    ("Acc@0.5", "accuracy_at_0.5", "{:.3f}"),
    ("AJI", "aji", "{:.3f}"),
    ("US rate", "us_rate", "{:.3f}"),
    ("OS rate", "os_rate", "{:.3f}"),
    ("steps", "train_steps", "{:,.0f}"),
    ("train (min)", "train_wall_min", "{:.1f}"),
    ("infer (MP/s)", "infer_megapixels_per_s", "{:.3f}"),
    ("params", "params", "{:,.0f}"),
)


@dataclass
class Settings:
    data: Path
    work: Path
    results: Path
    epochs: int
    steps: int
    threads: int
    device: str
    smoke: bool
    budget_minutes: float | None = None


# ---- data ------------------------------------------------------------------------------------

def variant_manifest(variant: Variant, settings: Settings, split: dict[str, list[str]]) -> Path:
    """The manifest a variant trains from: the split's images, with derived points where it needs them."""
    train = split["train"][: max(1, round(len(split["train"]) * variant.fraction))]
    tag = "all" if variant.fraction == 1.0 else f"{round(variant.fraction * 100)}pct"
    manifest = settings.work / f"manifest_{tag}.yaml"
    if not manifest.is_file():
        dsb_manifest(manifest, settings.data, train + split["val"] + split["test"])
    if not variant.points:
        return manifest
    points = settings.work / f"points_{tag}"
    if not (points / "manifest.yaml").is_file():
        log(f"points: one per nucleus from the labels of {len(train)} training images ({rel(points)})")
        run_fluoseg(["points", "--data", manifest, "--out", points, "--overwrite"], settings.work / "points.log",
                    threads=settings.threads)
    return points / "manifest.yaml"


def variant_config(variant: Variant, settings: Settings, manifest: Path, split: dict[str, list[str]], *,
                   steps: int, epochs: int | None = None) -> dict[str, Any]:
    """The ``fluoseg train`` config of a variant."""
    return {
        "data": {"manifest": str(manifest), "split": {"val": split["val"], "test": split["test"]}},
        "task": "instance",
        "instance": dict(variant.instance),
        "model": MODELS[variant.model],
        "train": {"epochs": epochs or settings.epochs, "steps_per_epoch": steps, "batch_size": BATCH,
                  "patch_size": PATCH, "learning_rate": LEARNING_RATE, "seed": 0, "device": settings.device,
                  "num_threads": settings.threads},
    }


def budget_steps(variant: Variant, settings: Settings, manifest: Path, split: dict[str, list[str]]) -> int:
    """Steps per epoch that spend ``settings.budget_minutes`` on the variant's training steps.

    Seconds per step come from two probe trainings of one epoch (:data:`PROBE_STEPS` steps,
    one validation image): the difference of their epoch times cancels the validation, so
    data preparation and start-up are not charged to the budget. Cached in ``sizing.json``.
    """
    path = settings.work / "sizing.json"
    sizing = read_json(path, {})
    if variant.name not in sizing:
        seconds = []
        for steps in PROBE_STEPS:
            probe = settings.work / "probes" / f"{variant.name}-{steps}"
            config = variant_config(variant, settings, manifest, {**split, "val": split["val"][:1]}, steps=steps,
                                    epochs=1)
            write_text(probe.with_suffix(".yaml"), yaml.safe_dump(config, sort_keys=False))
            run_fluoseg(["train", probe.with_suffix(".yaml"), "--out", probe, "--quiet", "--overwrite"],
                        settings.work / "probes.log", threads=settings.threads)
            seconds.append(float(epoch_rows(probe)[0]["seconds"]))
        step_s = max((seconds[1] - seconds[0]) / (PROBE_STEPS[1] - PROBE_STEPS[0]), 1e-3)
        sizing[variant.name] = {"step_s": round(step_s, 4), "probe_epoch_seconds": seconds}
        write_json(path, sizing)
        log(f"{variant.name}: {step_s:.2f} s per training step (probes of {PROBE_STEPS} steps)")
    step_s = sizing[variant.name]["step_s"]
    return max(1, int(settings.budget_minutes * 60 / (settings.epochs * step_s)))


# ---- one variant: train (and tune), predict, evaluate ------------------------------------------

def train_variant(variant: Variant, settings: Settings, config: dict[str, Any]) -> None:
    from fluoseg.run import RunDir

    vdir = settings.work / variant.name
    run = vdir / "run"
    config_path = vdir / "train.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    if RunDir(run).is_finished(settings.epochs) and (vdir / "tuned").is_file():
        log(f"{variant.name}: training done, skipped")
        return
    if run.exists() and config_path.is_file() and config_path.read_text() != text:
        raise RuntimeError(f"{variant.name}: {rel(run)} was started with another configuration; delete {rel(vdir)} "
                           "or use another --work folder")
    write_text(config_path, text)
    if not RunDir(run).is_finished(settings.epochs):
        args = ["train", config_path, "--out", run, "--quiet"]
        if RunDir(run).config_path.is_file():
            args.append("--resume")
        elif run.exists():
            args.append("--overwrite")
        log(f"{variant.name}: training {settings.epochs} epochs x {config['train']['steps_per_epoch']} steps x "
            f"batch {BATCH}")
        wall = run_fluoseg(args, vdir / "train.log", threads=settings.threads)
        accumulate(vdir / "timing.json", train_wall_s=wall)
        rows = epoch_rows(run)
        log(f"{variant.name}: trained in {wall / 60:.1f} min; last loss {float(rows[-1]['train_loss']):.4f}, "
            f"best val score {max(float(r['val_score']) for r in rows):.3f}")
    wall = run_fluoseg(["tune", run, "--objective", "f1_0.5", "--device", settings.device], vdir / "tune.log",
                       threads=settings.threads)
    accumulate(vdir / "timing.json", tune_wall_s=wall)
    write_text(vdir / "tuned", "decoding tuned on the validation images\n")
    shutil.rmtree(vdir / "pred", ignore_errors=True)  # predictions made before tuning are stale
    (vdir / "eval.csv").unlink(missing_ok=True)
    log(f"{variant.name}: decoding tuned on the validation images in {wall:.0f} s")


def predict_variant(variant: Variant, settings: Settings, test_ids: list[str]) -> None:
    predict_test_images(variant.name, settings.work / variant.name, settings.data / "images", test_ids,
                        device=settings.device, threads=settings.threads)


def score_detections(variant: Variant, settings: Settings, test_ids: list[str]) -> None:
    """Detectors: every detection down to score 0.05 (``--min-score``) with its score, then pooled COCO AP."""
    from fluoseg.io import read_labels
    from fluoseg.metrics.coco import coco_detections, pool_coco

    vdir = settings.work / variant.name
    if not variant.detector or (vdir / "coco.json").is_file():
        return
    pred = vdir / "pred_ap"
    missing = [i for i in test_ids if not (pred / f"{i}_objects.csv").is_file()]
    if missing:
        run_fluoseg(["predict", vdir / "run", *[settings.data / "images" / f"{i}.tif" for i in missing], "--out", pred,
                     "--markers", DSB_MARKER, "--quiet", "--objects", "--min-score", 0.05, "--overwrite",
                     "--device", settings.device], vdir / "predict_ap.log", threads=settings.threads)
    detections = []
    for image_id in test_ids:
        scores = {int(r["label"]): float(r["score"]) for r in read_rows(pred / f"{image_id}_objects.csv")}
        detections.append(coco_detections(read_labels(settings.data / "labels" / f"{image_id}.tif"),
                                          read_labels(pred / f"{image_id}.tif"), scores))
    ap = pool_coco(detections).average_precision()
    write_json(vdir / "coco.json", {"ap_at_0.5": float(ap[0]), "ap_mean_0.5_0.95": float(ap.mean()),
                                    "min_score": 0.05})
    log(f"{variant.name}: COCO AP@0.5 {ap[0]:.3f}, AP@[.5:.95] {ap.mean():.3f}")


def evaluate_variant(variant: Variant, settings: Settings) -> None:
    vdir = settings.work / variant.name
    if (vdir / "eval.csv").is_file():
        log(f"{variant.name}: evaluation done, skipped")
        return
    run_fluoseg(["evaluate", "--task", "instance", "--pred", vdir / "pred", "--truth", settings.data / "labels",
                 "--out", vdir / "eval.csv"], vdir / "evaluate.log", threads=settings.threads)
    summary = summarise(variant, settings)
    log(f"{variant.name}: F1@0.5 {summary['f1_at_0.5']:.3f}  AJI {summary['aji']:.3f}")


# ---- results -----------------------------------------------------------------------------------

def summarise(variant: Variant, settings: Settings) -> dict[str, Any]:
    """One row of detection.csv for a variant with a finished evaluation."""
    from fluoseg.metrics.semantic import ALL_IMAGES
    from fluoseg.run import RunDir

    vdir = settings.work / variant.name
    rows = [r for r in read_rows(vdir / "eval.csv") if r["image"] == ALL_IMAGES]
    timing = read_json(vdir / "timing.json", {})
    coco = read_json(vdir / "coco.json", {})
    config = yaml.safe_load((vdir / "train.yaml").read_text())
    summary = {
        "variant": variant.name, "model": variant.model,
        "supervision": variant.instance.get("supervision", "full"), "train_fraction": variant.fraction,
        "decoding": json.dumps((read_json(vdir / "run" / "model" / "decoding.json", {}) or {}).get("parameters", {})),
        "ap_at_0.5": coco.get("ap_at_0.5", math.nan),
        "ap_mean_0.5_0.95": coco.get("ap_mean_0.5_0.95", math.nan),
        "f1_at_0.5": pooled_metric(rows, "f1", 0.5),
        "f1_at_0.75": pooled_metric(rows, "f1", 0.75),
        "accuracy_at_0.5": pooled_metric(rows, "accuracy", 0.5),
        "aji": pooled_metric(rows, "aji"),
        "us_rate": pooled_metric(rows, "us_rate"),
        "os_rate": pooled_metric(rows, "os_rate"),
        "n_true": pooled_metric(rows, "n_true"),
        "n_pred": pooled_metric(rows, "n_pred"),
        "epochs": config["train"]["epochs"], "steps_per_epoch": config["train"]["steps_per_epoch"],
        "batch_size": config["train"]["batch_size"], "patch_size": config["train"]["patch_size"],
        "train_steps": config["train"]["epochs"] * config["train"]["steps_per_epoch"],
        "train_wall_min": timing.get("train_wall_s", math.nan) / 60,
        "infer_megapixels_per_s": (timing.get("predict_megapixels", math.nan)
                                   / max(timing.get("predict_wall_s", 0), 1e-9)),
        "params": RunDir.open(vdir / "run").parameter_count(),
    }
    write_json(vdir / "summary.json", summary)
    return summary


def _budget_words(settings: Settings, summary: dict[str, Any]) -> str:
    if settings.budget_minutes:
        return f"{settings.budget_minutes:g} CPU minutes of training steps per model"
    return f"{summary['epochs']} epochs of {summary['steps_per_epoch']} steps per model"


def committed_summaries(settings: Settings) -> list[dict[str, Any]]:
    """The rows of the committed ``detection.csv`` with numbers as numbers (when the work folder is gone)."""
    rows = read_rows(settings.results / "detection.csv")
    text = {"variant", "model", "supervision", "decoding"}
    def number(value: str) -> float | int:
        if value in ("", "nan"):
            return math.nan
        return int(value) if value.lstrip("-").isdigit() else float(value)

    return [{k: (v if k in text else number(v)) for k, v in r.items()} for r in rows]


def write_report(settings: Settings) -> None:
    summaries = [summarise(v, settings) for v in VARIANTS if (settings.work / v.name / "eval.csv").is_file()]
    source = f"the cached evaluations in `{rel(settings.work)}/`"
    if summaries:
        settings.results.mkdir(parents=True, exist_ok=True)
        write_rows(settings.results / "detection.csv", summaries)
    else:
        summaries = committed_summaries(settings)
        if not summaries:
            log("no finished evaluation yet: no report")
            return
        source = f"`{rel(settings.results / 'detection.csv')}` (no cached evaluations in `{rel(settings.work)}/`)"
    write_text(settings.results / "detection.md", markdown(settings, summaries, source))
    log(f"report: {rel(settings.results / 'detection.md')} ({len(summaries)} model(s))")


CLOSE_TO_FULL = 0.9
"""Share of the fully supervised F1@0.5 that counts as "close" when judging the LACSS paper's finding."""


def _cell(value: Any, fmt: str) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else fmt.format(value)


def markdown(settings: Settings, summaries: list[dict[str, Any]], source: str) -> str:
    first = summaries[0]
    lines = [
        "# Detection models vs pixel classifiers on DSB 2018 fluorescence nuclei",
        "",
        f"Generated by `bench/detection.py` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
        f"{source}."
        + (" **SMOKE RUN: numbers are meaningless.**" if settings.smoke else ""),
        "",
        f"Every model: {first['epochs']} epochs, "
        + (f"{settings.budget_minutes:g} CPU minutes of training steps (steps per epoch in `detection.csv`)"
           if settings.budget_minutes else f"{first['steps_per_epoch']} steps per epoch")
        + f", batch {first['batch_size']} of "
        f"{first['patch_size']}x{first['patch_size']} patches, Adam lr {LEARNING_RATE:g}, flips/rot90/intensity "
        f"jitter, per-image Gaussian standardisation, best epoch by validation F1@0.5 (points runs: F1 of objects "
        f"against points), {settings.threads} thread(s). Test split pooled over images.",
        "",
        "| model | supervision | " + " | ".join(h for h, _, _ in TABLE) + " |",
        "|---|---|" + "---:|" * len(TABLE),
    ]
    for s in summaries:
        supervision = s["supervision"] + (f" ({s['train_fraction']:.0%} of images)" if s["train_fraction"] < 1 else "")
        lines.append(f"| {s['variant']} | {supervision} | " + " | ".join(_cell(s[k], f) for _, k, f in TABLE) + " |")
    lines += ["", "F1 = 2TP/(2TP+FP+FN), accuracy = TP/(TP+FP+FN) at the IoU threshold (one-to-one matching); "
              "AJI of Kumar et al.; US/OS = Kromp et al.'s under-/over-segmentation rates; all from the label "
              "images (detectors: detections above the tuned score threshold). AP = COCO average precision of the "
              "detectors' detections scoring >= 0.05, ranked by score (`fluoseg predict --min-score 0.05 "
              "--objects`), pooled over the test images; the pixel classifiers' objects have no score, so no AP. "
              "Decoding (incl. the score threshold of the points runs) is tuned with the validation images' labels."]
    by = {s["variant"]: s for s in summaries}
    if "lacss" in by and "lacss-points" in by and by["lacss"]["f1_at_0.5"] > 0:
        full, weak = by["lacss"]["f1_at_0.5"], by["lacss-points"]["f1_at_0.5"]
        ratio = weak / full
        holds = ratio >= CLOSE_TO_FULL
        lines += ["", f"LACSS from points reaches F1@0.5 {weak:.3f} against {full:.3f} fully supervised "
                  f"({ratio:.0%} of it). **The LACSS paper's finding, that training from points comes close to "
                  f"full supervision, {'holds' if holds else 'does not hold'} here** (taken as at least "
                  f"{CLOSE_TO_FULL:.0%} of the fully supervised F1@0.5)"
                  + ("." if holds else f" at this budget of {_budget_words(settings, first)}; the paper trains far longer, "
                     "and whether the gap closes with longer training is not measured here.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated models to run (all: {', '.join(BY_NAME)})")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {EPOCHS}; smoke {SMOKE['epochs']})")
    parser.add_argument("--steps", type=int, help=f"the same steps per epoch for every model instead of a CPU "
                        f"budget (smoke {SMOKE['steps']})")
    parser.add_argument("--budget-minutes", type=float, help=f"CPU minutes of training steps per model (default "
                        f"{BUDGET_MINUTES:g}; none with --steps or --smoke unless given)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per fluoseg process (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where the networks run")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny end-to-end check: {SMOKE['train']} train / {SMOKE['val']} val / {SMOKE['test']} "
                        f"test images, {SMOKE['epochs']} epoch x {SMOKE['steps']} steps, work and results in "
                        f"{rel(SMOKE_WORK)}/")
    parser.add_argument("--report", action="store_true", help="only regenerate the results from the cached evaluations")
    parser.add_argument("--data", type=Path, default=DSB2018, help="dsb2018_fluo folder (images/, labels/)")
    parser.add_argument("--work", type=Path, help=f"work folder (default {rel(DEFAULT_WORK)})")
    parser.add_argument("--results", type=Path, help=f"results folder (default {rel(RESULTS)})")
    args = parser.parse_args(argv)

    terminate_child_on_sigterm()
    work = (args.work or (SMOKE_WORK if args.smoke else DEFAULT_WORK)).resolve()
    settings = Settings(data=args.data.resolve(), work=work,
                        results=(args.results or (work / "results" if args.smoke else RESULTS)).resolve(),
                        epochs=args.epochs or (SMOKE["epochs"] if args.smoke else EPOCHS),
                        steps=args.steps or (SMOKE["steps"] if args.smoke else STEPS),
                        threads=args.threads, device=args.device, smoke=args.smoke,
                        budget_minutes=args.budget_minutes or (None if args.steps or args.smoke else BUDGET_MINUTES))
    work.mkdir(parents=True, exist_ok=True)
    if args.report:
        write_report(settings)
        return 0
    unknown = [n for n in (args.only or "").split(",") if n and n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(BY_NAME)}")
    variants = [BY_NAME[n] for n in args.only.split(",")] if args.only else list(VARIANTS)
    split = dsb_split(settings.data, sizes=SMOKE if args.smoke else None)
    failures = []
    for variant in variants:
        try:
            manifest = variant_manifest(variant, settings, split)
            steps = budget_steps(variant, settings, manifest, split) if settings.budget_minutes else settings.steps
            train_variant(variant, settings, variant_config(variant, settings, manifest, split, steps=steps))
            predict_variant(variant, settings, split["test"])
            evaluate_variant(variant, settings)
            score_detections(variant, settings, split["test"])
        except Exception as error:  # noqa: BLE001 - one failed model must not stop the others
            log(f"{variant.name}: FAILED: {error}")
            failures.append(variant.name)
        write_report(settings)
    if failures:
        log(f"failed: {', '.join(failures)} (rerun the same command to retry)")
        return 1
    log("all done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
