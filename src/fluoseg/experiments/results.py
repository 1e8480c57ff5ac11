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
from fluoseg.metrics.semantic import ALL_IMAGES, f1_score

RESULT_FIELDS = ("method", "class", "combination", "markers", "n_markers", "fold", "sample", "tp", "fp", "fn", "f1")
"""Columns of the long results table, in file order."""

SUMMARY_FIELDS = ("method", "class", "combination", "markers", "n_markers", "n", "mean_f1", "sd_f1")
"""Columns of the per-combination summary."""

POOLED_SAMPLE = ALL_IMAGES
"""Sample name of rows whose counts are summed over the test samples of a fold."""

_INTEGER_FIELDS = ("n_markers", "fold", "tp", "fp", "fn")
MARKER_SEPARATOR = "+"


def result_row(*, method: str, class_name: str, combination: str, markers: Sequence[str], fold: int, sample: str,
               tp: int, fp: int, fn: int) -> dict[str, Any]:
    """One row of the long table; F1 is computed from the counts."""
    return {"method": method, "class": class_name, "combination": combination,
            "markers": MARKER_SEPARATOR.join(markers), "n_markers": len(markers), "fold": int(fold),
            "sample": sample, "tp": int(tp), "fp": int(fp), "fn": int(fn), "f1": f1_score(tp, fp, fn)}


def combination_sort_key(row: dict[str, Any]) -> tuple[int, str]:
    """Fewest markers first, then by code: the order of :meth:`MarkerPanel.subsets`."""
    return int(row["n_markers"]), str(row["combination"])


def write_csv(rows: Iterable[dict[str, Any]], path: str | Path, fields: Sequence[str] = RESULT_FIELDS) -> Path:
    """Write rows atomically (temporary file, then rename), so a killed run never leaves half a table."""
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
            for line, raw in enumerate(reader, start=2):
                try:
                    rows.append(_typed(raw))
                except ValueError:
                    raise FluosegError(f"line {line} holds a non-numeric count or F1; fix or regenerate the file",
                                       path=path) from None
    return rows


def _typed(raw: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {k: raw[k] for k in RESULT_FIELDS}
    for key in _INTEGER_FIELDS:
        row[key] = int(raw[key])
    row["f1"] = float(raw["f1"])
    return row


def marker_names(row: dict[str, Any]) -> tuple[str, ...]:
    """The marker names of a row's combination."""
    return tuple(str(row["markers"]).split(MARKER_SEPARATOR))


def pool_samples(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, class, combination, fold) with TP/FP/FN summed over its samples.

    F1 is recomputed from the summed counts (a pooled, dataset-level score); the sample
    column becomes ``"ALL"``. This is the paper's evaluation unit.
    """
    groups: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["method"], row["class"], row["combination"], row["fold"])
        if key not in groups:
            groups[key] = {**row, "sample": POOLED_SAMPLE, "tp": 0, "fp": 0, "fn": 0}
        pooled = groups[key]
        for count in ("tp", "fp", "fn"):
            pooled[count] += int(row[count])
    for pooled in groups.values():
        pooled["f1"] = f1_score(pooled["tp"], pooled["fp"], pooled["fn"])
    return list(groups.values())


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
    order = {key: i for i, key in enumerate(dict.fromkeys((r["method"], r["class"]) for r in summary))}
    return sorted(summary, key=lambda r: (order[(r["method"], r["class"])], *combination_sort_key(r)))


def write_tables(rows: list[dict[str, Any]], out_dir: str | Path, *, name: str = "combinations") -> tuple[Path, Path]:
    """Write ``NAME.csv`` (long table) and ``NAME_summary.csv`` (per combination) into ``out_dir``."""
    out_dir = Path(out_dir)
    # A stable sort without the class keeps the classes in the model's order within each combination.
    ordered = sorted(rows, key=lambda r: (r["method"], r["fold"], r["sample"], *combination_sort_key(r)))
    return (write_csv(ordered, out_dir / f"{name}.csv"),
            write_csv(summarize(rows), out_dir / f"{name}_summary.csv", SUMMARY_FIELDS))


def mean_table(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Mean F1, its standard deviation and the unit count per (method, class) over all rows."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["class"]), []).append(float(row["f1"]))
    return {key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
            for key, v in groups.items()}
