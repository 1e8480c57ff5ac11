#!/usr/bin/env python
"""Where the shipped nuclei model's errors are: why each annotated nucleus it misses is missed.

Predicts the validation and test images of ``bench/splits/dsb2018_fluo.json`` with the shipped
model as the scores of ``bench/results/zoo.md`` were computed (``--diameter auto``, float32),
matches objects at IoU 0.5 as F1@0.5 does, and gives every annotated nucleus without a match
one reason, from Kromp et al.'s categories (:func:`fluoseg.metrics.kromp.kromp_object_categories`):
undetected (predictions cover under half of it), under-segmented (merged with a neighbour),
over-segmented (cut into pieces) or misshapen (covered, but no prediction overlaps it by IoU
0.5). Each nucleus is also measured against the other annotated nuclei of its image: its area
and its brightness above the background, as fractions of the image's medians.

Writes ``bench/results/zoo_errors.csv`` (one row per image) and ``zoo_errors_summary.csv`` (per
part and reason: counts and the median relative size and brightness); ``bench/train_zoo.py
--report`` renders them into ``zoo.md``. It chooses nothing.

    .venv/bin/python bench/zoo_errors.py      # about 2 minutes on 2 threads
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import numpy as np
from _common import DSB2018, RESULTS, dsb_split, log, read_rows, write_rows, zoo_version

from fluoseg.metrics.kromp import MISSED_AS, kromp_object_categories  # the metrics are numpy only
from fluoseg.metrics.matching import match_objects
from fluoseg.metrics.overlap import label_overlap

IMAGES_CSV = RESULTS / "zoo_errors.csv"
SUMMARY_CSV = RESULTS / "zoo_errors_summary.csv"
GROUPS_CSV = RESULTS / "zoo_loso_groups.csv"
PARTS = ("val", "test")
ALL = "all annotated"
REASON_COLUMNS = tuple(reason.replace("-", "_") for reason in MISSED_AS)  # the per-image CSV's columns
COUNT_COLUMNS = ("n_true", "matched", *REASON_COLUMNS, "unmatched_predictions")  # the tables' count columns


def relative_measures(image: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area and brightness of every annotated object as fractions of the image's medians.

    Brightness is the object's mean intensity above the median of the unannotated pixels (the
    image's first channel; a multi-channel image is scored on its nuclear channel only).
    """
    count = int(truth.max())
    plane = np.asarray(image, np.float64).reshape((-1,) + truth.shape)[0]
    area = np.bincount(truth.ravel(), minlength=count + 1)[1:].astype(np.float64)
    total = np.bincount(truth.ravel(), weights=plane.ravel(), minlength=count + 1)[1:]
    background = float(np.median(plane[truth == 0])) if (truth == 0).any() else 0.0
    brightness = total / np.maximum(area, 1) - background
    typical = float(np.median(brightness))
    return area / float(np.median(area)), brightness / typical if typical > 0 else np.full(count, np.nan)


