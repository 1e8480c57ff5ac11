"""The results table of marker-combination experiments, and its summaries.

Every experiment writes the same *long* table, one row per unit

    method, class, combination, markers, n_markers, fold, sample, tp, fp, fn, f1

where ``combination`` is the paper's code of the marker subset the model was given
(``m_135`` = slots 1, 3 and 5 of the model's panel), ``markers`` the same subset by name
joined with ``+``, and ``tp/fp/fn`` the pixel counts of the class on the sample, from which
``f1 = 2TP / (2TP + FP + FN)`` (1.0 when all three are 0, see
:mod:`fluoseg.metrics.semantic`). Keeping the counts lets a comparison pool samples of a
fold afterwards (:func:`pool_samples`), which is the paper's unit (n = 31 combinations x 4
folds = 124 per class). Tables of several methods or folds are simply concatenated.

Optional columns (:data:`ESTIMATE_FIELDS`, written when the rows have them): what the
probability maps say about the segmentation without the ground truth, and how calibrated
they are:

    expected_tp, expected_fp, expected_fn, expected_f1, ece

``expected_*`` are the counts expected if each pixel's label were drawn with the predicted
probability, for the mask actually decoded (:func:`fluoseg.metrics.calibration.expected_confusion`),
and ``expected_f1 = 2 E[TP] / (2 E[TP] + E[FP] + E[FN])``; they pool over samples like the
true counts. ``ece`` is the pixel expected calibration error of the class's probabilities
against its true mask (15 bins); it does not pool (pooled rows leave it empty).
:func:`estimate_quality` judges the estimate across marker combinations: Spearman's rank
correlation between expected and true F1, their mean absolute difference and the mean ECE.

This module imports no deep-learning framework.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io import write_csv_atomically
from fluoseg.metrics.calibration import ExpectedConfusion, spearman_correlation
from fluoseg.metrics.semantic import ALL_IMAGES, f1_score

RESULT_FIELDS = ("method", "class", "combination", "markers", "n_markers", "fold", "sample", "tp", "fp", "fn", "f1")
"""Columns of the long results table, in file order."""

SUMMARY_FIELDS = ("method", "class", "combination", "markers", "n_markers", "n", "mean_f1", "sd_f1")
"""Columns of the per-combination summary."""

ESTIMATE_FIELDS = ("expected_tp", "expected_fp", "expected_fn", "expected_f1", "ece")
"""Optional columns of the long table: label-free expected counts and F1, and pixel ECE."""

SUMMARY_ESTIMATE_FIELDS = ("mean_expected_f1", "mean_ece")
"""Columns the per-combination summary gets when the rows have estimates."""

QUALITY_FIELDS = ("method", "class", "fold", "n_combinations", "spearman_expected_f1", "mean_abs_error_expected_f1",
                  "mean_ece")
"""Columns of :func:`estimate_quality`: how well expected F1 ranks and matches the true F1 of the combinations."""

POOLED_SAMPLE = ALL_IMAGES
"""Sample name of rows whose counts are summed over the test samples of a fold."""

_INTEGER_FIELDS = ("n_markers", "fold", "tp", "fp", "fn")
MARKER_SEPARATOR = "+"


def result_row(*, method: str, class_name: str, combination: str, markers: Sequence[str], fold: int, sample: str,
               tp: int, fp: int, fn: int, expected: ExpectedConfusion | None = None,
               ece: float | None = None) -> dict[str, Any]:
    """One row of the long table; F1 is computed from the counts, expected F1 from ``expected``."""
    row = {"method": method, "class": class_name, "combination": combination,
           "markers": MARKER_SEPARATOR.join(markers), "n_markers": len(markers), "fold": int(fold),
           "sample": sample, "tp": int(tp), "fp": int(fp), "fn": int(fn), "f1": f1_score(tp, fp, fn)}
    if expected is not None:
        row.update(expected_tp=float(expected.tp), expected_fp=float(expected.fp), expected_fn=float(expected.fn),
                   expected_f1=expected.f1, ece=float("nan") if ece is None else float(ece))
    return row


def _has_estimates(rows: Iterable[dict[str, Any]]) -> bool:
    return any("expected_f1" in row for row in rows)


def combination_sort_key(row: dict[str, Any]) -> tuple[int, str]:
    """Fewest markers first, then by code: the order of :meth:`MarkerPanel.subsets`."""
    return int(row["n_markers"]), str(row["combination"])


def write_csv(rows: Iterable[dict[str, Any]], path: str | Path, fields: Sequence[str] | None = None) -> Path:
    """Write rows atomically (temporary file, then rename), so a killed run never leaves half a table.

    ``fields`` defaults to :data:`RESULT_FIELDS`, plus :data:`ESTIMATE_FIELDS` when a row has them.
    """
    rows = list(rows)
    if fields is None:
        fields = RESULT_FIELDS + (ESTIMATE_FIELDS if _has_estimates(rows) else ())
    return write_csv_atomically(path, [{k: _format(row.get(k)) for k in fields} for row in rows], fields=fields)


def _format(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def read_results(paths: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read and concatenate long results tables, with typed columns.

    Raises
    ------
    FluosegError
        If a file is missing, lacks a required column, or holds a non-numeric count.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FluosegError("results file not found; check the path", path=path)
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [f for f in RESULT_FIELDS if f not in (reader.fieldnames or [])]
            if missing:
                raise FluosegError(f"not a combinations results table: columns {missing} are missing "
                                   "(write it with 'fluoseg experiment combinations')", path=path)
            estimates = [f for f in ESTIMATE_FIELDS if f in (reader.fieldnames or [])]
            for line, raw in enumerate(reader, start=2):
                try:
                    rows.append(_typed(raw, estimates))
                except ValueError:
                    raise FluosegError(f"line {line} holds a non-numeric count or F1; fix or regenerate the file",
                                       path=path) from None
    return rows


def _typed(raw: dict[str, str], estimates: Sequence[str] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {k: raw[k] for k in RESULT_FIELDS}
    for key in _INTEGER_FIELDS:
        row[key] = int(raw[key])
    row["f1"] = float(raw["f1"])
    if raw.get("expected_f1"):  # rows of a table without estimates (or a cached older sample) have none
        for key in estimates:
            row[key] = float(raw[key]) if raw[key] else float("nan")
    return row


def marker_names(row: dict[str, Any]) -> tuple[str, ...]:
    """The marker names of a row's combination."""
    return tuple(str(row["markers"]).split(MARKER_SEPARATOR))


