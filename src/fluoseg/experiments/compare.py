"""Comparing methods on the same marker-combination units, as the MS-ME paper does.

Scores vary far more between marker combinations than between methods, so the paper
reports *relative* scores ``Q_phi(m_G) - Q_ref(m_G)`` per unit and tests them with the
two-sided Wilcoxon signed-rank test; unpaired groups (combinations with vs without a
marker) get the two-sided Mann-Whitney U test (Methods, "Statistical tests").

A unit is a (class, combination, fold, sample) — or with ``unit="fold"`` a (class,
combination, fold) whose counts are pooled over the fold's test samples, the paper's
unit (n = 31 x 4 = 124 per class). Only units both methods have are paired (the upper
bound covers only M^UB). Tests are given per class and over all classes together (the
paper "aggregated the data for both sinusoids and arteries in a paired-wise manner").

Those units are not independent: the 31 combinations of a fold are scored by one network
on the same samples. ``unit="network"`` tests at the level of independently trained
networks instead: each (method, class, fold) is one replicate whose score is its mean F1
over the combinations it shares with the reference (samples pooled per combination), and
the pairs are tested with the paired t-test (with four folds the Wilcoxon test cannot go
below p = 0.125). A benchmark with several seeds per fold gives each (fold, seed) its own
``fold`` number. Every call reports Holm-adjusted p-values over all of its tests
(``p_holm``; the stars follow them), because a report makes many comparisons at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.experiments.results import marker_names, pool_samples, read_results, write_csv
from fluoseg.metrics.stats import holm, mann_whitney, paired_t_test, paired_wilcoxon, stars

ALL_CLASSES = "all"
"""Class name of the tests that pool every class."""

UNITS = ("sample", "fold", "network")
DIFFERENCE_FIELDS = ("method", "reference", "class", "combination", "markers", "n_markers", "fold", "sample", "f1",
                     "f1_reference", "difference")
TEST_FIELDS = ("method", "reference", "class", "unit", "test", "n", "mean_difference", "median_difference",
               "statistic", "p_value", "p_holm", "stars")
EFFECT_FIELDS = ("method", "class", "marker", "unit", "n_with", "n_without", "mean_with", "mean_without",
                 "median_with", "median_without", "u_statistic", "p_value", "stars")


def units(rows: Iterable[dict[str, Any]], unit: str) -> list[dict[str, Any]]:
    """Rows per sample, pooled per fold (``unit="fold"``), or per network (``"network"``: see the module notes)."""
    if unit not in UNITS:
        raise FluosegError(f"unknown unit {unit!r}; choose one of {list(UNITS)}")
    return list(rows) if unit == "sample" else pool_samples(rows)


def _key(row: dict[str, Any]) -> tuple:
    return row["class"], row["combination"], int(row["fold"]), row["sample"]


def paired_differences(rows: Sequence[dict[str, Any]], reference: str, *, unit: str = "sample") -> list[dict[str, Any]]:
    """``F1(method) - F1(reference)`` for every unit both have, for every other method.

    Raises
    ------
    FluosegError
        If the reference method is absent or a unit occurs twice for one method.
    """
    rows = units(rows, unit)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if reference not in methods:
        raise FluosegError(f"reference method {reference!r} is not in the results; they hold {methods}")
    scores: dict[str, dict[tuple, dict[str, Any]]] = {m: {} for m in methods}
    for row in rows:
        key = _key(row)
        if key in scores[row["method"]]:
            raise FluosegError(f"method {row['method']!r} has two results for class {key[0]!r}, combination {key[1]}, "
                               f"fold {key[2]}, sample {key[3]!r}; give each run its own method name")
        scores[row["method"]][key] = row
    reference_scores = scores[reference]
    differences = []
    for method in methods:
        if method == reference:
            continue
        for key, row in scores[method].items():
            if key in reference_scores:
                ref = float(reference_scores[key]["f1"])
                differences.append({"method": method, "reference": reference, "class": row["class"],
                                    "combination": row["combination"], "markers": row["markers"],
                                    "n_markers": row["n_markers"], "fold": row["fold"], "sample": row["sample"],
                                    "f1": float(row["f1"]), "f1_reference": ref, "difference": float(row["f1"]) - ref})
    return _per_network(differences) if unit == "network" else differences


def _per_network(differences: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, class, fold): mean F1 over the combinations both methods have."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for d in differences:
        groups.setdefault((d["method"], d["class"], d["fold"]), []).append(d)
    rows = []
    for (method, class_name, fold), members in groups.items():
        f1, ref = _mean([m["f1"] for m in members]), _mean([m["f1_reference"] for m in members])
        rows.append({"method": method, "reference": members[0]["reference"], "class": class_name,
                     "combination": f"mean of {len(members)}", "markers": "", "n_markers": "", "fold": fold,
                     "sample": members[0]["sample"], "f1": f1, "f1_reference": ref, "difference": f1 - ref})
    return rows


def difference_tests(differences: Sequence[dict[str, Any]], *, unit: str = "sample") -> list[dict[str, Any]]:
    """Paired tests of the differences per method and class, and over all classes, Holm-adjusted together.

    Wilcoxon signed-rank for ``sample``/``fold`` units; for ``network`` units the paired
    t-test (over all classes, the two classes of one network are averaged first, so the
    replicates stay independent).
    """
    tests = []
    for method in dict.fromkeys(d["method"] for d in differences):
        mine = [d for d in differences if d["method"] == method]
        classes = list(dict.fromkeys(d["class"] for d in mine))
        for class_name in classes + ([ALL_CLASSES] if len(classes) > 1 else []):
            chosen = [d for d in mine if class_name in (ALL_CLASSES, d["class"])]
            if unit == "network":
                by_fold: dict[Any, list[dict[str, Any]]] = {}
                for d in chosen:
                    by_fold.setdefault(d["fold"], []).append(d)
                a = [_mean([d["f1"] for d in v]) for v in by_fold.values()]
                b = [_mean([d["f1_reference"] for d in v]) for v in by_fold.values()]
                result, test = paired_t_test(a, b), "paired t"
            else:
                result = paired_wilcoxon([d["f1"] for d in chosen], [d["f1_reference"] for d in chosen])
                test = "Wilcoxon"
            tests.append({"method": method, "reference": chosen[0]["reference"], "class": class_name, "unit": unit,
                          "test": test, "n": result.n, "mean_difference": result.mean_difference,
                          "median_difference": result.median_difference, "statistic": result.statistic,
                          "p_value": result.p_value})
    for row, adjusted in zip(tests, holm([t["p_value"] for t in tests])):
        row["p_holm"] = float(adjusted)
        row["stars"] = stars(float(adjusted))
    return tests


def marker_effect(rows: Sequence[dict[str, Any]], marker: str, *, unit: str = "sample") -> list[dict[str, Any]]:
    """F1 of combinations with vs without ``marker``, per method and class (Mann-Whitney U).

    Raises
    ------
    FluosegError
        If no combination in the results contains the marker.
    """
    rows = units(rows, unit)
    if not any(marker in marker_names(r) for r in rows):
        known = sorted({m for r in rows for m in marker_names(r)})
        raise FluosegError(f"marker {marker!r} occurs in no combination of the results; they have {known}")
    effects = []
    for method, class_name in dict.fromkeys((r["method"], r["class"]) for r in rows):
        chosen = [r for r in rows if r["method"] == method and r["class"] == class_name]
        with_marker = [float(r["f1"]) for r in chosen if marker in marker_names(r)]
        without = [float(r["f1"]) for r in chosen if marker not in marker_names(r)]
        statistic, p_value = mann_whitney(with_marker, without)
        effects.append({"method": method, "class": class_name, "marker": marker, "unit": unit,
                        "n_with": len(with_marker), "n_without": len(without),
                        "mean_with": _mean(with_marker), "mean_without": _mean(without),
                        "median_with": _median(with_marker), "median_without": _median(without),
                        "u_statistic": statistic, "p_value": p_value, "stars": stars(p_value)})
    return effects


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def format_tests(tests: Sequence[dict[str, Any]]) -> str:
    """The test rows as a small text table for the terminal."""
    lines = [f"{'method':<12}{'class':<12}{'n':>6}{'mean diff':>12}{'median':>10}{'p':>11}{'p (Holm)':>11}  sig"]
    for t in tests:
        lines.append(f"{t['method']:<12}{t['class']:<12}{t['n']:>6}{t['mean_difference']:>12.4f}"
                     f"{t['median_difference']:>10.4f}{t['p_value']:>11.3g}{t['p_holm']:>11.3g}  {t['stars']}")
    return "\n".join(lines)


def compare_results(paths: Sequence[str | Path], reference: str, out_dir: str | Path, *, unit: str = "sample",
                    marker_effects: Sequence[str] = (), plot: bool = True) -> dict[str, Any]:
    """The work behind ``fluoseg experiment compare``.

    Writes into ``out_dir``: ``differences_vs_<REF>.csv`` (one row per paired unit),
    ``tests_vs_<REF>.csv`` (Wilcoxon per method and class), ``differences_vs_<REF>.png``
    (boxplots per class like the paper's Figs. 2-3) and, per ``--marker-effect``,
    ``marker_effect_<MARKER>.csv`` (Mann-Whitney U).

    Returns
    -------
    dict
        ``differences``, ``tests``, ``effects`` (rows) and ``files`` (written paths).
    """
    out_dir = Path(out_dir)
    rows = read_results(paths)
    differences = paired_differences(rows, reference, unit=unit)
    if not differences:
        raise FluosegError(f"no unit is shared by {reference!r} and another method; compare results of the same "
                           "samples, folds and combinations")
    tests = difference_tests(differences, unit=unit)
    tag = _safe(reference)
    files = [write_csv(differences, out_dir / f"differences_vs_{tag}.csv", DIFFERENCE_FIELDS),
             write_csv(tests, out_dir / f"tests_vs_{tag}.csv", TEST_FIELDS)]
    if plot:
        from fluoseg.experiments.plots import difference_boxplot

        files.append(difference_boxplot(differences, tests, out_dir / f"differences_vs_{tag}.png", reference=reference))
    effects = []
    for marker in marker_effects:
        found = marker_effect(rows, marker, unit=unit)
        files.append(write_csv(found, out_dir / f"marker_effect_{_safe(marker)}.csv", EFFECT_FIELDS))
        effects.extend(found)
    return {"differences": differences, "tests": tests, "effects": effects, "files": files}


def _safe(name: str) -> str:
    """A method or marker name usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
