"""Scoring prediction files against ground-truth files: the work behind ``fluoseg evaluate``.

Files are paired by name (the stem before the first dot), so ``pred/s1.tif`` is scored
against ``truth/s1.tif`` or ``truth/s1.ome.tif``. Prediction files ending in
``_probabilities`` are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels, read_mask, supported_suffixes, write_csv_atomically
from fluoseg.metrics.instance import instance_rows
from fluoseg.metrics.semantic import ALL_IMAGES, semantic_rows
from fluoseg.predict import PROBABILITY_SUFFIX, image_stem

TASKS = ("semantic", "instance")

def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FluosegError("folder not found; check the path", path=folder)
    files = {}
    suffixes = supported_suffixes()  # the io registry decides what counts as an image
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not any(path.name.lower().endswith(s) for s in suffixes):
            continue
        stem = image_stem(path)
        if stem.endswith(PROBABILITY_SUFFIX):
            continue
        if stem in files:
            raise FluosegError(f"two files share the name {stem!r}: {files[stem].name} and {path.name}", path=folder)
        files[stem] = path
    return files


def pair_files(pred_dir: str | Path, truth_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """``(name, prediction, truth)`` for every prediction that has a truth file of the same name.

    Raises
    ------
    FluosegError
        If no pair is found, or a prediction has no truth file.
    """
    pred, truth = _image_files(Path(pred_dir)), _image_files(Path(truth_dir))
    if not pred:
        raise FluosegError("no prediction images found", path=pred_dir)
    unmatched = sorted(set(pred) - set(truth))
    if unmatched:
        raise FluosegError(f"no ground truth for {unmatched[:5]}{' ...' if len(unmatched) > 5 else ''}; "
                           "truth files must have the same names as the predictions", path=truth_dir)
    return [(name, pred[name], truth[name]) for name in sorted(pred)]


def _class_names(path: Path, count: int, given: Sequence[str] | None) -> tuple[str, ...]:
    names = read_image(path, lazy=True).channel_names
    if given:
        return tuple(given)
    if names and len(names) == count:
        return tuple(names)
    return tuple(f"class{i}" for i in range(count))


def evaluate_semantic(pred_dir: str | Path, truth_dir: str | Path, *, classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per-image and pooled (image ``ALL``) F1, IoU, precision and recall per class.

    Classes are matched by name when both files carry class names (the truth may hold more
    classes than the prediction); otherwise by channel order, or as named by ``classes``.
    """
    items = []
    reference: tuple[str, ...] | None = None
    for name, pred_path, truth_path in pair_files(pred_dir, truth_dir):
        pred, truth = read_mask(pred_path), read_mask(truth_path)
        pred_names = _class_names(pred_path, pred.shape[0], classes)
        truth_names = _class_names(truth_path, truth.shape[0], None)
        if set(pred_names) <= set(truth_names) and not classes:
            truth = truth[[truth_names.index(c) for c in pred_names]]
        elif truth.shape[0] != pred.shape[0]:
            raise FluosegError(f"prediction has {pred.shape[0]} classes but truth has {truth.shape[0]}; "
                               "pass --classes to name the prediction's classes", path=truth_path)
        if pred.shape[1:] != truth.shape[1:]:
            raise FluosegError(f"prediction shape {pred.shape[1:]} differs from truth shape {truth.shape[1:]}",
                               path=pred_path)
        if reference is not None and pred_names != reference:
            raise FluosegError(f"class names {list(pred_names)} differ from the other predictions' {list(reference)}",
                               path=pred_path)
        reference = pred_names
        items.append((name, pred.astype(bool), truth.astype(bool)))
    return semantic_rows(items, class_names=list(reference or ()))


def evaluate_instance(pred_dir: str | Path, truth_dir: str | Path) -> list[dict[str, Any]]:
    """Per-image and pooled (image ``ALL``) object-level metrics of label images.

    Rows are ``{image, metric, threshold, value}``; see :func:`fluoseg.metrics.instance.instance_rows`
    for every metric's definition (matching at IoU 0.5:0.05:0.95, AJI, Kromp's categories...).
    """
    items = []
    for name, pred_path, truth_path in pair_files(pred_dir, truth_dir):
        pred, truth = read_labels(pred_path), read_labels(truth_path)
        if pred.shape != truth.shape:
            raise FluosegError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}", path=pred_path)
        items.append((name, pred, truth))
    return instance_rows(items)


def evaluate(pred_dir: str | Path, truth_dir: str | Path, *, task: str = "semantic",
             classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Score a folder of predictions against a folder of ground truth (files paired by name).

    Parameters
    ----------
    pred_dir, truth_dir
        Folders of predicted and true masks (``task="semantic"``, one channel per class) or
        instance label images (``task="instance"``).
    task
        ``"semantic"`` (:func:`evaluate_semantic`) or ``"instance"`` (:func:`evaluate_instance`).
    classes
        Semantic only: the class names of the prediction channels.

    Returns
    -------
    list of dict
        Tidy rows per image and pooled over images (image ``ALL``).
    """
    if task not in TASKS:
        raise FluosegError(f"unknown evaluation task {task!r}; use one of {list(TASKS)}")
    if task == "instance":
        return evaluate_instance(pred_dir, truth_dir)
    return evaluate_semantic(pred_dir, truth_dir, classes=classes)


def write_rows(rows: list[dict[str, Any]], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write tidy metric rows as CSV atomically, refusing to replace a file without ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FluosegError("output exists; pass --overwrite to replace it", path=path)
    if not rows:
        raise FluosegError("nothing to write: no metric rows", path=path)
    return write_csv_atomically(path, rows)


INSTANCE_SUMMARY = (("f1", 0.5), ("accuracy", 0.5), ("f1", 0.75), ("aji", None), ("us_rate", None), ("os_rate", None))


def instance_summary(rows: list[dict[str, Any]]) -> str:
    """Headline pooled instance metrics as one text line per metric."""
    lines = []
    for metric, threshold in INSTANCE_SUMMARY:
        for r in rows:
            if r["image"] == ALL_IMAGES and r["metric"] == metric and r["threshold"] == threshold:
                label = f"{metric}@{threshold}" if threshold is not None else metric
                lines.append(f"{label:>14} {r['value']:.4f}")
    return "\n".join(lines)


def summary_table(rows: list[dict[str, Any]], *, metrics: Sequence[str] = ("f1", "iou", "precision", "recall")) -> str:
    """The pooled rows as a small text table for the terminal."""
    pooled = [r for r in rows if r["image"] == ALL_IMAGES and r["metric"] in metrics]
    classes = list(dict.fromkeys(r["class"] for r in pooled))
    lines = ["class".ljust(14) + "".join(m.rjust(11) for m in metrics)]
    for c in classes:
        values = {r["metric"]: r["value"] for r in pooled if r["class"] == c}
        lines.append(c.ljust(14) + "".join(f"{values.get(m, np.nan):11.4f}" for m in metrics))
    return "\n".join(lines)
