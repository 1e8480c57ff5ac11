#!/usr/bin/env python
"""Leave-one-source-out check of the shipped ``nuclei`` recipe on DSB 2018 (issue 12, item 3).

DSB 2018 mixes acquisition sources, and the shipped model will be scored on images of sources
it never saw. The images carry no source label, so sources are approximated by groups that a
fixed rule derives from the images (:func:`source_group`, written to
``bench/results/zoo_loso_groups.csv``):

* ``256-dark``   — 256x256 images whose median intensity (the background level) is <= 9;
* ``256-offset`` — 256x256 images with a raised background (median > 9; the medians of the
  256x256 images fall in two clusters, 2-8 and 10-21, so the cut lies in the gap);
* ``360``        — 360x360 images (large nuclei, median diameter ~48 px);
* ``mixed``      — every other size (256x320 .. 1040x1388), too few per size for a group each.

Shape alone gives a degenerate grouping (256x256 holds 268 of the 361 images), hence the
background level as a second, appearance feature.

For each group g and seed s, the recipe of the shipped model (``distance-art-scale`` of
``bench/nuclei.py``, short schedule) is trained on the TRAIN-split images of the other groups
(artificial images and target diameter from those images only), its decoding tuned on the
VAL-split images of the other groups (``fluoseg tune``, as ``bench/train_zoo.py`` does), and
it predicts ALL images of g (``--diameter auto``). A baseline network per seed, same recipe and
steps, trains on the train split of all groups and is tuned on all validation images; it saw
g's training images, so the paired comparison "held-out minus seen" uses g's val+test images,
which neither network trained on. The shipped model (``Segmenter.pretrained("nuclei")``, run as
``fluoseg predict nuclei``; long schedule) is scored per group on g's test images as the
in-distribution reference.

Outputs: ``bench/results/zoo_loso.csv`` (one row per group x model x seed x image set, scores
pooled over the images) and ``bench/results/zoo_loso.md``, rendered from the two CSVs alone by
``--report``. With fewer than 3 seeds the report makes no significance claims; with >= 3 it
runs a paired t-test over seeds per group and metric, Holm over all of them.

Sizing (default: 1 seed, 6 epochs x 45 steps, batch 4, 1 thread), measured on 2026-12-03 on the
2-core machine while another benchmark ran (load average 2.7): ``--measure`` timed 1.67 s per
training step, so 5 networks (4 held-out + the baseline) x 270 steps = 38 min of steps. The
smoke run (3 networks of 30 steps, 3-4 validation and 5 scored images per network) took 3.6 min
per seed: per network ~0.7 min of training (start-up, steps, validation), 0.2-0.3 min of tuning
(one round, ~300 decodings of 3-4 images), 2.2-2.8 s per predicted image. With 15 steps a
network was sometimes still noise, and decoding noise made tuning take ~6 min per network.
Scaled to the full run: per network ~1 min of validation, ~0.5 min of artificial images and
~5 min of tuning (2 rounds, ~470 decodings of ~33 validation images), plus 361 + 72 + 36
predicted images at ~1.5 s = ~12 min: about 85 min for the first seed, ~83 min for each
further one (artificial images and target diameters are shared by the seeds), so ~4.2 h for
``--seeds 0,1,2``. Everything is cached under ``bench/work/zoo_loso/`` (git-ignored) and skipped
on rerun; an interrupted training resumes. ``zoo_loso.csv`` holds what one invocation scored, so
write the committed table with all groups and seeds in one command (cached steps cost nothing).

Usage::

    nice -n 19 .venv/bin/python bench/zoo_loso.py --smoke          # end-to-end check, a few minutes
    nice -n 19 .venv/bin/python bench/zoo_loso.py --groups-only    # write zoo_loso_groups.csv only
    nohup nice -n 19 .venv/bin/python bench/zoo_loso.py --seeds 0,1,2 > bench/work/zoo_loso.log 2>&1 &
    .venv/bin/python bench/zoo_loso.py --report                    # zoo_loso.md from the CSVs
    .venv/bin/python bench/zoo_loso.py --shipped-only              # re-score a re-exported/re-tuned shipped model
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DSB2018,
    DSB_MARKER,
    MIN_REPLICATES,
    RESULTS,
    WORK,
    Test,
    accumulate,
    adjust_holm,
    dsb_manifest,
    dsb_split,
    dsb_target_diameter,
    epoch_rows,
    log,
    mean_sd,
    paired_test,
    pooled_metric,
    prediction_cache,
    read_json,
    read_rows,
    recorded,
    rel,
    run_fluoseg,
    terminate_child_on_sigterm,
    write_json,
    write_rows,
    write_text,
    zoo_version,
)
from nuclei import (
    EPOCHS,
    N_ARTIFICIAL,
    STEPS,
    Settings,
    Variant,
    artificial_images,
    measure_steps,
    predict_variant,
    train_variant,
    variant_config,
)

RECIPE = Variant("distance", artificial=True, scale=True)   # the shipped model's recipe (bench/train_zoo.py)
GROUPS = ("256-dark", "256-offset", "360", "mixed")
BACKGROUND_SPLIT = 9.0   # uint8 median intensity: 256x256 medians cluster at 2-8 and 10-21
DEFAULT_WORK = WORK / "zoo_loso"
SMOKE_WORK = WORK / "zoo_loso_smoke"
# Smoke: enough steps that the maps are no longer noise (decoding noise made tuning take ~6 min per network;
# 15 steps were not always enough), one tuning round instead of train_zoo's two.
SMOKE = {"epochs": 1, "steps": 30, "artificial": 4, "groups": ("360", "mixed"), "tune_rounds": 1,
         "per_group": {"train": 3, "val": 1, "test": 1}}
GROUPS_CSV, SCORES_CSV, REPORT_MD = "zoo_loso_groups.csv", "zoo_loso.csv", "zoo_loso.md"
HELD_OUT, SEEN, SHIPPED = "held-out", "seen", "shipped"
# Scores of a row: (report header, csv column, pooled metric of fluoseg.metrics.instance, IoU threshold)
METRICS = (("F1@0.5", "f1_at_0.5", "f1", 0.5), ("F1@0.75", "f1_at_0.75", "f1", 0.75),
           ("mean F1 0.5:0.95", "f1_mean_0.5_0.95", "f1_mean_over_thresholds", None),
           ("AJI", "aji", "aji", None), ("US rate", "us_rate", "us_rate", None),
           ("OS rate", "os_rate", "os_rate", None))
TUNE_ROUNDS = 2   # grid refinements of fluoseg tune, as for the shipped model
TESTED = ("f1_at_0.5", "f1_mean_0.5_0.95", "aji")   # metrics compared held-out vs seen with >= 3 seeds


# ---- source groups -------------------------------------------------------------------------------

def source_group(shape: tuple[int, int], median_intensity: float) -> str:
    """The source group of an image from its shape and background level (its median intensity)."""
    if shape == (256, 256):
        return "256-dark" if median_intensity <= BACKGROUND_SPLIT else "256-offset"
    if shape == (360, 360):
        return "360"
    return "mixed"


def group_rows(data: Path, split: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One row per image: id, shape, split role, median intensity, nuclei, median diameter, group."""
    import tifffile

    from fluoseg.instance.scale import estimate_diameter_from_labels
    from fluoseg.io import read_labels

    role = {i: r for r, ids in split.items() for i in ids}
    rows = []
    for image_id in sorted(role):
        image = tifffile.imread(data / "images" / f"{image_id}.tif")
        labels = read_labels(data / "labels" / f"{image_id}.tif")
        shape = tuple(int(n) for n in image.shape[:2])
        median = float(np.median(image))
        rows.append({"image": image_id, "shape": f"{shape[0]}x{shape[1]}", "role": role[image_id],
                     "median_intensity": median, "n_objects": int(len(np.unique(labels)) - 1),
                     "median_diameter_px": round(estimate_diameter_from_labels(labels, statistic="median"), 1),
                     "group": source_group(shape, median)})
    return rows


