#!/usr/bin/env python
"""Is test-time augmentation worth its cost for the shipped ``nuclei`` model? (issue 12, a lever)

``fluoseg predict --tta`` averages the network's maps over the 8 flips and rotations before
decoding, at 8 times the network's work. Three arms, each predicted as ``fluoseg predict
nuclei`` does (``--diameter auto``, the default precision), scored pooled over the images:

* ``none``: the shipped model as it is (no TTA, its tuned decoding);
* ``tta``: TTA with the shipped decoding;
* ``tta-tuned``: TTA with its decoding tuned again on the validation images with TTA (averaged
  maps are smoother, so the best h / threshold / smallest object may move).

The choice reads the validation rows only: TTA would become the shipped default if it raised
validation F1@0.5 by at least :data:`WORTH` (its cost is several times the time per image) *and*
the shipped configuration stayed at least as fast as StarDist (issue 12, item 4: labels per
second >= StarDist 2D's in the shipped configuration). The second condition reads the side-by-side
speed table of ``bench/peers.py`` (``peers_speed.csv``): the shipped model's network seconds
at 2048² times the 8 symmetries TTA runs, plus its decoding seconds, against StarDist's
seconds. It was added on 2026-12-03, after the first measurement on the 80-epoch model met the
accuracy condition alone: the rule had left out a requirement the issue states. The
test rows are reported and choose nothing. The cost is timed apart: the first
:data:`TIMED_IMAGES` test images predicted with and without TTA, alternating, in one process,
the median of :data:`REPEATS` rounds (seconds per image of the accuracy runs are kept too, but
those ran at different times on a shared machine).

Outputs ``bench/results/zoo_tta.csv`` and ``zoo_tta.md``; each (arm, part) is cached in
``bench/work/zoo_tta/<zoo version>-<source hash>/`` (a rerun skips it). ``--report`` renders from the CSV.

Usage::

    PYTHONPATH=src .venv/bin/python bench/zoo_tta.py          # ~15 min on 2 busy cores
    PYTHONPATH=src .venv/bin/python bench/zoo_tta.py --report
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    DSB2018,
    RESULTS,
    WORK,
    dsb_manifest,
    dsb_split,
    git_commit,
    log,
    prediction_cache,
    read_json,
    read_rows,
    rel,
    write_json,
    write_rows,
    write_text,
    zoo_version,
)
from peers_report import SHIPPED_CASE
from peers_report import Results as PeersResults
from train_zoo import SCORES, ZOO_NAME, segmenter_decoding, shipped_scores

ARMS = ("none", "tta", "tta-tuned")
PARTS = ("val", "test")
PRECISION = "auto"  # what fluoseg predict does by default
HEADLINE = "F1@0.5"
WORTH = 0.01
"""Validation F1@0.5 gain at which TTA would become the shipped default."""
TIMED_IMAGES, REPEATS = 6, 3
SYMMETRIES = 8
"""Network passes per tile with ``--tta`` (the flips and rotations of the square)."""
SPEED_SIZE = 2048
"""Image side of the speed condition (the smaller size of the peers' side-by-side table)."""
CSV = RESULTS / "zoo_tta.csv"
REPORT = RESULTS / "zoo_tta.md"


def tta_decoding(data: Path, split: dict[str, list[str]], work: Path) -> dict[str, Any]:
    """The decoding tuned on the validation images predicted with TTA (cached)."""
    path = work / "tta_decoding.json"
    record = read_json(path)
    if record is None:
        from fluoseg import Segmenter
        from fluoseg.data.manifest import load_manifest
        from fluoseg.infer import PredictOptions
        from fluoseg.tuning import tune_segmenter

        segmenter = Segmenter.pretrained(ZOO_NAME, device="cpu")
        shipped = segmenter_decoding(segmenter)
        manifest = load_manifest(dsb_manifest(work / "manifest.yaml", data, split["val"]))
        started = time.perf_counter()
        search = tune_segmenter(segmenter, [manifest.sample(i) for i in split["val"]], method="distance",
                                trained=shipped, options=PredictOptions(tta=True, precision=PRECISION), rounds=2,
                                log=log)
        record = {"parameters": search.best, "value": search.value, "before": search.before,
                  "passes": search.passes, "converged": search.converged, "shipped": shipped,
                  "seconds": round(time.perf_counter() - started, 1)}
        write_json(path, record)
    log(f"decoding tuned with TTA on validation: {record['parameters']} (shipped {record['shipped']})")
    return record


def measure(data: Path, split: dict[str, list[str]], work: Path) -> list[dict[str, Any]]:
    """Pooled scores and seconds per image of every (part, arm), each cached."""
    from fluoseg import Segmenter

    rows = []
    for part in PARTS:
        for arm in ARMS:
            path = work / f"{part}_{arm}.json"
            result = read_json(path)
            if result is None:
                segmenter = Segmenter.pretrained(ZOO_NAME, device="cpu")
                if arm == "tta-tuned":
                    segmenter.set_decoding(**tta_decoding(data, split, work)["parameters"])
                started = time.perf_counter()
                scores = shipped_scores(data, split, part, PRECISION, segmenter=segmenter, tta=arm != "none")
                seconds = (time.perf_counter() - started) / len(split[part])
                result = {"scores": scores, "seconds_per_image": round(seconds, 3),
                          "load_average": round(os.getloadavg()[0], 1), "decoding": segmenter_decoding(segmenter)}
                write_json(path, result)
                log(f"{part} {arm}: {HEADLINE} {scores[HEADLINE]:.4f}, {seconds:.2f} s/image")
            rows += [{"part": part, "images": len(split[part]), "arm": arm, "metric": metric,
                      "value": round(float(value), 4)} for metric, value in result["scores"].items()]
            rows += [{"part": part, "images": len(split[part]), "arm": arm, "metric": key,
                      "value": result[key]} for key in ("seconds_per_image", "load_average")]
            rows += [{"part": part, "images": len(split[part]), "arm": arm, "metric": f"decoding_{key}",
                      "value": value} for key, value in result["decoding"].items()]
    clock = timing(data, split, work)
    rows += [{"part": "timed", "images": clock["images"], "arm": arm, "metric": "timed_seconds_per_image",
              "value": round(clock[arm], 3)} for arm in ("none", "tta")]
    rows += [{"part": "timed", "images": clock["images"], "arm": "none", "metric": "timed_load_average",
              "value": clock["load_average"]}]
    return rows


def timing(data: Path, split: dict[str, list[str]], work: Path) -> dict[str, Any]:
    """Seconds per image without and with TTA, the two alternating in one process (cached)."""
    path = work / "timing.json"
    result = read_json(path)
    if result is None:
        import statistics

        from fluoseg import Segmenter
        from fluoseg.io import read_image

        segmenter = Segmenter.pretrained(ZOO_NAME, device="cpu")
        images = [read_image(data / "images" / f"{i}.tif").array for i in split["test"][:TIMED_IMAGES]]

        def seconds(tta: bool) -> float:
            started = time.perf_counter()
            for image in images:
                segmenter.predict_labels(image, precision=PRECISION, tta=tta)
            return (time.perf_counter() - started) / len(images)

        seconds(False), seconds(True)  # warm-up
        rounds = [(seconds(False), seconds(True)) for _ in range(REPEATS)]
        result = {"none": statistics.median(r[0] for r in rounds), "tta": statistics.median(r[1] for r in rounds),
                  "images": len(images), "repeats": REPEATS, "load_average": round(os.getloadavg()[0], 1)}
        write_json(path, result)
    log(f"timing: {result['none']:.2f} s/image without TTA, {result['tta']:.2f} s/image with TTA")
    return result


def render(rows: list[dict[str, str]], version: str, commit: str) -> str:
    """The Markdown report from the CSV rows."""
    value = {(r["part"], r["arm"], r["metric"]): float(r["value"]) for r in rows}
    images = {r["part"]: r["images"] for r in rows}
    lines = ["# Test-time augmentation for the shipped `nuclei` model", "",
             f"Rendered by `bench/zoo_tta.py --report` from `bench/results/zoo_tta.csv` (model version {version}, "
             f"commit {commit}). Predicted as `fluoseg predict nuclei` does (auto diameter, default precision), "
             "pooled over the images. `tta`: the maps averaged over the 8 flips/rotations, shipped decoding; "
             "`tta-tuned`: TTA with the decoding tuned again on the validation images with TTA. The decision reads "
             "the validation columns; test is reported only.", "",
             "| metric | " + " | ".join(f"{part} ({images.get(part, '?')}) {arm}" for part in PARTS for arm in ARMS)
             + " |", "|---|" + "---:|" * (len(PARTS) * len(ARMS))]
    for metric in [m for m, _, _ in SCORES] + ["seconds_per_image", "load_average", "decoding_h",
                                                 "decoding_threshold", "decoding_min_size"]:
        cells = [f"{value[part, arm, metric]:g}" if (part, arm, metric) in value else "" for part in PARTS
                 for arm in ARMS]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    if ("timed", "tta", "timed_seconds_per_image") in value:
        timed = next(r["images"] for r in rows if r["part"] == "timed")
        lines += ["", f"Timed apart ({timed} test images, without and with TTA alternating in one process, median of "
                  f"{REPEATS} rounds, load average {value['timed', 'none', 'timed_load_average']:g}): "
                  f"{value['timed', 'none', 'timed_seconds_per_image']:.2f} s/image without TTA, "
                  f"{value['timed', 'tta', 'timed_seconds_per_image']:.2f} s/image with TTA."]
    verdict = verdict_line(rows)
    return "\n".join(lines + (["", verdict] if verdict else [])) + "\n"


def speed_with_tta(peers: PeersResults | None = None) -> tuple[float, float, float] | None:
    """(shipped MP/s, shipped MP/s estimated with TTA, StarDist MP/s) at :data:`SPEED_SIZE`, from the peers table.

    With TTA every tile runs the network :data:`SYMMETRIES` times and the decoding once, so the
    estimate is ``network_s * SYMMETRIES + decode_s`` of the shipped model's timed row. None when
    the peers table lacks either row.
    """
    peers = peers or PeersResults.load(RESULTS)
    rows = {(s["tool"], s["case"]): s for s in peers.speed() if s["size"] == SPEED_SIZE and not s["estimated"]}
    shipped, stardist = rows.get(("fluoseg", SHIPPED_CASE)), rows.get(("stardist", "labels-1ch"))
    if not shipped or not stardist or shipped.get("network_s") is None or shipped.get("decode_s") is None:
        return None
    megapixels = SPEED_SIZE * SPEED_SIZE / 1e6
    with_tta = megapixels / (shipped["network_s"] * SYMMETRIES + shipped["decode_s"])
    return shipped["mp_per_s"], with_tta, stardist["mp_per_s"]


def verdict_line(rows: list[dict[str, str]], peers: PeersResults | None = None) -> str:
    """What the validation rows and the speed condition say about TTA ("" before they are measured).

    The zoo report quotes it.
    """
    value = {(r["part"], r["arm"], r["metric"]): float(r["value"]) for r in rows}
    base = value.get(("val", "none", HEADLINE))
    measured = [arm for arm in ARMS[1:] if ("val", arm, HEADLINE) in value]
    if base is None or not measured or ("timed", "tta", "timed_seconds_per_image") not in value:
        return ""
    best_arm = max(measured, key=lambda arm: value["val", arm, HEADLINE])
    gain = value["val", best_arm, HEADLINE] - base
    cost = value["timed", "tta", "timed_seconds_per_image"] / value["timed", "none", "timed_seconds_per_image"]
    speeds = speed_with_tta(peers)
    if gain < WORTH:
        verdict = (f"not worth it (below the {WORTH:+.2f} this benchmark asks for): the shipped default stays "
                   "without TTA; `--tta` remains an option")
    elif speeds is None:
        verdict = (f"above the {WORTH:+.2f} asked for, but the speed condition cannot be checked (no shipped-model "
                   "and StarDist rows in `bench/results/peers_speed.csv`): the shipped default stays without TTA")
    elif speeds[1] < speeds[2]:
        verdict = (f"above the {WORTH:+.2f} asked for, but with TTA the shipped model would label about "
                   f"{speeds[1]:.2f} MP/s at {SPEED_SIZE}² (without: {speeds[0]:.2f}), below StarDist's "
                   f"{speeds[2]:.2f}, which issue 12 asks the shipped configuration to match: the shipped default "
                   "stays without TTA, and `--tta` is the option for users who trade that time for accuracy")
    else:
        verdict = (f"worth it, and the shipped model would still label about {speeds[1]:.2f} MP/s at "
                   f"{SPEED_SIZE}² against StarDist's {speeds[2]:.2f}: TTA should become the shipped default")
    return (f"On the validation images the better TTA arm (`{best_arm}`) changes {HEADLINE} by {gain:+.4f} "
            f"({base:.4f} → {value['val', best_arm, HEADLINE]:.4f}) at {cost:.1f}x the time per image: {verdict}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DSB2018)
    parser.add_argument("--report", action="store_true", help="render zoo_tta.md from the CSV only")
    args = parser.parse_args(argv)
    if not args.report:
        if not args.data.is_dir():
            log(f"no dataset at {args.data}; nothing to measure")
            return 1
        version = zoo_version(ZOO_NAME)
        split = dsb_split(args.data)
        rows = measure(args.data, split, WORK / "zoo_tta" / prediction_cache(ZOO_NAME))
        write_rows(CSV, [{**row, "zoo_version": version, "commit": git_commit()} for row in rows])
    rows = read_rows(CSV)
    write_text(REPORT, render(rows, rows[0]["zoo_version"], rows[0]["commit"]))
    log(f"wrote {rel(REPORT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
