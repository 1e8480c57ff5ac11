"""The demo: segment shipped nuclei images with the pretrained model, then train an MS-ME model.

Part one runs the pretrained ``nuclei`` model (:mod:`fluoseg.zoo`) on the CC0 sample images
shipped in the package (:mod:`fluoseg.data.samples`): labels, object tables, scores against
their annotations and an overlay, in seconds. Part two trains on simulated 5-marker tissue,
predicts with a marker subset, scores and plots. Everything comes with fluoseg or is
generated with fixed seeds, so the demo runs anywhere without downloads. It writes::

    nuclei/         labels and object tables of the samples, scores.json, overlay.png

    data/           simulated images (OME-TIFF with marker names), masks, manifest.yaml
    config.yaml     the training configuration (a user's starting point)
    run/            the trained run (checkpoints, metrics.csv)
    pred_all/, pred_subset/     predictions with all markers and with a subset
    scores_all.csv, scores_subset.csv   F1 / IoU / precision / recall for both
    scores.json     the headline numbers: pooled F1 per (markers, class), epochs, training time
    demo.png        markers, truth, prediction and errors for one test sample
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from fluoseg.config import load_config
from fluoseg.data.synth.vessels import simulate_tissue
from fluoseg.errors import FluosegError
from fluoseg.evaluate import evaluate_semantic, summary_table, write_rows
from fluoseg.metrics.semantic import ALL_IMAGES
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg import __version__
from fluoseg.io import read_image, read_mask, write_image, write_json_atomically
from fluoseg.predict import output_paths, predict_file
from fluoseg.report import segmentation_figure
from fluoseg.train.trainer import train

MARKERS = ("DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP")
CLASSES = ("sinusoids", "arteries")
SUBSET = ("endomucin", "collagen")
SAMPLE_SHAPE = (256, 256)
N_SAMPLES = 8
VAL, TEST = ["demo_06"], ["demo_07"]
DEFAULT_EPOCHS = 14
STEPS_PER_EPOCH = 20


def make_demo_data(folder: Path) -> Path:
    """Write the simulated samples and their manifest; returns the manifest path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(N_SAMPLES):
        sample = simulate_tissue(SAMPLE_SHAPE, markers=MARKERS, seed=1000 + i)
        name = f"demo_{i:02d}"
        write_image(folder / "images" / f"{name}.ome.tif", sample.image, axes="CYX", channel_names=list(MARKERS),
                    pixel_size=(1.0, 1.0), overwrite=True)
        write_image(folder / "masks" / f"{name}.ome.tif", sample.masks, axes="CYX", channel_names=list(CLASSES),
                    pixel_size=(1.0, 1.0), overwrite=True)
    manifest = {
        "classes": list(CLASSES),
        "pixel_size_um": 1.0,
        "images": "images/*.ome.tif",  # marker names come from the OME metadata
        "masks": "masks/{id}.ome.tif",
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def demo_config(manifest: Path, *, epochs: int, device: str) -> dict:
    """A small but real configuration: a 3-level MS-ME U-Net (marker sampling + Marker Excite)
    that trains in about two minutes on 2 CPU cores and works with any marker subset."""
    return {
        "data": {"manifest": str(manifest), "split": {"val": VAL, "test": TEST}},
        "model": {"name": "unet", "options": {"depth": 3, "base_filters": 16, "padding": "valid",
                                              "marker_input": "ms", "attention": "me"}},
        "preprocess": {"normalization": "gaussian"},
        "train": {"epochs": epochs, "steps_per_epoch": STEPS_PER_EPOCH, "batch_size": 4, "patch_size": 188,
                  "learning_rate": 1e-3, "seed": 0, "device": device, "val_tile_size": 268},
    }


def run_nuclei_demo(out: Path, *, device: str = "auto") -> dict[str, float]:
    """Segment the shipped nuclei samples with the pretrained model into ``out``; returns pooled scores."""
    from fluoseg.data.samples import sample_paths
    from fluoseg.io import read_labels, write_csv_atomically
    from fluoseg.metrics.instance import instance_rows
    from fluoseg.objects import object_table
    from fluoseg.report import instance_overlay_figure

    started = time.perf_counter()
    segmenter = Segmenter.pretrained("nuclei", device=device)
    items, panels = [], []
    for image_path, labels_path in sample_paths():
        image = read_image(image_path).array
        labels, _ = segmenter.predict_labels(image)  # one grey channel, one-marker model: nothing to name
        truth = read_labels(labels_path)
        name = image_path.stem
        write_image(out / f"{name}.tif", labels.astype(np.uint16), axes="YX", overwrite=True)
        write_csv_atomically(out / f"{name}_objects.csv", object_table(labels, image, ["DNA"]) or [{"label": ""}])
        items.append((name, labels, truth))
        panels.append((f"{name}: {int(labels.max())} nuclei found, {int(truth.max())} annotated", image[0], labels, truth))
    seconds = time.perf_counter() - started
    pooled = {(r["metric"], r["threshold"]): float(r["value"]) for r in instance_rows(items) if r["image"] == ALL_IMAGES}
    scores = {"f1_at_0.5": pooled[("f1", 0.5)], "f1_at_0.75": pooled[("f1", 0.75)], "aji": pooled[("aji", None)]}
    write_json_atomically(out / "scores.json", {**scores, "seconds": round(seconds, 1), "images": [n for n, *_ in items]})
    instance_overlay_figure(out / "overlay.png", panels, title="fluoseg pretrained 'nuclei' model on unseen images "
                            "(magenta: prediction, green: annotation)")
    print(f"[demo] pretrained nuclei model: {len(items)} images in {seconds:.1f} s; F1@0.5 {scores['f1_at_0.5']:.3f}, "
          f"F1@0.75 {scores['f1_at_0.75']:.3f}, AJI {scores['aji']:.3f} -> {out}")
    return scores


def run_demo(out: Path, *, overwrite: bool = False, epochs: int | None = None, device: str = "auto",
             progress: bool = True) -> dict[str, float]:
    """Run the whole demo into ``out``; returns the pooled F1 per (markers, class) of the MS-ME part."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FluosegError("demo folder exists; pass --overwrite to replace it", path=out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    run_nuclei_demo(out / "nuclei", device=device)
    manifest = make_demo_data(out / "data")
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(manifest.resolve(), epochs=epochs or DEFAULT_EPOCHS, device=device), sort_keys=False))
    print(f"[demo] simulated {N_SAMPLES} samples of {SAMPLE_SHAPE[0]}x{SAMPLE_SHAPE[1]} px with markers {list(MARKERS)}")

    started = time.perf_counter()
    run_dir = train(load_config(config_path), out / "run", progress=progress)
    train_seconds = time.perf_counter() - started
    print(f"[demo] trained in {train_seconds:.0f} s -> {run_dir}")

    segmenter = Segmenter.load(run_dir, device=device)
    test_images = [out / "data" / "images" / f"{t}.ome.tif" for t in TEST]
    results: dict[str, float] = {}
    for label, markers in (("all", None), ("subset", SUBSET)):
        pred_dir = out / f"pred_{label}"
        pred_dir.mkdir()
        started = time.perf_counter()
        for image, paths in zip(test_images, output_paths(test_images, pred_dir, fmt="tif", probabilities=False)):
            predict_file(segmenter, image, paths, PredictOptions(markers=markers))
        rows = evaluate_semantic(pred_dir, out / "data" / "masks")
        write_rows(rows, out / f"scores_{label}.csv")
        used = ",".join(markers or MARKERS)
        print(f"[demo] test sample(s) {TEST}, markers {used}, predicted in {time.perf_counter() - started:.1f} s")
        print(summary_table(rows))
        for r in rows:
            if r["image"] == ALL_IMAGES and r["metric"] == "f1":
                results[f"{label}/{r['class']}"] = float(r["value"])

    image = read_image(test_images[0]).array
    truth = read_mask(out / "data" / "masks" / f"{TEST[0]}.ome.tif")
    prediction = read_mask(out / "pred_subset" / f"{TEST[0]}.tif")
    figure = segmentation_figure(out / "demo.png", np.asarray(image), MARKERS, truth, prediction, CLASSES,
                                 used_markers=SUBSET, scores={c: results[f"subset/{c}"] for c in CLASSES},
                                 title=f"fluoseg demo: {TEST[0]} segmented with {', '.join(SUBSET)} only")
    write_json_atomically(out / "scores.json", {
        "f1": results, "epochs": epochs or DEFAULT_EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH,
        "train_seconds": round(train_seconds, 1), "markers_subset": list(SUBSET), "test_samples": TEST,
        "fluoseg": __version__})
    print(f"[demo] figure: {figure}")
    print(f"[demo] done in {time.perf_counter() - clock:.0f} s; outputs in {out}")
    return results