def groups_table(path: Path, data: Path, split: dict[str, list[str]]) -> list[dict[str, str]]:
    """The grouping, recomputed by the rule and written on every run, so the CSV always matches the code."""
    write_rows(path, group_rows(data, split))
    log(f"source groups written: {rel(path)}")
    return read_rows(path)


def ids_of(groups: list[dict[str, str]], *, group: str | None = None, other_than: str | None = None,
           roles: Sequence[str] = ("train", "val", "test"), limit: dict[str, int] | None = None) -> list[str]:
    """Image ids of one group (or of every group but one) in the given split roles.

    ``limit`` keeps the N smallest images per (group, role) (smoke runs).
    """
    chosen = []
    for name in GROUPS:
        if (group is not None and name != group) or name == other_than:
            continue
        for role in roles:
            members = [r for r in groups if r["group"] == name and r["role"] == role]
            if limit:  # the smallest images: a smoke run decodes them fastest
                members = sorted(members, key=lambda r: (math.prod(map(int, r["shape"].split("x"))), r["image"]))
                members = members[: limit[role]]
            chosen += [r["image"] for r in members]
    return chosen


# ---- one network: train, tune, predict ----------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """One trained network: held out from ``group`` (None: the seen baseline) with ``seed``."""

    group: str | None
    seed: int

    @property
    def folder(self) -> str:
        return "seen" if self.group is None else f"without-{self.group}"