def pool_samples(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, class, combination, fold) with TP/FP/FN summed over its samples.

    F1 is recomputed from the summed counts (a pooled, dataset-level score); the sample
    column becomes ``"ALL"``. This is the paper's evaluation unit. Expected counts are
    summed alike when every sample has them (``expected_f1`` from the sums; ``ece`` NaN,
    as it does not pool).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["class"], row["combination"], row["fold"]), []).append(row)
    pooled_rows = []
    for members in groups.values():
        pooled = {k: v for k, v in members[0].items() if k not in ESTIMATE_FIELDS}
        counts = {c: sum(int(r[c]) for r in members) for c in ("tp", "fp", "fn")}
        pooled.update(sample=POOLED_SAMPLE, **counts, f1=f1_score(counts["tp"], counts["fp"], counts["fn"]))
        if all("expected_f1" in r for r in members):
            expected = ExpectedConfusion(*(sum(float(r[f"expected_{c}"]) for r in members) for c in ("tp", "fp", "fn")))
            pooled.update(expected_tp=expected.tp, expected_fp=expected.fp, expected_fn=expected.fn,
                          expected_f1=expected.f1, ece=float("nan"))
        pooled_rows.append(pooled)
    return pooled_rows


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (ddof = 1) of F1 per (method, class, combination).

    Rows come out grouped by method and class, combinations in subset order (fewest
    markers first). ``sd_f1`` is empty for a single unit.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["class"], row["combination"]), []).append(row)
    summary = []
    for (method, class_name, combination), members in groups.items():
        scores = np.array([float(r["f1"]) for r in members])
        summary.append({"method": method, "class": class_name, "combination": combination,
                        "markers": members[0]["markers"], "n_markers": members[0]["n_markers"], "n": len(scores),
                        "mean_f1": float(scores.mean()),
                        "sd_f1": float(scores.std(ddof=1)) if len(scores) > 1 else float("nan")})
        if all("expected_f1" in r for r in members):
            summary[-1].update(mean_expected_f1=_nanmean([r["expected_f1"] for r in members]),
                               mean_ece=_nanmean([r["ece"] for r in members]))
    order = {key: i for i, key in enumerate(dict.fromkeys((r["method"], r["class"]) for r in summary))}
    return sorted(summary, key=lambda r: (order[(r["method"], r["class"])], *combination_sort_key(r)))