def missed_reasons(truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per annotated object (ascending id): the reason it is missed at IoU 0.5 (``""`` when matched),
    whether it is matched, and the number of unmatched predictions."""
    overlap = label_overlap(truth, labels)
    match = match_objects(None, None, overlap=overlap, threshold=0.5)
    matched = np.isin(overlap.true_ids, match.true_labels)
    reasons = np.where(matched, "", kromp_object_categories(None, None, overlap=overlap).missed_as())
    return reasons, matched, overlap.n_pred - int(match.true_labels.size)


def image_rows(part: str, ids: list[str], segmenter: Any, groups: dict[str, str]
               ) -> tuple[list[dict[str, Any]], list[tuple[str, float, float]]]:
    """One row per image, and (reason, relative area, relative brightness) per annotated object."""
    from skimage.segmentation import relabel_sequential

    from fluoseg.io import read_image, read_labels

    rows, objects = [], []
    for image_id in ids:
        image = read_image(DSB2018 / "images" / f"{image_id}.tif").array
        truth = np.asarray(read_labels(DSB2018 / "labels" / f"{image_id}.tif"))
        labels, _ = segmenter.predict_labels(image, precision="float32")
        truth, labels = truth.reshape(truth.shape[-2:]), np.asarray(labels).reshape(truth.shape[-2:])
        truth = relabel_sequential(truth)[0]  # ids 1..N, the order of the overlap's objects
        reasons, matched, unmatched_predictions = missed_reasons(truth, labels)
        area, brightness = relative_measures(image, truth)
        objects += [(str(r), float(a), float(b)) for r, a, b in zip(reasons, area, brightness)]
        tally = Counter(reasons.tolist())
        rows.append({"part": part, "image": image_id, "group": groups.get(image_id, ""),
                     "height": truth.shape[0], "width": truth.shape[1], "n_true": int(truth.max()),
                     "n_pred": int(labels.max()), "matched": int(matched.sum()),
                     **{column: tally.get(reason, 0) for reason, column in zip(MISSED_AS, REASON_COLUMNS)},
                     "unmatched_predictions": unmatched_predictions, "zoo_version": zoo_version()})
        log(f"{part} {image_id}: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()
                                              if k in ("n_true", "matched", "undetected", "under_segmented")))
    return rows, objects


def summary_rows(part: str, objects: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Per reason (and for all annotated objects): count and median relative area and brightness."""
    rows = []
    for reason in (ALL, "matched", *MISSED_AS):
        chosen = [o for o in objects if reason == ALL or o[0] == ("" if reason == "matched" else reason)]
        rows.append({"part": part, "objects": reason, "n": len(chosen),
                     "median_relative_area": round(float(np.median([o[1] for o in chosen])), 3) if chosen else "",
                     "median_relative_brightness": round(float(np.nanmedian([o[2] for o in chosen])), 3)
                     if chosen else ""})
    return rows


def _counts(rows: list[dict[str, str]]) -> dict[str, int]:
    return {key: sum(int(r[key]) for r in rows) for key in ("n_pred", *COUNT_COLUMNS)}


def _count_cells(counts: dict[str, int]) -> str:
    return " | ".join(str(counts[key]) for key in COUNT_COLUMNS)


def summary_row(summary: list[dict[str, str]], part: str, objects: str) -> dict[str, str] | None:
    """The ``zoo_errors_summary.csv`` row of one part and kind of objects (a reason, "matched" or ALL)."""
    return next((r for r in summary if r["part"] == part and r["objects"] == objects), None)


def misses_on_test(summary: list[dict[str, str]]) -> tuple[int, dict[str, str]] | None:
    """Annotated test nuclei without a match, and the summary row of the undetected ones (None before a run)."""
    annotated, matched = summary_row(summary, "test", ALL), summary_row(summary, "test", "matched")
    undetected = summary_row(summary, "test", "undetected")
    if not (annotated and matched and undetected):
        return None
    return int(annotated["n"]) - int(matched["n"]), undetected


def matches_needed(counts: dict[str, int], f1: float) -> int:
    """Misses that must become matches, each one more prediction and no other change, for F1@0.5 >= ``f1``.

    F1 = 2 M / (T + P); finding k more nuclei makes it 2 (M + k) / (T + P + k).
    """
    total, matched = counts["n_true"] + counts["n_pred"], counts["matched"]
    return max(0, int(np.ceil((f1 * total - 2 * matched) / (2 - f1))))


def section(images: list[dict[str, str]], summary: list[dict[str, str]], target: float) -> str:
    """The markdown of ``zoo.md``'s error section from the two CSVs this script writes."""
    head = ("| {first} | annotated | matched | " + " | ".join(MISSED_AS) + " | unmatched predictions |\n|---|"
            + "---:|" * (len(MISSED_AS) + 3))
    by_part = [f"| {part} | {_count_cells(_counts([r for r in images if r['part'] == part]))} |" for part in PARTS]
    tests = [r for r in images if r["part"] == "test"]
    by_group = [f"| {group} ({sum(r['group'] == group for r in tests)}) | "
                f"{_count_cells(_counts([r for r in tests if r['group'] == group]))} |"
                for group in sorted({r["group"] for r in tests})]
    medians = ["| objects | " + " | ".join(f"{part}: n, area, brightness" for part in PARTS) + " |",
               "|---|" + "---|" * len(PARTS)]
    for reason in (ALL, "matched", *MISSED_AS):
        cells = []
        for part in PARTS:
            row = summary_row(summary, part, reason)
            cells.append(f"{row['n']}, {row['median_relative_area']}, {row['median_relative_brightness']}"
                         if row and row["n"] != "0" else "0")
        medians.append(f"| {reason} | " + " | ".join(cells) + " |")
    test = _counts(tests)
    missed, undetected = misses_on_test(summary)
    needed = matches_needed(test, target)
    return f"""Every annotated nucleus that no prediction matches at IoU 0.5 (the misses behind F1@0.5), with one reason
(`bench/zoo_errors.py`, `zoo_errors.csv` per image; Kromp et al.'s categories,
`fluoseg.metrics.kromp.kromp_object_categories`): *undetected* (predictions cover under half of it),
*under-segmented* (merged with a neighbour), *over-segmented* (cut into pieces), *misshapen* (covered, yet no
prediction overlaps it by IoU 0.5). Predicted as the scores above (`--diameter auto`, float32).

{head.format(first="part")}
{chr(10).join(by_part)}

On the test images {undetected['n']} of the {missed} misses are undetected nuclei. Against the other annotated
nuclei of their image (median area and median brightness above the background of the image = 1), they are small
and faint: median area {undetected['median_relative_area']}, brightness {undetected['median_relative_brightness']}
(`zoo_errors_summary.csv`):

{chr(10).join(medians)}

Reaching F1@0.5 {target} on the test images would take {needed} of the {missed} misses found (each a new prediction,
no other change), so at least {max(0, needed - (missed - int(undetected['n'])))} of the undetected ones. Test images
by source group (`zoo_loso_groups.csv`; images in brackets):

{head.format(first="group")}
{chr(10).join(by_group)}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    from fluoseg import Segmenter

    torch.set_num_threads(args.threads)
    segmenter = Segmenter.pretrained("nuclei", device="cpu")
    split = dsb_split()
    groups = {r["image"]: r["group"] for r in read_rows(GROUPS_CSV)} if GROUPS_CSV.is_file() else {}
    images, summary = [], []
    for part in PARTS:
        rows, objects = image_rows(part, split[part], segmenter, groups)
        images += rows
        summary += summary_rows(part, objects)
    write_rows(IMAGES_CSV, images)
    write_rows(SUMMARY_CSV, summary)
    log(f"written: {IMAGES_CSV.name}, {SUMMARY_CSV.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