def network_settings(base: Settings, network: Network) -> Settings:
    """Settings whose work folder is the network's (data per group, runs per seed)."""
    return replace(base, work=base.work / network.folder / f"seed{network.seed}")


def train_network(network: Network, base: Settings, groups: list[dict[str, str]],
                  limit: dict[str, int] | None, tune_rounds: int) -> Settings:
    """Train and tune one network on the images outside its held-out group; returns its settings."""
    from train_zoo import tune

    data_dir = base.work / network.folder
    split = {role: ids_of(groups, other_than=network.group, roles=(role,), limit=limit)
             for role in ("train", "val", "test")}
    manifest = dsb_manifest(data_dir / "manifest.yaml", base.data, split["train"] + split["val"] + split["test"])
    diameter = dsb_target_diameter(data_dir, base.data, split["train"])
    artificial = artificial_images(data_dir, manifest, split["train"], base.n_artificial, base.threads)
    settings = network_settings(base, network)
    config = variant_config(RECIPE, manifest=manifest, split=split, artificial=artificial, diameter=diameter,
                            epochs=base.epochs, steps=base.steps, threads=base.threads, device=base.device)
    config["train"]["seed"] = network.seed  # one independently trained network per seed
    log(f"{network.folder} seed {network.seed}: {len(split['train'])} training images, target diameter {diameter} px")
    train_variant(RECIPE, settings, config)
    vdir = settings.work / RECIPE.name
    with recorded(lambda seconds: accumulate(vdir / "timing.json", tune_wall_s=seconds)):
        tune(settings, rounds=tune_rounds)
    return settings


def predict_shipped(base: Settings, image_ids: list[str]) -> Path:
    """``fluoseg predict nuclei`` (the shipped model, as a user runs it) on the images still missing."""
    # One folder per version of the shipped model and of the code that predicts with it: never scored from stale files.
    folder = base.work / SHIPPED / prediction_cache()
    pred = folder / "pred"
    missing = [i for i in image_ids if not (pred / f"{i}.tif").is_file()]
    if missing:
        log(f"shipped model: predicting {len(missing)} images")
        wall = run_fluoseg(["predict", "nuclei", *[base.data / "images" / f"{i}.tif" for i in missing], "--out", pred,
                            "--markers", DSB_MARKER, "--quiet", "--device", base.device],
                           folder / "predict.log", threads=base.threads)
        accumulate(folder / "timing.json", predict_wall_s=wall, predict_images=len(missing))
    return pred


# ---- scores ----------------------------------------------------------------------------------------