def _nanmean(values: Iterable[Any]) -> float:
    finite = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def estimate_quality(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """How well the label-free expected F1 tracks the true F1 across marker combinations.

    Samples are pooled per (method, class, combination, fold) first (:func:`pool_samples`),
    the paper's unit; then per (method, class, fold), over its combinations:

    - ``spearman_expected_f1``: Spearman's rank correlation between expected and true F1
      (1: the estimate orders the combinations exactly as the truth does; NaN for fewer
      than two combinations or a constant side);
    - ``mean_abs_error_expected_f1``: mean ``|expected F1 - F1|``;
    - ``mean_ece``: mean pixel ECE of the unpooled rows (samples x combinations).

    Rows without estimates are left out; groups without any give no row.
    """
    rows = [row for row in rows if "expected_f1" in row]
    pooled = [row for row in pool_samples(rows) if "expected_f1" in row]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in pooled:
        groups.setdefault((row["method"], row["class"], row["fold"]), []).append(row)
    eces: dict[tuple, list[float]] = {}
    for row in rows:
        eces.setdefault((row["method"], row["class"], row["fold"]), []).append(row["ece"])
    quality = []
    for (method, class_name, fold), members in groups.items():
        expected = np.array([float(r["expected_f1"]) for r in members])
        true = np.array([float(r["f1"]) for r in members])
        quality.append({"method": method, "class": class_name, "fold": fold, "n_combinations": len(members),
                        "spearman_expected_f1": spearman_correlation(expected, true),
                        "mean_abs_error_expected_f1": float(np.abs(expected - true).mean()),
                        "mean_ece": _nanmean(eces[(method, class_name, fold)])})
    return quality


def write_tables(rows: list[dict[str, Any]], out_dir: str | Path, *, name: str = "combinations") -> tuple[Path, Path]:
    """Write ``NAME.csv`` (long table) and ``NAME_summary.csv`` (per combination) into ``out_dir``.

    Rows with estimates (:data:`ESTIMATE_FIELDS`) also give ``NAME_estimates.csv``
    (:func:`estimate_quality`, one row per method, class and fold).
    """
    out_dir = Path(out_dir)
    # A stable sort without the class keeps the classes in the model's order within each combination.
    ordered = sorted(rows, key=lambda r: (r["method"], r["fold"], r["sample"], *combination_sort_key(r)))
    estimates = _has_estimates(rows)
    if estimates:
        write_csv(estimate_quality(rows), out_dir / f"{name}_estimates.csv", QUALITY_FIELDS)
    return (write_csv(ordered, out_dir / f"{name}.csv"),
            write_csv(summarize(rows), out_dir / f"{name}_summary.csv",
                      SUMMARY_FIELDS + (SUMMARY_ESTIMATE_FIELDS if estimates else ())))


def mean_table(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Mean F1, its standard deviation and the unit count per (method, class) over all rows."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["class"]), []).append(float(row["f1"]))
    return {key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
            for key, v in groups.items()}
