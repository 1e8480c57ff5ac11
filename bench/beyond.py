#!/usr/bin/env python
"""Issue 16 benchmark: marker-flexible instance segmentation, markers outside the trained
panel, Marker-Excite-only adaptation and per-subset uncertainty, with seeds as the unit.

Every network is trained by :func:`fluoseg.train.train` from a run config (what
``fluoseg train`` runs) and applied by :class:`fluoseg.infer.Segmenter` (what
``fluoseg predict`` runs). One *seed* is one independent replicate of the whole
experiment: its own simulated images (``fluoseg synth cells``) and its own network
initialisations and batches. Per seed:

A. **Marker-flexible instance segmentation** (panel DAPI, ECAD, CK, CD45): one MS-ME
   instance U-Net (Marker Sampling + Marker Excite, Kromp's border method) against 15
   per-subset networks (UB: each trained on exactly its subset, Marker Zero input), all
   with the same steps, scored by object F1@0.5 on 6 test images for every subset; and
   the MS-ME network trained 4x longer (does a gap to UB close with training?).
B. **Markers outside the trained panel**: a U-Net with the channel-invariant front end is
   trained without one marker (cells: ECAD; vessels5: endoglin) and given it at test time
   under a name it never saw, against the same model without it and against an MS-ME
   U-Net trained on the remaining markers. vessels5 uses the paper's split (5 train,
   1 validation, 2 test samples) with a different seed per replicate; score: sinusoid F1.
C. **Adaptation to a shifted domain** (weaker membrane stain, brighter cytoplasm, smaller
   cells, more noise and blur) from n = 1, 5, 20 annotated images: Marker-Excite-only
   fine-tuning (``model.trainable: excite``) vs full fine-tuning vs training from scratch
   (same steps), and the unadapted model.
D. **Uncertainty per marker subset** (5 markers, 31 subsets): per-subset expected F1 of the
   interior class from the probabilities alone (plain, 8-fold TTA, 8-pass MC dropout; the
   method is chosen by ECE on the validation images) against the true F1 on test images;
   Spearman over the 31 subsets, mean |expected - true| and ECE; and an object-level
   label-free estimate, the agreement F1@0.5 between the passes and their consensus.

Decoding uses each run's stored defaults for every method alike; the epoch kept is the one
with the best validation score (the trainer's rule); nothing is chosen on test images.
Statistics: the unit is the seed; paired t-tests on the per-seed values, Holm-corrected
over every test of the report; n beside every star.

Run (resumable; finished units are read from ``bench/work/beyond``)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/beyond.py [--seeds 0,1,2] [--parts A,B,C,D]
    PYTHONPATH=src python bench/beyond.py --report    # bench/results/beyond.md from the CSVs

``--quick`` trains a few steps on tiny data (a check that the script runs).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, WORK, fill_readme_block, log, read_rows, rel, write_json, write_rows, write_text

PARTS = ("A", "B", "C", "D")
PANEL = ("DAPI", "ECAD", "CK", "CD45")
PANEL5 = PANEL + ("KI67",)
HELD_OUT = {"cells": "ECAD", "vessels5": "endoglin"}
UNSEEN_NAME = {"ECAD": "E-cadherin", "endoglin": "CD105"}  # names the model never saw
VESSELS5 = Path("/work/shared/data/vessels5")
VESSEL_MARKERS = ("DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP")
SIZES = {"train": 20, "val": 4, "test": 6}
ADAPT_SIZES = (1, 5, 20)
LONGER = 4  # the MS-ME network trained this many times longer, to see whether a gap to UB closes
ADAPT_MODES = ("none", "excite", "all", "scratch")
UNCERTAINTY_METHODS = ("plain", "tta", "dropout")
OUT = WORK / "beyond"
CSV = {part: RESULTS / f"beyond_{name}.csv" for part, name in
       (("A", "subsets"), ("B", "heldout"), ("C", "adaptation"), ("D", "calibration"))}


class Budget:
    """Training length of every network of the benchmark (equal for all methods)."""

    def __init__(self, quick: bool) -> None:
        self.epochs, self.steps = (2, 5) if quick else (20, 40)
        self.adapt_epochs = 2 if quick else 10
        self.image_size = 64 if quick else 128
        self.vessel_epochs = 2 if quick else 16


# ---- data --------------------------------------------------------------------------------------

def cells_data(seed: int, domain: str, markers: Sequence[str], budget: Budget) -> Path:
    """A simulated dataset of one seed and domain: train, val and test images in one manifest."""
    from fluoseg.data.synth import cell_domain, write_cells_dataset

    out = OUT / f"seed{seed}" / f"data-{domain}-{len(markers)}"
    manifest = out / "manifest.yaml"
    if not manifest.is_file():
        n = sum(SIZES.values())
        write_cells_dataset(out, n, cell_domain(domain), seed=1000 * seed + (500 if domain == "shifted" else 0),
                            shape=(budget.image_size,) * 2, markers=markers, overwrite=True)
    return manifest


def roles(prefix: str = "cells") -> dict[str, list[str]]:
    ids = [f"{prefix}_{i:04d}" for i in range(sum(SIZES.values()))]
    a, b = SIZES["train"], SIZES["train"] + SIZES["val"]
    return {"train": ids[:a], "val": ids[a:b], "test": ids[b:]}


def vessels_manifest() -> Path:
    from _common import vessels_manifest as write_manifest

    path = OUT / "vessels5.yaml"
    return path if path.is_file() else write_manifest(path, VESSELS5)


# ---- configs and training -----------------------------------------------------------------------

def instance_config(manifest: Path, markers: Sequence[str], seed: int, budget: Budget, *, train_ids: Sequence[str],
                    marker_input: str = "ms", attention: str | None = "me", front_end: str = "slots",
                    epochs: int | None = None, init_from: Path | None = None, trainable: str = "all",
                    learning_rate: float = 2e-3) -> dict[str, Any]:
    ids = roles()
    options: dict[str, Any] = {"depth": 3, "base_filters": 8, "padding": "same", "marker_input": marker_input,
                               "dropout": 0.1}
    if attention:
        options["attention"] = attention
    if front_end != "slots":
        options.update(front_end=front_end, front_end_options={"features": 8, "width": 8})
    config = {
        "data": {"manifest": str(manifest), "markers": list(markers),
                 "split": {"val": ids["val"], "test": ids["test"]}},
        "task": "instance", "instance": {"method": "border", "min_size": 10},
        "model": {"name": "unet", "options": options, "trainable": trainable},
        "train": {"epochs": epochs or budget.epochs, "steps_per_epoch": budget.steps, "batch_size": 4,
                  "patch_size": 64, "learning_rate": learning_rate, "schedule": "cosine", "seed": seed,
                  "device": "cpu", "num_threads": 1, "val_tile_size": budget.image_size},
    }
    if init_from is not None:
        config["model"]["init_from"] = str(init_from)
    config["train_ids"] = list(train_ids)  # not a config key: the split given to the trainer
    return config


def trained(config: dict[str, Any], run_dir: Path) -> Path:
    """Train ``config`` into ``run_dir`` unless a finished run is there (a partial one restarts).

    ``config["train_ids"]``, when there, are the training samples (the rest of the split
    comes from the config); otherwise the config's split decides.
    """
    from fluoseg.config import RunConfig
    from fluoseg.data.split import Split
    from fluoseg.train.trainer import train

    marker = run_dir / "finished"
    if marker.is_file():
        return run_dir
    start = time.time()
    config = dict(config)
    train_ids = config.pop("train_ids", None)
    validated = RunConfig.model_validate(config)
    split = None
    if train_ids is not None:
        split = Split(train=tuple(train_ids), val=tuple(validated.data.split.val or ()),
                      test=tuple(validated.data.split.test or ()))
    train(validated, run_dir, overwrite=True, progress=False, split=split)
    marker.write_text(f"{time.time() - start:.1f}\n")
    log(f"trained {rel(run_dir)} in {time.time() - start:.0f} s")
    return run_dir


# ---- scoring ------------------------------------------------------------------------------------

def load(run_dir: Path):
    from fluoseg.infer import Segmenter

    return Segmenter.load(run_dir, device="cpu")


def test_samples(manifest: Path, ids: Sequence[str]):
    from fluoseg.data.manifest import load_manifest

    data = load_manifest(manifest)
    return [data.sample(i) for i in ids]


def object_f1(segmenter, samples, markers: Sequence[str], rename: dict[str, str] | None = None) -> float:
    """Object F1@0.5 pooled over ``samples`` when the model gets exactly ``markers``."""
    from fluoseg.metrics.matching import matching_at_thresholds, pool_matching

    results = []
    for sample in samples:
        image = sample.read_image()
        names = [(rename or {}).get(n, n) for n in sample.channel_names]
        labels, _ = segmenter.predict_labels(np.asarray(image.array), names, markers=list(markers), diameter="off",
                                             blank_snr=0, tile_size=max(image.array.shape[1:]))
        truth = sample.read_labels(tuple(labels.shape))
        results.append(matching_at_thresholds(truth, labels, thresholds=0.5)[0])
    return float(pool_matching(results).f1)


def subsets(markers: Sequence[str]) -> list[tuple[str, ...]]:
    from fluoseg.markers import MarkerPanel

    return MarkerPanel(markers).subsets()


def cached_rows(path: Path, compute) -> list[dict[str, Any]]:
    """Rows of one finished unit from ``path``, or computed and written there."""
    if path.is_file():
        return read_rows(path)
    rows = compute()
    write_rows(path, rows)
    return read_rows(path)


# ---- part A -------------------------------------------------------------------------------------

def part_a(seed: int, budget: Budget) -> list[dict[str, Any]]:
    manifest = cells_data(seed, "default", PANEL, budget)
    ids = roles()
    samples = test_samples(manifest, ids["test"])
    folder = OUT / f"seed{seed}" / "A"

    def msme() -> list[dict[str, Any]]:
        run = trained(instance_config(manifest, PANEL, seed, budget, train_ids=ids["train"]), folder / "msme")
        segmenter = load(run)
        return [{"seed": seed, "method": "MS-ME", "subset": "+".join(s), "n_markers": len(s),
                 "f1_50": object_f1(segmenter, samples, s)} for s in subsets(PANEL)]

    rows = cached_rows(folder / "msme.csv", msme)
    for subset in subsets(PANEL):
        code = "+".join(subset)

        def upper_bound(subset=subset, code=code) -> list[dict[str, Any]]:
            config = instance_config(manifest, subset, seed, budget, train_ids=ids["train"], marker_input="mz",
                                     attention=None)
            segmenter = load(trained(config, folder / f"ub-{code}"))
            return [{"seed": seed, "method": "UB", "subset": code, "n_markers": len(subset),
                     "f1_50": object_f1(segmenter, samples, subset)}]

        rows += cached_rows(folder / f"ub-{code}.csv", upper_bound)

    def msme_longer() -> list[dict[str, Any]]:
        # does more training close a gap to UB? (one MS-ME network learns all 15 subsets at once)
        config = instance_config(manifest, PANEL, seed, budget, train_ids=ids["train"],
                                 epochs=LONGER * budget.epochs)
        segmenter = load(trained(config, folder / "msme-longer"))
        return [{"seed": seed, "method": f"MS-ME {LONGER}x steps", "subset": "+".join(s), "n_markers": len(s),
                 "f1_50": object_f1(segmenter, samples, s)} for s in subsets(PANEL)]

    return rows + cached_rows(folder / "msme-longer.csv", msme_longer)


# ---- part B -------------------------------------------------------------------------------------

def part_b_cells(seed: int, budget: Budget) -> list[dict[str, Any]]:
    manifest = cells_data(seed, "default", PANEL, budget)
    ids = roles()
    samples = test_samples(manifest, ids["test"])
    held = HELD_OUT["cells"]
    trained_on = [m for m in PANEL if m != held]
    folder = OUT / f"seed{seed}" / "B-cells"

    def compute() -> list[dict[str, Any]]:
        ci = load(trained(instance_config(manifest, trained_on, seed, budget, train_ids=ids["train"],
                                          front_end="channel-invariant"), folder / "ci"))
        msme = load(trained(instance_config(manifest, trained_on, seed, budget, train_ids=ids["train"]),
                            folder / "msme"))
        unseen = UNSEEN_NAME[held]
        rename = {held: unseen}
        rows = [("channel-invariant", "trained markers", object_f1(ci, samples, trained_on)),
                ("channel-invariant", f"trained markers + {held} (unseen name)",
                 object_f1(ci, samples, trained_on + [unseen], rename)),
                ("channel-invariant", f"{held} alone (unseen name)", object_f1(ci, samples, [unseen], rename)),
                ("MS-ME", "trained markers", object_f1(msme, samples, trained_on))]
        return [{"dataset": "cells", "seed": seed, "model": m, "inputs": i, "score": s, "metric": "object F1@0.5"}
                for m, i, s in rows]

    return cached_rows(folder / "rows.csv", compute)


def sinusoid_f1(segmenter, samples, markers: Sequence[str], rename: dict[str, str]) -> float:
    """Sinusoid pixel F1 pooled over ``samples`` when the model gets exactly ``markers``."""
    from fluoseg.metrics.semantic import per_class_confusion

    total = None
    for sample in samples:
        image = sample.read_image()
        names = [rename.get(n, n) for n in sample.channel_names]
        masks, _ = segmenter.predict_masks(np.asarray(image.array), names, markers=list(markers),
                                           pixel_size=image.pixel_size, tile_size=256)
        truth = sample.read_masks(list(segmenter.classes), tuple(masks.shape[1:]))
        counts = per_class_confusion(masks, truth)[list(segmenter.classes).index("sinusoids")]
        total = counts if total is None else total + counts
    return float(total.f1)


def vessel_config(markers: Sequence[str], seed: int, budget: Budget, front_end: str) -> dict[str, Any]:
    options: dict[str, Any] = {"depth": 3, "base_filters": 16, "padding": "same", "marker_input": "ms",
                               "attention": "me"}
    if front_end != "slots":
        options.update(front_end=front_end, front_end_options={"features": 16, "width": 16})
    return {
        "data": {"manifest": str(vessels_manifest()), "markers": list(markers), "classes": ["sinusoids"],
                 "split": {"val": ["s001_05"], "test": ["s001_06", "s001_07"]}},
        "model": {"name": "unet", "options": options},
        "preprocess": {"normalization": "gaussian", "pixel_size_um": 1.0},
        "train": {"epochs": budget.vessel_epochs, "steps_per_epoch": budget.steps, "batch_size": 4,
                  "patch_size": 128, "learning_rate": 1e-3, "schedule": "cosine", "seed": seed, "device": "cpu",
                  "num_threads": 1, "val_tile_size": 256},
    }


def part_b_vessels(seed: int, budget: Budget) -> list[dict[str, Any]]:
    if not VESSELS5.is_dir():
        log(f"skipping vessels5 (no {VESSELS5})")
        return []
    held = HELD_OUT["vessels5"]
    trained_on = [m for m in VESSEL_MARKERS if m != held]
    folder = OUT / f"seed{seed}" / "B-vessels5"

    def compute() -> list[dict[str, Any]]:
        samples = test_samples(vessels_manifest(), ["s001_06", "s001_07"])
        ci = load(trained(vessel_config(trained_on, seed, budget, "channel-invariant"), folder / "ci"))
        msme = load(trained(vessel_config(trained_on, seed, budget, "slots"), folder / "msme"))
        unseen = UNSEEN_NAME[held]
        rename = {held: unseen}
        rows = [("channel-invariant", "trained markers", sinusoid_f1(ci, samples, trained_on, rename)),
                ("channel-invariant", f"trained markers + {held} (unseen name)",
                 sinusoid_f1(ci, samples, trained_on + [unseen], rename)),
                ("MS-ME", "trained markers", sinusoid_f1(msme, samples, trained_on, rename))]
        return [{"dataset": "vessels5", "seed": seed, "model": m, "inputs": i, "score": s,
                 "metric": "sinusoid pixel F1"} for m, i, s in rows]

    return cached_rows(folder / "rows.csv", compute)


# ---- part C -------------------------------------------------------------------------------------

def part_c(seed: int, budget: Budget) -> list[dict[str, Any]]:
    base = OUT / f"seed{seed}" / "A" / "msme"
    default_manifest = cells_data(seed, "default", PANEL, budget)
    ids = roles()
    trained(instance_config(default_manifest, PANEL, seed, budget, train_ids=ids["train"]), base)
    manifest = cells_data(seed, "shifted", PANEL, budget)
    samples = test_samples(manifest, ids["test"])
    folder = OUT / f"seed{seed}" / "C"
    rows = []
    for n, mode in itertools.product(ADAPT_SIZES, ADAPT_MODES):
        if mode == "none" and n != ADAPT_SIZES[0]:
            continue  # the unadapted model does not depend on n

        def compute(n=n, mode=mode) -> list[dict[str, Any]]:
            if mode == "none":
                segmenter = load(base)
            else:
                config = instance_config(
                    manifest, PANEL, seed, budget, train_ids=ids["train"][:n], epochs=budget.adapt_epochs,
                    init_from=None if mode == "scratch" else base,
                    trainable="excite" if mode == "excite" else "all",
                    learning_rate=2e-3 if mode == "scratch" else 1e-3)
                segmenter = load(trained(config, folder / f"n{n}-{mode}"))
            scores = [object_f1(segmenter, samples, s) for s in subsets(PANEL)]
            return [{"seed": seed, "n_images": 0 if mode == "none" else n, "mode": mode,
                     "f1_all_markers": scores[-1], "f1_mean_subsets": float(np.mean(scores))}]

        rows += cached_rows(folder / f"n{n}-{mode}.csv", compute)
    return rows


# ---- part D -------------------------------------------------------------------------------------

def subset_calibration(segmenter, samples, subset: Sequence[str], method: str) -> dict[str, float]:
    """True and expected F1 of the interior class, object F1 and ECE for one subset.

    With several passes (TTA, MC dropout) also the *agreement* F1@0.5: the objects of each
    pass matched against those of the averaged prediction, pooled over passes and images,
    an object-level estimate that needs no ground truth.
    """
    from fluoseg.infer import PredictOptions
    from fluoseg.instance.targets import border_targets
    from fluoseg.metrics.calibration import calibration_counts, expected_confusion
    from fluoseg.metrics.matching import matching_at_thresholds, pool_matching
    from fluoseg.metrics.semantic import confusion_counts
    from fluoseg.uncertainty import UncertaintyOptions, sample_probabilities

    pixels, expected, calibration, matches, agreement = [], [], [], [], []
    for sample in samples:
        image = np.asarray(sample.read_image().array)
        names = list(sample.channel_names)
        options = PredictOptions(markers=tuple(subset), diameter="off", blank_snr=0, tile_size=max(image.shape[1:]))
        if method == "plain":
            labels, maps = segmenter.predict_labels(image, names, options)
        else:
            passes = sample_probabilities(segmenter, image, names, options,
                                          UncertaintyOptions(method="tta" if method == "tta" else "dropout"))
            maps = passes.mean(axis=0)
            labels = segmenter.decode(maps)
            # label-free object-level estimate: how well each pass's objects agree with the consensus
            agreement.extend(matching_at_thresholds(labels, segmenter.decode(one), thresholds=0.5)[0]
                             for one in passes)
        truth_labels = sample.read_labels(tuple(labels.shape))
        matches.append(matching_at_thresholds(truth_labels, labels, thresholds=0.5)[0])
        interior = np.clip(maps[1].astype(np.float64), 0.0, 1.0)
        predicted = np.argmax(maps, axis=0) == 1
        truth = border_targets(truth_labels) == 1
        pixels.append(confusion_counts(predicted, truth))
        expected.append(expected_confusion(interior, predicted=predicted))
        calibration.append(calibration_counts(interior, truth.astype(np.uint8)))
    # counts add up over images (pooled, as the scores of the other parts)
    return {"true_f1": sum(pixels[1:], pixels[0]).f1, "expected_f1": sum(expected[1:], expected[0]).f1,
            "object_f1_50": float(pool_matching(matches).f1), "ece": float(sum(calibration[1:], calibration[0]).ece()),
            "agreement_f1_50": float(pool_matching(agreement).f1) if agreement else float("nan")}


def part_d(seed: int, budget: Budget) -> list[dict[str, Any]]:
    manifest = cells_data(seed, "default", PANEL5, budget)
    ids = roles()
    folder = OUT / f"seed{seed}" / "D"
    run = trained(instance_config(manifest, PANEL5, seed, budget, train_ids=ids["train"]), folder / "msme5")
    rows = []
    for role, method in itertools.product(("val", "test"), UNCERTAINTY_METHODS):

        def compute(role=role, method=method) -> list[dict[str, Any]]:
            segmenter = load(run)
            samples = test_samples(manifest, ids[role])
            return [{"seed": seed, "images": role, "method": method, "subset": "+".join(s), "n_markers": len(s),
                     **subset_calibration(segmenter, samples, s, method)} for s in subsets(PANEL5)]

        rows += cached_rows(folder / f"{role}-{method}.csv", compute)
    return rows


# ---- driver -------------------------------------------------------------------------------------

RUNNERS = {"A": [part_a], "B": [part_b_cells, part_b_vessels], "C": [part_c], "D": [part_d]}


def run(seeds: Sequence[int], parts: Sequence[str], budget: Budget) -> None:
    import torch

    torch.set_num_threads(1)
    for part in parts:
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            for runner in RUNNERS[part]:
                start = time.time()
                rows += runner(seed, budget)
                log(f"part {part} seed {seed} {runner.__name__}: {time.time() - start:.0f} s")
        write_rows(CSV[part], rows)
        log(f"part {part}: {rel(CSV[part])} ({len(rows)} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated replicate seeds")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts of A,B,C,D")
    parser.add_argument("--quick", action="store_true", help="a few steps on tiny data, into bench/work/beyond-quick")
    parser.add_argument("--report", action="store_true", help="render bench/results/beyond.md from the CSVs")
    args = parser.parse_args()
    global OUT, CSV
    if args.report:
        from beyond_report import README_BEGIN, README_END, readme_block, render

        tables = {part: read_rows(path) for part, path in CSV.items() if path.is_file()}
        log(f"report: {rel(write_text(RESULTS / 'beyond.md', render(tables)))}")
        fill_readme_block(readme_block(tables), README_BEGIN, README_END)
        log("README.md: beyond-the-papers summary updated")
        return
    if args.quick:
        OUT = WORK / "beyond-quick"
        CSV = {part: OUT / path.name for part, path in CSV.items()}
    parts = [p.strip().upper() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    run([int(s) for s in args.seeds.split(",")], parts, Budget(args.quick))
    write_json(OUT / "finished.json", {"seeds": args.seeds, "parts": parts, "time": time.time()})


if __name__ == "__main__":
    main()