def score(pred: Path, data: Path, image_ids: list[str]) -> dict[str, Any]:
    """Scores pooled over ``image_ids`` (predictions in ``pred``), cached beside them by image set."""
    from fluoseg.io import read_labels
    from fluoseg.metrics.instance import instance_rows

    key = hashlib.sha1(",".join(sorted(image_ids)).encode()).hexdigest()[:12]  # one cache per image set
    cache = pred.parent / "scores" / f"{key}.json"
    cached = read_json(cache)
    if cached is not None and cached["images"] == sorted(image_ids):
        return cached["scores"]
    rows = instance_rows([(i, read_labels(pred / f"{i}.tif"), read_labels(data / "labels" / f"{i}.tif"))
                          for i in image_ids])
    scores = {column: pooled_metric(rows, metric, threshold) for _, column, metric, threshold in METRICS}
    scores.update(n_images=len(image_ids), n_objects=int(pooled_metric(rows, "n_true")),
                  n_predicted=int(pooled_metric(rows, "n_pred")))
    write_json(cache, {"images": sorted(image_ids), "scores": scores})
    return scores


def network_info(settings: Settings) -> dict[str, Any]:
    """What the report states about a trained network: data, steps, kept epoch, tuned decoding, times."""
    from fluoseg.run import RunDir

    vdir = settings.work / RECIPE.name
    run = RunDir.open(vdir / "run")
    record = run.decoding(run.members()[0]) or {"parameters": {}}
    best = max(epoch_rows(run.path), key=lambda r: float(r["val_score"]))
    timing = read_json(vdir / "timing.json", {})
    diameter = read_json(settings.work.parent / "target_diameter.json", {})
    return {"epochs": settings.epochs, "steps_per_epoch": settings.steps, "threads": settings.threads,
            "target_diameter": diameter.get("target_diameter"), "train_images": diameter.get("n_images"),
            "best_epoch": int(best["epoch"]), "best_val_f1_at_0.5": float(best["val_score"]),
            **{f"decoding_{k}": v for k, v in record["parameters"].items()},
            "train_wall_min": round(timing.get("train_wall_s", math.nan) / 60, 2),
            "tune_wall_min": round(timing.get("tune_wall_s", math.nan) / 60, 2),
            "predict_s_per_image": round(timing.get("predict_wall_s", math.nan)
                                         / max(timing.get("predict_images", 0), 1), 2)}


# ---- the run ---------------------------------------------------------------------------------------

def shipped_rows(base: Settings, groups: list[dict[str, str]], chosen: Sequence[str],
                 limit: dict[str, int] | None) -> list[dict[str, Any]]:
    """The shipped model scored on each chosen group's test images (one row per group)."""
    tests = {group: ids_of(groups, group=group, roles=("test",), limit=limit) for group in chosen}
    pred, version = predict_shipped(base, [i for ids in tests.values() for i in ids]), zoo_version()
    return [{"group": group, "model": SHIPPED, "seed": "", "images": "test", **score(pred, base.data, ids),
             "zoo_version": version} for group, ids in tests.items()]


def rescore_shipped(base: Settings, groups: list[dict[str, str]], chosen: Sequence[str],
                    limit: dict[str, int] | None) -> None:
    """Replace the shipped rows of the committed scores by the shipped model of now; the trained networks' rows stay."""
    path = base.results / SCORES_CSV
    kept = [row for row in read_rows(path) if not (row["model"] == SHIPPED and row["group"] in chosen)]
    if not kept:
        raise SystemExit(f"no {SCORES_CSV} in {rel(base.results)} to update: run the benchmark first")
    write_rows(path, shipped_rows(base, groups, chosen, limit) + kept)


