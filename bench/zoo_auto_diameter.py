#!/usr/bin/env python
"""Choose the ``--diameter auto`` settings of the shipped nuclei model on validation images.

Compares, on the 36 validation images of ``bench/splits/dsb2018_fluo.json`` with the shipped
model and its tuned decoding (or a trained run, ``--run``): one probe vs re-probing zoomed out (``refinements``), and always
re-predicting at the estimated scale vs keeping the first probe's maps when the zoom is within
``reuse`` of 1. Writes ``bench/results/zoo_auto_diameter.csv`` (pooled validation scores and
seconds per configuration). The test split is not touched.

    .venv/bin/python bench/zoo_auto_diameter.py [--run bench/work/zoo/distance-art-scale/run]

The (refinements, reuse) chosen here are ``fluoseg.infer.AUTO_REFINEMENTS`` and ``AUTO_REUSE``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import DSB2018, RESULTS, dsb_split, log, pooled_metric, write_rows, zoo_version

CONFIGS = ({"refinements": 0, "reuse": 1.0}, {"refinements": 2, "reuse": 1.0}, {"refinements": 2, "reuse": 1.25})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run (default: the shipped nuclei model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import fluoseg.infer as infer
    from fluoseg import Segmenter
    from fluoseg.io import read_image, read_labels
    from fluoseg.metrics.instance import instance_rows

    torch.set_num_threads(args.threads)
    segmenter = Segmenter.load(args.run, device="cpu") if args.run else Segmenter.pretrained("nuclei", device="cpu")
    ids = dsb_split()["val"]
    images = {i: read_image(DSB2018 / "images" / f"{i}.tif").array for i in ids}
    truths = {i: read_labels(DSB2018 / "labels" / f"{i}.tif") for i in ids}
    rows = []
    for config in CONFIGS:
        infer.AUTO_REFINEMENTS, infer.AUTO_REUSE = config["refinements"], config["reuse"]
        started = time.perf_counter()
        items = [(i, segmenter.predict_labels(images[i])[0], truths[i]) for i in ids]
        seconds = time.perf_counter() - started
        scores = instance_rows(items)
        rows.append({**config, "val_f1_at_0.5": pooled_metric(scores, "f1", 0.5),
                     "val_f1_mean_0.5_0.95": pooled_metric(scores, "f1_mean_over_thresholds"),
                     "val_aji": pooled_metric(scores, "aji"), "seconds": round(seconds, 1),
                     "zoo_version": "" if args.run else zoo_version()})
        log(f"{config}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items() if k.startswith("val")) +
            f", {seconds:.1f} s")
    write_rows(RESULTS / "zoo_auto_diameter.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
