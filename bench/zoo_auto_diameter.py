#!/usr/bin/env python
"""Choose the ``--diameter auto`` settings of the shipped nuclei model on validation images.

Compares, on the 36 validation images of ``bench/splits/dsb2018_fluo.json`` with the shipped
model and its tuned decoding (or a trained run, ``--run``): one probe vs re-probing zoomed out
(``refinements``), always re-predicting at the estimated scale vs keeping the first probe's maps
when the zoom is within ``reuse`` of 1, and without vs with the check for large objects cut into
pieces (a probe at half zoom when the first probe's objects fit the distance map worse than
``fragment_fit``; 0: off). A last row predicts each image at the diameter of its annotated
nuclei: how far the automatic estimate is from an exact one (a bound users cannot reach without annotations; it
chooses nothing). Writes ``bench/results/zoo_auto_diameter.csv`` (pooled validation scores and
seconds per configuration) and ``zoo_auto_diameter_images.csv`` (per validation image: the
annotated mean diameter and the shipped settings' estimate). The test split is not touched.

    .venv/bin/python bench/zoo_auto_diameter.py [--run bench/work/zoo/distance-art-scale/run]

The (refinements, reuse, fragment_fit) chosen here are ``fluoseg.infer.AUTO_REFINEMENTS``, ``AUTO_REUSE``
and ``FRAGMENT_FIT``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import DSB2018, RESULTS, dsb_split, log, pooled_metric, read_rows, write_rows, zoo_version

CONFIGS = ({"refinements": 0, "reuse": 1.0, "fragment_fit": 0.0}, {"refinements": 2, "reuse": 1.0, "fragment_fit": 0.0},
           {"refinements": 2, "reuse": 1.25, "fragment_fit": 0.0}, {"refinements": 2, "reuse": 1.25, "fragment_fit": 0.6},
           {"refinements": 2, "reuse": 1.25, "fragment_fit": 0.7}, {"refinements": 2, "reuse": 1.25, "fragment_fit": 0.8})
FROM_LABELS = "from labels (bound)"
IMAGES_CSV = RESULTS / "zoo_auto_diameter_images.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run (default: the shipped nuclei model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import fluoseg.infer as infer
    from fluoseg import Segmenter
    from fluoseg.instance.scale import estimate_diameter_from_labels
    from fluoseg.io import read_image, read_labels
    from fluoseg.metrics.instance import instance_rows

    torch.set_num_threads(args.threads)
    segmenter = Segmenter.load(args.run, device="cpu") if args.run else Segmenter.pretrained("nuclei", device="cpu")
    ids = dsb_split()["val"]
    images = {i: read_image(DSB2018 / "images" / f"{i}.tif").array for i in ids}
    truths = {i: read_labels(DSB2018 / "labels" / f"{i}.tif") for i in ids}
    true_diameters = {i: estimate_diameter_from_labels(truths[i]) for i in ids}
    rows = []
    defaults = infer.AUTO_REFINEMENTS, infer.AUTO_REUSE, infer.FRAGMENT_FIT
    for config in [*CONFIGS, None]:
        if config is None:  # the bound: each image at its annotated diameter, the shipped auto settings unused
            config = {"diameter": FROM_LABELS, "refinements": "", "reuse": "", "fragment_fit": ""}
            diameters = true_diameters
        else:
            config, diameters = {"diameter": "auto", **config}, {i: "auto" for i in ids}
            infer.AUTO_REFINEMENTS, infer.AUTO_REUSE, infer.FRAGMENT_FIT = (
                config["refinements"], config["reuse"], config["fragment_fit"])
        started = time.perf_counter()
        items = [(i, segmenter.predict_labels(images[i], diameter=diameters[i])[0], truths[i]) for i in ids]
        seconds = time.perf_counter() - started
        infer.AUTO_REFINEMENTS, infer.AUTO_REUSE, infer.FRAGMENT_FIT = defaults
        scores = instance_rows(items)
        rows.append({**config, "val_f1_at_0.5": pooled_metric(scores, "f1", 0.5),
                     "val_f1_mean_0.5_0.95": pooled_metric(scores, "f1_mean_over_thresholds"),
                     "val_aji": pooled_metric(scores, "aji"), "val_us_rate": pooled_metric(scores, "us_rate"),
                     "seconds": round(seconds, 1), "zoo_version": "" if args.run else zoo_version()})
        log(f"{config}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items() if k.startswith("val")) +
            f", {seconds:.1f} s")
    write_rows(RESULTS / "zoo_auto_diameter.csv", rows)
    write_rows(IMAGES_CSV, [{"image": i, "height": images[i].shape[-2], "width": images[i].shape[-1],
                             "n_nuclei": int(truths[i].max()), "annotated_diameter": round(true_diameters[i], 3),
                             "estimated_diameter": round(segmenter.estimate_diameter(images[i]), 3)} for i in ids])
    log(estimate_summary(read_rows(IMAGES_CSV)))
    return 0


def estimate_summary(rows: list[dict[str, str]]) -> str:
    """How far ``--diameter auto``'s estimates are from the annotated diameters (``zoo_auto_diameter_images.csv``)."""
    import numpy as np

    ratios = np.array([float(r["estimated_diameter"]) / float(r["annotated_diameter"]) for r in rows])
    far = [r["image"] for r, ratio in zip(rows, ratios) if abs(np.log(ratio)) > np.log(1.25)]
    return (f"Estimated / annotated mean diameter over the {len(rows)} validation images (`{IMAGES_CSV.name}`, "
            f"shipped settings): median {np.median(ratios):.3f}, quartiles {np.quantile(ratios, 0.25):.3f}-"
            f"{np.quantile(ratios, 0.75):.3f}; {int((ratios > 1).sum())} of {len(rows)} estimates too large; "
            f"{len(far)} off by more than x1.25 ({', '.join(far) or 'none'}).")


if __name__ == "__main__":
    raise SystemExit(main())