def run_all(base: Settings, groups: list[dict[str, str]], chosen: Sequence[str], seeds: Sequence[int],
            limit: dict[str, int] | None, tune_rounds: int = TUNE_ROUNDS) -> int:
    """Train, tune, predict and score every network; rewrite the results after each. Returns failures."""
    rows: list[dict[str, Any]] = []
    failures = 0
    def of(group: str, roles: Sequence[str] = ("train", "val", "test")) -> list[str]:
        return ids_of(groups, group=group, roles=roles, limit=limit)

    rows.extend(shipped_rows(base, groups, chosen, limit))
    for seed in seeds:
        try:
            seen = train_network(Network(None, seed), base, groups, limit, tune_rounds)
            predict_variant(RECIPE, seen, [i for g in chosen for i in of(g, ("val", "test"))])
            seen_info = network_info(seen)
        except Exception as error:  # noqa: BLE001 - a failed network must not stop the others
            log(f"seen baseline seed {seed}: FAILED: {error}")
            failures += 1
            continue
        for group in chosen:
            valtest = of(group, ("val", "test"))
            seen_row = {"group": group, "model": SEEN, "seed": seed, "images": "val+test",
                        **score(seen.work / RECIPE.name / "pred", base.data, valtest), **seen_info}
            rows.append(seen_row)
            try:
                held = train_network(Network(group, seed), base, groups, limit, tune_rounds)
                predict_variant(RECIPE, held, of(group))
            except Exception as error:  # noqa: BLE001
                log(f"without-{group} seed {seed}: FAILED: {error}")
                failures += 1
                continue
            info, pred = network_info(held), held.work / RECIPE.name / "pred"
            rows.append({"group": group, "model": HELD_OUT, "seed": seed, "images": "all",
                         **score(pred, base.data, of(group)), **info})
            rows.append({"group": group, "model": HELD_OUT, "seed": seed, "images": "val+test",
                         **score(pred, base.data, valtest), **info})
            log(f"{group} seed {seed}: F1@0.5 held-out {rows[-1]['f1_at_0.5']:.3f} vs seen {seen_row['f1_at_0.5']:.3f} "
                "on its val+test images")
            write_rows(base.results / SCORES_CSV, rows)
    write_rows(base.results / SCORES_CSV, rows)
    return failures


# ---- the report (from the two CSVs alone) ------------------------------------------------------------

Rows = list[dict[str, str]]


def _values(rows: Rows, group: str, model: str, images: str, column: str) -> dict[str, float]:
    """``{seed: value}`` of one group x model x image set (finite values only)."""
    values = {r["seed"]: float(r[column]) for r in rows
              if r["group"] == group and r["model"] == model and r["images"] == images and r.get(column, "") != ""}
    return {seed: v for seed, v in values.items() if np.isfinite(v)}


def _first(rows: Rows, group: str, model: str, images: str, column: str) -> str:
    for r in rows:
        if r["group"] == group and r["model"] == model and r["images"] == images:
            return r[column]
    return "–"


def loso_tests(rows: Rows, groups: Sequence[str]) -> dict[tuple[str, str], Test]:
    """Held-out − seen per (group, tested metric) on the group's val+test images, paired by seed; Holm over all."""
    tests = {(group, column): paired_test(group, f"{group}, {_header(column)}: held-out − seen",
                                          _values(rows, group, HELD_OUT, "val+test", column),
                                          _values(rows, group, SEEN, "val+test", column))
             for group in groups for column in TESTED}
    adjust_holm(list(tests.values()))
    return tests


def groups_section(groups: Rows) -> list[str]:
    lines = ["| group | rule | shapes | images (train / val / test) | nuclei | "
             "median diameter (px, per-image medians) |",
             "|---|---|---|---|---:|---|"]
    rules = {"256-dark": f"256x256, median intensity ≤ {BACKGROUND_SPLIT:g}",
             "256-offset": f"256x256, median intensity > {BACKGROUND_SPLIT:g}",
             "360": "360x360", "mixed": "every other shape"}
    for group in GROUPS:
        members = [r for r in groups if r["group"] == group]
        counts = " / ".join(str(sum(r["role"] == role for r in members)) for role in ("train", "val", "test"))
        shapes = ", ".join(sorted({r["shape"] for r in members}, key=lambda s: tuple(map(int, s.split("x")))))
        diameters = np.array([float(r["median_diameter_px"]) for r in members])
        lines.append(f"| {group} | {rules[group]} | {shapes} | {len(members)} ({counts}) | "
                     f"{sum(int(r['n_objects']) for r in members)} | {np.median(diameters):.1f} "
                     f"({diameters.min():.1f}-{diameters.max():.1f}) |")
    return lines


def scores_section(rows: Rows, groups: Sequence[str]) -> list[str]:
    headers = [h for h, _, _, _ in METRICS]
    lines = ["| group | model | images | n images | n nuclei | " + " | ".join(headers) + " |",
             "|---|---|---|---:|---:|" + "---:|" * len(headers)]
    for group in groups:
        for model, images in ((HELD_OUT, "all"), (HELD_OUT, "val+test"), (SEEN, "val+test"), (SHIPPED, "test")):
            if not _values(rows, group, model, images, "f1_at_0.5"):
                continue
            cells = [mean_sd(_values(rows, group, model, images, column).values()) for _, column, _, _ in METRICS]
            lines.append(f"| {group} | {model} | {images} | {_first(rows, group, model, images, 'n_images')} | "
                         f"{_first(rows, group, model, images, 'n_objects')} | " + " | ".join(cells) + " |")
    return lines


def drop_section(rows: Rows, groups: Sequence[str], tests: dict[tuple[str, str], Test], n_seeds: int) -> list[str]:
    lines = ["| group | n images | n nuclei | " + " | ".join(f"Δ {_header(c)}" for c in TESTED) + " | seeds |",
             "|---|---:|---:|" + "---:|" * len(TESTED) + "---:|"]
    for group in groups:
        cells = []
        for column in TESTED:
            test = tests[(group, column)]
            if test.n == 0:
                cells.append("–")
            elif n_seeds >= MIN_REPLICATES:
                cells.append(f"{mean_sd(test.differences, signed=True)} (p Holm {test.p_holm:.2g}, "
                             f"{test.verdict('held-out better', 'held-out worse')}, n={test.n})")
            else:
                cells.append(mean_sd(test.differences, signed=True))
        lines.append(f"| {group} | {_first(rows, group, SEEN, 'val+test', 'n_images')} | "
                     f"{_first(rows, group, SEEN, 'val+test', 'n_objects')} | " + " | ".join(cells)
                     + f" | {tests[(group, TESTED[0])].n} |")
    return lines


def networks_section(rows: Rows) -> list[str]:
    """One line per trained network: its data, kept epoch, tuned decoding and times."""
    lines = ["| network | seed | training images | target diameter (px) | kept epoch (val F1@0.5) | h | threshold | "
             "min size | train (min) | tune (min) | predict (s/image) |", "|---|" + "---:|" * 10]
    listed: set[tuple[str, str]] = set()
    order = {SEEN: -1, **{g: k for k, g in enumerate(GROUPS)}}  # the baseline first, then the groups held out
    for r in sorted(rows, key=lambda r: (order[SEEN if r["model"] == SEEN else r["group"]], len(r["seed"]), r["seed"])):
        if r["model"] not in (SEEN, HELD_OUT):
            continue
        name = "seen (all groups)" if r["model"] == SEEN else f"without {r['group']}"
        if (name, r["seed"]) in listed or r.get("decoding_h", "") == "":
            continue
        listed.add((name, r["seed"]))
        lines.append(f"| {name} | {r['seed']} | {r['train_images']} | {r['target_diameter']} | {r['best_epoch']} "
                     f"({float(r['best_val_f1_at_0.5']):.3f}) | {float(r['decoding_h']):.3g} | "
                     f"{float(r['decoding_threshold']):.3g} | {float(r['decoding_min_size']):.0f} | "
                     f"{r['train_wall_min']} | {r['tune_wall_min']} | {r['predict_s_per_image']} |")
    return lines


def _header(column: str) -> str:
    return next(h for h, c, _, _ in METRICS if c == column)


def results_lines(rows: Rows) -> list[str]:
    """The scores table and the held-out − seen drop with its statistics (also shown in ``zoo.md``)."""
    present = [g for g in GROUPS if any(r["group"] == g for r in rows)]
    tests = loso_tests(rows, present)
    seeds = _seeds(rows)
    claims = (f"{len(seeds)} seed(s): **no significance claims** (an effect needs ≥ {MIN_REPLICATES} independently "
              "trained networks per group); the Δ columns only describe these networks (mean ± sd of the per-seed "
              "differences where there are two)."
              if len(seeds) < MIN_REPLICATES else
              f"{len(seeds)} seeds: paired t-test over seeds per group and metric, Holm's correction over all "
              f"{len(tests)} tests of this report; a verdict follows the Holm-adjusted p (α = 0.05), n beside it.")
    lines = ["## Scores", "", *scores_section(rows, present), "",
             "## Drop when the source was never seen (held-out − seen, same images: the group's val+test)", "",
             claims, "", *drop_section(rows, present, tests, len(seeds)), ""]
    if len(seeds) >= MIN_REPLICATES:
        lines += ["| comparison | mean difference | n | p | p (Holm) | significance | per-seed differences |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {t.question} | {t.cell()} | {', '.join(f'{d:+.3f}' for d in t.differences)} |"
                  for t in tests.values()]
        lines.append("")
    return lines


def _seeds(rows: Rows) -> list[str]:
    return sorted({r["seed"] for r in rows if r["model"] == HELD_OUT}, key=lambda s: (len(s), s))


def render(rows: Rows, groups: Rows, *, smoke: bool) -> str:
    """``zoo_loso.md`` from the rows of ``zoo_loso.csv`` and ``zoo_loso_groups.csv``."""
    trained = next((r for r in rows if r["model"] == HELD_OUT), None)
    budget = (f"{trained['epochs']} epochs x {trained['steps_per_epoch']} steps, batch 4 of 256x256, "
              f"{trained['threads']} thread(s)" if trained else "–")
    lines = [
        "# Leave-one-source-out check of the `nuclei` recipe (issue 12)",
        "",
        f"Rendered by `bench/zoo_loso.py --report` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
        f"`{SCORES_CSV}` and `{GROUPS_CSV}`." + (" **SMOKE RUN: a few images, a few training steps; the numbers "
                                                "mean nothing.**" if smoke else ""),
        "",
        "## Source groups",
        "",
        "DSB 2018 gives no acquisition source per image, so a fixed rule (`source_group` in the script) groups the "
        "images by shape and, because 256x256 holds most images, by background level: the median intensity of the "
        "256x256 images falls in two clusters (2-8 and 10-21, uint8), read as two kinds of camera/acquisition. "
        "Other sizes are too few for a group each and form `mixed`. Roles are those of the fixed split "
        "`bench/splits/dsb2018_fluo.json`.",
        "",
        *groups_section(groups),
        "",
        "## Set-up",
        "",
        f"- Recipe of the shipped model (`distance-art-scale` of `bench/nuclei.py`: distance + foreground heads, "
        f"artificial images, scale normalisation, `--diameter auto`), short schedule: {budget}; one network per "
        "(group, seed).",
        "- **held-out**: trained on the train split of the other groups (artificial images and target diameter from "
        "those images only), epoch and decoding (`fluoseg tune`) chosen on the other groups' validation images; "
        "scored on all images of the held-out group (`all`) and on its val+test images.",
        "- **seen**: the same recipe and steps on the train split of all groups, tuned on all validation images, "
        "scored on each group's val+test images (it trained on the group's training images, not on these). Its "
        "epoch and decoding were chosen on validation images that include the group's own, a small advantage the "
        "held-out network cannot have; it is part of what \"seen\" means here.",
        "- **shipped**: `fluoseg predict nuclei` (long schedule, `bench/train_zoo.py`) on the group's test images: "
        "the in-distribution reference, trained far longer, so not a paired comparison.",
        "- Scores pooled over the images of a row (TP/FP/FN summed); mean ± sd over seeds where there are several.",
        "",
        *results_lines(rows),
    ]
    lines += ["## Networks", "", *networks_section(rows), "",
              "## Reproduce", "", "```bash",
              "nohup nice -n 19 .venv/bin/python bench/zoo_loso.py --seeds 0,1,2 > bench/work/zoo_loso.log 2>&1 &",
              ".venv/bin/python bench/zoo_loso.py --report", "```", ""]
    return "\n".join(lines)


def write_report(results: Path, *, smoke: bool) -> None:
    rows, groups = read_rows(results / SCORES_CSV), read_rows(results / GROUPS_CSV)
    if not rows or not groups:
        raise SystemExit(f"no {SCORES_CSV} / {GROUPS_CSV} in {rel(results)}: run the benchmark first")
    write_text(results / REPORT_MD, render(rows, groups, smoke=smoke))
    log(f"report: {rel(results / REPORT_MD)}")


# ---- main --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, one network per (group, seed) "
                        f"(default 0; >= {MIN_REPLICATES} for paired tests)")
    parser.add_argument("--groups", help=f"comma-separated groups to hold out (default all: {', '.join(GROUPS)}; "
                        f"smoke {', '.join(SMOKE['groups'])})")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {EPOCHS}; smoke {SMOKE['epochs']})")
    parser.add_argument("--steps", type=int, help=f"steps per epoch (default {STEPS}; smoke {SMOKE['steps']})")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per fluoseg process (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny end-to-end check: per group "
                        f"{SMOKE['per_group']} images, {SMOKE['epochs']} epoch x {SMOKE['steps']} steps, work and "
                        f"results in {rel(SMOKE_WORK)}/")
    parser.add_argument("--measure", action="store_true",
                        help="only time a few training steps (bench/nuclei.py's probe)")
    parser.add_argument("--groups-only", action="store_true", help=f"only write {GROUPS_CSV}")
    parser.add_argument("--report", action="store_true", help=f"only render {REPORT_MD} from the CSVs")
    parser.add_argument("--shipped-only", action="store_true",
                        help=f"only re-score the shipped model (after a re-export or re-tune) in {SCORES_CSV}, "
                        "keeping the trained networks' rows, and re-render the report (minutes)")
    parser.add_argument("--data", type=Path, default=DSB2018)
    parser.add_argument("--work", type=Path, help=f"work folder (default {rel(DEFAULT_WORK)})")
    parser.add_argument("--results", type=Path, help=f"results folder (default {rel(RESULTS)}; smoke: work/results)")
    args = parser.parse_args(argv)

    work = (args.work or (SMOKE_WORK if args.smoke else DEFAULT_WORK)).resolve()
    results = (args.results or (work / "results" if args.smoke else RESULTS)).resolve()
    if args.report:
        write_report(results, smoke=args.smoke)
        return 0
    terminate_child_on_sigterm()
    base = Settings(data=args.data.resolve(), work=work, results=results,
                    epochs=args.epochs or (SMOKE["epochs"] if args.smoke else EPOCHS),
                    steps=args.steps or (SMOKE["steps"] if args.smoke else STEPS), threads=args.threads,
                    device=args.device, n_artificial=SMOKE["artificial"] if args.smoke else N_ARTIFICIAL,
                    smoke=args.smoke)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = args.groups.split(",") if args.groups else list(SMOKE["groups"] if args.smoke else GROUPS)
    unknown = set(chosen) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown group(s) {sorted(unknown)}; known: {', '.join(GROUPS)}")
    if args.measure:
        sizing = measure_steps(base, 5, (len(chosen) + 1) * len(seeds))
        log(f"{sizing['step_s']:.2f} s/step at {base.threads} thread(s) ({sizing['load']}): "
            f"{(len(chosen) + 1) * len(seeds)} networks x {base.epochs * base.steps} steps = "
            f"{sizing['estimate_train_min']:.0f} min of steps")
        return 0
    groups = groups_table(results / GROUPS_CSV, base.data, dsb_split(base.data))
    if args.groups_only:
        return 0
    if args.shipped_only:
        rescore_shipped(base, groups, chosen, SMOKE["per_group"] if args.smoke else None)
        write_report(results, smoke=args.smoke)
        return 0
    started = time.time()
    failures = run_all(base, groups, chosen, seeds, SMOKE["per_group"] if args.smoke else None,
                       SMOKE["tune_rounds"] if args.smoke else TUNE_ROUNDS)
    write_report(results, smoke=args.smoke)
    log(f"{'all done' if not failures else f'{failures} network(s) failed (rerun to retry)'} "
        f"in {(time.time() - started) / 60:.1f} min")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
